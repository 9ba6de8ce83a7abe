"""The narrow storage protocol the apiserver is written against (after k3s-io/kine).

Keys are strings (`/registry/<plural>/[<namespace>/]<name>`), values are opaque bytes, and
every write returns the store revision it happened at. The etcd implementation in
`harness.storage.etcd` is the product; anything else implementing `Backend` is a test aid.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """One stored key as read: its value and the revisions etcd gave it."""

    key: str
    value: bytes
    revision: int  # mod_revision: the object's resourceVersion
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a prefix listing, read at one consistent revision."""

    records: list[Record]
    revision: int  # the store revision the page was read at
    more: bool  # whether keys remain after the last record
    remaining: int = 0  # how many keys remain after the last record (0 when unknown or none)


EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, slots=True)
class Event:
    """One change under a watched prefix.

    For DELETED, `value` is the last stored value and `revision` the revision of the delete.
    """

    type: EventType
    key: str
    value: bytes
    revision: int
    prev_value: bytes | None = None


class StorageError(Exception):
    """Base of the storage layer's errors; the apiserver maps them to API errors."""


class KeyExists(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class KeyNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class RevisionMismatch(StorageError):
    """A conditional write lost: `current` is what is stored now (None if deleted)."""

    def __init__(self, key: str, current: Record | None) -> None:
        super().__init__(f"revision mismatch: {key}")
        self.key = key
        self.current = current


class Compacted(StorageError):
    """The requested revision is older than the store's compacted history."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest available {compact_revision})")
        self.requested = requested
        self.compact_revision = compact_revision


class Unavailable(StorageError):
    """The store cannot be reached."""


class Backend(Protocol):
    async def get(self, key: str) -> Record | None:
        """The current record of `key`, or None."""
        ...

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = "") -> Page:
        """Keys under `prefix` (from `start` inclusive, key order) at `revision` (0: now)."""
        ...

    async def count(self, prefix: str) -> int:
        ...

    async def create(self, key: str, value: bytes, *, ttl: int = 0) -> int:
        """Store `value` at a new `key`; KeyExists if it is there. Returns the revision. With `ttl` the key is
        removed by the store itself at least `ttl` seconds later (Events: the apiserver's --event-ttl)."""
        ...

    async def update(self, key: str, value: bytes, *, revision: int, ttl: int = 0) -> int:
        """Replace `key` if its mod revision is still `revision`; RevisionMismatch otherwise. `ttl` as for create,
        counted from this write."""
        ...

    async def delete(self, key: str, *, revision: int = 0) -> int:
        """Delete `key` (if its mod revision is `revision`, when not 0). Returns the revision."""
        ...

    def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        """Changes under `prefix` after `revision` (exclusive), in order; Compacted if too old."""
        ...

    async def current_revision(self) -> int:
        ...

    async def compact(self, revision: int) -> None:
        """Discard history before `revision`."""
        ...

    async def close(self) -> None:
        ...
