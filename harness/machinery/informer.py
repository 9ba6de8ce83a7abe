"""Informers: a local, indexed cache of one kind kept current by list + watch, with handlers.

The one idea, after client-go's reflector and shared informer: list once, then watch from
the list's resourceVersion and apply each event to the cache, calling the handlers with what
changed. The resourceVersion is the informer's bookmark in the stream of changes: when a watch
ends or breaks, it resumes from there (immediately after a clean end, with exponential
backoff after a failure), so nothing is missed or seen twice. Only when the server answers
410 Gone (that point is compacted away) does it list again, and then it diffs the new list
against the cache and calls on_add / on_update / on_delete for the differences, so handlers
still see every change that matters (though not every intermediate state).

Handlers are plain functions that should only enqueue keys (see harness.machinery.workqueue);
one that raises is logged and skipped. Objects in the cache are shared, not copied: callers
must treat them as read-only and copy before changing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from harness.api import errors, meta
from harness.api.registry import Kind
from harness.client.rest import Client, WatchEvent

log = logging.getLogger(__name__)

IndexFunc = Callable[[dict[str, Any]], list[str]]

#: Backoff between failed list/watch attempts, as client-go's reflector.
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 30.0
#: Watches ask the server to end them after 5-10 minutes (as upstream), so they are renewed.
MIN_WATCH_TIMEOUT = 300
#: A watch that ends this soon without an event counts as a failure (backoff), as upstream.
SHORT_WATCH = 1.0


def index_by_namespace(obj: dict[str, Any]) -> list[str]:
    return [meta.namespace_of(obj)]


def index_by_node(obj: dict[str, Any]) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def index_by_owner(obj: dict[str, Any]) -> list[str]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref["uid"] for ref in refs if isinstance(ref, dict) and ref.get("uid")]


class Cache:
    """Objects by key, plus named indexes (index -> value -> keys). Read-only for callers."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None) -> None:
        self._objects: dict[str, dict[str, Any]] = {}
        self._indexers = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._objects.get(key)

    def list(self) -> list[dict[str, Any]]:
        return list(self._objects.values())

    def keys(self) -> builtins.list[str]:
        return list(self._objects)

    def by_index(self, index: str, value: str) -> builtins.list[dict[str, Any]]:
        """Objects whose `index` function returned `value`, in key order."""
        try:
            keys = self._indexes[index].get(value, ())
        except KeyError:
            raise KeyError(f"no index {index!r}; this cache has {sorted(self._indexes)}") from None
        return [self._objects[k] for k in sorted(keys)]

    def index_values(self, index: str) -> builtins.list[str]:
        """The values `index` currently has objects under."""
        return sorted(self._indexes[index])

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    # -- writes: by the informer, and by tests that seed a cache ------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Store `obj`; return what it replaced."""
        key = meta.key_of(obj)
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj
        self._index(key, obj)
        return old

    def pop(self, key: str) -> dict[str, Any] | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _index(self, key: str, obj: dict[str, Any]) -> None:
        for name, func in self._indexers.items():
            for value in _index_values(name, func, obj):
                self._indexes[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: dict[str, Any]) -> None:
        for name, func in self._indexers.items():
            index = self._indexes[name]
            for value in _index_values(name, func, obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


def _index_values(name: str, func: IndexFunc, obj: dict[str, Any]) -> set[str]:
    try:
        return set(func(obj))
    except Exception:
        log.exception("index function %r failed on %s", name, meta.key_of(obj))
        return set()


@dataclass(frozen=True)
class _Handlers:
    on_add: Callable[[dict[str, Any]], None] | None
    on_update: Callable[[dict[str, Any], dict[str, Any]], None] | None
    on_delete: Callable[[dict[str, Any]], None] | None


class _Backoff:
    """Exponential delays, BACKOFF_INITIAL doubling to BACKOFF_MAX, reset on success."""

    def __init__(self) -> None:
        self.delay = BACKOFF_INITIAL

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_INITIAL


class Informer:
    """List + watch of one kind into a `Cache`, calling handlers on changes; see the module docstring."""

    def __init__(self, client: Client, kind: Kind, *, namespace: str = "", label_selector: str = "",
                 field_selector: str = "", resync_period: float = 0.0,
                 indexers: dict[str, IndexFunc] | None = None) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.cache = Cache(indexers)
        #: The resourceVersion the cache is current at: where the next watch starts.
        self.resource_version = ""
        #: How many full lists were made: 1, plus one per 410 Gone (a re-watch does not list).
        self.lists = 0
        self._handlers: list[_Handlers] = []
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<Informer {self.kind.resource}{where} at {self.resource_version or '-'}>"

    # -- handlers --------------------------------------------------------------------------

    def add_handlers(self, *, on_add: Callable[[dict[str, Any]], None] | None = None,
                     on_update: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
                     on_delete: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Register handlers; added to a running informer, on_add is called for what is cached already."""
        handlers = _Handlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if on_add is not None:
            for obj in self.cache.list():
                _call(on_add, obj)

    def _added(self, obj: dict[str, Any]) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                _call(h.on_add, obj)

    def _updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                _call(h.on_update, old, new)

    def _deleted(self, obj: dict[str, Any]) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                _call(h.on_delete, obj)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listing and watching in the background (a second call does nothing)."""
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._run(), name=f"informer-{self.kind.resource}"))
        if self.resync_period > 0:
            self._tasks.append(asyncio.create_task(self._resync_loop(), name=f"resync-{self.kind.resource}"))

    async def wait_synced(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  (the agreed API)
        """Return once the first list is in the cache and its on_add handlers have run."""
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the reflector ---------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _Backoff()
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                    backoff.reset()
                await self._watch(backoff)
            except errors.Gone as exc:
                log.info("%r: %s; listing again", self, exc)
                if need_list:  # the list itself expired (a stale continue token): don't spin
                    await asyncio.sleep(backoff.next())
                need_list = True
            except errors.ApiError as exc:
                delay = backoff.next()
                log.warning("%r: %s; retrying in %.1fs", self, exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                delay = backoff.next()
                log.exception("%r: unexpected failure; retrying in %.1fs", self, delay)
                await asyncio.sleep(delay)

    async def relist(self) -> None:
        """List everything and make the cache equal to it, calling handlers for each difference."""
        listed = await self.client.list_all(self.kind, self.namespace, label_selector=self.label_selector,
                                            field_selector=self.field_selector)
        self._replace(listed["items"])
        self.resource_version = listed["metadata"]["resourceVersion"]
        self.lists += 1
        log.debug("%r: listed %d objects", self, len(listed["items"]))
        self._synced.set()

    def _replace(self, items: Iterable[dict[str, Any]]) -> None:
        fresh = {meta.key_of(obj): obj for obj in items}
        for key in [k for k in self.cache.keys() if k not in fresh]:  # noqa: SIM118  (a copy: we pop)
            gone = self.cache.pop(key)
            if gone is not None:
                self._deleted(gone)
        for obj in fresh.values():
            old = self.cache.put(obj)
            if old is None:
                self._added(obj)
            elif meta.resource_version_of(old) != meta.resource_version_of(obj):
                self._updated(old, obj)

    async def _watch(self, backoff: _Backoff) -> None:
        """Apply one watch's events until the server ends it (returns) or it fails (raises)."""
        timeout = int(MIN_WATCH_TIMEOUT * (1 + random.random()))
        events = self.client.watch(self.kind, self.namespace, resource_version=self.resource_version,
                                   label_selector=self.label_selector, field_selector=self.field_selector,
                                   timeout_seconds=timeout, allow_bookmarks=True)
        stream = cast(AsyncGenerator[WatchEvent, None], events)  # an async generator: closed on the way out
        loop = asyncio.get_running_loop()
        started, seen = loop.time(), 0
        async with contextlib.aclosing(stream):
            async for event in stream:
                seen += 1
                backoff.reset()
                self._apply(event)
        if not seen and loop.time() - started < SHORT_WATCH:
            # As upstream: an empty watch that ends at once is a failing server, not a clean end.
            raise errors.ServiceUnavailable(f"very short watch of {self.kind.resource}: no events")
        backoff.reset()

    def _apply(self, event: WatchEvent) -> None:
        obj = event.obj
        if event.type in ("ADDED", "MODIFIED"):
            old = self.cache.put(obj)
            if old is None:
                self._added(obj)
            else:
                self._updated(old, obj)
        elif event.type == "DELETED":
            self.cache.pop(meta.key_of(obj))
            self._deleted(obj)
        elif event.type != "BOOKMARK":
            log.warning("%r: ignoring watch event of type %r", self, event.type)
            return
        rv = meta.resource_version_of(obj)
        if rv:
            self.resource_version = rv

    async def _resync_loop(self) -> None:
        await self._synced.wait()
        while True:
            await asyncio.sleep(self.resync_period)
            for obj in self.cache.list():
                self._updated(obj, obj)


def _call(handler: Callable[..., None], *args: dict[str, Any]) -> None:
    try:
        handler(*args)
    except Exception:
        log.exception("informer handler %s failed", getattr(handler, "__qualname__", handler))


async def start_all(*informers: Informer) -> None:
    for informer in informers:
        await informer.start()


async def wait_all_synced(*informers: Informer, timeout: float | None = None) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(i.wait_synced() for i in informers))


async def stop_all(*informers: Informer) -> None:
    await asyncio.gather(*(i.stop() for i in informers))


@contextlib.asynccontextmanager
async def running(*informers: Informer, timeout: float | None = None) -> AsyncIterator[None]:  # noqa: ASYNC109
    """Start informers, wait until all are synced, and stop them on the way out."""
    try:
        await start_all(*informers)
        await wait_all_synced(*informers, timeout=timeout)
        yield
    finally:
        await stop_all(*informers)
