"""`harness controller-manager`: run the control loops (kube-controller-manager's flags where they exist)."""

from __future__ import annotations

import argparse
import logging
import re

from harness.cli import lifecycle, logs
from harness.cli.flags import add_secure_serving, boolean, seconds, secure_serving_from
from harness.controllers.base import Options
from harness.controllers.manager import CONTROLLERS, select
from harness.controllers.server import Config, serve

log = logging.getLogger("harness.controller-manager")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", required=True, help="kubeconfig with the apiserver URL(s) and credentials")
    p.add_argument("--controllers", default="*",
                   help=f"controllers to run: '*' for all, 'foo' to add, '-foo' to remove ({', '.join(CONTROLLERS)})")
    p.add_argument("--bind-address", default="127.0.0.1", help="address for /healthz and /metrics")
    p.add_argument("--secure-port", type=int, default=10257,
                   help="port for /healthz and /metrics (plain HTTP for now; default 10257)")
    p.add_argument("--leader-elect", type=boolean, nargs="?", const=True, default=True, metavar="BOOL")
    p.add_argument("--leader-elect-lease-duration", type=seconds, default=15.0, metavar="DURATION")
    p.add_argument("--leader-elect-renew-deadline", type=seconds, default=10.0, metavar="DURATION")
    p.add_argument("--leader-elect-retry-period", type=seconds, default=2.0, metavar="DURATION")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="pod network, split into node pod CIDRs")
    p.add_argument("--node-cidr-mask-size", type=int, default=24)
    p.add_argument("--node-monitor-period", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--node-monitor-grace-period", type=float, default=50.0, metavar="SECONDS")
    p.add_argument("--use-service-account-credentials", type=boolean, nargs="?", const=True, default=False,
                   metavar="BOOL", help="each controller acts as its own kube-system service account")
    p.add_argument("--root-ca-file", default="",
                   help="the cluster CA, published to every namespace as the ConfigMap kube-root-ca.crt")
    p.add_argument("--resource-quota-sync-period", type=sync_period, default=300.0, metavar="DURATION",
                   help="how often every ResourceQuota's usage is recalculated in full (e.g. 5m0s, 30s; "
                        "default 5m0s)")
    p.add_argument("--cluster-signing-cert-file", default="",
                   help="the CA certificate csrsigning issues approved CertificateSigningRequests with")
    p.add_argument("--cluster-signing-key-file", default="", help="that CA's private key")
    p.add_argument("--cluster-signing-duration", type=sync_period, default=8760 * 3600.0, metavar="DURATION",
                   help="the longest a certificate csrsigning issues is valid (default 8760h0m0s)")
    add_secure_serving(p)
    p.add_argument("--log-level", default="info")


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def sync_period(text: str) -> float:
    """Seconds from a Go duration (`5m0s`, `30s`, `1.5s`, `1h`) or a plain number of seconds; more than zero."""
    parts = list(_DURATION_PART.finditer(text))
    if re.fullmatch(r"[0-9]+(?:\.[0-9]*)?", text):
        seconds = float(text)
    elif parts and "".join(m.group(0) for m in parts) == text:
        seconds = sum(float(m.group(1)) * _UNIT_SECONDS[m.group(2)] for m in parts)
    else:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 5m0s, 30s)")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than zero")
    return seconds


def config_from(args: argparse.Namespace) -> Config:
    try:
        controllers = select(args.controllers)
    except ValueError as exc:
        raise SystemExit(f"harness controller-manager: --controllers: {exc}") from None
    options = Options(cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size,
                      node_monitor_period=args.node_monitor_period,
                      node_monitor_grace_period=args.node_monitor_grace_period, root_ca_file=args.root_ca_file,
                      resource_quota_sync_period=args.resource_quota_sync_period,
                      cluster_signing_cert_file=args.cluster_signing_cert_file,
                      cluster_signing_key_file=args.cluster_signing_key_file,
                      cluster_signing_duration=args.cluster_signing_duration)
    return Config(kubeconfig=args.kubeconfig, controllers=controllers, bind_address=args.bind_address,
                  port=args.secure_port, leader_elect=args.leader_elect,
                  lease_duration=args.leader_elect_lease_duration, renew_deadline=args.leader_elect_renew_deadline,
                  retry_period=args.leader_elect_retry_period, options=options,
                  use_service_account_credentials=args.use_service_account_credentials,
                  secure=secure_serving_from(args, "controller-manager"))


async def main(config: Config) -> int:
    stop = lifecycle.stop_on_signals()
    return await serve(config, stop=stop)


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.controller-manager", args.log_level)
    return lifecycle.run(main(config_from(args)))
