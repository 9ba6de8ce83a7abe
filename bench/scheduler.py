"""Scheduling throughput end to end, against the bare binding rate measured in the same run.

Starts a throwaway etcd, `harness apiserver` and (later) `harness scheduler`, registers
--nodes hollow nodes in this process, then:
1. the ceiling: bare `pods/binding` POSTs/s at --concurrency for pods no scheduler owns;
2. the scheduler: --pods pending pods created as fast as the apiserver takes them, each
   timed from its create request to the watch event showing it bound. Prints pods/s, p50/p99
   latency, and the ratio to the ceiling. Figures, not pass/fail.

    .venv/bin/python bench/scheduler.py [--nodes 1000] [--pods 10000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import pct, run_concurrent, start_apiserver, start_component, stop

from harness.api import registry
from harness.client.rest import Client, wait_ready
from harness.hollow.cluster import HollowCluster
from harness.storage.local import LocalEtcd

PODS = registry.by_path("", "v1", "pods")
NAMESPACES = registry.by_path("", "v1", "namespaces")
NS = "bench"


def pod(name: str, scheduler: str = "default-scheduler") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "busybox",
                     "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]}}


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalEtcd() as etcd:
        work = Path(tmp)
        api, _, kc = start_apiserver(etcd.endpoint, work)
        sched: subprocess.Popen[bytes] | None = None
        client = Client.from_kubeconfig(kc)
        try:
            await wait_ready(client, within=30)
            await client.create(NAMESPACES, {"metadata": {"name": NS}})
            t = time.perf_counter()
            nodes = HollowCluster(client, count=args.nodes, prefix="n", cpu="32", memory="256Gi", pods=250)
            await nodes.start()
            print(f"{args.nodes} hollow nodes registered in {time.perf_counter() - t:.1f} s", flush=True)

            # 1. The ceiling: bare binding POSTs for pods no scheduler looks at.
            await run_concurrent(args.bind_pods, args.concurrency,
                                 lambda i: client.create(PODS, pod(f"raw-{i:05d}", "nobody"), NS))

            async def bind(i: int) -> None:
                body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": f"raw-{i:05d}"},
                        "target": {"kind": "Node", "name": nodes.node_names[i % len(nodes.node_names)]}}
                await client.request("POST", f"/api/v1/namespaces/{NS}/pods/raw-{i:05d}/binding", body=body)

            ceiling, _ = await run_concurrent(args.bind_pods, args.concurrency, bind)
            print(f"bare binding POSTs/s: {ceiling:,.0f}", flush=True)

            # 2. The scheduler, end to end.
            sched = start_component("scheduler", kc, work)
            created: dict[str, float] = {}
            bound: dict[str, float] = {}
            rv = (await client.list(PODS, NS, limit=1))["metadata"]["resourceVersion"]
            done = asyncio.Event()

            async def observe() -> None:
                async for ev in client.watch(PODS, NS, resource_version=rv, label_selector="app=bench"):
                    if ev.type == "BOOKMARK":
                        continue
                    name = ev.obj["metadata"]["name"]
                    if name.startswith("p-") and ev.obj["spec"].get("nodeName") and name not in bound:
                        bound[name] = time.perf_counter()
                        if len(bound) == args.pods:
                            done.set()
                            return

            watcher = asyncio.create_task(observe())
            await asyncio.sleep(1.0)  # let the scheduler sync its caches before the burst

            async def create(i: int) -> None:
                name = f"p-{i:05d}"
                created[name] = time.perf_counter()
                await client.create(PODS, pod(name), NS)

            t0 = time.perf_counter()
            create_rate, _ = await run_concurrent(args.pods, args.concurrency, create)
            try:
                await asyncio.wait_for(done.wait(), args.timeout)
            except TimeoutError:
                listed = (await client.list_all(PODS, NS, label_selector="app=bench"))["items"]
                really = sum(1 for p in listed if p["metadata"]["name"].startswith("p-") and p["spec"].get("nodeName"))
                print(f"only {len(bound)}/{args.pods} seen bound within {args.timeout} s ({really} bound in the API; "
                      f"watch {'ended' if watcher.done() else 'open'}); scheduler log:", flush=True)
                print("\n".join((work / "scheduler.log").read_text(errors="replace").splitlines()[-20:]))
            watcher.cancel()
            if not bound:
                raise SystemExit("no pod was bound")
            lat = [bound[n] - created[n] for n in bound]
            rate = len(bound) / (max(bound.values()) - t0)
            print("\nsummary")
            print(f"  nodes / pods                        {args.nodes:,} / {args.pods:,}")
            print(f"  pod creates/s (while scheduling)    {create_rate:,.0f}")
            print(f"  scheduled pods/s (created->bound)   {rate:,.0f}")
            print(f"  latency created->bound              p50 {pct(lat, .5):,.0f} ms  p99 {pct(lat, .99):,.0f} ms")
            print(f"  bare binding POSTs/s (ceiling)      {ceiling:,.0f}")
            print(f"  ratio scheduled/ceiling             {rate / ceiling:.2f}x")
            await nodes.stop()
        finally:
            await client.close()
            stop(sched, api)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--bind-pods", type=int, default=2000, help="pods bound directly for the ceiling")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--timeout", type=float, default=600)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
