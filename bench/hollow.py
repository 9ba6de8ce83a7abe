"""Hollow nodes at scale: one process simulating --nodes kubelets against a real apiserver.

Starts a throwaway etcd and `harness apiserver` on loopback, then measures, in order: the
time to register every node (Node + Lease), the steady-state CPU of this process (which then
only runs the hollow nodes) and of the apiserver while leases renew every --heartbeat
seconds, how far behind the oldest lease is, and the time from binding --pods pods (spread
over the nodes through pods/binding, as the scheduler does) to all of them Running.
Prints figures, not pass/fail.

    .venv/bin/python bench/hollow.py [--nodes 1000] [--pods 1000] [--steady 60] [--heartbeat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from common import Report, start_apiserver, stop

from harness.api import meta, registry
from harness.client import rest
from harness.client.rest import Client
from harness.hollow import HollowCluster
from harness.storage.local import LocalEtcd

PODS = registry.by_path("", "v1", "pods")
LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")
NAMESPACES = registry.by_path("", "v1", "namespaces")
NS = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def lease_lag(client: Client, names: set[str]) -> tuple[float, float]:
    """(mean, max) seconds since each hollow node's lease was renewed."""
    leases = (await client.list_all(LEASES, "kube-node-lease"))["items"]
    now = meta.now().timestamp()
    ages = [now - meta.parse_time(lease["spec"]["renewTime"]).timestamp()
            for lease in leases if lease["metadata"]["name"] in names]
    return sum(ages) / len(ages), max(ages)


async def pods_to_running(client: Client, nodes: list[str], count: int) -> tuple[float, float]:
    """Create `count` pods, bind them round-robin, return (seconds binding took, seconds until all Running)."""
    await client.create(NAMESPACES, {"metadata": {"name": NS}})
    sem = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        async with sem:
            await client.create(PODS, {"metadata": {"name": f"p{i}"},
                                       "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}, NS)

    await asyncio.gather(*(create(i) for i in range(count)))
    version = (await client.list(PODS, NS, limit=1))["metadata"]["resourceVersion"]
    running: set[str] = set()
    all_running = asyncio.Event()

    async def watch() -> None:
        async for ev in client.watch(PODS, NS, resource_version=version):
            if ev.obj.get("status", {}).get("phase") == "Running":
                running.add(ev.obj["metadata"]["name"])
                if len(running) == count:
                    all_running.set()
                    return

    watcher = asyncio.create_task(watch())

    async def bind(i: int) -> None:
        async with sem:
            await client.request("POST", Client.path(PODS, NS, f"p{i}", "binding"),
                                 body={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": f"p{i}"},
                                       "target": {"kind": "Node", "name": nodes[i % len(nodes)]}})

    start = time.perf_counter()
    await asyncio.gather(*(bind(i) for i in range(count)))
    bound = time.perf_counter() - start
    await asyncio.wait_for(all_running.wait(), 600)
    done = time.perf_counter() - start
    watcher.cancel()
    return bound, done


async def bench(args: argparse.Namespace) -> None:
    report = Report()

    with tempfile.TemporaryDirectory() as tmp, LocalEtcd() as etcd:
        proc, url, _ = start_apiserver(etcd.endpoint, Path(tmp))
        try:
            async with Client.for_url(url) as client, Client.for_url(url) as driver:
                await rest.wait_ready(client)
                cluster = HollowCluster(client, count=args.nodes, heartbeat=args.heartbeat,
                                        status_interval=args.status_interval)
                print(f"{args.nodes} hollow nodes, heartbeat {args.heartbeat}s, status every "
                      f"{args.status_interval}s, {os.cpu_count()} CPUs", flush=True)

                t, cpu = time.perf_counter(), time.process_time()
                await cluster.start()
                took = time.perf_counter() - t
                report("registration (Node + Lease each), wall", f"{took:.2f} s ({args.nodes / took:.0f} nodes/s)")
                report("registration, CPU of this process", f"{time.process_time() - cpu:.2f} s")

                await asyncio.sleep(min(args.heartbeat, args.steady))  # let the first renewals spread out
                t, cpu, api_cpu = time.perf_counter(), time.process_time(), proc_cpu(proc.pid)
                await asyncio.sleep(args.steady)
                wall = time.perf_counter() - t
                report(f"steady state over {wall:.0f} s, CPU of this process",
                       f"{(time.process_time() - cpu) / wall * 100:.1f} % of one core")
                report("steady state, CPU of the apiserver",
                       f"{(proc_cpu(proc.pid) - api_cpu) / wall * 100:.1f} % of one core")
                report("lease renewals expected",
                       f"{args.nodes / args.heartbeat:.0f}/s + {args.nodes / args.status_interval:.0f} status/s")
                mean, worst = await lease_lag(driver, set(cluster.node_names))
                report("age of leases (mean / max)", f"{mean:.1f} s / {worst:.1f} s (heartbeat {args.heartbeat} s)")

                cpu = time.process_time()
                bound, done = await pods_to_running(driver, cluster.node_names, args.pods)
                report(f"{args.pods} pods: binding them all", f"{bound:.2f} s")
                report(f"{args.pods} pods: first bind to all Running", f"{done:.2f} s ({args.pods / done:.0f} pods/s)")
                report("pods phase, CPU of this process (hollow + driver)", f"{time.process_time() - cpu:.2f} s")
                mean, worst = await lease_lag(driver, set(cluster.node_names))
                report("age of leases after the pod burst (mean / max)", f"{mean:.1f} s / {worst:.1f} s")
                report("max RSS of this process", f"{rss_mb():.0f} MB")
                await cluster.stop()
        finally:
            stop(proc)
    report.summary()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--steady", type=float, default=60.0, help="seconds of steady state to measure")
    p.add_argument("--heartbeat", type=float, default=10.0)
    p.add_argument("--status-interval", type=float, default=60.0)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
