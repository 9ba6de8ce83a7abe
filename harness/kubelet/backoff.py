"""Crash-loop and image-pull back-off, as upstream's kubelet: 10 s doubling to 300 s per container.

Upstream restarts a container at once after its first failure and remembers a delay of 10 s;
each later failure within the delay waits it out, and each restart doubles it up to the cap. A
container that ran cleanly for `reset_after` seconds (10 minutes) starts over from nothing.
Times are wall-clock seconds, because they are compared with a container's `finishedAt`.
"""

from __future__ import annotations


class Backoff:
    def __init__(self, initial: float = 10.0, maximum: float = 300.0, reset_after: float = 600.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self._delays: dict[str, float] = {}

    def wait(self, key: str, *, failed_at: float, now: float, ran_for: float = 0.0) -> float:
        """Seconds to wait before retrying `key`, which last failed at `failed_at`; 0 = go now."""
        if ran_for >= self.reset_after:
            self._delays.pop(key, None)
        delay = self._delays.get(key, 0.0)
        return max(0.0, failed_at + delay - now)

    def retrying(self, key: str) -> None:
        """A retry starts now: the next failure waits the initial delay, or twice the last one."""
        delay = self._delays.get(key)
        self._delays[key] = self.initial if delay is None else min(delay * 2, self.maximum)

    def delay(self, key: str) -> float:
        return self._delays.get(key, 0.0)

    def forget(self, key: str) -> None:
        self._delays.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        for key in [k for k in self._delays if k.startswith(prefix)]:
            del self._delays[key]
