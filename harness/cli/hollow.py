"""`harness hollow-nodes`: simulate N nodes that run pods without running anything (like kubemark)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from harness.cli import lifecycle, logs
from harness.client import rest
from harness.hollow import HollowCluster

log = logging.getLogger("harness.hollow")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster to join")
    p.add_argument("--count", type=int, required=True, help="how many hollow nodes to run")
    p.add_argument("--prefix", default="hollow", help="node names are <prefix>-<i> (default hollow)")
    p.add_argument("--cpu", default="4", help="CPU capacity of each node (default 4)")
    p.add_argument("--memory", default="16Gi", help="memory capacity of each node (default 16Gi)")
    p.add_argument("--pods", type=int, default=110, help="pod capacity of each node (default 110)")
    p.add_argument("--labels", default="", help="extra node labels, k=v,k2=v2")
    p.add_argument("--heartbeat", type=float, default=10.0, help="seconds between lease renewals (default 10)")
    p.add_argument("--status-interval", type=float, default=60.0,
                   help="seconds between node status posts (default 60)")
    p.add_argument("--log-level", default="info")


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"harness hollow-nodes: --labels wants k=v pairs separated by commas, not {item!r}")
        labels[key.strip()] = value.strip()
    return labels


async def serve(args: argparse.Namespace, labels: dict[str, str]) -> None:
    stop = lifecycle.stop_on_signals()
    loop = asyncio.get_running_loop()
    async with rest.Client.from_kubeconfig(args.kubeconfig, user_agent="harness-hollow-nodes") as client:
        await rest.wait_ready(client)
        cluster = HollowCluster(client, count=args.count, prefix=args.prefix, cpu=args.cpu, memory=args.memory,
                                pods=args.pods, labels=labels, heartbeat=args.heartbeat,
                                status_interval=args.status_interval)
        started = loop.time()
        await cluster.start()
        log.info("%d hollow nodes up in %.1fs", args.count, loop.time() - started)
        await stop.wait()
        log.info("stopping; the nodes stay registered and go NotReady when their leases run out")
        await cluster.stop()


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.hollow", args.log_level)
    if args.count < 1:
        raise SystemExit("harness hollow-nodes: --count must be at least 1")
    labels = parse_labels(args.labels)  # fail on bad labels before connecting
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, labels))
    return 0
