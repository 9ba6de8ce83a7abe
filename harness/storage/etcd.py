"""The etcd implementation of the storage `Backend`, and the apiserver's hot path.

Every verb is one etcd round trip. Conditional writes are single transactions whose failure
branch reads the key, so a lost race costs nothing extra and `RevisionMismatch` carries the
record that won. Each write returns the transaction's header revision, which is the
object's new mod revision (its resourceVersion).

We speak etcd's v3 gRPC API through the stubs and messages aetcd ships (`aetcd.rpc`), not
through `aetcd.Client`: in aetcd 1.0.0 the client's range calls drop `limit`, `revision`
and `count_only`, it only opens plaintext channels, and its watcher funnels every watch
through one shared stream and lock. Owning the channel gives us paging at a revision, TLS
and one watch stream per watch, with grpc's and aetcd's exceptions mapped here to
`harness.storage.backend` errors.

Failover: the backend talks to one endpoint at a time. A call that fails because that
endpoint is unreachable (UNAVAILABLE, DEADLINE_EXCEEDED, or its channel closed under it)
moves the backend to the next endpoint (a fresh channel, even when there is only one, which
skips grpc's reconnect backoff). Reads are retried there; writes only when the error proves
etcd never received them (no connection, no leader), so that a retried create can never
report `KeyExists` for its own write. After one round of retries over all endpoints the call
raises `Unavailable`. Watches resume on the next endpoint from the last delivered revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aetcd import rpc

from harness.storage.backend import (
    Compacted,
    Event,
    EventType,
    KeyExists,
    KeyNotFound,
    Page,
    Record,
    RevisionMismatch,
    StorageError,
    Unavailable,
)

log = logging.getLogger("harness.storage.etcd")

REQUEST_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0
DEFAULT_PORT = 2379

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),  # a big list easily passes grpc's 4 MiB default
    ("grpc.keepalive_time_ms", 30_000),  # etcd refuses pings more often than every 5 s
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
_CONNECTION_LOST = {rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED}
# UNAVAILABLE details that prove a request was never applied, so that a write may be retried.
_NOT_DELIVERED = ("failed to connect to all addresses", "etcdserver: no leader")

_RANGE = operator.attrgetter("kv.Range")
_TXN = operator.attrgetter("kv.Txn")
_DELETE = operator.attrgetter("kv.DeleteRange")
_COMPACT = operator.attrgetter("kv.Compact")
_LEASE_GRANT = operator.attrgetter("lease.LeaseGrant")
# Keys with a TTL share leases, as the apiserver's lease manager does: one lease per TTL is reused for 5% of the
# TTL, at most this long, and granted for TTL + that, so every key lives at least its TTL and etcd holds few leases.
LEASE_REUSE_SECONDS = 60
LEASE_REUSE_FRACTION = 0.05


@dataclass(frozen=True, slots=True)
class _Conn:
    """A channel to one endpoint and the stubs on it."""

    endpoint: str
    channel: Any
    kv: Any
    watch: Any
    maintenance: Any
    lease: Any


class EtcdBackend:
    """`Backend` over an etcd cluster, given as client URLs (`http://10.0.0.1:2379`, ...).

    TLS is used for `https://` endpoints, or for all of them when any TLS file is given:
    `ca_file` to verify etcd, `cert_file` and `key_file` to authenticate to it.
    """

    def __init__(self, endpoints: Sequence[str], *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, request_timeout: float = REQUEST_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        if not endpoints:
            raise ValueError("EtcdBackend needs at least one endpoint")
        if (cert_file is None) != (key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        self.endpoints = list(endpoints)
        self._targets = [_target(url) for url in self.endpoints]
        self._leases: dict[int, tuple[int, float]] = {}  # ttl -> (lease id, when granted)
        self._tls_files = (ca_file, cert_file, key_file)
        self._timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._index = 0
        self._conn: _Conn | None = None
        self._closed = False
        self._connecting = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect to the first endpoint (from the current one on) that answers a status call."""
        async with self._connecting:
            self._closed = False
            if self._conn is not None:
                return
            failures = []
            for _ in self._targets:
                conn = self._open(self._index)
                try:
                    await conn.maintenance.Status(rpc.StatusRequest(), timeout=self._connect_timeout)
                except (rpc.AioRpcError, rpc.BaseError) as exc:
                    failures.append(f"{conn.endpoint}: {_details(exc)}")
                    await conn.channel.close()
                    self._index = (self._index + 1) % len(self._targets)
                    continue
                self._conn = conn
                return
        raise Unavailable("no etcd endpoint answered: " + "; ".join(failures))

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.channel.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> EtcdBackend:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _open(self, index: int) -> _Conn:
        target, secure = self._targets[index]
        if secure or any(self._tls_files):
            channel = rpc.secure_channel(target, _credentials(*self._tls_files), options=_CHANNEL_OPTIONS)
        else:
            channel = rpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        return _Conn(self.endpoints[index], channel, rpc.KVStub(channel), rpc.WatchStub(channel),
                     rpc.MaintenanceStub(channel), rpc.LeaseStub(channel))

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None:
            return conn
        if self._closed:
            raise Unavailable("the etcd backend is closed")
        await self.connect()
        assert self._conn is not None
        return self._conn

    def _fail_over(self, conn: _Conn) -> bool:
        """Move to the next endpoint, unless someone already moved off `conn`; True if we moved."""
        if self._conn is not conn:
            return False
        self._index = (self._index + 1) % len(self._targets)
        self._conn = self._open(self._index)
        log.warning("etcd %s unreachable; switching to %s", conn.endpoint, self._conn.endpoint)
        # Let calls still in flight on the old channel finish (or fail) on their own.
        task = asyncio.get_running_loop().create_task(conn.channel.close(grace=self._timeout))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return True

    async def _rpc(self, method: Callable[[_Conn], Any], request: Any, *, idempotent: bool) -> Any:
        """One unary call, failing over as the module docstring says."""
        moves = 0
        for _ in range(3 * (len(self._targets) + 1)):  # retries on a stale channel are not moves
            conn = await self._connection()
            try:
                return await method(conn)(request, timeout=self._timeout)
            except asyncio.CancelledError:
                if _task_cancelled():
                    raise
                error: BaseException = Unavailable(f"etcd {conn.endpoint}: channel closed")
                retry = idempotent  # our channel was closed by a failover; the call may have run
            except rpc.BaseError as exc:  # "Channel is closed": the call never left
                error, retry = exc, True
            except rpc.AioRpcError as exc:
                if exc.code() not in _CONNECTION_LOST:
                    raise _storage_error(exc, request) from None
                error, retry = exc, idempotent or exc.details().startswith(_NOT_DELIVERED)
            if self._fail_over(conn):
                moves += 1
            if not retry or moves > len(self._targets):
                raise Unavailable(f"etcd {conn.endpoint}: {_details(error)}") from None
        raise Unavailable(f"etcd: no endpoint answered in {len(self._targets) + 1} tries")

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: str) -> Record | None:
        resp = await self._rpc(_RANGE, rpc.RangeRequest(key=key.encode()), idempotent=True)
        return _record(resp.kvs[0]) if resp.kvs else None

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = "") -> Page:
        """One range read at `revision`; the page says the revision it was read at."""
        if start and not start.startswith(prefix):
            raise ValueError(f"start key {start!r} is not under prefix {prefix!r}")
        begin, end = _prefix_range(prefix)
        request = rpc.RangeRequest(key=start.encode() if start else begin, range_end=end, revision=revision,
                                   limit=limit)
        resp = await self._rpc(_RANGE, request, idempotent=True)
        records = [_record(kv) for kv in resp.kvs]
        # A read at a past revision has the store's *current* revision in its header.
        return Page(records, revision or resp.header.revision, resp.more, resp.count - len(records))

    async def count(self, prefix: str) -> int:
        begin, end = _prefix_range(prefix)
        resp = await self._rpc(_RANGE, rpc.RangeRequest(key=begin, range_end=end, count_only=True),
                               idempotent=True)
        return int(resp.count)

    async def current_revision(self) -> int:
        # A linearizable read of one key: its header carries the store's revision.
        resp = await self._rpc(_RANGE, rpc.RangeRequest(key=b"\0", count_only=True), idempotent=True)
        return int(resp.header.revision)

    # -- writes ------------------------------------------------------------------------------

    async def _lease_for(self, ttl: int) -> int:
        """A lease that outlives `ttl` seconds from now: a recent one for this TTL, or a new one (0: no TTL)."""
        if ttl <= 0:
            return 0
        now = asyncio.get_running_loop().time()
        reuse = max(1, min(LEASE_REUSE_SECONDS, int(ttl * LEASE_REUSE_FRACTION)))
        lease_id, granted = self._leases.get(ttl, (0, 0.0))
        if lease_id and now - granted < reuse:
            return lease_id
        resp = await self._rpc(_LEASE_GRANT, rpc.LeaseGrantRequest(TTL=ttl + reuse), idempotent=True)
        self._leases[ttl] = (int(resp.ID), now)
        return int(resp.ID)

    async def _with_lease(self, ttl: int, write: Callable[[int], Any]) -> Any:
        """Run `write(lease id)`; when etcd no longer knows a cached lease (revoked, or an etcd restored from a
        snapshot), forget it and write once more with a new one."""
        try:
            return await write(await self._lease_for(ttl))
        except StorageError as exc:
            if ttl <= 0 or "lease not found" not in str(exc):
                raise
            self._leases.pop(ttl, None)
            return await write(await self._lease_for(ttl))

    async def create(self, key: str, value: bytes, *, ttl: int = 0) -> int:
        return int(await self._with_lease(ttl, lambda lease: self._create(key, value, lease)))

    async def _create(self, key: str, value: bytes, lease: int) -> int:
        k = key.encode()
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=k, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value, lease=lease))],
        )
        resp = await self._rpc(_TXN, request, idempotent=False)
        if not resp.succeeded:
            raise KeyExists(key)
        return int(resp.header.revision)

    async def update(self, key: str, value: bytes, *, revision: int, ttl: int = 0) -> int:
        if revision <= 0:
            raise ValueError(f"update of {key} needs the revision it read, not {revision}")
        return int(await self._with_lease(ttl, lambda lease: self._update(key, value, revision, lease)))

    async def _update(self, key: str, value: bytes, revision: int, lease: int) -> int:
        k = key.encode()
        resp = await self._rpc(_TXN, _if_revision(k, revision, rpc.RequestOp(
            request_put=rpc.PutRequest(key=k, value=value, lease=lease))), idempotent=False)
        if not resp.succeeded:
            raise RevisionMismatch(key, _current(resp))
        return int(resp.header.revision)

    async def delete(self, key: str, *, revision: int = 0) -> int:
        """Delete `key`; KeyNotFound if it is gone, RevisionMismatch if `revision` is stale."""
        k = key.encode()
        if revision < 0:
            raise ValueError(f"delete of {key}: bad revision {revision}")
        if revision == 0:
            resp = await self._rpc(_DELETE, rpc.DeleteRangeRequest(key=k), idempotent=False)
            if not resp.deleted:
                raise KeyNotFound(key)
            return int(resp.header.revision)
        resp = await self._rpc(_TXN, _if_revision(k, revision, rpc.RequestOp(
            request_delete_range=rpc.DeleteRangeRequest(key=k))), idempotent=False)
        if not resp.succeeded:
            current = _current(resp)
            raise KeyNotFound(key) if current is None else RevisionMismatch(key, current)
        return int(resp.header.revision)

    async def compact(self, revision: int) -> None:
        """Discard history before `revision`; a no-op if it is already gone."""
        with contextlib.suppress(Compacted):
            await self._rpc(_COMPACT, rpc.CompactionRequest(revision=revision), idempotent=True)

    # -- watch -------------------------------------------------------------------------------

    async def watch(self, prefix: str, *, revision: int) -> AsyncGenerator[Event, None]:
        """Changes under `prefix` after `revision`, in order, until the consumer stops.

        Each watch is its own gRPC stream: we send one create request starting at
        `revision + 1` with `prev_kv` (DELETED events carry the last value, MODIFIED ones
        the value before) and `progress_notify`, then turn each response's events into
        `Event`s. `last` is the revision of the last event delivered (or the store revision
        the stream reported as caught up to); it is the resume point. Because a response
        holds whole revisions and is yielded in full before the next read, resuming at
        `last + 1` neither skips nor repeats an event.

        If the stream breaks for a connection reason (the endpoint died, or a failover
        closed its channel) we fail over like a unary call and open a new stream at
        `last + 1`; after a round over all endpoints without a stream being created, and
        after `close()`, we raise `Unavailable`. etcd answers a start revision older than
        its compaction with a `compact_revision`, which becomes `Compacted`. When the
        consumer stops (aclose, a `break`, or its task cancelled) the `finally` cancels the
        stream, and etcd drops the watch with it. (grpc reports a call whose channel was
        closed as CancelledError; `_task_cancelled` tells that from our task's own.)
        """
        begin, end = _prefix_range(prefix)
        last = revision
        moves = 0
        while True:
            conn = await self._connection()
            call = conn.watch.Watch()
            try:
                await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                    key=begin, range_end=end, start_revision=last + 1 if last else 0, prev_kv=True,
                    progress_notify=True)))
                async for resp in call:
                    if resp.compact_revision:
                        raise Compacted(last, resp.compact_revision)
                    if resp.canceled:
                        raise StorageError(f"etcd cancelled the watch on {prefix}: {resp.cancel_reason}")
                    if resp.created:
                        moves = 0
                        last = last or resp.header.revision
                    elif not resp.events:
                        last = max(last, resp.header.revision)  # progress notification
                    for ev in resp.events:
                        event = _event(ev)
                        last = event.revision
                        yield event
                error: BaseException = Unavailable(f"etcd {conn.endpoint} ended the watch stream")
            except asyncio.CancelledError:
                if _task_cancelled():
                    raise
                error = Unavailable(f"etcd {conn.endpoint}: channel closed")
            except rpc.BaseError as exc:
                error = exc
            except rpc.AioRpcError as exc:
                if exc.code() not in _CONNECTION_LOST:
                    raise _storage_error(exc, None) from None
                error = exc
            finally:
                call.cancel()
            if self._closed:
                raise Unavailable("the etcd backend is closed")
            if self._fail_over(conn):
                moves += 1
            if moves > len(self._targets):
                raise Unavailable(f"etcd watch on {prefix}: {_details(error)}")
            log.info("etcd watch on %s interrupted (%s); resuming after revision %d", prefix,
                     _details(error), last)


# -- helpers ---------------------------------------------------------------------------------


def _target(url: str) -> tuple[str, bool]:
    """`http(s)://host:port` (or bare `host:port`) -> (grpc target, whether to use TLS)."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an etcd client URL: {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or DEFAULT_PORT}", parts.scheme == "https"


def _credentials(ca_file: str | None, cert_file: str | None, key_file: str | None) -> Any:
    import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(root_certificates=read(ca_file), private_key=read(key_file),
                                        certificate_chain=read(cert_file))


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """[begin, end) covering every key that starts with `prefix` ("" is every key)."""
    begin = prefix.encode()
    stripped = begin.rstrip(b"\xff")
    if not stripped:
        return begin or b"\0", b"\0"  # etcd: range_end "\0" means "to the end of the keyspace"
    return begin, stripped[:-1] + bytes([stripped[-1] + 1])


def _if_revision(key: bytes, revision: int, then: Any) -> Any:
    """A transaction: `then` if `key` is at mod revision `revision`, else read the key."""
    return rpc.TxnRequest(
        compare=[rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision)],
        success=[then],
        failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
    )


def _current(resp: Any) -> Record | None:
    """The record read by a failed `_if_revision` transaction."""
    kvs = resp.responses[0].response_range.kvs
    return _record(kvs[0]) if kvs else None


def _record(kv: Any) -> Record:
    return Record(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision)


def _event(ev: Any) -> Event:
    kv = ev.kv
    prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
    if ev.type == rpc.Event.DELETE:
        # A delete's kv has only the key and the revision of the delete.
        return Event("DELETED", kv.key.decode(), prev if prev is not None else b"", kv.mod_revision, prev)
    kind: EventType = "ADDED" if kv.create_revision == kv.mod_revision else "MODIFIED"
    return Event(kind, kv.key.decode(), kv.value, kv.mod_revision, prev)


def _storage_error(exc: Any, request: Any) -> StorageError:
    details = exc.details() or str(exc.code())
    if exc.code() == rpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        # etcd does not say how far it compacted on reads; the watch path does.
        return Compacted(getattr(request, "revision", 0), 0)
    return StorageError(f"etcd: {details}")


def _details(exc: BaseException) -> str:
    if isinstance(exc, rpc.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _task_cancelled() -> bool:
    """Whether a CancelledError is our task's own, not grpc's for a call whose channel closed."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
