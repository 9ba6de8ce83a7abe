"""A Deployment of --replicas pods, from creation to all Running, on hollow nodes.

Starts a throwaway etcd, `harness apiserver`, `harness scheduler` and `harness
controller-manager`, registers --nodes hollow nodes in this process, creates one
Deployment and times the phases: ReplicaSet created, all pods created, all bound, all
Running, and the Deployment reporting every replica available. Figures, not pass/fail.

    .venv/bin/python bench/controllers.py [--nodes 100] [--replicas 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import start_apiserver, start_component, stop

from harness.api import registry
from harness.client.rest import Client, wait_ready
from harness.hollow.cluster import HollowCluster
from harness.storage.local import LocalEtcd

PODS = registry.by_path("", "v1", "pods")
DEPLOYMENTS = registry.by_path("apps", "v1", "deployments")
NAMESPACES = registry.by_path("", "v1", "namespaces")
NS = "bench"


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalEtcd() as etcd:
        work = Path(tmp)
        api, _, kc = start_apiserver(etcd.endpoint, work)
        procs = [api]
        client = Client.from_kubeconfig(kc)
        try:
            await wait_ready(client, within=30)
            procs += [start_component(name, kc, work) for name in ("scheduler", "controller-manager")]
            nodes = HollowCluster(client, count=args.nodes, prefix="n", cpu="64", memory="256Gi", pods=500)
            await nodes.start()
            await client.create(NAMESPACES, {"metadata": {"name": NS}})
            await asyncio.sleep(2.0)  # let the components sync their caches
            labels = {"app": "big"}
            dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big"},
                   "spec": {"replicas": args.replicas, "selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                                {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m"}}}]}}}}
            marks: dict[str, float] = {}
            t0 = time.perf_counter()
            await client.create(DEPLOYMENTS, dep, NS)
            deadline = t0 + args.timeout
            while time.perf_counter() < deadline:
                pods = (await client.list(PODS, NS, resource_version="0"))["items"]
                now = time.perf_counter() - t0
                if len(pods) >= args.replicas:
                    marks.setdefault("all pods created", now)
                if sum(1 for p in pods if p["spec"].get("nodeName")) >= args.replicas:
                    marks.setdefault("all pods bound", now)
                if sum(1 for p in pods if p.get("status", {}).get("phase") == "Running") >= args.replicas:
                    marks.setdefault("all pods Running", now)
                status = (await client.get(DEPLOYMENTS, "big", NS)).get("status", {})
                if status.get("availableReplicas") == args.replicas:
                    marks.setdefault("deployment reports all available", now)
                    break
                await asyncio.sleep(0.25)
            print("\nsummary")
            print(f"  nodes / replicas                      {args.nodes:,} / {args.replicas:,}")
            for name, at in marks.items():
                print(f"  {name:<38}{at:6.1f} s")
            if "deployment reports all available" not in marks:
                print(f"  not complete within {args.timeout:.0f} s")
            await nodes.stop()
        finally:
            await client.close()
            stop(*reversed(procs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--replicas", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=600)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
