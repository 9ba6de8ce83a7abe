"""One etcd watch per kind, shared by every watcher of that kind.

The cache lists the kind's key prefix once, then follows a single etcd watch from that
revision. It keeps the current objects — to start a watch "now" with the existing objects
as ADDED events, and to answer LIST with `resourceVersion=0` — and a ring of recent
events, so a watch can resume from a recent resourceVersion without touching etcd. A
watch that asks for a revision older than the ring gets its own etcd watch (the history
is in etcd until it is compacted), and `410 Expired` when etcd has compacted it.

Everything that snapshots the cache and registers a watcher runs without an `await` in
between, so on the single event loop no event can fall between the snapshot and the live
stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from harness.api import errors
from harness.api.registry import Kind
from harness.storage.backend import Backend, Compacted, Event, StorageError

log = logging.getLogger(__name__)

Predicate = Callable[[dict[str, Any]], bool]

#: Events kept for resuming watches; upstream sizes its ring similarly per resource.
DEFAULT_CAPACITY = 20_000
#: Pending events a single watcher may fall behind by before it is closed (it re-watches).
WATCHER_BUFFER = 50_000


def decode(value: bytes, revision: int) -> dict[str, Any]:
    """A stored value as an API object, with its resourceVersion filled in."""
    obj: dict[str, Any] = orjson.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def readable(key: str, value: bytes, revision: int) -> dict[str, Any] | None:
    """The object, or None (logged) for a value this apiserver cannot read, such as one encrypted with a key it was
    not given: one unreadable object must not take the whole kind's cache down (upstream fails just that key)."""
    try:
        return decode(value, revision)
    except (orjson.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        log.error("watch cache: %s at revision %d cannot be read (%s); is it encrypted with a key this apiserver "
                  "lacks (--encryption-provider-config)?", key, revision, exc)
        return None


@dataclass(slots=True)
class WatchEvent:
    """An event as watchers see it: decoded, with the object's previous state if known."""

    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    obj: dict[str, Any]
    revision: int
    prev: dict[str, Any] | None = None
    _encoded: bytes | None = field(default=None, repr=False)

    def encoded_object(self) -> bytes:
        if self._encoded is None:
            self._encoded = orjson.dumps(self.obj)
        return self._encoded


def _namespace(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "")


class Watcher:
    """One client's view of a kind: a queue of events filtered by namespace and selectors."""

    def __init__(self, *, namespace: str, predicate: Predicate | None, after: int) -> None:
        self.namespace = namespace
        self.predicate = predicate
        self.after = after  # deliver only events newer than this revision
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(maxsize=WATCHER_BUFFER)
        self.closed = False
        self.overflowed = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and _namespace(obj) != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)

    def filtered(self, event: WatchEvent) -> WatchEvent | None:
        """The event this watcher sees, after selector transitions (as upstream's cacher)."""
        if event.type == "BOOKMARK":
            return event
        now = event.type != "DELETED" and self.matches(event.obj)
        before = self.matches(event.prev) if event.type != "ADDED" else False
        if event.type == "DELETED":
            return event if self.matches(event.obj) else None
        if now and before:
            return event
        if now:
            return WatchEvent("ADDED", event.obj, event.revision, None, event._encoded)
        if before:
            return WatchEvent("DELETED", event.obj, event.revision, None, event._encoded)
        return None

    def deliver(self, event: WatchEvent) -> None:
        if self.closed or (event.type != "BOOKMARK" and event.revision <= self.after):
            return
        seen = self.filtered(event)
        if seen is None:
            return
        try:
            self.queue.put_nowait(seen)
        except asyncio.QueueFull:
            self.overflowed = True
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)
            if self.queue.full():  # make room for the end marker
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                self.queue.put_nowait(None)


class TooOld(Exception):
    """The requested revision is older than the ring: serve it from etcd history."""


class WatchCache:
    """The current objects and recent events of one kind, fed by one etcd watch."""

    def __init__(self, kind: Kind, backend: Backend, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.kind = kind
        self.backend = backend
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: deque[WatchEvent] = deque(maxlen=capacity)
        self.revision = 0  # the newest revision applied to the cache
        self.ring_start = 0  # the ring holds every event newer than this revision
        self.watchers: set[Watcher] = set()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._follow(), name=f"watchcache-{self.kind.plural}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for w in list(self.watchers):
            w.close()
        self.watchers.clear()

    async def _relist(self) -> None:
        prefix = self.kind.key_prefix()
        objects: dict[str, dict[str, Any]] = {}
        revision, start = 0, ""
        while True:
            page = await self.backend.list(prefix, revision=revision, limit=5000, start=start)
            revision = page.revision
            for rec in page.records:
                obj = readable(rec.key, rec.value, rec.revision)
                if obj is not None:
                    objects[rec.key] = obj
            if not page.more or not page.records:
                break
            start = page.records[-1].key + "\x00"
        self.objects = objects
        self.revision = self.ring_start = revision
        self.events.clear()
        self.ready.set()

    async def _follow(self) -> None:
        """Apply etcd's events forever; on a lost or compacted watch, relist and go on."""
        backoff = 0.1
        while True:
            try:
                async for ev in self.backend.watch(self.kind.key_prefix(), revision=self.revision):
                    self._apply(ev)
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (StorageError, Compacted) as exc:
                log.warning("watch cache %s: %s; relisting", self.kind.plural, exc)
                self._drop_watchers()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                with contextlib.suppress(StorageError):
                    await self._relist()

    def _drop_watchers(self) -> None:
        """Watchers cannot be told what they missed across a relist: they re-watch."""
        for w in list(self.watchers):
            w.close()
        self.watchers.clear()

    def _apply(self, ev: Event) -> None:
        prev = self.objects.get(ev.key)
        found = readable(ev.key, ev.value, ev.revision)
        if found is None:
            return
        obj = found
        if ev.type == "DELETED":
            self.objects.pop(ev.key, None)
        else:
            self.objects[ev.key] = obj
        event = WatchEvent(ev.type, obj, ev.revision, prev)
        if len(self.events) == self.events.maxlen:
            self.ring_start = self.events[0].revision
        self.events.append(event)
        self.revision = ev.revision
        for w in list(self.watchers):
            w.deliver(event)
            if w.closed:
                self.watchers.discard(w)

    # -- reads ---------------------------------------------------------------------------

    def list(self, *, namespace: str = "", predicate: Predicate | None = None) -> tuple[list[dict[str, Any]], int]:
        """Matching objects in key order, and the revision they are current at."""
        prefix = self.kind.key_prefix(namespace) if namespace else ""
        out = [obj for key, obj in sorted(self.objects.items())
               if (not prefix or key.startswith(prefix)) and (predicate is None or predicate(obj))]
        return out, self.revision

    def watch(self, *, namespace: str, predicate: Predicate | None, since: int | None,
              initial_events_end: bool = False) -> Watcher:
        """A registered watcher: from now (with ADDED for what exists) or after `since`.

        With `initial_events_end` (the client's `sendInitialEvents=true`), the ADDED events for
        what exists are followed by a BOOKMARK annotated `k8s.io/initial-events-end`, which
        tells a WatchList client (kubectl 1.37's `rollout status`) its list is complete.
        """
        if since is not None and since < self.ring_start:
            raise TooOld
        w = Watcher(namespace=namespace, predicate=predicate, after=since or 0)
        if since is None:
            for obj in self.list(namespace=namespace, predicate=predicate)[0]:
                w.queue.put_nowait(WatchEvent("ADDED", obj, int(obj["metadata"]["resourceVersion"])))
            w.after = self.revision
            if initial_events_end:
                w.queue.put_nowait(WatchEvent("BOOKMARK", self._bookmark_object(initial_end=True), self.revision))
        else:
            for event in self.events:
                if event.revision > since:
                    w.deliver(event)
        self.watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self.watchers.discard(w)
        w.closed = True

    def compacted(self, revision: int) -> None:
        """etcd history before `revision` is gone: so is resuming from before it."""
        while self.events and self.events[0].revision <= revision:
            self.events.popleft()
        self.ring_start = max(self.ring_start, revision)

    def _bookmark_object(self, *, initial_end: bool = False) -> dict[str, Any]:
        md: dict[str, Any] = {"resourceVersion": str(self.revision)}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": self.kind.kind, "apiVersion": self.kind.api_version, "metadata": md}

    def bookmark(self) -> None:
        """Tell every watcher how far the cache has come (for `allowWatchBookmarks`)."""
        event = WatchEvent("BOOKMARK", self._bookmark_object(), self.revision)
        for w in list(self.watchers):
            w.deliver(event)

    async def history(self, *, namespace: str, predicate: Predicate | None,
                      since: int) -> AsyncIterator[WatchEvent]:
        """Events after `since` read from etcd's own history, for watches older than the ring."""
        w = Watcher(namespace=namespace, predicate=predicate, after=since)
        try:
            async for ev in self.backend.watch(self.kind.key_prefix(namespace), revision=since):
                obj = decode(ev.value, ev.revision)
                prev = decode(ev.prev_value, ev.revision) if ev.prev_value is not None else None
                seen = w.filtered(WatchEvent(ev.type, obj, ev.revision, prev))
                if seen is not None:
                    yield seen
        except Compacted as exc:
            raise errors.Gone(f"too old resource version: {since} ({exc.compact_revision})") from None
