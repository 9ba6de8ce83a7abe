"""Apiserver throughput and latency, against raw etcd measured in the same run.

Starts a throwaway etcd and `harness apiserver` on loopback, then measures, in order:
raw etcd creates/s through the storage backend (the baseline), pod creates/s and GETs/s
through the apiserver at the same concurrency and value size (p50/p99), mutating latency
at a fixed request rate with the store filled to --list-size pods, LIST latency for all of
them (consistent read from etcd and resourceVersion=0 from the watch cache), and watch
delivery latency. Prints figures, not pass/fail.

    .venv/bin/python bench/apiserver.py [--concurrency 32] [--count 4000] [--list-size 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from common import Report, pct, run_concurrent, start_apiserver, stop

from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd

NS = "bench"


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"},
                         "annotations": {"bench/run": "apiserver"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                     "ports": [{"containerPort": 8080, "name": "http"}],
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with session.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("apiserver did not become ready in 30 s")


async def bench(args: argparse.Namespace) -> None:
    report = Report(46)

    with tempfile.TemporaryDirectory() as tmp, LocalEtcd() as etcd:
        value = orjson.dumps(pod("x" * 20))
        print(f"etcd {etcd.endpoint}; concurrency {args.concurrency}; pod value {len(value)} bytes", flush=True)

        # 1. Baseline: raw etcd creates through the same storage backend the apiserver uses.
        async with EtcdBackend([etcd.endpoint]) as backend:
            run = uuid.uuid4().hex[:6]

            async def raw_put(i: int) -> None:
                await backend.create(f"/bench/{run}/{i}", value)

            etcd_rate, etcd_lat = await run_concurrent(args.count, args.concurrency, raw_put)
        report("raw etcd creates/s (aetcd, same concurrency)", f"{etcd_rate:,.0f}  p50 {pct(etcd_lat, .5):.1f} ms"
               f"  p99 {pct(etcd_lat, .99):.1f} ms")

        proc, url, _ = start_apiserver(etcd.endpoint, Path(tmp))
        try:
            conn = aiohttp.TCPConnector(limit=args.concurrency + 8)
            async with aiohttp.ClientSession(connector=conn) as s:
                await wait_ready(s, url)
                await s.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": NS}})
                base = f"{url}/api/v1/namespaces/{NS}/pods"

                async def create(i: int) -> None:
                    async with s.post(base, data=orjson.dumps(pod(f"p-{i:06d}")),
                                      headers={"Content-Type": "application/json"}) as r:
                        if r.status != 201:
                            raise SystemExit(f"create failed: {r.status} {await r.text()}")
                        await r.read()

                rate, lat = await run_concurrent(args.count, args.concurrency, create)
                report("apiserver pod creates/s", f"{rate:,.0f}  p50 {pct(lat, .5):.1f} ms  p99 {pct(lat, .99):.1f} ms")
                report("ratio apiserver/etcd creates", f"{rate / etcd_rate:.2f}x")

                async def get(i: int) -> None:
                    async with s.get(f"{base}/p-{i % args.count:06d}") as r:
                        await r.read()

                rate, lat = await run_concurrent(args.count, args.concurrency, get)
                report("apiserver pod GETs/s", f"{rate:,.0f}  p50 {pct(lat, .5):.1f} ms  p99 {pct(lat, .99):.1f} ms")

                # Fill the store to list-size pods.
                if args.list_size > args.count:
                    await run_concurrent(args.list_size - args.count, args.concurrency,
                                         lambda i: create(args.count + i))

                # Mutating latency at a fixed rate with the store full.
                lat = []
                interval = 1.0 / args.rate
                start = time.perf_counter()
                tasks = []

                async def mutate(i: int) -> None:
                    t = time.perf_counter()
                    patch = orjson.dumps({"metadata": {"labels": {"n": str(i)}}})
                    async with s.patch(f"{base}/p-{i % args.list_size:06d}", data=patch,
                                       headers={"Content-Type": "application/merge-patch+json"}) as r:
                        await r.read()
                    lat.append(time.perf_counter() - t)

                for i in range(int(args.rate * args.rate_seconds)):
                    await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
                    tasks.append(asyncio.create_task(mutate(i)))
                await asyncio.gather(*tasks)
                report(f"PATCH at {args.rate}/s with {args.list_size:,} pods",
                       f"p50 {pct(lat, .5):.1f} ms  p99 {pct(lat, .99):.1f} ms")

                for label, params in (("LIST all pods (etcd, consistent)", {}),
                                      ("LIST all pods (watch cache, rv=0)", {"resourceVersion": "0"})):
                    times = []
                    for _ in range(3):
                        t = time.perf_counter()
                        async with s.get(base, params=params) as r:
                            body = await r.read()
                        times.append(time.perf_counter() - t)
                    n = len(orjson.loads(body)["items"])
                    report(f"{label} ({n:,})", f"{statistics.median(times) * 1000:.0f} ms "
                           f"({len(body) / 1e6:.1f} MB)")

                # Watch delivery: time from sending a create to receiving its ADDED event.
                async with s.get(base, params={"watch": "1", "resourceVersion": "0",
                                               "labelSelector": "probe=yes"}) as w:
                    lat = []
                    for i in range(args.watch_samples):
                        body = pod(f"w-{i:05d}")
                        body["metadata"]["labels"]["probe"] = "yes"
                        t = time.perf_counter()
                        async with s.post(base, data=orjson.dumps(body),
                                          headers={"Content-Type": "application/json"}) as r:
                            await r.read()
                        line = await w.content.readline()
                        assert orjson.loads(line)["object"]["metadata"]["name"] == f"w-{i:05d}"
                        lat.append(time.perf_counter() - t)
                report("watch delivery (create sent -> event received)",
                       f"p50 {pct(lat, .5):.1f} ms  p99 {pct(lat, .99):.1f} ms")
        finally:
            stop(proc)
    report.summary()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--count", type=int, default=4000, help="creates and GETs per phase")
    p.add_argument("--list-size", type=int, default=10000, help="pods stored for the LIST and PATCH phases")
    p.add_argument("--rate", type=int, default=100, help="PATCH requests per second in the latency phase")
    p.add_argument("--rate-seconds", type=float, default=10)
    p.add_argument("--watch-samples", type=int, default=200)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
