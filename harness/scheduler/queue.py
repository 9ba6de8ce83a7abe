"""The scheduling queue: which pending pod to try next, and when to try a failed one again.

Three places, as upstream's PriorityQueue: activeQ (ready: highest `.spec.priority` first,
then oldest), backoffQ (failed recently: waits 1 s, doubling per attempt up to 10 s) and
unschedulable (no node fitted: waits for a cluster event that may help — a node added or
changed, a bound pod deleted or changed — or for `unschedulable_timeout`, whichever first).

The one subtle rule is upstream's move-request cycle: a pod that fails after a cluster event
happened *during* its attempt goes to backoffQ rather than unschedulable, because the event
it would be waiting for has already passed.

Heaps are cleaned lazily: an entry is live only while its pod is still in that place with
that sequence number, so updates and deletes never search a heap.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from harness.api import meta

log = logging.getLogger(__name__)

ACTIVE, BACKOFF, UNSCHEDULABLE, IN_FLIGHT = "active", "backoff", "unschedulable", "in-flight"

# Cluster events that may make an unschedulable pod schedulable.
NODE_ADD, NODE_UPDATE = "NodeAdd", "NodeUpdate"
ASSIGNED_POD_DELETE, ASSIGNED_POD_UPDATE = "AssignedPodDelete", "AssignedPodUpdate"
UNSCHEDULABLE_TIMEOUT = "UnschedulableTimeout"


class QueueClosed(Exception):
    pass


class QueuedPod:
    """A pod waiting for (or in) a scheduling attempt, with its attempt history."""

    __slots__ = ("attempts", "backoff_until", "created", "cycle", "first_queued", "key", "pod", "priority", "seq",
                 "timestamp", "where")

    def __init__(self, pod: dict[str, Any], now: float) -> None:
        self.key = meta.key_of(pod)
        self.pod = pod
        self.attempts = 0
        self.first_queued = now  # for the end-to-end scheduling latency
        self.timestamp = now  # when it last entered the queue
        self.backoff_until = 0.0
        self.cycle = 0  # the scheduling cycle of its latest attempt
        self.seq = 0
        self.where = ""
        self.priority, self.created = 0, ""
        self.set_pod(pod)

    def set_pod(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.priority = int((pod.get("spec") or {}).get("priority") or 0)
        self.created = str((pod.get("metadata") or {}).get("creationTimestamp") or "")

    def __repr__(self) -> str:
        return f"QueuedPod({self.key}, {self.where}, attempts={self.attempts})"


def pod_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A change that may make a pod schedulable: spec or labels/annotations, not status."""
    old_md, new_md = old.get("metadata") or {}, new.get("metadata") or {}
    return (old.get("spec") != new.get("spec") or old_md.get("labels") != new_md.get("labels")
            or old_md.get("annotations") != new_md.get("annotations"))


class SchedulingQueue:
    def __init__(self, *, initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 unschedulable_timeout: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self.clock = clock
        self._pods: dict[str, QueuedPod] = {}
        self._active: list[tuple[int, str, int, str]] = []  # (-priority, created, seq, key)
        self._backoff: list[tuple[float, int, str]] = []  # (ready at, seq, key)
        self._unschedulable: dict[str, QueuedPod] = {}  # in the order they got there
        self._counts = dict.fromkeys((ACTIVE, BACKOFF, UNSCHEDULABLE, IN_FLIGHT), 0)
        self._seq = itertools.count(1)
        self.scheduling_cycle = 0
        self._move_request_cycle = -1
        self._wakeup = asyncio.Event()
        self._closed = False

    # -- what informers tell us ----------------------------------------------------------------

    def add(self, pod: dict[str, Any]) -> None:
        """A new pending pod (or one seen again): straight to activeQ."""
        key = meta.key_of(pod)
        qp = self._pods.get(key)
        if qp is not None:
            self.update(qp.pod, pod)
            return
        qp = QueuedPod(pod, self.clock())
        self._pods[key] = qp
        self._to_active(qp)

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = meta.key_of(new)
        qp = self._pods.get(key)
        if qp is None:
            self.add(new)
            return
        priority = qp.priority
        qp.set_pod(new)
        if qp.where == ACTIVE and qp.priority != priority:
            self._to_active(qp)  # re-sort; the old heap entry goes stale
        elif qp.where == UNSCHEDULABLE and pod_changed(old, new):
            self._unschedulable.pop(key, None)
            self._to_backoff_or_active(qp, self.clock())

    def delete(self, pod: dict[str, Any]) -> None:
        key = meta.key_of(pod)
        qp = self._pods.pop(key, None)
        if qp is not None:
            self._unschedulable.pop(key, None)
            self._set_where(qp, "")

    def move_all_to_active_or_backoff(self, event: str) -> None:
        """A cluster event that may help unschedulable pods: give them all another go."""
        now = self.clock()
        moved = list(self._unschedulable.values())
        self._unschedulable.clear()
        for qp in moved:
            self._to_backoff_or_active(qp, now)
        self._move_request_cycle = self.scheduling_cycle
        if moved:
            log.debug("%s: moved %d unschedulable pods", event, len(moved))

    # -- what the scheduling loop does ----------------------------------------------------------

    async def pop(self) -> QueuedPod:
        """The next pod to schedule, waiting for one; it is in flight until done() or requeued."""
        while True:
            if self._closed:
                raise QueueClosed()
            qp = self.try_pop()
            if qp is not None:
                return qp
            self._wakeup.clear()
            timeout = self._next_wakeup()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def try_pop(self) -> QueuedPod | None:
        self.flush()
        while self._active:
            _, _, seq, key = heapq.heappop(self._active)
            qp = self._pods.get(key)
            if qp is None or qp.where != ACTIVE or qp.seq != seq:
                continue
            self.scheduling_cycle += 1
            qp.cycle = self.scheduling_cycle
            qp.attempts += 1
            self._set_where(qp, IN_FLIGHT)
            return qp
        return None

    def done(self, key: str) -> None:
        """The attempt succeeded (the pod is bound): forget it."""
        qp = self._pods.get(key)
        if qp is not None and qp.where == IN_FLIGHT:
            del self._pods[key]
            self._set_where(qp, "")

    def requeue(self, qp: QueuedPod, *, unschedulable: bool) -> None:
        """The attempt failed: unschedulable pods wait for an event, errors just back off."""
        if self._pods.get(qp.key) is not qp or qp.where != IN_FLIGHT:
            return  # deleted (or re-added) while in flight
        now = self.clock()
        qp.timestamp = now
        qp.backoff_until = now + self.backoff_duration(qp.attempts)
        if unschedulable and self._move_request_cycle < qp.cycle:
            self._set_where(qp, UNSCHEDULABLE)
            self._unschedulable[qp.key] = qp
        else:
            self._to_backoff(qp)

    def flush(self) -> None:
        """Move pods whose backoff is over to activeQ, and long-unschedulable ones back in."""
        now = self.clock()
        while self._backoff:
            ready, seq, key = self._backoff[0]
            qp = self._pods.get(key)
            live = qp is not None and qp.where == BACKOFF and qp.seq == seq
            if live and ready > now:
                break
            heapq.heappop(self._backoff)
            if live and qp is not None:
                self._to_active(qp)
        expired = []
        for qp in self._unschedulable.values():
            if now - qp.timestamp < self.unschedulable_timeout:
                break
            expired.append(qp)
        for qp in expired:
            del self._unschedulable[qp.key]
            self._to_backoff_or_active(qp, now)

    def close(self) -> None:
        """End pop(): the scheduling loop returns."""
        self._closed = True
        self._wakeup.set()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- introspection ------------------------------------------------------------------------

    def backoff_duration(self, attempts: int) -> float:
        return min(self.initial_backoff * 2 ** max(attempts - 1, 0), self.max_backoff)

    def pending(self) -> dict[str, int]:
        return {where: self._counts[where] for where in (ACTIVE, BACKOFF, UNSCHEDULABLE)}

    def where(self, key: str) -> str:
        qp = self._pods.get(key)
        return qp.where if qp is not None else ""

    def get(self, key: str) -> QueuedPod | None:
        return self._pods.get(key)

    def __len__(self) -> int:
        return len(self._pods)

    # -- moves --------------------------------------------------------------------------------

    def _set_where(self, qp: QueuedPod, where: str) -> None:
        if qp.where:
            self._counts[qp.where] -= 1
        qp.where = where
        if where:
            self._counts[where] += 1

    def _to_active(self, qp: QueuedPod) -> None:
        qp.seq = next(self._seq)
        self._set_where(qp, ACTIVE)
        heapq.heappush(self._active, (-qp.priority, qp.created, qp.seq, qp.key))
        self._compact()
        self._wakeup.set()

    def _to_backoff(self, qp: QueuedPod) -> None:
        qp.seq = next(self._seq)
        self._set_where(qp, BACKOFF)
        heapq.heappush(self._backoff, (qp.backoff_until, qp.seq, qp.key))
        self._wakeup.set()  # the popper recomputes how long to sleep

    def _to_backoff_or_active(self, qp: QueuedPod, now: float) -> None:
        if qp.backoff_until > now:
            self._to_backoff(qp)
        else:
            self._to_active(qp)

    def _compact(self) -> None:
        # Stale entries pile up only under heavy re-prioritising; drop them when they dominate.
        if len(self._active) > 64 and len(self._active) > 4 * self._counts[ACTIVE]:
            self._active = [e for e in self._active
                            if (qp := self._pods.get(e[3])) is not None and qp.where == ACTIVE and qp.seq == e[2]]
            heapq.heapify(self._active)

    def _next_wakeup(self) -> float | None:
        """Seconds until a backoff ends or an unschedulable pod times out (None: nothing pending)."""
        now = self.clock()
        times = []
        if self._backoff:
            times.append(self._backoff[0][0] - now)
        first = next(iter(self._unschedulable.values()), None)
        if first is not None:
            times.append(first.timestamp + self.unschedulable_timeout - now)
        return max(min(times), 0.0) + 0.001 if times else None
