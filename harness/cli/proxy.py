"""`harness proxy`: kube-proxy, programming Services into iptables on this node (kube-proxy's flags)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from harness.cli import lifecycle, logs
from harness.proxy import iptables
from harness.proxy.proxier import ProxyError, check_tools, default_hostname
from harness.proxy.server import MODES, Config, cleanup, serve, split_address
from harness.proxy.userspace import DEFAULT_UDP_TIMEOUT

log = logging.getLogger("harness.proxy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig with the apiserver URL(s) and credentials")
    p.add_argument("--mode", default="iptables", choices=MODES, help="which proxy mode to use (default iptables)")
    p.add_argument("--cluster-cidr", default=iptables.DEFAULT_CLUSTER_CIDR,
                   help="the pods' CIDR: traffic to cluster IPs from outside it is masqueraded (default "
                        f"{iptables.DEFAULT_CLUSTER_CIDR}; empty: masquerade none of it)")
    p.add_argument("--hostname-override", default="", help="this node's name (default: the hostname)")
    p.add_argument("--iptables-min-sync-period", type=float, default=1.0, metavar="SECONDS",
                   help="minimum interval between rule syncs (default 1)")
    p.add_argument("--iptables-sync-period", type=float, default=30.0, metavar="SECONDS",
                   help="maximum interval between full rule syncs (default 30)")
    p.add_argument("--udp-timeout", type=float, default=DEFAULT_UDP_TIMEOUT, metavar="SECONDS",
                   help=f"userspace mode: how long an idle UDP session is kept open (default {DEFAULT_UDP_TIMEOUT})")
    p.add_argument("--cleanup", action="store_true", help="remove every rule and chain this proxy makes, then exit")
    p.add_argument("--healthz-bind-address", default="0.0.0.0:10256", metavar="HOST:PORT",
                   help="where /healthz is served (default 0.0.0.0:10256; port 0 disables it)")
    p.add_argument("--healthz-port", type=int, default=None, help="port for /healthz (overrides the address's port)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:10249", metavar="HOST:PORT",
                   help="where /metrics is served (default 127.0.0.1:10249; port 0 disables it)")
    p.add_argument("--log-level", default="info")


def config_from(args: argparse.Namespace) -> Config:
    if args.iptables_min_sync_period < 0 or args.iptables_sync_period <= 0:
        raise SystemExit("harness proxy: --iptables-min-sync-period must be >= 0 and --iptables-sync-period > 0")
    try:
        healthz_host, healthz_port = split_address(args.healthz_bind_address, 10256)
        metrics_host, metrics_port = split_address(args.metrics_bind_address, 10249)
    except ProxyError as exc:
        raise SystemExit(f"harness proxy: {exc}") from None
    if args.healthz_port is not None:
        healthz_port = args.healthz_port
    return Config(kubeconfig=args.kubeconfig or "", mode=args.mode, cluster_cidr=args.cluster_cidr,
                  hostname=args.hostname_override or default_hostname(),
                  min_sync_period=args.iptables_min_sync_period, sync_period=args.iptables_sync_period,
                  healthz_host=healthz_host, healthz_port=healthz_port, metrics_host=metrics_host,
                  metrics_port=metrics_port, udp_timeout=args.udp_timeout)


async def main(config: Config) -> int:
    """Proxy until SIGTERM/SIGINT."""
    stop = lifecycle.stop_on_signals()
    code = await serve(config, stop)
    log.info("stopped")
    return code


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.proxy", args.log_level)
    config = config_from(args)
    try:
        if config.mode == "iptables":
            check_tools()
    except ProxyError as exc:
        log.error("%s", exc)
        return 1
    if args.cleanup:
        return asyncio.run(cleanup(config))
    if not config.kubeconfig:
        raise SystemExit("harness proxy: --kubeconfig is required (except with --cleanup)")
    return lifecycle.run(main(config))


if __name__ == "__main__":  # `python -m harness.cli.proxy ...`, the same as `harness proxy ...`
    import sys

    parser = argparse.ArgumentParser(prog="harness proxy", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
