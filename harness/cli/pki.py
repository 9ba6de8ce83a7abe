"""`harness pki show`: a cluster's certificates with subject, names and expiry, as `kubeadm certs check-expiration`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cluster.pki import WARN_DAYS, PKIError, listing
from harness.util.x509 import X509Error

INVENTORY = Path("inventory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["show"], help="show: list every certificate with subject, SANs and expiry")
    p.add_argument("--name", default="local", help="the cluster's name (default local)")
    p.add_argument("--dir", default="", help="a PKI directory (default inventory/<name>/pki)")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else INVENTORY / args.name / "pki"
    if not directory.is_dir():
        print(f"harness pki: no PKI at {directory} (`harness up --name {args.name}` makes it)", file=sys.stderr)
        return 1
    try:
        certs = list(listing(directory))
    except (PKIError, X509Error) as exc:
        print(f"harness pki: {exc}", file=sys.stderr)
        return 1
    width = max(len(c.name) for c in certs) if certs else 4
    print(f"{'CERTIFICATE':<{width}}  {'EXPIRES':<20}  {'RESIDUAL':>8}  {'ISSUER':<18}  SUBJECT / SANS")
    due = 0
    for cert in certs:
        d = cert.description
        days = d.days_left()
        mark = " !" if days <= WARN_DAYS else ""
        due += bool(mark)
        issuer = d.issuer.removeprefix("CN=") if not d.is_ca else "(self-signed CA)"
        print(f"{cert.name:<{width}}  {d.not_after:%Y-%m-%d %H:%M} UTC  {days:>7.0f}d{mark}  {issuer:<18}  "
              f"{d.subject}")
        if d.sans:
            print(f"{'':<{width}}  {'':<20}  {'':>8}  {'':<18}  SANs: {', '.join(d.sans)}")
    if due:
        print(f"\n{due} certificate(s) expire within {WARN_DAYS} days (marked !)")
    return 0
