"""An in-memory `Backend` for unit tests of what sits on storage (the generic registry, the allocators).

Keyed records with etcd-like revisions and conditional writes; every write's ttl is recorded.
Reads and creates yield to the event loop first, so concurrent claims interleave as they would
over a network.
"""

from __future__ import annotations

import asyncio

from harness.storage.backend import KeyExists, KeyNotFound, Page, Record, RevisionMismatch


class MemoryBackend:
    """Just enough of `Backend` for the store and the allocators: keyed records with revisions."""

    def __init__(self) -> None:
        self.data: dict[str, Record] = {}
        self.revision = 0
        self.ttls: list[int] = []

    async def get(self, key: str) -> Record | None:
        await asyncio.sleep(0)  # let concurrent claims interleave
        return self.data.get(key)

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = "") -> Page:
        return Page([r for k, r in sorted(self.data.items()) if k.startswith(prefix)], self.revision, False)

    async def create(self, key: str, value: bytes, *, ttl: int = 0) -> int:
        await asyncio.sleep(0)
        if key in self.data:
            raise KeyExists(key)
        return self._put(key, value, ttl)

    async def update(self, key: str, value: bytes, *, revision: int, ttl: int = 0) -> int:
        rec = self.data.get(key)
        if rec is None or rec.revision != revision:
            raise RevisionMismatch(key, rec)
        return self._put(key, value, ttl)

    async def delete(self, key: str, *, revision: int = 0) -> int:
        rec = self.data.get(key)
        if rec is None:
            raise KeyNotFound(key)
        if revision and rec.revision != revision:
            raise RevisionMismatch(key, rec)
        self.revision += 1
        del self.data[key]
        return self.revision

    def _put(self, key: str, value: bytes, ttl: int) -> int:
        self.revision += 1
        self.ttls.append(ttl)
        created = self.data[key].create_revision if key in self.data else self.revision
        self.data[key] = Record(key, value, self.revision, created)
        return self.revision

    def keys(self, kind: str) -> set[str]:
        """The allocated values of one allocator (`serviceips`, `servicenodeports`)."""
        prefix = f"/registry/allocations/{kind}/"
        return {k[len(prefix):] for k in self.data if k.startswith(prefix)}
