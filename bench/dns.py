"""Cluster DNS lookup latency: sequential UDP queries against an in-process server.

Seeds the Services and Endpoints caches with --services services (every fifth headless, with
three endpoints), serves them on 127.0.0.1 from an event loop in a background thread (the
same `listen` + `Handler` as `harness dns`), and sends --queries questions one at a time
from this thread over one UDP socket, a mix of A, headless A, SRV, PTR and NXDOMAIN names.
Prints p50/p99/max of the round trip, and of the resolver alone. Figures, not pass/fail.

    .venv/bin/python bench/dns.py [--services 100] [--queries 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from common import pct
from dnslib import QTYPE, RCODE, DNSRecord

from harness.dns.records import Resolver
from harness.dns.server import Handler, Metrics, listen
from harness.machinery.informer import Cache, index_by_namespace


def seed(count: int) -> tuple[Cache, Cache]:
    services, endpoints = Cache({"namespace": index_by_namespace}), Cache({"namespace": index_by_namespace})
    for i in range(count):
        ns, name = f"ns{i % 10}", f"svc{i}"
        headless = i % 5 == 0
        services.put({"metadata": {"name": name, "namespace": ns},
                      "spec": {"clusterIP": "None" if headless else f"10.96.{i // 250}.{i % 250 + 1}",
                               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        endpoints.put({"metadata": {"name": name, "namespace": ns},
                       "subsets": [{"addresses": [{"ip": f"10.244.{i % 250}.{j + 1}", "hostname": f"p{j}"}
                                                  for j in range(3)],
                                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]})
    return services, endpoints


def questions(count: int, services: int) -> list[tuple[str, str]]:
    out = []
    for n in range(count):
        i = n % services
        svc = f"svc{i}.ns{i % 10}.svc.cluster.local"
        kind = n % 5
        if kind == 0:
            out.append((svc, "A"))
        elif kind == 1:
            out.append((f"_http._tcp.{svc}", "SRV"))
        elif kind == 2 and i % 5:
            out.append((f"{i % 250 + 1}.{i // 250}.96.10.in-addr.arpa", "PTR"))
        elif kind == 3:
            out.append((f"missing{i}.ns{i % 10}.svc.cluster.local", "A"))
        else:
            out.append((f"svc{i - i % 5}.ns{(i - i % 5) % 10}.svc.cluster.local", "A"))  # headless
    return out


def serve_in_thread(handler: Handler) -> tuple[int, Callable[[], None]]:
    """Serve on a free port from a loop in another thread; return the port and a function that stops it."""
    loop = asyncio.new_event_loop()
    started: list[Any] = []
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        started.append(await listen(handler, "127.0.0.1", 0))
        ready.set()
        try:
            await stop.wait()
        finally:
            await started[0].close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise SystemExit("the DNS server did not start")

    def halt() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()
    return started[0].port, halt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()

    services, endpoints = seed(args.services)
    resolver = Resolver(services, endpoints)
    handler = Handler(resolver, Metrics())
    asked = questions(args.queries, args.services)
    packets = [DNSRecord.question(name, qtype).pack() for name, qtype in asked]

    inline = []
    for name, qtype in asked:
        t0 = time.perf_counter()
        resolver.resolve(name, getattr(QTYPE, qtype))
        inline.append(time.perf_counter() - t0)

    port, halt = serve_in_thread(handler)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect(("127.0.0.1", port))
    for packet in packets[:50]:  # warm up
        sock.send(packet)
        sock.recv(4096)
    latencies, rcodes = [], {}
    for packet in packets:
        t0 = time.perf_counter()
        sock.send(packet)
        reply = sock.recv(4096)
        latencies.append(time.perf_counter() - t0)
        rcode = RCODE[DNSRecord.parse(reply).header.rcode]
        rcodes[rcode] = rcodes.get(rcode, 0) + 1
    sock.close()
    halt()

    print(f"{args.queries} sequential UDP queries against {args.services} services (in-process server): "
          f"p50 {pct(latencies, 0.5):.3f} ms, p99 {pct(latencies, 0.99):.3f} ms, max {max(latencies) * 1000:.3f} ms; "
          f"{len(latencies) / sum(latencies):.0f} queries/s; rcodes {rcodes}")
    print(f"resolver alone: p50 {pct(inline, 0.5):.3f} ms, p99 {pct(inline, 0.99):.3f} ms")


if __name__ == "__main__":
    main()
