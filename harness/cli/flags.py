"""Argument types and flag groups shared by the component commands."""

from __future__ import annotations

import argparse
import re

from harness.machinery.health import SecureServing


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t"):
        return True
    if value in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_secure_serving(p: argparse.ArgumentParser) -> None:
    """The secure port's flags of the scheduler and the controller-manager, with upstream's names."""
    p.add_argument("--tls-cert-file", default="",
                   help="serve the secure port over HTTPS with this certificate (default: plain HTTP)")
    p.add_argument("--tls-private-key-file", default="", help="the key of --tls-cert-file")
    p.add_argument("--client-ca-file", default="", help="client certificates of this CA authenticate")
    p.add_argument("--authorization-always-allow-paths", default="/healthz,/readyz,/livez",
                   help="paths served without authorization (default /healthz,/readyz,/livez)")


def secure_serving_from(args: argparse.Namespace, program: str) -> SecureServing | None:
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        raise SystemExit(f"harness {program}: --tls-cert-file and --tls-private-key-file go together")
    if not args.tls_cert_file:
        return None
    paths = tuple(p.strip() for p in args.authorization_always_allow_paths.split(",") if p.strip())
    return SecureServing(args.tls_cert_file, args.tls_private_key_file, args.client_ca_file, paths)


def duration(text: str) -> int:
    """Whole seconds from `3600`, `1h`, `30m`, `90s` or a sum of them like `1h30m` (Go's duration style)."""
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or parts is None or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give seconds, or e.g. 1h, 30m, 90s, 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def seconds(text: str) -> float:
    """Seconds, fractions allowed, from `1.5`, `15s`, `200ms`, `1m30s` (Go's duration style, as upstream's
    --leader-elect-* flags take them)."""
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                         r"(?:(\d+(?:\.\d+)?)ms)?", text)
    if not text or parts is None or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give seconds, or e.g. 15s, 1.5s, 200ms, 1m30s")
    hours, minutes, secs, millis = (float(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + secs + millis / 1000
