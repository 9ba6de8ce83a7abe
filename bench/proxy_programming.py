"""Network programming latency of `harness proxy` (iptables mode): Endpoints update -> rules in place.

Starts a throwaway etcd and apiserver on loopback and a network namespace `hkt-bench-*`; the
proxy runs in this process with its iptables commands run inside that namespace (nsenter),
so the host's rules are never touched. After filling the cluster with --services services
(each with --endpoints endpoints), it updates one service's Endpoints --count times, each time
to a new address, and times from the update request until `iptables-save` in the namespace
shows the DNAT to the new address. Prints p50/p99/max, and the proxy's own sync durations.

    .venv/bin/python bench/proxy_programming.py [--count 50] [--services 100] [--min-sync-period 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import pct, start_apiserver, stop

from harness.api import registry
from harness.client import rest
from harness.client.rest import Client
from harness.proxy.server import Config, ProxyServer
from harness.storage.local import LocalEtcd

NAMESPACES = registry.by_path("", "v1", "namespaces")
SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
NS = "bench"


def service(name: str, index: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": f"10.111.{index // 250}.{index % 250 + 1}",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoints(name: str, ips: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"name": "http", "port": 8080}]}]}


async def nat_rules(netns: str) -> str:
    proc = await asyncio.create_subprocess_exec("nsenter", f"--net=/run/netns/{netns}", "iptables-save", "-t", "nat",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode()


async def bench(args: argparse.Namespace, kubeconfig: Path, netns: str) -> None:
    client = Client.from_kubeconfig(kubeconfig)
    await rest.wait_ready(client)
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for i in range(args.services):
        await client.create(SERVICES, service(f"s{i}", i), NS)
        ips = [f"10.{244 + k}.{i // 250}.{i % 250 + 1}" for k in range(args.endpoints)]
        await client.create(ENDPOINTS, endpoints(f"s{i}", ips), NS)
    server = ProxyServer(Config(kubeconfig=str(kubeconfig), min_sync_period=args.min_sync_period,
                                sync_period=args.sync_period, healthz_port=0, metrics_port=0,
                                runner_prefix=("nsenter", f"--net=/run/netns/{netns}"), proc_sys=None))
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.loop.synced.wait(), 60)
        reg = server.metrics.registry
        first = reg.get_sample_value("kubeproxy_sync_proxy_rules_duration_seconds_sum") or 0.0
        rules = reg.get_sample_value("kubeproxy_sync_proxy_rules_iptables_total", {"table": "nat"}) or 0.0
        print(f"initial sync of {args.services} services: {first * 1000:.0f} ms, {rules:.0f} nat rules")
        samples: list[float] = []
        current = await client.get(ENDPOINTS, "s0", NS)
        for n in range(args.count):
            ip = f"10.250.{n // 250}.{n % 250 + 1}"
            current["subsets"] = endpoints("s0", [ip, "10.249.0.1"])["subsets"]
            started = time.perf_counter()
            current = await client.update(ENDPOINTS, current)
            needle = f"--to-destination {ip}:8080"
            while needle not in await nat_rules(netns):
                if time.perf_counter() - started > 30:
                    raise SystemExit(f"rules for {ip} not in place after 30 s")
            samples.append(time.perf_counter() - started)
        syncs = reg.get_sample_value("kubeproxy_sync_proxy_rules_duration_seconds_count") or 0
        total = reg.get_sample_value("kubeproxy_sync_proxy_rules_duration_seconds_sum") or 0
        print(f"Endpoints update -> rules in place, {len(samples)} updates, {args.services} services, "
              f"--iptables-min-sync-period {args.min_sync_period}:")
        print(f"  p50 {pct(samples, 0.5):.1f} ms  p99 {pct(samples, 0.99):.1f} ms  "
              f"max {max(samples) * 1000:.1f} ms  mean {statistics.mean(samples) * 1000:.1f} ms")
        print(f"  proxy syncs: {syncs:.0f}, mean sync {total / max(syncs, 1) * 1000:.1f} ms, "
              f"iptables-restore runs {reg.get_sample_value('harness_proxy_iptables_restores_total') or 0:.0f}")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--endpoints", type=int, default=1)
    p.add_argument("--min-sync-period", type=float, default=0.0)
    p.add_argument("--sync-period", type=float, default=30.0)
    args = p.parse_args()
    netns = f"hkt-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, LocalEtcd() as etcd:
            proc, _, kc = start_apiserver(etcd.endpoint, Path(tmp))
            try:
                asyncio.run(bench(args, kc, netns))
            finally:
                stop(proc)
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)


if __name__ == "__main__":
    main()
