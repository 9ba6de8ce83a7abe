"""The log aggregator: receives records over the Fluentd Forward protocol, stores them, answers queries.

Two listeners:

- Forward (TCP, port 24224 by default; TLS with a certificate, as fluentd's `<transport tls>`): with a shared key
  (fluentd's `<security>`) a connection first goes through the handshake (`forward.helo`, `check_ping`, `pong`): a
  client that cannot prove the key gets PONG false with fluentd's reason ("shared_key mismatch"), is counted in
  harness_log_aggregator_handshake_failures_total and is closed before any event is read. Then every message, in
  any mode, is decoded (`harness.logging.forward`), stored durably (`LogStore.append_async`), and then, if it
  carries a chunk id, acknowledged with {"ack": chunk}. A stream that is not Forward protocol is logged and its
  connection closed (the stream cannot be resynchronised); a store failure closes the connection unacknowledged,
  so the sender retries.
- HTTP (port 24220 by default, as fluentd's monitor agent; HTTPS with the Forward port's certificate, without
  client certificates): /healthz, /livez, /readyz, /metrics, and
  `GET /query?node=&component=&namespace=&pod=&container=&since=&until=&grep=&limit=&follow=` answering
  application/x-ndjson, one stored record per line, sorted by time (`limit`: the newest N). `since`/`until` take a
  duration ago ("30s", "10m", "1h30m", "2d"), an RFC 3339 time or epoch seconds; with follow=1 the stored matches
  come first, then new ones as they arrive, until the client goes away. A bad parameter is a 400 naming it.

Day directories older than the retention are removed at start and every hour. `serve(config, stop=...)` is the
component's entry point; tests run an `Aggregator` in-process (ports 0) and read `port`/`http_port` once `started`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import re
import ssl
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from harness.logging import forward
from harness.logging.logstore import KINDS, Filter, LogStore, LogStoreError, Subscription, dumps
from harness.machinery.health import component_registry
from harness.machinery.service import run_until_stopped
from harness.util import certreload, rfc3339

log = logging.getLogger("harness.logging.aggregator")

DEFAULT_HTTP_PORT = 24220
DEFAULT_DATA_DIR = Path("/var/lib/harness/logs")
#: How often day directories past the retention are removed.
EXPIRE_INTERVAL = 3600.0
#: Bytes read from a connection at a time.
READ_SIZE = 256 * 1024
#: A follow response checks this often (seconds) whether its client is still there.
FOLLOW_CHECK = 1.0
#: Seconds a new connection has for its TLS handshake, and then for its PING.
HANDSHAKE_TIMEOUT = 10.0
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
QUERY_PARAMS = frozenset(("node", "component", "namespace", "pod", "container", "since", "until", "grep", "limit",
                          "follow"))

_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EPOCH = re.compile(r"^\d+(?:\.\d+)?$")


class AggregatorError(RuntimeError):
    """The aggregator cannot start (e.g. a port is taken or the data directory is not writable)."""


class QueryParameterError(ValueError):
    """A /query parameter that cannot be used; the message says which and why."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"bad parameter {name}: {problem}")
        self.name = name


# --------------------------------------------------------------------------------------------------- queries


def parse_time(value: str, now: float | None = None) -> float:
    """An epoch time from a duration ago ("90s", "10m", "1h30m", "2d", "500ms"), an RFC 3339 time
    ("2026-11-26T02:40:01Z"; no zone means UTC) or epoch seconds ("1795142401.5"); ValueError otherwise."""
    text = value.strip()
    now = time.time() if now is None else now
    if _DURATION.match(text):
        return now - sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if _EPOCH.match(text):
        return float(text)
    try:
        return rfc3339.parse_time(text).timestamp()
    except ValueError:
        raise ValueError(f"{value!r} is not a duration like 10m, 1h or 30s, an RFC 3339 time or epoch seconds"
                         ) from None


@dataclass(frozen=True)
class Query:
    """A parsed /query request."""

    filter: Filter
    limit: int | None = None
    follow: bool = False


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("", "0", "false", "no"):
        return False
    raise QueryParameterError(name, f"{value!r} is not 0 or 1")


def parse_query(params: dict[str, str], now: float | None = None) -> Query:
    """A /query request's parameters as a Query; QueryParameterError names the first bad one."""
    for name in params:
        if name not in QUERY_PARAMS:
            raise QueryParameterError(name, f"unknown (known: {', '.join(sorted(QUERY_PARAMS))})")
    fields = {k: params.get(k) or None for k in ("node", "component", "namespace", "pod", "container")}
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        raw = params.get(name, "")
        try:
            times[name] = parse_time(raw, now) if raw else None
        except ValueError as exc:
            raise QueryParameterError(name, str(exc)) from None
    grep = None
    if params.get("grep"):
        try:
            grep = re.compile(params["grep"])
        except re.error as exc:
            raise QueryParameterError("grep", f"{params['grep']!r} is not a regular expression: {exc}") from None
    limit = None
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise QueryParameterError("limit", f"{params['limit']!r} is not a number") from None
        if limit < 0:
            raise QueryParameterError("limit", "must not be negative")
    return Query(Filter(**fields, since=times["since"], until=times["until"], grep=grep), limit,
                 _flag("follow", params.get("follow", "")))


# --------------------------------------------------------------------------------------------------- metrics


class Metrics:
    """The aggregator's metrics, in a component registry (process and platform metrics too)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or component_registry()
        self.records = Counter("harness_log_aggregator_records_total", "Log records stored, by kind of source.",
                               ["kind"], registry=self.registry)
        for kind in KINDS:
            self.records.labels(kind)
        self.bytes = Counter("harness_log_aggregator_bytes_total", "Bytes of JSON lines stored.",
                             registry=self.registry)
        self.acks = Counter("harness_log_aggregator_acks_total", "Chunks acknowledged to senders.",
                            registry=self.registry)
        self.connections = Gauge("harness_log_aggregator_connections", "Open Forward connections.",
                                 registry=self.registry)
        self.protocol_errors = Counter("harness_log_aggregator_protocol_errors_total",
                                       "Connections closed because they did not speak the Forward protocol.",
                                       registry=self.registry)
        self.handshake_failures = Counter("harness_log_aggregator_handshake_failures_total",
                                          "Connections refused in the shared-key handshake, by reason (fluentd's, "
                                          "spaces as underscores; timeout: no PING in time).", ["reason"],
                                          registry=self.registry)
        for reason in (forward.SHARED_KEY_MISMATCH, forward.INVALID_PING, "timeout"):
            self.handshake_failures.labels(_label(reason))
        self.store_errors = Counter("harness_log_aggregator_store_errors_total",
                                    "Batches that could not be stored (their connection is closed unacknowledged).",
                                    registry=self.registry)
        self.store_seconds = Histogram("harness_log_aggregator_store_seconds",
                                       "Time to store one message's records durably (write and fsync).",
                                       buckets=STORE_BUCKETS, registry=self.registry)
        self.followers = Gauge("harness_log_aggregator_followers", "Open follow=1 queries.", registry=self.registry)


# --------------------------------------------------------------------------------------------------- the server


def _label(reason: str) -> str:
    return reason.replace(" ", "_")


@dataclass
class Config:
    """Where the aggregator listens and keeps its logs. With `tls_cert_file` and `tls_key_file` both ports speak TLS
    (Forward also asks clients for a certificate of `client_ca_file` when given); with `shared_key` every Forward
    connection goes through the handshake first, the aggregator calling itself `self_hostname`."""

    bind_address: str = "0.0.0.0"
    port: int = forward.DEFAULT_PORT
    http_address: str = ""  # default: bind_address
    http_port: int = DEFAULT_HTTP_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    retention_days: int = 7
    expire_interval: float = EXPIRE_INTERVAL
    tls_cert_file: str = ""
    tls_key_file: str = ""
    client_ca_file: str = ""
    shared_key: str = ""
    self_hostname: str = "log-aggregator"
    handshake_timeout: float = HANDSHAKE_TIMEOUT


@dataclass
class _Connections:
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    followers: set[Subscription] = field(default_factory=set)


class Aggregator:
    """One log aggregator built from a Config; `run()` serves until cancelled. `started` is set once both ports are
    bound (`port`, `http_port` are then the real ones, useful with port 0)."""

    def __init__(self, config: Config, store: LogStore | None = None, metrics: Metrics | None = None) -> None:
        self.config = config
        self.forward_tls, self.http_tls = _tls_contexts(config)
        try:
            self.store = store or LogStore(Path(config.data_dir), config.retention_days)
        except LogStoreError as exc:
            raise AggregatorError(str(exc)) from exc
        self.metrics = metrics or Metrics()
        self.started = asyncio.Event()
        self.port = config.port
        self.http_port = config.http_port
        self._open = _Connections()

    # ----------------------------------------------------------------------------------------------- Forward

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one Forward connection until the peer closes it or breaks the protocol."""
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        if task is not None:
            self._open.tasks.add(task)
        self.metrics.connections.inc()
        unpacker = forward.new_unpacker()
        try:
            if self.config.shared_key and not await self._handshake(reader, writer, unpacker, peer):
                return
            while True:
                for obj in unpacker:  # what came with the PING, then each read's messages
                    await self._receive(forward.decode(obj), writer)
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                unpacker.feed(data)
        except (forward.ForwardProtocolError, msgpack.UnpackException, ValueError, EOFError, gzip.BadGzipFile,
                zlib.error) as exc:  # a bad gzip'd CompressedPackedForward too
            self.metrics.protocol_errors.inc()
            log.warning("closing the connection from %s: not the Forward protocol: %s", peer, exc)
        except LogStoreError as exc:
            self.metrics.store_errors.inc()
            log.error("closing the connection from %s unacknowledged: %s", peer, exc)
        except ConnectionError as exc:
            log.debug("connection from %s lost: %s", peer, exc)
        except Exception:
            log.exception("closing the connection from %s: unexpected error", peer)
        finally:
            self.metrics.connections.dec()
            if task is not None:
                self._open.tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, unpacker: Any,
                         peer: Any) -> bool:
        """HELO, then the client's PING: PONG true and go on (True), or PONG false with the reason, counted and
        logged (False: the caller closes the connection). No PING within the handshake timeout is refused too."""
        cfg = self.config
        nonce = forward.new_nonce()
        writer.write(forward.pack(forward.helo(nonce)))
        await writer.drain()
        message: Any = None
        try:
            async with asyncio.timeout(cfg.handshake_timeout):
                message = await _next_message(reader, unpacker)
            if message is None:
                log.debug("the connection from %s closed before its PING", peer)
                return False
            client = forward.check_ping(message, nonce=nonce, shared_key=cfg.shared_key)
        except TimeoutError:
            self.metrics.handshake_failures.labels("timeout").inc()
            log.warning("closing the connection from %s: no PING within %gs", peer, cfg.handshake_timeout)
            return False
        except forward.HandshakeError as exc:
            self.metrics.handshake_failures.labels(_label(exc.reason)).inc()
            claimed = message[1] if isinstance(message, (list, tuple)) and len(message) > 1 else "?"
            log.warning("refusing the connection from %s (hostname %r): %s", peer, claimed, exc.reason)
            writer.write(forward.pack(forward.pong_refused(exc.reason)))
            await writer.drain()
            return False
        writer.write(forward.pack(forward.pong(client, hostname=cfg.self_hostname, nonce=nonce,
                                               shared_key=cfg.shared_key)))
        await writer.drain()
        log.debug("the connection from %s (%s) proved the shared key", peer, client.hostname)
        return True

    async def _receive(self, message: forward.Message, writer: asyncio.StreamWriter) -> None:
        """Store one message's entries, then acknowledge its chunk if it has one."""
        if message.entries:
            started = time.perf_counter()
            appended = await self.store.append_async(message.tag, message.entries)
            self.metrics.store_seconds.observe(time.perf_counter() - started)
            for kind, n in appended.records.items():
                self.metrics.records.labels(kind).inc(n)
            self.metrics.bytes.inc(appended.bytes)
        if message.chunk is not None:
            writer.write(forward.ack(message.chunk))
            await writer.drain()
            self.metrics.acks.inc()

    # ----------------------------------------------------------------------------------------------- HTTP

    def build_app(self) -> web.Application:
        """The HTTP API: health, metrics and /query."""
        app = web.Application()
        for path in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(path, self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/query", self._query)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        if request.path.startswith("/readyz") and not self.started.is_set():
            return web.Response(status=503, text="not ready: starting\n")
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _query(self, request: web.Request) -> web.StreamResponse:
        """GET /query: matching records as NDJSON; with follow=1, then new ones until the client leaves."""
        try:
            query = parse_query(dict(request.query))
        except QueryParameterError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
        if not query.follow:
            records = await self.store.select_async(query.filter, query.limit)
            await response.prepare(request)
            await _write(response, records)
            await response.write_eof()
            return response
        return await self._follow(request, response, query)

    async def _follow(self, request: web.Request, response: web.StreamResponse, query: Query) -> web.StreamResponse:
        """Stream the stored matches, then each new one, until the client disconnects or the server stops."""
        sub = self.store.subscribe(query.filter, backlog=True)
        self._open.followers.add(sub)
        self.metrics.followers.inc()
        try:
            await response.prepare(request)
            await _write(response, await self.store.backlog(sub, query.limit))
            while not _gone(request):
                try:
                    batch = await asyncio.wait_for(sub.get_batch(), FOLLOW_CHECK)
                except TimeoutError:
                    continue
                if not batch:  # the server is stopping
                    break
                await _write(response, batch)
        except ConnectionError:
            pass
        finally:
            self.metrics.followers.dec()
            self._open.followers.discard(sub)
            self.store.unsubscribe(sub)
        return response

    # ----------------------------------------------------------------------------------------------- running

    async def run(self) -> None:
        """Bind both ports, then serve and expire old days until cancelled."""
        cfg = self.config
        try:
            server = await asyncio.start_server(self.handle_connection, cfg.bind_address, cfg.port,
                                                reuse_address=True, limit=READ_SIZE, ssl=self.forward_tls,
                                                ssl_handshake_timeout=cfg.handshake_timeout if self.forward_tls
                                                else None)
        except OSError as exc:
            raise AggregatorError(f"listen tcp {cfg.bind_address}:{cfg.port}: {exc.strerror or exc}") from exc
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        try:
            self.port = int(server.sockets[0].getsockname()[1])
            await runner.setup()
            site = web.TCPSite(runner, cfg.http_address or cfg.bind_address, cfg.http_port,
                               ssl_context=self.http_tls)
            try:
                await site.start()
            except OSError as exc:
                raise AggregatorError(f"listen tcp {cfg.http_address or cfg.bind_address}:{cfg.http_port}: "
                                      f"{exc.strerror or exc}") from exc
            self.http_port = _bound_port(runner, cfg.http_port)
            log.info("receiving Forward on %s:%d (%s), HTTP%s on %s:%d, storing in %s for %d days",
                     cfg.bind_address, self.port, _security(cfg), "S" if self.http_tls else "",
                     cfg.http_address or cfg.bind_address, self.http_port, self.store.root, self.store.retention_days)
            self.started.set()
            await self._expire_forever()
        finally:
            await asyncio.shield(self._shutdown(server, runner))

    async def _expire_forever(self) -> None:
        """Remove expired days now and then every `expire_interval` seconds."""
        while True:
            try:
                await asyncio.to_thread(self.store.expire, time.time())
            except OSError as exc:
                log.error("expiring old logs: %s", exc)
            await asyncio.sleep(self.config.expire_interval)

    async def _shutdown(self, server: asyncio.Server, runner: web.AppRunner) -> None:
        """Stop listening, end followers and connections, close the store's files."""
        server.close()
        for sub in list(self._open.followers):
            sub.close()
        for task in list(self._open.tasks):
            task.cancel()
        await asyncio.gather(*self._open.tasks, return_exceptions=True)
        await server.wait_closed()
        await runner.cleanup()
        self.store.close()


def _tls_contexts(config: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The Forward port's and the HTTP port's TLS (None, None without a certificate): the same certificate, following
    its files; Forward also requires client certificates of `client_ca_file` when given."""
    if not (config.tls_cert_file or config.tls_key_file):
        if config.client_ca_file:
            raise AggregatorError("a client CA needs TLS: give the certificate and key too")
        return None, None
    if not (config.tls_cert_file and config.tls_key_file):
        raise AggregatorError("TLS needs both a certificate and its key")
    contexts = []
    for client_ca in (config.client_ca_file, ""):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
            if client_ca:
                context.load_verify_locations(cafile=client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise AggregatorError(f"cannot use the TLS files {config.tls_cert_file}, {config.tls_key_file}"
                                  f"{', ' + client_ca if client_ca else ''}: {exc}") from exc
        contexts.append(certreload.follow(context, config.tls_cert_file, config.tls_key_file))
    return contexts[0], contexts[1]


def _security(config: Config) -> str:
    """How the Forward port is protected, for the start-up log line."""
    parts = ["TLS" if config.tls_cert_file else "plain TCP"]
    if config.client_ca_file:
        parts.append("client certificates")
    parts.append("shared key" if config.shared_key else "no shared key")
    return ", ".join(parts)


async def _next_message(reader: asyncio.StreamReader, unpacker: Any) -> Any:
    """The next whole message of the connection (None if it closes first)."""
    while True:
        for obj in unpacker:
            return obj
        data = await reader.read(READ_SIZE)
        if not data:
            return None
        unpacker.feed(data)


def _gone(request: web.Request) -> bool:
    """Whether the HTTP client has disconnected."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _write(response: web.StreamResponse, records: list[dict[str, Any]]) -> None:
    """Send records as NDJSON, in writes of up to ~64 KiB."""
    chunk: list[bytes] = []
    size = 0
    for record in records:
        line = dumps(record)
        chunk.append(line)
        size += len(line)
        if size >= 65536:
            await response.write(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        await response.write(b"".join(chunk))


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    """The HTTP port actually bound (differs from the configured one with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured


async def serve(config: Config, *, stop: asyncio.Event) -> int:
    """Run an Aggregator until `stop` is set: 0 then, 1 if it could not start or failed."""
    try:
        aggregator = Aggregator(config)
    except AggregatorError as exc:
        log.error("%s", exc)
        return 1
    return await run_until_stopped(aggregator.run(), stop, name="log-aggregator", log=log)


__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_HTTP_PORT", "Aggregator", "AggregatorError", "Config", "Metrics", "Query",
           "QueryParameterError", "parse_query", "parse_time", "serve"]
