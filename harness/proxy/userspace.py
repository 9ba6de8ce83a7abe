"""The userspace mode: kube-proxy as a TCP/UDP relay, for nodes where iptables cannot be used.

No iptables at all. For each service port with a cluster IP the proxier makes that IP a local
address of the node (`<clusterIP>/32` on `lo`, with the address label `lo:kp` so that it and
`--cleanup` recognise its own addresses and never touch anyone else's), and listens on
clusterIP:port; a NodePort also gets a listener on 0.0.0.0:nodePort. Pods reach a cluster IP
because their default gateway is the node, where a local address is delivered locally.

Each connection (TCP) or client session (UDP, closed after `udp_timeout` seconds without traffic)
goes to the next ready endpoint of the service port, round-robin, after upstream's
LoadBalancerRR; with sessionAffinity ClientIP a client sticks to its endpoint while it keeps
using it within the affinity timeout. A TCP connection to a service port without endpoints is
reset at once (SO_LINGER 0), as the iptables mode's REJECT refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.proxy.model import Endpoint, ServicePort
from harness.proxy.proxier import Metrics, ProxyError

log = logging.getLogger("harness.proxy")

LOOPBACK = "lo"
#: The address label marking the cluster IPs this proxier put on `lo` (a label must start with the link's name).
ADDRESS_LABEL = "lo:kp"
DEFAULT_UDP_TIMEOUT = 0.25  # upstream's --udp-timeout
DIAL_TIMEOUT = 5.0
PROTOCOLS = ("TCP", "UDP")


class NoEndpointsError(ProxyError):
    """A service port has no ready endpoints (upstream: ErrMissingEndpoints)."""


# -- the load balancer ----------------------------------------------------------------------------


@dataclass
class _Affinity:
    endpoint: Endpoint
    last_used: float


@dataclass
class _Balancer:
    endpoints: tuple[Endpoint, ...] = ()
    affinity_timeout: float = 0.0
    index: int = 0
    affinity: dict[str, _Affinity] = field(default_factory=dict)


class RoundRobin:
    """Upstream's LoadBalancerRR: endpoints of each service port in turn, with optional ClientIP affinity."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._services: dict[str, _Balancer] = {}

    def update(self, key: str, endpoints: Sequence[Endpoint], affinity_timeout: float = 0.0) -> bool:
        """Set a service port's endpoints; True if they changed (the rotation then restarts at the first one)."""
        state = self._services.setdefault(key, _Balancer())
        state.affinity_timeout = affinity_timeout
        if not affinity_timeout:
            state.affinity.clear()
        new = tuple(endpoints)
        if new == state.endpoints:
            return False
        state.endpoints, state.index = new, 0
        kept = set(new)
        state.affinity = {ip: a for ip, a in state.affinity.items() if a.endpoint in kept}
        return True

    def remove(self, key: str) -> None:
        self._services.pop(key, None)

    def keys(self) -> set[str]:
        return set(self._services)

    def endpoints(self, key: str) -> tuple[Endpoint, ...]:
        state = self._services.get(key)
        return state.endpoints if state else ()

    def next(self, key: str, client_ip: str) -> Endpoint:
        """The endpoint for a new connection from `client_ip`; NoEndpointsError if there is none."""
        state = self._services.get(key)
        if state is None or not state.endpoints:
            raise NoEndpointsError(f"no endpoints available for service {key!r}")
        now = self.clock()
        if state.affinity_timeout:
            sticky = state.affinity.get(client_ip)
            if sticky is not None and now - sticky.last_used < state.affinity_timeout:
                sticky.last_used = now
                return sticky.endpoint
        endpoint = state.endpoints[state.index % len(state.endpoints)]
        state.index = (state.index + 1) % len(state.endpoints)
        if state.affinity_timeout:
            state.affinity[client_ip] = _Affinity(endpoint, now)
        return endpoint

    def next_after(self, key: str, client_ip: str, failed: Endpoint) -> Endpoint:
        """Another endpoint after a dial to `failed` did not work (the client loses its affinity to it)."""
        state = self._services.get(key)
        if state is not None:
            sticky = state.affinity.get(client_ip)
            if sticky is not None and sticky.endpoint == failed:
                del state.affinity[client_ip]
        return self.next(key, client_ip)


# -- the node's local addresses --------------------------------------------------------------------


def _lo_index(ipr: Any) -> int:
    found = ipr.link_lookup(ifname=LOOPBACK)
    if not found:
        raise ProxyError(f"no {LOOPBACK} interface in this network namespace")
    return int(found[0])


def labelled_addresses(label: str = ADDRESS_LABEL) -> set[str]:
    """The IPv4 addresses on `lo` that carry `label`: the ones this proxier added."""
    with IPRoute() as ipr:
        index = _lo_index(ipr)
        return {str(a.get_attr("IFA_ADDRESS")) for a in ipr.addr("dump", family=socket.AF_INET)
                if a["index"] == index and a.get_attr("IFA_LABEL") == label}


def add_addresses(ips: Sequence[str], label: str = ADDRESS_LABEL) -> set[str]:
    """Add `ip/32` to `lo` with `label`; the ones now there (an address someone else had already is not ours)."""
    added: set[str] = set()
    with IPRoute() as ipr:
        index = _lo_index(ipr)
        for ip in ips:
            try:
                ipr.addr("add", index=index, address=ip, prefixlen=32, label=label)
                added.add(ip)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise ProxyError(f"cannot add {ip}/32 to {LOOPBACK}: {exc}") from exc
                log.warning("%s is already a local address not added by kube-proxy; using it as it is", ip)
    return added


def remove_addresses(ips: Sequence[str]) -> None:
    """Remove `ip/32` from `lo` (an address already gone is fine)."""
    with IPRoute() as ipr:
        index = _lo_index(ipr)
        for ip in ips:
            try:
                ipr.addr("del", index=index, address=ip, prefixlen=32)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                    raise ProxyError(f"cannot remove {ip}/32 from {LOOPBACK}: {exc}") from exc


# -- relaying ---------------------------------------------------------------------------------------


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a RST (SO_LINGER on, timeout 0), as a REJECT would refuse it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


class _TcpListener:
    """clusterIP:port (or 0.0.0.0:nodePort) relaying each connection to the service port's next endpoint."""

    def __init__(self, balancer: RoundRobin, key: str) -> None:
        self.balancer = balancer
        self.key = key
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True, backlog=128)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._relay(reader, writer))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)

    async def _dial(self, client_ip: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            endpoint = self.balancer.next(self.key, client_ip)
        except NoEndpointsError:
            return None
        for _ in range(max(1, len(self.balancer.endpoints(self.key)))):
            try:
                async with asyncio.timeout(DIAL_TIMEOUT):
                    return await asyncio.open_connection(endpoint.ip, endpoint.port)
            except (OSError, TimeoutError) as exc:
                log.warning("failed to connect to %s for %s: %s", endpoint, self.key, exc)
                try:
                    endpoint = self.balancer.next_after(self.key, client_ip, endpoint)
                except NoEndpointsError:
                    return None
        return None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        backend = await self._dial(str(peer[0]))
        if backend is None:
            _reset(writer)
            return
        up_reader, up_writer = backend
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)


class _UdpBackend(asyncio.DatagramProtocol):
    """One client's session: a socket connected to its endpoint, replies sent back from the service address."""

    def __init__(self, listener: _UdpListener, client: tuple[str, int]) -> None:
        self.listener = listener
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last_used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last_used = time.monotonic()
        if self.listener.transport is not None:
            self.listener.transport.sendto(data, self.client)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _UdpListener(asyncio.DatagramProtocol):
    """clusterIP:port for UDP: per-client sessions to the service port's endpoints, closed when idle."""

    def __init__(self, balancer: RoundRobin, key: str, idle_timeout: float) -> None:
        self.balancer = balancer
        self.key = key
        self.idle_timeout = idle_timeout
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple[str, int], _UdpBackend] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._reaper = asyncio.create_task(self._reap())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        session = self.sessions.get(client)
        if session is not None and session.transport is not None:
            session.last_used = time.monotonic()
            session.transport.sendto(data)
            return
        if client in self._pending:  # the session is being opened
            self._pending[client].append(data)
            return
        try:
            endpoint = self.balancer.next(self.key, client[0])
        except NoEndpointsError:
            return  # dropped, as upstream does
        self._pending[client] = [data]
        asyncio.get_running_loop().create_task(self._open(client, endpoint))

    async def _open(self, client: tuple[str, int], endpoint: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, session = await loop.create_datagram_endpoint(lambda: _UdpBackend(self, client),
                                                             remote_addr=(endpoint.ip, endpoint.port))
        except OSError as exc:
            log.warning("failed to open a UDP session to %s for %s: %s", endpoint, self.key, exc)
            self._pending.pop(client, None)
            return
        self.sessions[client] = session
        for data in self._pending.pop(client, []):
            assert session.transport is not None
            session.transport.sendto(data)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.idle_timeout / 2))
            now = time.monotonic()
            for client, session in list(self.sessions.items()):
                if now - session.last_used >= self.idle_timeout:
                    session.close()
                    del self.sessions[client]

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        if self.transport is not None:
            self.transport.close()


# -- the proxier ------------------------------------------------------------------------------------


Address = tuple[str, str, int]  # (protocol, host, port) of one listener


def balancer_key(sp: ServicePort) -> str:
    return f"{sp.key}/{sp.protocol}"


def listeners_of(ports: Sequence[ServicePort]) -> dict[Address, str]:
    """Where to listen for each service port (cluster IP, and 0.0.0.0 for a node port), to its balancer key."""
    wanted: dict[Address, str] = {}
    for sp in ports:
        if sp.protocol not in PROTOCOLS:
            continue
        wanted[(sp.protocol, sp.cluster_ip, sp.port)] = balancer_key(sp)
        if sp.node_port:
            wanted[(sp.protocol, "0.0.0.0", sp.node_port)] = balancer_key(sp)
    return wanted


class UserspaceProxier:
    """The userspace mode; see the module docstring."""

    def __init__(self, *, metrics: Metrics | None = None, udp_timeout: float = DEFAULT_UDP_TIMEOUT,
                 label: str = ADDRESS_LABEL, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics or Metrics()
        self.udp_timeout = udp_timeout
        self.label = label
        self.balancer = RoundRobin(clock)
        self._listeners: dict[Address, _TcpListener | _UdpListener] = {}
        self._addresses: set[str] | None = None  # ours on lo (None: not read yet)
        self._warned: set[str] = set()

    async def setup(self) -> None:
        self._addresses = await asyncio.to_thread(labelled_addresses, self.label)
        log.info("userspace proxier: %d cluster IPs already on %s", len(self._addresses), LOOPBACK)

    async def sync(self, ports: Sequence[ServicePort], *, full: bool) -> bool:
        changed = False
        for sp in ports:
            if sp.protocol not in PROTOCOLS and sp.key not in self._warned:
                self._warned.add(sp.key)
                log.warning("%s: protocol %s is not supported by the userspace proxier", sp.key, sp.protocol)
        served = [sp for sp in ports if sp.protocol in PROTOCOLS]
        # the endpoints first: a listener opened below must find them
        for sp in served:
            changed |= self.balancer.update(balancer_key(sp), sp.endpoints, sp.affinity_timeout)
        wanted_ips = {sp.cluster_ip for sp in served}
        if full or self._addresses is None:
            self._addresses = await asyncio.to_thread(labelled_addresses, self.label)
        missing = sorted(wanted_ips - self._addresses)
        if missing:
            self._addresses |= await asyncio.to_thread(add_addresses, missing, self.label)
            changed = True
        wanted = listeners_of(served)
        for address in [a for a in self._listeners if a not in wanted]:
            await self._listeners.pop(address).close()
            changed = True
        for address, key in wanted.items():
            current = self._listeners.get(address)
            if current is not None:
                current.key = key
                continue
            changed |= await self._listen(address, key)
        for key in self.balancer.keys() - set(wanted.values()):
            self.balancer.remove(key)
        stale = sorted(self._addresses - wanted_ips)
        if stale:
            await asyncio.to_thread(remove_addresses, stale)
            self._addresses -= set(stale)
            changed = True
        return changed

    async def _listen(self, address: Address, key: str) -> bool:
        protocol, host, port = address
        listener: _TcpListener | _UdpListener = (_TcpListener(self.balancer, key) if protocol == "TCP"
                                                 else _UdpListener(self.balancer, key, self.udp_timeout))
        try:
            await listener.start(host, port)
        except OSError as exc:
            log.error("%s: cannot listen on %s %s:%d: %s", key, protocol, host, port, exc)
            return False
        log.info("%s: listening on %s %s:%d", key, protocol, host, port)
        self._listeners[address] = listener
        return True

    def listening(self) -> set[Address]:
        return set(self._listeners)

    async def close(self) -> None:
        """Close every listener and relayed connection (the addresses stay, as rules stay in iptables mode)."""
        for listener in self._listeners.values():
            await listener.close()
        self._listeners.clear()

    async def cleanup(self) -> None:
        await self.close()
        ours = await asyncio.to_thread(labelled_addresses, self.label)
        if ours:
            await asyncio.to_thread(remove_addresses, sorted(ours))
            log.info("removed %d cluster IPs from %s", len(ours), LOOPBACK)
        self._addresses = set()
