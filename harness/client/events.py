"""Record core/v1 Events about objects, without making the caller wait for the apiserver.

`EventRecorder.event(obj, type, reason, message)` only queues; a background writer creates
the Event (named `<object>.<hex nanoseconds>`, as client-go names them). The one idea is
aggregation: the same event again (same object, type, reason, message and source) does not
make a new object — the writer patches the existing one's `count` and `lastTimestamp`, which
is what `kubectl describe` shows as "(x5 over 2m)". A few writers run at once, each owning
the events of some keys (by hash), so repeats of one event are always written in order by
the same writer. If a queue is full, events are dropped with a log line: events are
best-effort, never back-pressure.

    async with EventRecorder(client, component="default-scheduler") as recorder:
        recorder.event(pod, "Warning", "FailedScheduling", "0/3 nodes are available: ...")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from harness.api import errors, meta, registry
from harness.client.rest import Client

log = logging.getLogger(__name__)

EVENTS = registry.by_path("", "v1", "events")
NORMAL, WARNING = "Normal", "Warning"
MAX_MESSAGE = 1024  # upstream truncates longer messages (validation caps the field)


@dataclass(slots=True)
class _Pending:
    key: tuple[str, ...]
    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    action: str
    when: str
    component: str


@dataclass(slots=True)
class _Seen:
    namespace: str
    name: str
    count: int
    first: str


def reference(obj: dict[str, Any], *, kind: str = "", api_version: str = "") -> dict[str, Any]:
    """The `involvedObject` for obj (list items carry no kind: pass it)."""
    md = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind") or kind, "apiVersion": obj.get("apiVersion") or api_version,
           "namespace": md.get("namespace") or "", "name": md.get("name") or "", "uid": md.get("uid") or "",
           "resourceVersion": md.get("resourceVersion") or ""}
    return {k: v for k, v in ref.items() if v}


class EventRecorder:
    def __init__(self, client: Client, *, component: str, host: str = "", reporting_instance: str = "",
                 writers: int = 4, max_pending: int = 1000, remembered: int = 4096) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.reporting_instance = reporting_instance or host
        self.remembered = remembered
        self._queues: list[asyncio.Queue[_Pending]] = [asyncio.Queue(max_pending) for _ in range(writers)]
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def for_component(self, component: str) -> ComponentRecorder:
        """This recorder, with events attributed to `component` (e.g. `deployment-controller` inside the
        controller-manager, as upstream's source.component says)."""
        return ComponentRecorder(self, component)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str, *, action: str = "",
              kind: str = "", api_version: str = "", component: str = "") -> None:
        component = component or self.component
        involved = reference(obj, kind=kind, api_version=api_version)
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE - 3] + "..."
        key = (component, self.host, involved.get("kind", ""), involved.get("namespace", ""),
               involved.get("name", ""), involved.get("uid", ""), involved.get("apiVersion", ""), type_, reason,
               message)
        queue = self._queues[hash(key) % len(self._queues)]
        try:
            queue.put_nowait(_Pending(key, involved, type_, reason, message, action, meta.now_rfc3339(), component))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("event queue full, dropping event %s %s for %s", type_, reason, involved.get("name"))

    # -- lifetime -------------------------------------------------------------------------------

    async def __aenter__(self) -> EventRecorder:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(q), name=f"events-{self.component}-{i}")
                           for i, q in enumerate(self._queues)]

    async def flush(self, within: float = 5.0) -> None:
        """Wait until every queued event is written (for at most `within` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), within)

    async def close(self, within: float = 2.0) -> None:
        """Write what is queued (for at most `within` seconds), then stop."""
        if not self._tasks:
            return
        await self.flush(within)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- the writers ----------------------------------------------------------------------------

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            pending = await queue.get()
            try:
                await self._write(pending)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an event must never take its component down
                log.warning("could not record event %s %s for %s: %s", pending.type, pending.reason,
                            pending.involved.get("name"), exc)
            finally:
                queue.task_done()

    async def _write(self, pending: _Pending) -> None:
        seen = self._seen.get(pending.key)
        if seen is not None:
            seen.count += 1
            self._seen.move_to_end(pending.key)
            patch = {"count": seen.count, "lastTimestamp": pending.when}
            try:
                await self.client.patch(EVENTS, seen.name, patch, seen.namespace)
                return
            except errors.NotFound:
                pass  # expired (events have a TTL): start a new one
        await self._create(pending)

    async def _create(self, pending: _Pending) -> None:
        involved = pending.involved
        namespace = involved.get("namespace") or "default"
        name = f"{involved.get('name', 'event')}.{time.time_ns():x}"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved, "reason": pending.reason, "message": pending.message,
            "type": pending.type, "action": pending.action,
            "source": {k: v for k, v in (("component", pending.component), ("host", self.host)) if v},
            "firstTimestamp": pending.when, "lastTimestamp": pending.when, "count": 1,
            "reportingComponent": pending.component, "reportingInstance": self.reporting_instance,
        }
        await self.client.create(EVENTS, event, namespace)
        self._seen[pending.key] = _Seen(namespace, name, 1, pending.when)
        while len(self._seen) > self.remembered:
            self._seen.popitem(last=False)


@dataclass(frozen=True, slots=True)
class ComponentRecorder:
    """An EventRecorder's view that attributes events to one component (see `EventRecorder.for_component`)."""

    recorder: EventRecorder
    component: str

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str, *, action: str = "",
              kind: str = "", api_version: str = "") -> None:
        self.recorder.event(obj, type_, reason, message, action=action, kind=kind, api_version=api_version,
                            component=self.component)
