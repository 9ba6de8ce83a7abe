"""`harness pod-routes`: host-gw routes to every Node's podCIDR on a machine without a kubelet (the masters)."""

from __future__ import annotations

import argparse
import logging
import os

from harness.cli import lifecycle, logs
from harness.client import rest
from harness.kubelet.network.routeagent import PodRouteAgent
from harness.kubelet.network.routes import HostGwRoutes

log = logging.getLogger("harness.pod-routes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", required=True, help="kubeconfig with the apiserver URL(s) and credentials")
    p.add_argument("--resync", type=float, default=30.0, metavar="SECONDS",
                   help="re-check the routes this often even without a Node change (default 30)")
    p.add_argument("--cleanup", action="store_true", help="remove every route this agent made, then exit")
    p.add_argument("--log-level", default="info")


async def main(kubeconfig: str, resync: float) -> int:
    stop = lifecycle.stop_on_signals()
    async with rest.Client.from_kubeconfig(kubeconfig, user_agent="harness-pod-routes") as client:
        await rest.wait_until_ready(client)
        agent = PodRouteAgent(client, retry=resync)
        log.info("keeping host-gw routes to every Node's podCIDR")
        await agent.run(stop)
    return 0


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.pod-routes", args.log_level)
    if os.geteuid() != 0:
        raise SystemExit("harness pod-routes: must run as root (it changes the routing table)")
    if args.cleanup:
        HostGwRoutes().clear()
        print("host-gw routes removed")
        return 0
    if args.resync <= 0:
        raise SystemExit("harness pod-routes: --resync must be > 0")
    return lifecycle.run(main(args.kubeconfig, args.resync))
