"""kube-proxy's userspace mode: the round-robin/affinity load balancer, and relaying on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest

from harness.proxy.model import Endpoint, ServicePort
from harness.proxy.userspace import NoEndpointsError, RoundRobin, _TcpListener, _UdpListener, listeners_of

A, B, C = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_in_turn() -> None:
    rr = RoundRobin()
    assert rr.update("ns/s:p/TCP", [A, B, C])
    picks = [rr.next("ns/s:p/TCP", f"1.1.1.{i}") for i in range(9)]
    assert picks == [A, B, C] * 3


def test_no_endpoints() -> None:
    rr = RoundRobin()
    with pytest.raises(NoEndpointsError):
        rr.next("unknown", "1.1.1.1")
    rr.update("k", [])
    with pytest.raises(NoEndpointsError):
        rr.next("k", "1.1.1.1")


def test_update_unchanged_keeps_rotation_changed_restarts() -> None:
    rr = RoundRobin()
    rr.update("k", [A, B, C])
    assert rr.next("k", "c") == A
    assert not rr.update("k", [A, B, C])
    assert rr.next("k", "c") == B
    assert rr.update("k", [A, C])
    assert [rr.next("k", "c") for _ in range(3)] == [A, C, A]


def test_affinity_sticks_until_timeout() -> None:
    clock = Clock()
    rr = RoundRobin(clock)
    rr.update("k", [A, B, C], affinity_timeout=10)
    assert rr.next("k", "client1") == A
    assert rr.next("k", "client2") == B
    clock.now += 9
    assert rr.next("k", "client1") == A  # used again: the timeout restarts
    clock.now += 9
    assert rr.next("k", "client1") == A
    clock.now += 10
    assert rr.next("k", "client1") == C  # expired: the next in turn


def test_affinity_dropped_with_its_endpoint() -> None:
    rr = RoundRobin(Clock())
    rr.update("k", [A, B, C], affinity_timeout=100)
    assert rr.next("k", "client") == A
    rr.update("k", [B, C], affinity_timeout=100)
    assert rr.next("k", "client") == B
    assert rr.next("k", "client") == B


def test_next_after_failure_forgets_affinity() -> None:
    rr = RoundRobin(Clock())
    rr.update("k", [A, B], affinity_timeout=100)
    assert rr.next("k", "client") == A
    assert rr.next_after("k", "client", A) == B
    assert rr.next("k", "client") == B


def test_affinity_off_clears_it() -> None:
    rr = RoundRobin(Clock())
    rr.update("k", [A, B], affinity_timeout=100)
    assert rr.next("k", "client") == A
    rr.update("k", [A, B], affinity_timeout=0)
    assert rr.next("k", "client") == B


def test_listeners_of() -> None:
    ports = [ServicePort("ns", "web", "http", "TCP", "10.96.0.10", 80, node_port=30080),
             ServicePort("ns", "dns", "", "UDP", "10.96.0.11", 53),
             ServicePort("ns", "sctp", "", "SCTP", "10.96.0.12", 99)]
    assert listeners_of(ports) == {("TCP", "10.96.0.10", 80): "ns/web:http/TCP",
                                   ("TCP", "0.0.0.0", 30080): "ns/web:http/TCP",
                                   ("UDP", "10.96.0.11", 53): "ns/dns/UDP"}


# -- relaying on 127.0.0.1 ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _backends(n: int) -> AsyncIterator[list[Endpoint]]:
    servers = []
    for i in range(n):
        async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int = i) -> None:
            data = await r.read(100)
            w.write(f"{i}:".encode() + data)
            await w.drain()
            w.close()
        servers.append(await asyncio.start_server(answer, "127.0.0.1", 0))
    try:
        yield [Endpoint("127.0.0.1", s.sockets[0].getsockname()[1]) for s in servers]
    finally:
        for s in servers:
            s.close()


async def _ask(port: int, data: bytes = b"hi") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()


async def _with_listener(rr: RoundRobin, body: Callable[[int], Awaitable[None]]) -> None:
    listener = _TcpListener(rr, "k")
    await listener.start("127.0.0.1", 0)
    assert listener.server is not None
    try:
        await body(listener.server.sockets[0].getsockname()[1])
    finally:
        await listener.close()


async def test_tcp_relay_round_robin() -> None:
    rr = RoundRobin()
    async with _backends(3) as endpoints:
        rr.update("k", endpoints)

        async def body(port: int) -> None:
            answers = [await _ask(port) for _ in range(6)]
            assert answers == [b"0:hi", b"1:hi", b"2:hi"] * 2

        await _with_listener(rr, body)


async def test_tcp_without_endpoints_is_reset() -> None:
    rr = RoundRobin()
    rr.update("k", [])

    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 2)
        writer.close()

    await _with_listener(rr, body)


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.tag + data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def test_udp_sessions_round_robin_and_expire() -> None:
    loop = asyncio.get_running_loop()
    echoes = [await loop.create_datagram_endpoint(lambda t=t: _Echo(t), local_addr=("127.0.0.1", 0))  # type: ignore
              for t in (b"a:", b"b:")]
    rr = RoundRobin()
    rr.update("k", [Endpoint("127.0.0.1", t.get_extra_info("sockname")[1]) for t, _ in echoes])
    listener = _UdpListener(rr, "k", idle_timeout=0.2)
    await listener.start("127.0.0.1", 0)
    assert listener.transport is not None
    port = listener.transport.get_extra_info("sockname")[1]
    clients = [await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port)) for _ in range(2)]
    try:
        for transport, _ in clients:
            transport.sendto(b"x")
            transport.sendto(b"y")
        got = [[await asyncio.wait_for(p.got.get(), 2) for _ in range(2)] for _, p in clients]
        assert got == [[b"a:x", b"a:y"], [b"b:x", b"b:y"]]  # one session per client, in turn
        assert len(listener.sessions) == 2
        async with asyncio.timeout(3):
            while listener.sessions:  # noqa: ASYNC110 (polling the condition under a deadline)
                await asyncio.sleep(0.05)
    finally:
        for transport, _ in clients:
            transport.close()
        await listener.close()
        for transport, _ in echoes:
            transport.close()
