"""When each hollow node's next heartbeat, status post or registration is due: one heap, one loop.

A thousand nodes must not each keep a task asleep, nor wake in lockstep. Instead every
(node, action) has one due time in a heap, and a single loop sleeps until the earliest and
fires whatever is due. Rescheduling a key just pushes a new entry; the old one is skipped
when popped because the key's due time no longer matches it (lazy deletion).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable

Key = tuple[str, str]  # (node name, action)


class Timetable:
    """Due times of keys. `pop_due` is pure bookkeeping; `wait_due` sleeps until something is due."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._heap: list[tuple[float, Key]] = []
        self._due: dict[Key, float] = {}
        self._wake: asyncio.Event | None = None

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def at(self, key: Key, when: float) -> None:
        """Make `key` due at `when` (replacing any earlier plan for it)."""
        self._due[key] = when
        heapq.heappush(self._heap, (when, key))
        if self._wake is not None and self._heap[0] == (when, key):
            self._wake.set()

    def after(self, key: Key, delay: float) -> None:
        self.at(key, self.now() + delay)

    def cancel(self, key: Key) -> None:
        self._due.pop(key, None)

    def scheduled(self, key: Key) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def pop_due(self, now: float) -> list[Key]:
        """Every key due at or before `now`, in due order, removed from the table."""
        out: list[Key] = []
        while self._heap and self._heap[0][0] <= now:
            when, key = heapq.heappop(self._heap)
            if self._due.get(key) == when:
                del self._due[key]
                out.append(key)
        return out

    def next_time(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # a stale entry: its key was rescheduled or cancelled
        return self._heap[0][0] if self._heap else None

    async def wait_due(self) -> list[Key]:
        """Sleep until at least one key is due (or a sooner one is added), then return the due keys."""
        if self._wake is None:
            self._wake = asyncio.Event()
        while True:
            due = self.pop_due(self.now())
            if due:
                return due
            nxt = self.next_time()
            self._wake.clear()
            timeout = None if nxt is None else max(0.0, nxt - self.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
