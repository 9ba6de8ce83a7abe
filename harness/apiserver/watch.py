"""WATCH: a chunked stream of `{"type": ..., "object": ...}` lines, one per event.

A watch is served from the kind's watch cache (harness.apiserver.watchcache): from now,
with the existing objects first as ADDED events (no resourceVersion, or "0"), or from a
given resourceVersion. One older than the cache's ring is read from etcd history, and one
that etcd has compacted ends the stream with an ERROR event carrying 410 Expired — the
way upstream's apiserver answers, so clients relist.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from harness.api import errors
from harness.apiserver import codec, tables
from harness.apiserver.genericregistry import Store
from harness.apiserver.listing import ListOptions
from harness.apiserver.state import ApiServer
from harness.apiserver.watchcache import TooOld, Watcher, WatchEvent

#: Events written to the socket in one go when a watcher has fallen behind.
_BATCH = 200


def _since(resource_version: str) -> int | None:
    if resource_version in ("", "0"):
        return None
    try:
        value = int(resource_version)
    except ValueError:
        raise errors.BadRequest(f'invalid resourceVersion "{resource_version}": must be an integer') from None
    if value < 0:
        raise errors.BadRequest(f'invalid resourceVersion "{resource_version}": must not be negative')
    return value


def _timeout(server: ApiServer, query: Any) -> float:
    raw = query.get("timeoutSeconds")
    if raw not in (None, ""):
        try:
            return max(0.0, float(int(raw)))
        except ValueError:
            raise errors.BadRequest(f'timeoutSeconds: Invalid value: "{raw}": must be an integer') from None
    # As upstream: spread long watches over [min, 2*min) so clients don't reconnect in lockstep.
    base = server.config.min_request_timeout
    return base * (1 + random.random())


async def _from_queue(watcher: Watcher) -> AsyncIterator[list[WatchEvent]]:
    while True:
        first = await watcher.queue.get()
        if first is None:
            return
        batch = [first]
        while len(batch) < _BATCH and not watcher.queue.empty():
            nxt = watcher.queue.get_nowait()
            if nxt is None:
                yield batch
                return
            batch.append(nxt)
        yield batch


async def _from_history(source: AsyncIterator[WatchEvent]) -> AsyncIterator[list[WatchEvent]]:
    async for event in source:
        yield [event]


def _encoder(store: Store, request: web.Request, query: Any) -> Any:
    out = codec.negotiate(request.headers.get("Accept", ""), query)
    kind = store.kind

    def encode(event: WatchEvent) -> bytes:
        head = b'{"type":"' + event.type.encode() + b'","object":'
        if event.type == "BOOKMARK" or not out.view:
            return head + event.encoded_object() + b"}\n"
        if out.view == "Table":
            body = tables.to_table(kind, [event.obj], include_object=out.include_object)
        else:
            body = codec.partial_metadata(event.obj)
        return head + orjson.dumps(body) + b"}\n"

    return encode


async def serve_watch(request: web.Request, server: ApiServer, store: Store, namespace: str, opts: ListOptions,
                      query: Any) -> web.StreamResponse:
    since = _since(opts.resource_version)
    initial_events = query.get("sendInitialEvents") in ("1", "true", "True")
    if initial_events and since is not None:
        raise errors.Invalid("sendInitialEvents: Forbidden: sendInitialEvents requires resourceVersion to be "
                             'unset or "0"')
    timeout = _timeout(server, query)
    bookmarks = query.get("allowWatchBookmarks") in ("1", "true", "True") or \
        query.get("sendInitialEvents") in ("1", "true", "True")
    encode = _encoder(store, request, query)
    predicate = opts.predicate()
    cache = store.cache
    await cache.ready.wait()

    watcher: Watcher | None = None
    try:
        watcher = cache.watch(namespace=namespace, predicate=predicate, since=since,
                              initial_events_end=initial_events)
        batches = _from_queue(watcher)
    except TooOld:
        assert since is not None
        batches = _from_history(cache.history(namespace=namespace, predicate=predicate, since=since))

    gauge = server.metrics.watchers.labels(store.kind.group, store.kind.version, store.kind.kind)
    sent = server.metrics.watch_events.labels(store.kind.group, store.kind.version, store.kind.kind)
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    gauge.inc()
    try:
        async with asyncio.timeout(timeout):
            async for batch in batches:
                chunk = b"".join(encode(e) for e in batch if bookmarks or e.type != "BOOKMARK")
                if chunk:
                    await response.write(chunk)
                    sent.inc(len(batch))
    except TimeoutError:
        pass
    except errors.ApiError as err:
        event = {"type": "ERROR", "object": err.to_status()}
        await response.write(orjson.dumps(event) + b"\n")
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    finally:
        gauge.dec()
        if watcher is not None:
            cache.unwatch(watcher)
    await response.write_eof()
    return response
