"""Cluster DNS as a process: Services and Endpoints informers, UDP and TCP listeners, health, metrics.

The wire format is dnslib's (parse and pack); the answers come from `harness.dns.records`.
Both transports listen on one port (53 by default). A UDP answer larger than the client's
limit (512 bytes, or the EDNS0 payload size it advertised, at most 4096) goes back with TC=1
and no records, so the client retries over TCP (RFC 1035 4.2.1, RFC 6891). Until both
informers have listed, in-zone questions get SERVFAIL rather than a wrong NXDOMAIN; /readyz
reports 503 until then. /healthz, /readyz and /metrics are the shared health server, on
CoreDNS's health port 8080 by default, with CoreDNS's metric names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from dnslib import CLASS, EDNS0, OPCODE, QTYPE, RCODE, DNSError, DNSHeader, DNSRecord
from prometheus_client import CollectorRegistry, Counter, Histogram

from harness.api import identity, registry
from harness.client import rest
from harness.client.rest import Client
from harness.dns.records import DEFAULT_DOMAIN, DEFAULT_REVERSE_CIDRS, Resolver
from harness.machinery import informer
from harness.machinery.health import component_registry, health_server
from harness.machinery.informer import IndexFunc, Informer, index_by_namespace
from harness.machinery.selfservice import ServiceRegistrar
from harness.machinery.service import run_until_stopped

log = logging.getLogger("harness.dns")

SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")

#: RFC 1035: the most a UDP answer may carry without EDNS0.
UDP_LIMIT = 512
#: QCLASS "*" (RFC 1035 3.2.5), which dnslib names "*".
QCLASS_ANY = 255
#: The largest EDNS0 payload we honour (CoreDNS's limit too).
EDNS_MAX = 4096
#: A TCP connection idle this long is closed (as CoreDNS's read timeout).
TCP_IDLE = 10.0
#: Query types that get their own `type` label; the rest are counted as "other", as CoreDNS.
COUNTED_TYPES = frozenset(("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "ANY", "HINFO", "NAPTR",
                           "OPT", "DS", "DNSKEY", "RRSIG", "NSEC", "NSEC3", "IXFR", "AXFR"))
DURATION_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
                    1.024, 2.048, 4.096, 8.192)


class DnsServerError(RuntimeError):
    """The server cannot start (e.g. its port is taken)."""


class Metrics:
    """CoreDNS's request metrics, in a registry of their own."""

    def __init__(self, server: str = "dns://:53", registry: CollectorRegistry | None = None) -> None:
        self.server = server
        self.registry = registry or component_registry()
        self.requests = Counter("coredns_dns_requests_total", "Counter of DNS requests made per zone, protocol "
                                "and family.", ["server", "zone", "proto", "family", "type"], registry=self.registry)
        self.responses = Counter("coredns_dns_responses_total", "Counter of response status codes.",
                                 ["server", "zone", "rcode"], registry=self.registry)
        self.duration = Histogram("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) "
                                  "each request took per zone.", ["server", "zone", "type"],
                                  buckets=DURATION_BUCKETS, registry=self.registry)


def _type_label(qtype: int) -> str:
    name = QTYPE.get(qtype, "other")
    return name if name in COUNTED_TYPES else "other"


class Handler:
    """One DNS message in, one out (bytes): the part shared by UDP, TCP and benchmarks."""

    def __init__(self, resolver: Resolver, metrics: Metrics, ready: Callable[[], bool] = lambda: True) -> None:
        self.resolver = resolver
        self.metrics = metrics
        self.ready = ready
        self.zone = resolver.apex

    def handle(self, data: bytes, *, proto: str, family: str = "1") -> bytes | None:
        """The answer to `data`, or None when it is not worth one (not even a DNS header)."""
        started = time.perf_counter()
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError, UnicodeDecodeError):
            return self._formerr(data)
        qtype = request.q.qtype if request.questions else 0
        type_label = _type_label(qtype)
        self.metrics.requests.labels(self.metrics.server, self.zone, proto, family, type_label).inc()
        reply = self._answer(request)
        wire = self._pack(request, reply, proto)
        rcode = RCODE.get(reply.header.rcode, str(reply.header.rcode))
        self.metrics.responses.labels(self.metrics.server, self.zone, rcode).inc()
        self.metrics.duration.labels(self.metrics.server, self.zone, type_label).observe(time.perf_counter() - started)
        return wire

    def _answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply(ra=0, aa=1)
        reply.ar = [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]
        if request.header.opcode != OPCODE.QUERY:
            reply.header.aa = 0
            reply.header.rcode = RCODE.NOTIMP
            return reply
        if len(request.questions) != 1 or request.header.qr:
            reply.header.aa = 0
            reply.header.rcode = RCODE.FORMERR
            return reply
        q = request.q
        if q.qclass not in (CLASS.IN, QCLASS_ANY):  # no CHAOS (version.bind) or other classes here
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply
        if not self.ready() and self.resolver.owns(str(q.qname)):
            reply.header.aa = 0
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        answer = self.resolver.resolve(str(q.qname), q.qtype)
        reply.header.rcode = answer.rcode
        reply.header.aa = int(answer.authoritative)
        reply.rr = answer.answer
        reply.auth = answer.authority
        reply.ar = answer.additional
        return reply

    def _pack(self, request: DNSRecord, reply: DNSRecord, proto: str) -> bytes:
        opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        limit = UDP_LIMIT
        if opt is not None:
            limit = max(UDP_LIMIT, min(int(opt.rclass), EDNS_MAX))
            reply.ar.append(EDNS0(udp_len=EDNS_MAX))
        wire: bytes = reply.pack()
        if proto == "udp" and len(wire) > limit:
            reply.header.tc = 1
            reply.rr, reply.auth = [], []
            reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
            wire = reply.pack()
        return wire

    def _formerr(self, data: bytes) -> bytes | None:
        if len(data) < 12:
            return None
        (ident,) = struct.unpack("!H", data[:2])
        self.metrics.responses.labels(self.metrics.server, self.zone, "FORMERR").inc()
        return bytes(DNSRecord(DNSHeader(id=ident, qr=1, rcode=RCODE.FORMERR)).pack())


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            wire = self.handler.handle(data, proto="udp")
        except Exception:
            log.exception("failed to answer a UDP query from %s", addr)
            return
        if wire is not None and self.transport is not None:
            self.transport.sendto(wire, addr)


@dataclass
class Listeners:
    """The bound UDP transport and TCP server; `port` is the actual port (useful with port 0)."""

    udp: asyncio.DatagramTransport
    tcp: asyncio.Server
    port: int
    _connections: set[asyncio.Task[Any]] = field(default_factory=set)

    async def close(self) -> None:
        self.udp.close()
        self.tcp.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self.tcp.wait_closed()


async def listen(handler: Handler, host: str, port: int) -> Listeners:
    """Bind UDP and TCP on host:port (port 0: one free port for both)."""
    loop = asyncio.get_running_loop()
    connections: set[asyncio.Task[Any]] = set()

    async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                wire = handler.handle(data, proto="tcp")
                if wire is None:
                    return
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except Exception:
            log.exception("failed to answer a TCP query")
        finally:
            if task is not None:
                connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    last: OSError | None = None
    for _ in range(20 if port == 0 else 1):
        try:
            transport, _proto = await loop.create_datagram_endpoint(lambda: _Udp(handler), local_addr=(host, port))
        except OSError as exc:
            raise DnsServerError(f"listen udp {host}:{port}: {exc.strerror or exc}") from exc
        bound = int(transport.get_extra_info("sockname")[1])
        try:
            tcp = await asyncio.start_server(serve_tcp, host, bound, reuse_address=True)
        except OSError as exc:  # with port 0 the UDP port may be taken for TCP: try another
            transport.close()
            last = exc
            continue
        return Listeners(transport, tcp, bound, connections)
    raise DnsServerError(f"listen tcp {host}:{port}: {last.strerror if last else 'no free port'}")


@dataclass
class Config:
    kubeconfig: str
    bind_address: str = "0.0.0.0"
    port: int = 53
    cluster_domain: str = DEFAULT_DOMAIN
    health_address: str = ""  # default: bind_address
    health_port: int = 8080
    reverse_cidrs: tuple[str, ...] = DEFAULT_REVERSE_CIDRS
    pods: bool = True
    #: Keep kube-system/kube-dns (this IP) and its Endpoints pointing at this server; "" = leave them alone.
    service_ip: str = ""
    advertise_address: str = ""


KUBE_DNS = ("k8s-app", "kube-dns")


def kube_dns_service(cluster_ip: str) -> dict[str, Any]:
    """kube-system/kube-dns as kubeadm makes it: DNS on 53/UDP and 53/TCP, metrics on 9153."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {KUBE_DNS[0]: KUBE_DNS[1], "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": cluster_ip, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                                         {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}


class DnsServer:
    """Every piece of one cluster DNS server, built from a Config; `run()` runs them."""

    def __init__(self, config: Config, client: Client | None = None) -> None:
        self.config = config
        self.client = client or Client.from_kubeconfig(config.kubeconfig, user_agent="harness-dns")
        indexers: dict[str, IndexFunc] = {"namespace": index_by_namespace}
        self.services = Informer(self.client, SERVICES, indexers=indexers)
        self.endpoints = Informer(self.client, ENDPOINTS, indexers=indexers)
        self.resolver = Resolver(self.services.cache, self.endpoints.cache, domain=config.cluster_domain,
                                 reverse_cidrs=config.reverse_cidrs, pods=config.pods)
        for inf in (self.services, self.endpoints):
            inf.add_handlers(on_add=self._changed, on_update=self._changed2, on_delete=self._changed)
        self.metrics = Metrics(f"dns://{config.bind_address}:{config.port}")
        self.handler = Handler(self.resolver, self.metrics, ready=lambda: self.ready)
        self.listeners: Listeners | None = None
        self.started = asyncio.Event()
        self.registrar: ServiceRegistrar | None = None
        if config.service_ip:
            self.registrar = ServiceRegistrar(
                self.client, kube_dns_service(config.service_ip), label=KUBE_DNS, lease_prefix="kube-dns",
                address=identity.advertised_address(config.advertise_address, config.bind_address),
                port=config.port, ports=[("dns", "UDP"), ("dns-tcp", "TCP")])

    def _changed(self, obj: dict[str, Any]) -> None:
        self.resolver.invalidate()

    def _changed2(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.resolver.invalidate()

    @property
    def ready(self) -> bool:
        return self.services.synced and self.endpoints.synced

    @property
    def port(self) -> int:
        """The DNS port actually bound (once `started` is set)."""
        return self.listeners.port if self.listeners else self.config.port

    async def run(self) -> None:
        """Serve until cancelled."""
        cfg = self.config
        informers = (self.services, self.endpoints)
        self.listeners = await listen(self.handler, cfg.bind_address, cfg.port)
        log.info("serving %s on %s:%d (udp, tcp)", self.resolver.apex, cfg.bind_address, self.listeners.port)
        try:
            async with health_server(host=cfg.health_address or cfg.bind_address, port=cfg.health_port,
                                     registry=self.metrics.registry, ready=lambda: self.ready):
                await informer.start_all(*informers)
                self.started.set()
                try:
                    await rest.wait_until_ready(self.client)
                    await informer.wait_all_synced(*informers)
                    log.info("caches synced: %d services, %d endpoints", len(self.services.cache),
                             len(self.endpoints.cache))
                    if self.registrar is not None:
                        await self.registrar.run()
                    await asyncio.Event().wait()
                finally:
                    if self.registrar is not None:
                        await asyncio.shield(self.registrar.stop())
                    await informer.stop_all(*informers)
        finally:
            await self.listeners.close()


async def serve(config: Config, *, stop: asyncio.Event) -> int:
    """Run a DnsServer until `stop` is set; 0 then, 1 if it could not start."""
    server = DnsServer(config)
    try:
        return await run_until_stopped(server.run(), stop, name="dns-server", log=log)
    finally:
        await server.client.close()
