"""`harness pki show`: a cluster's certificates with subject, names and expiry, as `kubeadm certs
check-expiration`; `harness pki rotate`: renew its leaf certificates and roll them out without a restart, as
`kubeadm certs renew` (which then asks for restarts; here components reload their certificates)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.cluster import certrotation, pki
from harness.cluster.pki import WARN_DAYS, PKIError, listing
from harness.cluster.provision import ProvisionError, run_playbook
from harness.util import x509
from harness.util.certreload import INTERVAL
from harness.util.x509 import X509Error

INVENTORY = Path("inventory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show_p = actions.add_parser("show", help="list every certificate with subject, SANs and expiry",
                                description="List the cluster's certificates with subject, SANs and expiry, as "
                                            "`kubeadm certs check-expiration`.")
    show_p.add_argument("--name", default="local", help="the cluster's name (default local)")
    show_p.add_argument("--dir", default="", help="a PKI directory (default inventory/<name>/pki)")
    rotate_p = actions.add_parser(
        "rotate", help="renew leaf certificates and roll them out to the machines, with no restart",
        description="Renew leaf certificates with new keys from the same CAs (the CAs, the service-account key "
                    "and the encryption key are kept), place them on the machines, and wait until every port "
                    "serves its renewed certificate.")
    rotate_p.add_argument("certs", nargs="*", metavar="CERT",
                          help="the certificates to renew, by their names in `harness pki show` (default: all)")
    rotate_p.add_argument("--name", default="local", help="the cluster's name (default local)")
    rotate_p.add_argument("--timeout", type=float, default=120.0,
                          help="seconds to wait for every port to serve its renewed certificate (default 120)")


def run(args: argparse.Namespace) -> int:
    return rotate(args) if args.action == "rotate" else show(args)


def show(args: argparse.Namespace) -> int:
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
        print(f"\n{due} certificate(s) expire within {WARN_DAYS} days (marked !): renew them with "
              f"`harness pki rotate --name {args.name}`")
    return 0


def rotate(args: argparse.Namespace) -> int:
    home = INVENTORY / args.name
    directory, hosts = home / "pki", home / "hosts.yml"
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", flush=True)

    if not (directory.is_dir() and hosts.exists()):
        print(f"harness pki rotate: cluster {args.name} has no PKI or inventory under {home} "
              f"(`harness up --name {args.name}` makes them)", file=sys.stderr)
        return 1
    try:
        nodes, service_cidr = certrotation.cluster_from_inventory(hosts)
        the_plan = pki.plan(nodes, service_cidr=service_cidr)
        renewed = pki.renew(directory, the_plan, args.certs)
        for cert in renewed:
            certrotation.check_pair(directory, cert)
        progress(f"renewed {len(renewed)} certificate(s) in {directory}: {', '.join(c.name for c in renewed)}")
        progress("placing them on the machines (ansible/site.yml --tags pki)")
        placed = run_playbook(hosts, home / "ansible", ident="pki-rotate", tags=["pki"], progress=progress)
        progress(f"placed: {placed.changed()} change(s) in {placed.seconds:.1f}s")
        pending = certrotation.endpoints(the_plan, nodes, renewed, directory)
        progress(f"waiting for {len(pending)} port(s) to serve their renewed certificates "
                 f"(components look every {INTERVAL:.0f}s)")
        late = certrotation.wait_served(pending, directory, timeout=args.timeout, progress=progress)
    except (PKIError, X509Error, certrotation.RotationError, ProvisionError) as exc:
        print(f"harness pki rotate: {exc}", file=sys.stderr)
        return 1
    if late:
        print(f"\nharness pki rotate: {len(late)} port(s) still serve the old certificate after {args.timeout:.0f}s: "
              f"{', '.join(map(str, late))}.\nThe renewed files are in place; check the programs with "
              f"`harness status --name {args.name}`.", file=sys.stderr)
        return 1
    until = min((x509.describe(x509.load_cert(directory / c.cert_file)).not_after for c in renewed),
                default=None)
    print(f"\nRotated {len(renewed)} certificate(s) of cluster {args.name} in {time.monotonic() - started:.1f}s, "
          f"valid until {until:%Y-%m-%d %H:%M} UTC; {len(pending)} port(s) serve them, nothing was restarted.\n"
          f"Clients present their renewed certificates on their next connections.\n"
          f"See them: harness pki show --name {args.name}")
    return 0
