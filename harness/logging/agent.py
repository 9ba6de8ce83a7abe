"""The node's log agent: tails component and container logs and forwards them to the aggregator, losing nothing.

Sources: component logs (`/var/log/harness/*.log`, written and rotated by supervisord) except the agent's own and
supervisord's, and container logs (`/var/log/pods/*/*/*.log`, CRI format, rotated by the runtime); what their lines
become is `harness.logging.sources`.

The pipeline is at-least-once end to end. A worker thread reads the files (`tail.Watcher`), appends records to the
file buffer and fsyncs it, and only then commits the tail positions; so a crash repeats lines, never skips them.
The sender (on the event loop) sends the oldest closed chunk as one PackedForward message with its chunk id,
waits for the aggregator's {"ack": id}, and only then deletes the chunk; on any failure it reconnects with
exponential backoff and sends the chunk again. When the buffer is full the reader stops reading (back-pressure).

A connection is TLS when the agent has a CA file (the aggregator's certificate must chain to it and name the
address dialled), and goes through the shared-key handshake (HELO, PING, PONG; `harness.logging.forward`) when it
has a shared key, as fluentd's out_forward with `transport tls` and `<security>`. A refused handshake (the
aggregator answers "shared_key mismatch") is one more failed attempt: logged as an error, counted, retried with
backoff; the chunk stays in the buffer until a connection with the right key is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from harness.logging import forward
from harness.logging.buffer import (
    DEFAULT_CHUNK_MAX_BYTES,
    DEFAULT_MAX_BYTES,
    BufferCorruptError,
    Chunk,
    FileBuffer,
    LogBufferError,
)
from harness.logging.sources import (
    COMPONENT,
    CONTAINER,
    ComponentSource,
    PodSource,
    Source,
    SourcePathError,
    chunk_tag,
    pod_log_source,
)
from harness.logging.tail import Position, PositionStore, TailError, Watcher
from harness.machinery.health import component_registry, health_server

log = logging.getLogger("harness.logging.agent")

DEFAULT_AGGREGATOR_PORT = forward.DEFAULT_PORT
DEFAULT_HTTP_PORT = 24221
DEFAULT_DATA_DIR = Path("/var/lib/harness/log-agent")
DEFAULT_COMPONENT_LOGS = "/var/log/harness/*.log"
DEFAULT_POD_LOGS = "/var/log/pods/*/*/*.log"
#: Component log files never forwarded: the agent's own (a loop) and supervisord's.
EXCLUDED_COMPONENT_LOGS = ("log-agent.log", "supervisord.log")
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
CONNECT_TIMEOUT = 10.0
#: Seconds for the aggregator's HELO and then its PONG.
HANDSHAKE_TIMEOUT = 10.0
#: Bytes of log files read per cycle at most (also bounded by the room left in the buffer).
READ_BUDGET = 4 * 1024 * 1024
#: How often the globs are expanded again to find new files.
SCAN_INTERVAL = 1.0
#: How long a stopping agent keeps sending what is buffered (the rest waits on disk for the next start).
DRAIN_TIMEOUT = 5.0
READ_SIZE = 64 * 1024
FORWARD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentError(RuntimeError):
    """The agent cannot start (its data directory is in use by another agent or not writable)."""


class SendError(Exception):
    """Forwarding a chunk failed in a way the protocol tells (connection closed, unreadable reply)."""


@dataclass
class AgentConfig:
    """Everything the agent is told (the `harness log-agent` flags)."""

    node: str
    data_dir: Path = DEFAULT_DATA_DIR
    aggregator_host: str = "127.0.0.1"
    aggregator_port: int = DEFAULT_AGGREGATOR_PORT
    component_logs: str = DEFAULT_COMPONENT_LOGS
    pod_logs: str = DEFAULT_POD_LOGS
    http_address: str = "0.0.0.0"
    http_port: int = DEFAULT_HTTP_PORT
    flush_interval: float = 1.0
    ack_timeout: float = 30.0
    buffer_max_bytes: int = DEFAULT_MAX_BYTES
    chunk_max_bytes: int = DEFAULT_CHUNK_MAX_BYTES
    from_head: bool = True
    compress: bool = False
    exclude: Sequence[str] = EXCLUDED_COMPONENT_LOGS
    ca_file: str = ""  # TLS, verifying the aggregator's certificate against this CA ("": plain TCP)
    tls_cert_file: str = ""  # a client certificate to present (for an aggregator that asks for one)
    tls_key_file: str = ""
    shared_key: str = ""  # the Forward handshake's shared key ("": no handshake)
    self_hostname: str = ""  # the handshake's self_hostname (default: the node name)

    @property
    def poll_interval(self) -> float:
        """How often files are looked at when idle: half the flush interval, within [0.25 s, 1 s]."""
        return min(max(self.flush_interval / 2, 0.25), 1.0)


# --------------------------------------------------------------------------------------------------- agent


@dataclass
class _Connection:
    """A connection to the aggregator and the unpacker of its replies."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    unpacker: Any
    keepalive: bool = True  # False: the aggregator's HELO said one message per connection

    def close(self) -> None:
        """Drop the connection (unacknowledged chunks stay in the buffer)."""
        with contextlib.suppress(Exception):
            self.writer.close()


class Agent:
    """The log agent: `run(stop)` until stop is set; `collect_once` is one reading cycle (tests call it)."""

    def __init__(self, config: AgentConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else component_registry()
        self._tls = _client_tls(config)
        self._lock_fd = _lock_data_dir(config.data_dir)
        try:
            self.buffer = FileBuffer(config.data_dir / "buffer", max_bytes=config.buffer_max_bytes,
                                     chunk_max_bytes=config.chunk_max_bytes, chunk_max_age=config.flush_interval)
        except LogBufferError:
            os.close(self._lock_fd)
            raise
        self.positions = PositionStore(config.data_dir / "positions.json")
        self.watchers: list[tuple[str, Watcher]] = []
        self.sources: dict[str, Source] = {}
        self._next_scan = 0.0
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._make_metrics()
        self._start_watchers(self.positions.load())

    def _make_metrics(self) -> None:
        """The agent's metrics, in its registry (served on /metrics)."""
        r = self.registry
        self.lines_read = Counter("harness_log_agent_lines_read", "Log lines read, by kind of source",
                                  ["kind"], registry=r)
        for kind in (COMPONENT, CONTAINER):
            self.lines_read.labels(kind)
        self.records_forwarded = Counter("harness_log_agent_records_forwarded",
                                         "Records acknowledged by the aggregator", registry=r)
        self.chunks_acked = Counter("harness_log_agent_chunks_acked", "Chunks acknowledged by the aggregator",
                                    registry=r)
        self.retries = Counter("harness_log_agent_retries", "Failed attempts to forward a chunk (each is retried)",
                               registry=r)
        self.handshake_failures = Counter("harness_log_agent_handshake_failures",
                                          "Connections whose shared-key handshake failed (e.g. the aggregator "
                                          "refused the key); each is a retry", registry=r)
        self.buffer_bytes = Gauge("harness_log_agent_buffer_bytes", "Bytes of records in the buffer, not yet acked",
                                  registry=r)
        self.buffer_bytes.set_function(lambda: self.buffer.total_bytes)
        self.files = Gauge("harness_log_agent_files", "Log files being followed", registry=r)
        self.files.set_function(lambda: sum(len(w.tailers) for _, w in self.watchers))
        self.forward_seconds = Histogram("harness_log_agent_forward_seconds",
                                         "Time from sending a chunk to its acknowledgement",
                                         buckets=FORWARD_BUCKETS, registry=r)

    def _start_watchers(self, positions: dict[str, Position]) -> None:
        """Watchers for both kinds of source, resuming at `positions`."""
        excluded = set(self.config.exclude)
        self.watchers = []
        if self.config.component_logs:
            self.watchers.append((COMPONENT, Watcher(self.config.component_logs, positions=positions,
                                                     exclude=lambda p: os.path.basename(p) in excluded,
                                                     from_head=self.config.from_head)))
        if self.config.pod_logs:
            self.watchers.append((CONTAINER, Watcher(self.config.pod_logs, positions=positions,
                                                     exclude=_not_pod_log, from_head=self.config.from_head)))
        self.sources = {}
        self._next_scan = 0.0

    # ------------------------------------------------------------------------------------------ reading

    def _source(self, path: str, kind: str) -> Source:
        """The record builder of a file, made when its first lines arrive."""
        source = self.sources.get(path)
        if source is None:
            source = self.sources[path] = ComponentSource(self.config.node, path) if kind == COMPONENT \
                else PodSource(self.config.node, path)
        return source

    def collect_once(self) -> bool:
        """Read what the files hold (within the buffer's room), buffer it durably, then commit the positions.
        Returns whether there is more to read right away."""
        now = time.monotonic()
        if now >= self._next_scan:
            for _, watcher in self.watchers:
                watcher.scan()
            self._next_scan = now + SCAN_INTERVAL
        more = False
        appended = 0
        space = self.buffer.space()
        if space > 0:
            budget = min(READ_BUDGET, max(space // 2, 1))
            read_time = time.time()
            for kind, watcher in self.watchers:
                results, gone, watcher_more = watcher.read(budget)
                more = more or watcher_more
                for path, lines in results:
                    self.lines_read.labels(kind).inc(len(lines))
                    appended += self._append(self._source(path, kind).records(lines, read_time, now))
                for path in gone:
                    source = self.sources.pop(path, None)
                    if source is not None:
                        appended += self._append(source.finish())
        for source in self.sources.values():
            appended += self._append(source.stale(now))
        if appended:
            self.buffer.sync()
        self._commit()
        self.buffer.close_if_due()
        return more and not self.buffer.full()

    def _append(self, records: Iterable[tuple[float, dict[str, Any]]]) -> int:
        """Put records in the buffer (not yet synced); how many."""
        n = 0
        for when, record in records:
            self.buffer.append(when, record)
            n += 1
        return n

    def current_positions(self) -> dict[str, Position]:
        """The positions to commit: each file's, held back before any message still being joined."""
        out: dict[str, Position] = {}
        for _, watcher in self.watchers:
            for path, pos in watcher.positions().items():
                source = self.sources.get(path)
                hold = source.hold(pos.ident) if source is not None else None
                out[path] = replace(pos, offset=hold) if hold is not None and hold < pos.offset else pos
        return out

    def _commit(self) -> None:
        """Save the positions (the lines before them are in the buffer, synced)."""
        try:
            self.positions.save(self.current_positions())
        except TailError as exc:
            log.error("%s", exc)

    def rewind(self) -> None:
        """Forget what was read since the last commit and read it again (after the buffer failed to take it)."""
        for _, watcher in self.watchers:
            watcher.close()
        self._start_watchers(self.positions.load())

    def flush(self) -> None:
        """At shutdown: read what is there (committing the positions) and close the current chunk so it can be
        sent. If the buffer fails, the positions stay at the last commit: the next start reads the rest again."""
        try:
            self.collect_once()
            self.buffer.close_current()
        except LogBufferError as exc:
            log.error("%s", exc)

    # ------------------------------------------------------------------------------------------ sending

    async def _connect(self) -> _Connection:
        """A new connection to the aggregator, TLS with a CA file (CONNECT_TIMEOUT at most), through the handshake
        with a shared key (HANDSHAKE_TIMEOUT at most)."""
        c = self.config
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                c.aggregator_host, c.aggregator_port, ssl=self._tls,
                server_hostname=c.aggregator_host if self._tls is not None else None)
        conn = _Connection(reader, writer, forward.new_unpacker())
        if c.shared_key:
            try:
                await self._handshake(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    async def _handshake(self, conn: _Connection) -> None:
        """Answer the aggregator's HELO with a PING proving the key, and check its PONG proving it in turn;
        HandshakeError if it refuses or cannot prove it, SendError if it does not answer."""
        c = self.config
        hostname = c.self_hostname or c.node
        server = forward.parse_helo(await _next_reply(conn, "HELO"))
        salt = forward.new_salt()
        conn.writer.write(forward.pack(forward.ping(server, hostname=hostname, shared_key=c.shared_key, salt=salt)))
        await conn.writer.drain()
        forward.check_pong(await _next_reply(conn, "PONG"), hostname=hostname, salt=salt, nonce=server.nonce,
                           shared_key=c.shared_key)
        conn.keepalive = server.keepalive

    async def forward_chunk(self, conn: _Connection, chunk: Chunk, entries: list[forward.Entry]) -> None:
        """Send one chunk and wait for its acknowledgement; then delete it from the buffer."""
        payload = forward.packed_forward(chunk_tag(entries), entries, chunk.id, compress=self.config.compress)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.ack_timeout):
                conn.writer.write(payload)
                await conn.writer.drain()
                while True:
                    data = await conn.reader.read(READ_SIZE)
                    if not data:
                        raise SendError("the aggregator closed the connection before acknowledging")
                    conn.unpacker.feed(data)
                    try:
                        if _acked(conn.unpacker, chunk.id):
                            break
                    except ValueError as exc:
                        raise SendError(f"unreadable reply from the aggregator: {exc}") from exc
        except TimeoutError:
            raise SendError(f"no acknowledgement within {self.config.ack_timeout:g}s") from None
        self.forward_seconds.observe(time.monotonic() - started)
        self.buffer.ack(chunk)
        self.chunks_acked.inc()
        self.records_forwarded.inc(len(entries))

    async def _send_loop(self) -> None:
        """Send queued chunks oldest first, forever (until closing and the queue is empty), retrying failures."""
        assert self._wake is not None
        backoff = BACKOFF_MIN
        conn: _Connection | None = None
        target = f"{self.config.aggregator_host}:{self.config.aggregator_port}"
        try:
            while True:
                chunk = self.buffer.oldest()
                if chunk is None:
                    if self._closing:
                        return
                    self._wake.clear()
                    if self.buffer.oldest() is None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), 1.0)
                    continue
                try:
                    entries = await asyncio.to_thread(self.buffer.read_entries, chunk)
                except BufferCorruptError as exc:
                    log.error("setting aside a chunk that cannot be read: %s", exc)
                    self.buffer.quarantine(chunk)
                    continue
                try:
                    if conn is None:
                        conn = await self._connect()
                        log.info("connected to the aggregator at %s", target)
                    await self.forward_chunk(conn, chunk, entries)
                    backoff = BACKOFF_MIN
                    if not conn.keepalive:
                        conn.close()
                        conn = None
                except (OSError, TimeoutError, SendError, forward.HandshakeError) as exc:
                    self.retries.inc()
                    if isinstance(exc, forward.HandshakeError):
                        self.handshake_failures.inc()
                        hint = " (this agent's --shared-key-file is not the aggregator's key)" \
                            if forward.SHARED_KEY_MISMATCH in exc.reason else ""
                        log.error("the shared-key handshake with the aggregator at %s failed: %s%s; keeping %d "
                                  "buffered chunks, retrying in %gs", target, exc.reason, hint,
                                  len(self.buffer.queued()), backoff)
                    else:
                        log.warning("forwarding to %s failed: %s; retrying in %gs", target,
                                    str(exc) or type(exc).__name__, backoff)
                    if conn is not None:
                        conn.close()
                        conn = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            if conn is not None:
                conn.close()

    # ------------------------------------------------------------------------------------------ running

    async def _collect_loop(self, stop: asyncio.Event) -> None:
        """Read cycles until `stop`: right away while there is more to read, else every poll interval."""
        while not stop.is_set():
            try:
                more = await asyncio.to_thread(self.collect_once)
            except LogBufferError as exc:
                log.error("%s; reading again from the last committed positions", exc)
                await asyncio.to_thread(self.rewind)
                more = False
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.poll_interval)

    async def run(self, stop: asyncio.Event) -> int:
        """Serve /healthz and /metrics, read and forward until `stop`; then flush and send for a while. 0 when
        stopped, 1 if the HTTP port could not be served."""
        loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()

        def on_queued() -> None:
            """Wake the sender (called from the reading thread when a chunk is queued)."""
            loop.call_soon_threadsafe(wake.set)

        self.buffer.on_queued = on_queued
        c = self.config
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(health_server(host=c.http_address, port=c.http_port,
                                                              registry=self.registry))
            except OSError as exc:
                log.error("cannot serve HTTP on %s:%d: %s", c.http_address, c.http_port, exc)
                self.close()
                return 1
            log.info("forwarding %s and %s to %s:%d (%s, %s; buffer %s)", c.component_logs or "-",
                     c.pod_logs or "-", c.aggregator_host, c.aggregator_port,
                     f"TLS verified against {c.ca_file}" if c.ca_file else "plain TCP",
                     f"shared key as {c.self_hostname or c.node}" if c.shared_key else "no shared key",
                     c.data_dir / "buffer")
            sender = asyncio.create_task(self._send_loop(), name="log-agent-sender")
            try:
                await self._collect_loop(stop)
                await asyncio.to_thread(self.flush)
                self._closing = True
                wake.set()
                await asyncio.wait({sender}, timeout=DRAIN_TIMEOUT)
                left = self.buffer.queued()
                if left:
                    log.info("stopping with %d chunks (%d bytes) buffered for the next start", len(left),
                             sum(ch.size for ch in left))
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
                self.close()
        return 0

    def close(self) -> None:
        """Close files and the buffer, and let go of the data directory."""
        for _, watcher in self.watchers:
            watcher.close()
        with contextlib.suppress(LogBufferError):
            self.buffer.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


async def _next_reply(conn: _Connection, what: str) -> Any:
    """The aggregator's next message during the handshake; SendError if it closes, is silent or is not msgpack."""
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            while True:
                for reply in conn.unpacker:
                    return reply
                data = await conn.reader.read(READ_SIZE)
                if not data:
                    raise SendError(f"the aggregator closed the connection before its {what}")
                conn.unpacker.feed(data)
    except TimeoutError:
        raise SendError(f"no {what} from the aggregator within {HANDSHAKE_TIMEOUT:g}s (does it have a shared key?)"
                        ) from None
    except ValueError as exc:
        raise SendError(f"unreadable {what} from the aggregator: {exc}") from exc


def _acked(unpacker: Any, chunk_id: str) -> bool:
    """Whether the replies the unpacker holds acknowledge the chunk; HandshakeError if the aggregator greets with a
    HELO (it wants the shared-key handshake and this agent has no key)."""
    for reply in unpacker:
        if isinstance(reply, dict) and str(reply.get("ack")) == chunk_id:
            return True
        if isinstance(reply, (list, tuple)) and reply and reply[0] == forward.HELO:
            raise forward.HandshakeError("the aggregator asks for the shared-key handshake and this agent has no "
                                         "shared key (--shared-key-file)")
    return False


def _client_tls(config: AgentConfig) -> ssl.SSLContext | None:
    """The connection's TLS: None without a CA file; else verifying the aggregator against it, presenting a client
    certificate when given. AgentError if a file cannot be used."""
    if not config.ca_file:
        if config.tls_cert_file or config.tls_key_file:
            raise AgentError("a client certificate needs TLS: give the CA file too")
        return None
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if config.tls_cert_file or config.tls_key_file:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file or None)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (config.ca_file, config.tls_cert_file, config.tls_key_file) if f)
        raise AgentError(f"cannot use the TLS files {files}: {exc}") from exc
    return context


def _not_pod_log(path: str) -> bool:
    """Whether a path the pod glob matched is not laid out as a container log."""
    try:
        pod_log_source(path)
    except SourcePathError:
        return True
    return False


def _lock_data_dir(data_dir: Path) -> int:
    """Create the data directory and lock it for this agent (a second agent there would duplicate everything)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise AgentError(f"cannot use data directory {data_dir}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise AgentError(f"data directory {data_dir} is in use by another log agent") from exc
    return fd


__all__ = ["DEFAULT_COMPONENT_LOGS", "DEFAULT_DATA_DIR", "DEFAULT_HTTP_PORT", "DEFAULT_POD_LOGS",
           "EXCLUDED_COMPONENT_LOGS", "Agent", "AgentConfig", "AgentError", "SendError"]
