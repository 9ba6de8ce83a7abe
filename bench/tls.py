"""What TLS costs the apiserver: the same apiserver's plain-HTTP and HTTPS ports, measured in one run.

Starts a throwaway etcd and one `harness apiserver` serving both ports, with certificates from the cluster PKI
(`harness.cluster.pki`, RSA 2048 as `harness up` makes them), then measures pod creates/s and GETs/s over kept-alive
connections on each port (HTTPS with the admin's client certificate, so every request is authenticated), and a new
connection per request (`/healthz`), where the TLS handshake is paid every time. Raw etcd creates through the
storage backend are the baseline. Prints figures and ratios, not pass/fail.

    .venv/bin/python bench/tls.py [--concurrency 32] [--count 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
from apiserver import pod, wait_ready
from common import Report, free_port, pct, run_concurrent, spawn, stop

from harness.cluster import pki
from harness.cluster.local import NodeSpec
from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd


async def bench(args: argparse.Namespace) -> None:
    report = Report()

    with tempfile.TemporaryDirectory() as tmp, LocalEtcd() as etcd:
        work = Path(tmp)
        directory = work / "pki"
        pki.ensure(directory, pki.plan([NodeSpec("m", "master", "127.0.0.1")], service_cidr="10.96.0.0/12"))
        value = orjson.dumps(pod("x" * 20))
        async with EtcdBackend([etcd.endpoint]) as backend:
            run = uuid.uuid4().hex[:6]

            async def raw_put(i: int) -> None:
                await backend.create(f"/bench/{run}/{i}", value)

            etcd_rate, lat = await run_concurrent(args.count, args.concurrency, raw_put)
        report("raw etcd creates/s", f"{etcd_rate:,.0f}  p99 {pct(lat, .99):.1f} ms")

        port, secure = free_port(), free_port()
        proc = spawn(["apiserver", "--etcd-servers", etcd.endpoint, "--port", str(port), "--secure-port", str(secure),
                      "--tls-cert-file", str(directory / "apiserver.crt"),
                      "--tls-private-key-file", str(directory / "apiserver.key"),
                      "--client-ca-file", str(directory / "ca.crt"), "--log-level", "warning"], work / "apiserver.log")
        ctx = ssl.create_default_context(cafile=str(directory / "ca.crt"))
        ctx.load_cert_chain(directory / "admin.crt", directory / "admin.key")
        try:
            rates: dict[str, float] = {}
            for label, url, tls in (("HTTP", f"http://127.0.0.1:{port}", False),
                                    ("HTTPS", f"https://127.0.0.1:{secure}", ctx)):
                conn = aiohttp.TCPConnector(limit=args.concurrency + 8, ssl=tls)
                async with aiohttp.ClientSession(connector=conn) as s:
                    await wait_ready(s, url)
                    ns = f"tls-{label.lower()}"
                    await s.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": ns}})
                    base = f"{url}/api/v1/namespaces/{ns}/pods"

                    async def create(i: int, s: aiohttp.ClientSession = s, base: str = base) -> None:
                        async with s.post(base, data=orjson.dumps(pod(f"p-{i:06d}")),
                                          headers={"Content-Type": "application/json"}) as r:
                            if r.status != 201:
                                raise SystemExit(f"create failed: {r.status} {await r.text()}")
                            await r.read()

                    async def get(i: int, s: aiohttp.ClientSession = s, base: str = base) -> None:
                        async with s.get(f"{base}/p-{i % args.count:06d}") as r:
                            await r.read()

                    rate, lat = await run_concurrent(args.count, args.concurrency, create)
                    rates[f"create {label}"] = rate
                    report(f"{label} pod creates/s (kept-alive)", f"{rate:,.0f}  p50 {pct(lat, .5):.1f} ms  "
                           f"p99 {pct(lat, .99):.1f} ms")
                    rate, lat = await run_concurrent(args.count, args.concurrency, get)
                    rates[f"get {label}"] = rate
                    report(f"{label} pod GETs/s (kept-alive)", f"{rate:,.0f}  p50 {pct(lat, .5):.1f} ms  "
                           f"p99 {pct(lat, .99):.1f} ms")

                async def fresh(i: int, url: str = url, tls: ssl.SSLContext | bool = tls) -> None:
                    conn = aiohttp.TCPConnector(force_close=True, ssl=tls)
                    async with aiohttp.ClientSession(connector=conn) as s, s.get(f"{url}/healthz") as r:
                        await r.read()

                t = time.perf_counter()
                rate, lat = await run_concurrent(args.connections, 4, fresh)
                rates[f"fresh {label}"] = rate
                report(f"{label} /healthz, a new connection each", f"{rate:,.0f}/s  p50 {pct(lat, .5):.1f} ms  "
                       f"p99 {pct(lat, .99):.1f} ms ({time.perf_counter() - t:.1f} s)")
            report("ratio HTTPS/HTTP creates", f"{rates['create HTTPS'] / rates['create HTTP']:.2f}x")
            report("ratio HTTPS/HTTP GETs", f"{rates['get HTTPS'] / rates['get HTTP']:.2f}x")
            report("ratio HTTPS/HTTP new connections", f"{rates['fresh HTTPS'] / rates['fresh HTTP']:.2f}x")
            report("ratio HTTPS creates/raw etcd", f"{rates['create HTTPS'] / etcd_rate:.2f}x")
        finally:
            stop(proc)
    report.summary()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--count", type=int, default=3000, help="creates and GETs per port")
    p.add_argument("--connections", type=int, default=300, help="new connections per port")
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
