"""Expectations: what a controller has asked for but not yet seen in its cache.

After creating 3 pods a ReplicaSet's cache may still show none; acting on it again would
create 3 more. So a controller records the creations and deletions it made per key, the
informer handlers count them off as the objects arrive, and `reconcile` does nothing
(but update status) until they are met — or have waited longer than the TTL, in case a
watch event was lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: After this long, unmet expectations are treated as met (as upstream's 5 minutes).
TTL = 300.0


@dataclass
class _Expected:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    since: float = field(default_factory=time.monotonic)


class Expectations:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._by_key: dict[str, _Expected] = {}

    def expect_creations(self, key: str, count: int) -> None:
        e = self._by_key.setdefault(key, _Expected())
        e.adds += count
        e.since = time.monotonic()

    def expect_deletions(self, key: str, uids: list[str]) -> None:
        e = self._by_key.setdefault(key, _Expected())
        e.deletes.update(uids)
        e.since = time.monotonic()

    def created(self, key: str) -> None:
        e = self._by_key.get(key)
        if e is not None and e.adds > 0:
            e.adds -= 1

    def deleted(self, key: str, uid: str) -> None:
        e = self._by_key.get(key)
        if e is not None:
            e.deletes.discard(uid)

    def satisfied(self, key: str) -> bool:
        e = self._by_key.get(key)
        if e is None or (e.adds <= 0 and not e.deletes):
            return True
        return time.monotonic() - e.since > self.ttl

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
