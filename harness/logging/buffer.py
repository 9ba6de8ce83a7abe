"""The log agent's file buffer: records wait on disk until the aggregator has acknowledged them.

Records are appended to the current chunk, a file holding a msgpack stream of `[EventTime, record]` (exactly the
body of a Forward PackedForward message). `sync` writes what was appended and fsyncs it: only then may the reader
commit its file positions, so a crash (kill -9 included) can repeat lines but never skip them. A chunk is closed
when it reaches `chunk_max_bytes` or is `chunk_max_age` seconds old: fsynced and renamed from `.open` to
`.queued`. Queued chunks are sent oldest first and deleted when acknowledged (`ack`).

Files, in the buffer directory: `<seq>.<chunk id>.open` (at most one, the current chunk) and
`<seq>.<chunk id>.queued`; `seq` (12 digits) orders them and the chunk id (as `forward.new_chunk_id` makes it,
`/` and `+` spelled `_` and `-`) is the one sent with every attempt, so a receiver could recognise a resend.
Opening a buffer recovers what a crash left: an `.open` chunk is cut after its last whole record and queued.

The total size of the chunks is bounded (`max_bytes`): `full()` tells the reader to stop reading (back-pressure)
until acknowledged chunks make room, so nothing is dropped. Thread-safe: the agent appends from a worker thread
while its sender reads and acknowledges chunks on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from harness.logging import forward
from harness.util.files import fsync_dir

log = logging.getLogger("harness.logging.buffer")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_CHUNK_MAX_BYTES = 1024 * 1024
DEFAULT_CHUNK_MAX_AGE = 1.0
OPEN, QUEUED, BAD = ".open", ".queued", ".bad"

_NAME = re.compile(r"^(?P<seq>\d{12})\.(?P<id>[A-Za-z0-9_=-]+)(?P<state>\.open|\.queued)$")


class LogBufferError(Exception):
    """The buffer directory cannot be used (not writable, disk full, ...)."""


class BufferCorruptError(LogBufferError):
    """A queued chunk whose contents are not a msgpack stream of [time, record]."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A closed chunk waiting to be sent: its order, its id, its file and size."""

    seq: int
    id: str
    path: Path
    size: int


def _id_to_name(chunk_id: str) -> str:
    """A chunk id (base64) as a file name part: `/` and `+` are not welcome there."""
    return chunk_id.replace("/", "_").replace("+", "-")


def _name_to_id(name: str) -> str:
    """The chunk id a file name part spells."""
    return name.replace("_", "/").replace("-", "+")


def valid_prefix(data: bytes) -> tuple[int, int]:
    """(bytes, records) of the longest prefix of `data` made of whole, well-formed [time, record] entries."""
    unpacker = forward.new_unpacker()
    unpacker.feed(data)
    good = count = 0
    try:
        for item in unpacker:
            if not _is_entry(item):
                break
            good = unpacker.tell()
            count += 1
    except (ValueError, msgpack.exceptions.UnpackException):
        pass
    return good, count


def _is_entry(item: Any) -> bool:
    """Whether an unpacked object is a [time, record] entry."""
    return (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (int, float))
            and not isinstance(item[0], bool) and isinstance(item[1], dict))


class FileBuffer:
    """Chunks of records on disk, appended to, queued, sent and acknowledged; see the module docstring."""

    def __init__(self, directory: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 chunk_max_bytes: int = DEFAULT_CHUNK_MAX_BYTES, chunk_max_age: float = DEFAULT_CHUNK_MAX_AGE,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.chunk_max_bytes = chunk_max_bytes
        self.chunk_max_age = chunk_max_age
        self.on_queued = on_queued
        self._lock = threading.Lock()
        self._packer = msgpack.Packer(use_bin_type=True)
        self._queue: list[Chunk] = []
        self._queued_bytes = 0
        self._seq = 0
        # The current chunk: its file (None until the first append), bytes written, bytes not yet written.
        self._fd: int | None = None
        self._path: Path | None = None
        self._id = ""
        self._written = 0
        self._pending = bytearray()
        self._opened_at = 0.0
        self._dir_dirty = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._recover()
        except OSError as exc:
            raise LogBufferError(f"cannot use buffer directory {self.directory}: {exc}") from exc

    # ------------------------------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Queue the chunks a previous run left, cutting a crashed run's current chunk after its last record."""
        found: list[tuple[int, str, str, Path]] = []
        for entry in os.scandir(self.directory):
            m = _NAME.match(entry.name)
            if m is None:
                if not entry.name.endswith(BAD):
                    log.warning("ignoring unexpected file %s in the buffer directory", entry.path)
                continue
            found.append((int(m["seq"]), m["id"], m["state"], Path(entry.path)))
        for seq, name_id, state, found_path in sorted(found):
            self._seq = max(self._seq, seq)
            path = self._repair(found_path) if state == OPEN else found_path
            if path is None:
                continue
            size = path.stat().st_size
            self._queue.append(Chunk(seq, _name_to_id(name_id), path, size))
            self._queued_bytes += size
        if found:
            fsync_dir(self.directory)
            log.info("buffer holds %d chunks (%d bytes) from before", len(self._queue), self._queued_bytes)

    def _repair(self, path: Path) -> Path | None:
        """Cut an interrupted chunk after its last whole record and queue it; None if it held no record."""
        data = path.read_bytes()
        good, count = valid_prefix(data)
        if good < len(data):
            log.warning("chunk %s: dropping %d bytes of an unfinished record", path.name, len(data) - good)
            os.truncate(path, good)
        if count == 0:
            path.unlink()
            return None
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        queued = path.with_name(path.name[: -len(OPEN)] + QUEUED)
        os.replace(path, queued)
        return queued

    # ------------------------------------------------------------------------------------------ writing

    def append(self, time_: float, record: dict[str, Any]) -> None:
        """Add a record to the current chunk (in memory until `sync`); closes the chunk once it is big enough."""
        with self._lock:
            if self._path is None:
                self._open_chunk()
            self._pending += self._packer.pack([forward.event_time(time_), record])
            if self._written + len(self._pending) >= self.chunk_max_bytes:
                self._close_chunk()

    def sync(self) -> None:
        """Make every appended record durable (write and fsync); positions may be committed after this."""
        with self._lock:
            self._sync()

    def close_if_due(self, now: float | None = None) -> bool:
        """Close the current chunk if it is older than `chunk_max_age`; whether it was closed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._path is None or now - self._opened_at < self.chunk_max_age:
                return False
            self._close_chunk()
            return True

    def close_current(self) -> None:
        """Close the current chunk now, whatever its size and age (at shutdown)."""
        with self._lock:
            if self._path is not None:
                self._close_chunk()

    def _open_chunk(self) -> None:
        """Start a new current chunk file, with a new sequence number and chunk id."""
        self._seq += 1
        self._id = forward.new_chunk_id()
        path = self.directory / f"{self._seq:012d}.{_id_to_name(self._id)}{OPEN}"
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LogBufferError(f"cannot create chunk {path}: {exc}") from exc
        self._path, self._written, self._opened_at, self._dir_dirty = path, 0, time.monotonic(), True

    def _sync(self) -> None:
        """Write the pending records and fsync. On failure the chunk is cut back to what it held before and the
        pending records are dropped (their positions were not committed: the reader reads them again)."""
        if self._fd is None:
            return
        before = self._written
        try:
            view = memoryview(self._pending)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._written += n
            view.release()
            self._pending.clear()
            os.fsync(self._fd)
            if self._dir_dirty:
                fsync_dir(self.directory)
                self._dir_dirty = False
        except OSError as exc:
            self._pending.clear()
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, before)
                self._written = before
            raise LogBufferError(f"cannot write chunk {self._path}: {exc}") from exc

    def _close_chunk(self) -> None:
        """Sync the current chunk and queue it."""
        assert self._path is not None and self._fd is not None
        self._sync()
        os.close(self._fd)
        path, self._path, self._fd = self._path, None, None
        if self._written == 0:
            path.unlink()
            self._dir_dirty = False
            return
        queued = path.with_name(path.name[: -len(OPEN)] + QUEUED)
        try:
            os.replace(path, queued)
            fsync_dir(self.directory)
        except OSError as exc:
            raise LogBufferError(f"cannot queue chunk {path}: {exc}") from exc
        self._queue.append(Chunk(self._seq, self._id, queued, self._written))
        self._queued_bytes += self._written
        self._written = 0
        if self.on_queued is not None:
            self.on_queued()

    # ------------------------------------------------------------------------------------------ sending

    def oldest(self) -> Chunk | None:
        """The chunk to send next (the oldest queued one), if any."""
        with self._lock:
            return self._queue[0] if self._queue else None

    def queued(self) -> list[Chunk]:
        """The queued chunks, oldest first."""
        with self._lock:
            return list(self._queue)

    def read_entries(self, chunk: Chunk) -> list[forward.Entry]:
        """A queued chunk's records; BufferCorruptError if the file is not a stream of [time, record]."""
        try:
            data = chunk.path.read_bytes()
        except OSError as exc:
            raise BufferCorruptError(f"cannot read chunk {chunk.path}: {exc}") from exc
        unpacker = forward.new_unpacker()
        unpacker.feed(data)
        entries: list[forward.Entry] = []
        end = 0
        try:
            for item in unpacker:
                if not _is_entry(item):
                    raise BufferCorruptError(f"chunk {chunk.path.name}: an entry is not [time, record]")
                entries.append(forward.Entry(float(item[0]), item[1]))
                end = unpacker.tell()
        except (ValueError, msgpack.exceptions.UnpackException) as exc:
            raise BufferCorruptError(f"chunk {chunk.path.name}: {exc}") from exc
        if end != len(data):
            raise BufferCorruptError(f"chunk {chunk.path.name}: ends inside a record")
        return entries

    def ack(self, chunk: Chunk) -> None:
        """The chunk was acknowledged: delete it."""
        with self._lock:
            self._drop(chunk)
        with contextlib.suppress(FileNotFoundError):
            chunk.path.unlink()

    def quarantine(self, chunk: Chunk) -> None:
        """Set a chunk that cannot be read aside (`.bad`), so it stops blocking the queue."""
        with self._lock:
            self._drop(chunk)
        with contextlib.suppress(OSError):
            chunk.path.rename(chunk.path.with_name(chunk.path.name + BAD))

    def _drop(self, chunk: Chunk) -> None:
        """Take a chunk off the queue (its file is dealt with by the caller)."""
        if chunk in self._queue:
            self._queue.remove(chunk)
            self._queued_bytes -= chunk.size

    # ------------------------------------------------------------------------------------------ size

    @property
    def total_bytes(self) -> int:
        """Bytes held: queued chunks and the current one (appended but not yet synced included)."""
        with self._lock:
            return self._queued_bytes + self._written + len(self._pending)

    def space(self) -> int:
        """Bytes that may still be appended before the buffer is full (0 when full)."""
        return max(self.max_bytes - self.total_bytes, 0)

    def full(self) -> bool:
        """Whether the buffer is at its size limit: the reader should wait for acknowledgements."""
        return self.space() == 0

    def close(self) -> None:
        """Sync and close the current chunk's file; it stays `.open` and is queued when the buffer is reopened."""
        with self._lock:
            if self._fd is not None:
                self._sync()
                os.close(self._fd)
            self._fd, self._path = None, None


__all__ = ["DEFAULT_CHUNK_MAX_AGE", "DEFAULT_CHUNK_MAX_BYTES", "DEFAULT_MAX_BYTES", "BufferCorruptError", "Chunk",
           "FileBuffer", "LogBufferError", "valid_prefix"]
