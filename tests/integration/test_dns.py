"""Cluster DNS against a real apiserver: Services and Endpoints made through the API, asked over UDP and TCP.

The DNS server runs in-process on 127.0.0.1 (a free port for both transports); the client is
dnslib's blocking `send`, run in a thread. One test runs `harness dns` as a process, as
supervisord would, and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from dnslib import QTYPE, RCODE, DNSRecord

from harness.client.rest import Client
from harness.dns.server import ENDPOINTS, SERVICES, Config, DnsServer
from harness.machinery import informer
from tests.integration.apiserver_fixtures import ApiServerProcess, free_port, wait_for


def cluster_ip() -> str:
    """An address in the service network that other tests are unlikely to ask for."""
    return f"10.111.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def query(port: int, name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    wire = await asyncio.to_thread(q.send, "127.0.0.1", port, tcp=tcp, timeout=3)
    reply = DNSRecord.parse(wire)
    assert reply.header.id == q.header.id
    return reply


def rdata(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


def service(name: str, ip: str, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": ip, "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def endpoints(name: str, addresses: list[dict[str, Any]], port: int = 8080, port_name: str = "http"
              ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": addresses, "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}]}


def spawn_cli(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`harness dns ARGS` through the CLI module (registered in harness.cli by the lead), output to `log`."""
    code = ("import argparse, sys; from harness.cli import dns; p = argparse.ArgumentParser(); "
            "dns.add_arguments(p); sys.exit(dns.run(p.parse_args(sys.argv[1:])))")
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT)


@pytest_asyncio.fixture
async def client(apiserver: ApiServerProcess) -> AsyncIterator[Client]:
    async with Client.for_url(apiserver.url) as c:
        yield c


@pytest_asyncio.fixture
async def dns(apiserver: ApiServerProcess, client: Client) -> AsyncIterator[DnsServer]:
    config = Config(kubeconfig=str(apiserver.kubeconfig), bind_address="127.0.0.1", port=0,
                    health_port=free_port())
    server = DnsServer(config, client=client)
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(10):
            await server.started.wait()
        await informer.wait_all_synced(server.services, server.endpoints, timeout=10)
        yield server
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_services_endpoints_and_misses_over_udp_and_tcp(dns: DnsServer, client: Client, ns: str) -> None:
    ip = cluster_ip()
    await client.create(SERVICES, service("web", ip), ns)
    headless = service("db", "None", [{"name": "pg", "port": 5432, "protocol": "TCP"}])
    await client.create(SERVICES, headless, ns)
    await client.create(ENDPOINTS, endpoints("db", [{"ip": "10.244.7.5", "hostname": "db-0"}, {"ip": "10.244.8.6"}],
                                             port=5433, port_name="pg"), ns)
    web = f"web.{ns}.svc.cluster.local"
    db = f"db.{ns}.svc.cluster.local"

    async def seen() -> bool:
        return rdata(await query(dns.port, db)) == ["10.244.7.5", "10.244.8.6"]
    await wait_for(seen, what="the headless service's endpoints in DNS")

    for tcp in (False, True):
        a = await query(dns.port, web, tcp=tcp)
        assert (a.header.rcode, a.header.aa, rdata(a)) == (RCODE.NOERROR, 1, [ip])
        assert a.rr[0].ttl == 5
        assert rdata(await query(dns.port, web.upper(), tcp=tcp)) == [ip]
        srv = await query(dns.port, f"_http._tcp.{web}", "SRV", tcp=tcp)
        assert rdata(srv) == [f"0 100 80 {web}."] and [str(r.rdata) for r in srv.ar] == [ip]
        hsrv = await query(dns.port, f"_pg._tcp.{db}", "SRV", tcp=tcp)
        assert sorted(rdata(hsrv)) == [f"0 50 5433 10-244-8-6.{db}.", f"0 50 5433 db-0.{db}."]
        assert rdata(await query(dns.port, f"db-0.{db}", tcp=tcp)) == ["10.244.7.5"]
        ptr = await query(dns.port, ".".join(reversed(ip.split("."))) + ".in-addr.arpa", "PTR", tcp=tcp)
        assert rdata(ptr) == [f"{web}."]
        assert rdata(await query(dns.port, "5.7.244.10.in-addr.arpa", "PTR", tcp=tcp)) == [f"db-0.{db}."]
        miss = await query(dns.port, f"nope.{ns}.svc.cluster.local", tcp=tcp)
        assert (miss.header.rcode, miss.rr, [QTYPE[r.rtype] for r in miss.auth]) == (RCODE.NXDOMAIN, [], ["SOA"])
        nodata = await query(dns.port, web, "AAAA", tcp=tcp)
        assert (nodata.header.rcode, nodata.rr) == (RCODE.NOERROR, [])
        outside = await query(dns.port, "example.com", tcp=tcp)
        assert (outside.header.rcode, outside.header.aa) == (RCODE.REFUSED, 0)
        assert (await query(dns.port, "1.1.168.192.in-addr.arpa", "PTR", tcp=tcp)).header.rcode == RCODE.REFUSED


async def test_changes_propagate(dns: DnsServer, client: Client, ns: str) -> None:
    await client.create(SERVICES, service("db", "None"), ns)
    db = f"db.{ns}.svc.cluster.local"

    async def answer_is(expected: list[str], rcode: int = RCODE.NOERROR) -> Any:
        async def check() -> bool:
            reply = await query(dns.port, db)
            return reply.header.rcode == rcode and sorted(rdata(reply)) == expected
        await wait_for(check, what=f"{db} to answer {expected}")

    await answer_is([])  # the service exists: NODATA
    await client.create(ENDPOINTS, endpoints("db", [{"ip": "10.244.9.1"}]), ns)
    await answer_is(["10.244.9.1"])
    current = await client.get(ENDPOINTS, "db", ns)
    current["subsets"][0]["addresses"].append({"ip": "10.244.9.2", "hostname": "db-1"})
    await client.update(ENDPOINTS, current)
    await answer_is(["10.244.9.1", "10.244.9.2"])
    assert rdata(await query(dns.port, "2.9.244.10.in-addr.arpa", "PTR")) == [f"db-1.{db}."]
    await client.delete(SERVICES, "db", ns)
    await answer_is([], RCODE.NXDOMAIN)


async def test_health_and_metrics(dns: DnsServer, ns: str) -> None:
    await query(dns.port, f"x.{ns}.svc.cluster.local")
    base = f"http://127.0.0.1:{dns.config.health_port}"
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
        async with http.get(base + "/metrics") as resp:
            text = await resp.text()
    assert 'coredns_dns_requests_total{family="1",proto="udp",server="dns://127.0.0.1:0",type="A",' in text
    assert 'coredns_dns_responses_total{rcode="NXDOMAIN"' in text
    assert "coredns_dns_request_duration_seconds_bucket" in text


async def test_cli_process_serves_and_stops_on_sigterm(apiserver: ApiServerProcess, client: Client, ns: str,
                                                       tmp_path: Path) -> None:
    ip = cluster_ip()
    await client.create(SERVICES, service("web", ip), ns)
    port, health = free_port(), free_port()
    log = tmp_path / "dns.log"
    proc = spawn_cli(["--kubeconfig", str(apiserver.kubeconfig), "--bind-address", "127.0.0.1", "--port", str(port),
                      "--health-port", str(health), "--service-ip", ""], log)
    try:
        async def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"harness dns exited with {proc.returncode}:\n{log.read_text()}")
            try:
                return rdata(await query(port, f"web.{ns}.svc.cluster.local", tcp=True)) == [ip]
            except OSError:
                return False
        await wait_for(answers, what="harness dns to answer")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
