"""A work queue of keys for controllers, after client-go's rate-limited delaying queue.

The one idea: a key is in at most one of two places, *queued* or *being processed*, and a
`dirty` set remembers that it needs (more) work. `add` of a queued key does nothing (events
coalesce); `add` of a key a worker holds only marks it dirty, and `done` puts it back in
line, so one key is never handed to two workers at once and no change is missed. Failed keys
come back through `add_rate_limited` after `base_delay * 2**failures` (capped), until
`forget`. Everything runs on one event loop: no locks, only futures to wake idle workers.

Metrics use upstream's names with a `name` label (one child per queue), and are registered
in the registry given, so several queues can share one registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)

# Upstream: ExponentialBuckets(10e-9, 10, 10), i.e. 10 ns to 10 s.
_BUCKETS = tuple(1e-8 * 10**i for i in range(10))


@dataclass(frozen=True)
class _Families:
    """The metric families of every queue that reports to one registry."""

    depth: Gauge
    adds: Counter
    queue_duration: Histogram
    work_duration: Histogram
    retries: Counter
    unfinished: Gauge
    longest: Gauge

    @classmethod
    def make(cls, registry: CollectorRegistry | None) -> _Families:
        label = ("name",)
        return cls(
            depth=Gauge("workqueue_depth", "Current depth of workqueue", label, registry=registry),
            adds=Counter("workqueue_adds", "Total number of adds handled by workqueue", label, registry=registry),
            queue_duration=Histogram("workqueue_queue_duration_seconds",
                                     "How long in seconds an item stays in workqueue before being requested.",
                                     label, buckets=_BUCKETS, registry=registry),
            work_duration=Histogram("workqueue_work_duration_seconds",
                                    "How long in seconds processing an item from workqueue takes.",
                                    label, buckets=_BUCKETS, registry=registry),
            retries=Counter("workqueue_retries", "Total number of retries handled by workqueue", label,
                            registry=registry),
            unfinished=Gauge("workqueue_unfinished_work_seconds",
                             "How many seconds of work has been done that is in progress and hasn't been observed "
                             "by work_duration. Large values indicate stuck threads.", label, registry=registry),
            longest=Gauge("workqueue_longest_running_processor_seconds",
                          "How many seconds has the longest running processor for workqueue been running.",
                          label, registry=registry),
        )


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


def _families(registry: CollectorRegistry | None) -> _Families:
    """One set of families per registry (a name may be registered only once); private ones without."""
    if registry is None:
        return _Families.make(None)
    if registry not in _SHARED:
        _SHARED[registry] = _Families.make(registry)
    return _SHARED[registry]


class WorkQueue:
    """A de-duplicating, rate-limited FIFO of keys; see the module docstring."""

    def __init__(self, name: str, *, base_delay: float = 0.005, max_delay: float = 1000.0,
                 registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: dict[str, float] = {}  # key -> when a worker got it
        self._added_at: dict[str, float] = {}  # key -> when it became dirty (for queue duration)
        self._failures: dict[str, int] = {}
        self._waiting: dict[str, tuple[float, asyncio.TimerHandle]] = {}  # add_after: key -> (ready at, timer)
        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        self._init_metrics(_families(registry))

    def _init_metrics(self, fam: _Families) -> None:
        self._adds = fam.adds.labels(self.name)
        self._retries = fam.retries.labels(self.name)
        self._queue_duration = fam.queue_duration.labels(self.name)
        self._work_duration = fam.work_duration.labels(self.name)
        fam.depth.labels(self.name).set_function(lambda: len(self._queue))
        fam.unfinished.labels(self.name).set_function(self._unfinished_seconds)
        fam.longest.labels(self.name).set_function(self._longest_running_seconds)

    # -- adding ----------------------------------------------------------------------------

    def add(self, key: str) -> None:
        """Queue `key` unless it is already queued; if a worker holds it, queue it again after `done`."""
        if self._shutting_down or key in self._dirty:
            return
        self._adds.inc()
        self._dirty.add(key)
        self._added_at.setdefault(key, time.monotonic())
        if key in self._processing:
            return
        self._queue.append(key)
        self._wake_one()

    def add_after(self, key: str, delay: float) -> None:
        """`add(key)` after `delay` seconds; of several pending delays for a key the earliest wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        ready_at = loop.time() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[1].cancel()
        self._waiting[key] = (ready_at, loop.call_at(ready_at, self._ready, key))

    def _ready(self, key: str) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> None:
        """Requeue a failed key after its exponential backoff: base_delay * 2**failures, capped at max_delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self._retries.inc()
        self.add_after(key, self.backoff(failures))

    def backoff(self, failures: int) -> float:
        """The delay before the retry that follows `failures` failures."""
        try:
            return min(self.base_delay * 2.0**failures, self.max_delay)
        except OverflowError:
            return self.max_delay

    def forget(self, key: str) -> None:
        """The key succeeded: its next failure starts again from base_delay."""
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    # -- taking ----------------------------------------------------------------------------

    async def get(self) -> str | None:
        """The next key, waiting for one; None once the queue is shut down and drained."""
        while not self._queue:
            if self._shutting_down:
                return None
            await self._wait()
        key = self._queue.popleft()
        now = time.monotonic()
        self._processing[key] = now
        self._dirty.discard(key)
        added = self._added_at.pop(key, None)
        if added is not None:
            self._queue_duration.observe(now - added)
        return key

    def done(self, key: str) -> None:
        """A worker has finished with `key`; if it was added meanwhile, it goes back in line."""
        started = self._processing.pop(key, None)
        if started is not None:
            self._work_duration.observe(time.monotonic() - started)
        if key in self._dirty:
            self._queue.append(key)
            self._wake_one()

    def shutdown(self) -> None:
        """Refuse new keys; workers get what is queued, then None."""
        self._shutting_down = True
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        while self._getters:
            self._wake_one()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._queue)

    # -- waking ----------------------------------------------------------------------------

    async def _wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._getters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            # A getter woken and then cancelled must pass its wake-up on, or a key would sit unclaimed.
            if fut.done() and not fut.cancelled():
                self._wake_one()
            else:
                with contextlib.suppress(ValueError):  # already skipped by _wake_one
                    self._getters.remove(fut)
            raise

    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    # -- metrics ---------------------------------------------------------------------------

    def _unfinished_seconds(self) -> float:
        now = time.monotonic()
        return sum(now - started for started in self._processing.values())

    def _longest_running_seconds(self) -> float:
        now = time.monotonic()
        return max((now - started for started in self._processing.values()), default=0.0)


async def run_workers(queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]], workers: int = 1) -> None:
    """Run `workers` loops of get -> reconcile -> forget/requeue -> done until the queue shuts down."""
    async with asyncio.TaskGroup() as group:
        for i in range(workers):
            group.create_task(_worker(queue, reconcile), name=f"{queue.name}-worker-{i}")


async def _worker(queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]]) -> None:
    while (key := await queue.get()) is not None:
        try:
            await reconcile(key)
            queue.forget(key)
        except Exception:
            log.exception("%s: reconcile %r failed (retry %d)", queue.name, key, queue.num_requeues(key) + 1)
            queue.add_rate_limited(key)
        finally:
            queue.done(key)
