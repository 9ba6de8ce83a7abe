"""The aggregator's log store: JSON lines in files by UTC day and source, queried and followed in-process.

Layout under the root directory, one file per day and source:

    <root>/<YYYY-MM-DD>/<node>/<component>.jsonl                          component records
    <root>/<YYYY-MM-DD>/<node>/pods/<namespace>_<pod>_<container>.jsonl   container records
    <root>/<YYYY-MM-DD>/other/<tag>.jsonl                                 anything else (node "-" if absent)

The day is the UTC day of the event time. Each line is one JSON object: "time" (the event time, float seconds
since the epoch; it wins over a record field of that name) followed by the record's fields. Path parts are
sanitized (`path_part`): no "/", no "..", no leading ".", still readable.

`append` writes a batch and makes it durable (flush and fsync of every touched file, and of a directory that got a
new file) before it returns: the aggregator acknowledges a chunk only after that. It blocks for as long as fsync
takes, so the asyncio aggregator calls `append_async`, which runs it in a worker thread; a lock serialises writers.
Open files are kept in a small LRU cache instead of being reopened per batch.

`query` selects files by their path first (day from `since`/`until`, node directory, component or pod file name),
then filters lines. `follow` is an async iterator of the records appended from then on (optionally the existing
matches first, exactly once): `append` notifies subscribers in-process, through their event loop, no file polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from harness.logging.forward import Entry
from harness.util.files import fsync_dir

log = logging.getLogger("harness.logging.logstore")

#: How many files stay open for appending (least recently used closed first).
OPEN_FILES = 64
#: How many records a follower may fall behind before new ones are dropped for it.
FOLLOW_BACKLOG = 10_000
#: The top-level directory, inside a day, of records that are neither component nor container records.
OTHER = "other"
PODS = "pods"
SUFFIX = ".jsonl"
#: Event times outside [0, year 9999] are replaced by the arrival time (they cannot name a day).
MAX_TIME = 253402300799.0
KINDS = ("component", "container", "other")

_DAY = re.compile(r"^\d{4}-\d\d-\d\d$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@:+=,-]")
_DOTS = re.compile(r"\.{2,}")


class LogStoreError(Exception):
    """The store cannot do what was asked (e.g. its directory cannot be written)."""


# --------------------------------------------------------------------------------------------------- records


def path_part(value: str, *, limit: int = 200) -> str:
    """One path component made from a name: characters other than letters, digits and `._@:+=,-` become "_", runs
    of dots become underscores, a leading dot too; never empty, at most `limit` characters."""
    part = _UNSAFE.sub("_", value)
    part = _DOTS.sub(lambda m: "_" * len(m.group()), part)
    if part.startswith("."):
        part = "_" + part[1:]
    return part[:limit] or "_"


def _text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) and value else None


def kind_of(record: dict[str, Any]) -> str:
    """"component", "container" or "other": which schema a record follows (what agents send, or anything else)."""
    if _text(record, "node") is None:
        return "other"
    if _text(record, "component") is not None:
        return "component"
    if all(_text(record, k) is not None for k in ("namespace", "pod", "container")):
        return "container"
    return "other"


def source_of(tag: str, record: dict[str, Any]) -> str:
    """The file (relative to a day directory, without suffix) a record goes to."""
    kind = kind_of(record)
    if kind == "component":
        return f"{path_part(record['node'])}/{path_part(record['component'])}"
    if kind == "container":
        name = "_".join(path_part(record[k]) for k in ("namespace", "pod", "container"))
        return f"{path_part(record['node'])}/{PODS}/{name}"
    return f"{OTHER}/{path_part(tag)}"


def _valid_time(value: float) -> float:
    return value if math.isfinite(value) and 0 <= value <= MAX_TIME else time.time()


def stored_record(tag: str, entry: Entry) -> dict[str, Any]:
    """The line a record is stored as: "time" first, then its fields; "other" records also keep their tag and
    get node "-" when they have none."""
    line: dict[str, Any] = {"time": _valid_time(entry.time)}
    line.update((k, v) for k, v in entry.record.items() if k != "time")
    if kind_of(entry.record) == "other":
        line.setdefault("node", "-")
        line.setdefault("tag", tag)
    return line


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def dumps(record: dict[str, Any]) -> bytes:
    """A record as one JSON line (with the newline); any value that JSON has no type for becomes text."""
    try:
        return orjson.dumps(record, default=_default, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # e.g. lone surrogates from undecodable bytes
        return (json.dumps(record, default=_default, allow_nan=False) + "\n").encode()


def _loads(line: bytes) -> Any:
    """One stored line back (orjson, or json for what orjson refuses, e.g. an escaped lone surrogate)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def day_of(t: float) -> str:
    """The UTC day of an epoch time, as the day directories are named."""
    return datetime.fromtimestamp(_valid_time(t), UTC).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filter:
    """What a query or a follower wants: fields equal to these values, times in [since, until), messages matching
    grep (the whole record as JSON when it has no text message). None matches anything."""

    node: str | None = None
    component: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    since: float | None = None
    until: float | None = None
    grep: re.Pattern[str] | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether a stored record is wanted."""
        for key in ("node", "component", "namespace", "pod", "container"):
            wanted = getattr(self, key)
            if wanted is not None and record.get(key) != wanted:
                return False
        t = record.get("time")
        if not isinstance(t, (int, float)):
            return False
        if (self.since is not None and t < self.since) or (self.until is not None and t >= self.until):
            return False
        if self.grep is not None:
            message = record.get("message")
            text = message if isinstance(message, str) else dumps(record).decode(errors="replace")
            if self.grep.search(text) is None:
                return False
        return True

    def wants_day(self, day: str) -> bool:
        """Whether a day directory may hold wanted records (by name: days are UTC, names sort as dates)."""
        if self.since is not None and day < day_of(self.since):
            return False
        return not (self.until is not None and day > day_of(self.until))

    def may_hold(self, parts: tuple[str, ...]) -> bool:
        """Whether the file at `parts` (relative to its day, suffix removed) may hold wanted records: a node's files
        only hold that node's records, a component file one component's, a pod file one container's. Files under
        other/ may hold anything (and a node named "other" shares that directory), so they are always read."""
        if parts[0] == OTHER:
            return True
        if self.node is not None and path_part(self.node) != parts[0]:
            return False
        if len(parts) == 2:  # <node>/<component>
            if self.namespace is not None or self.pod is not None or self.container is not None:
                return False
            return self.component is None or path_part(self.component) == parts[1]
        if len(parts) == 3 and parts[1] == PODS:
            return self.component is None and self._may_be_container(parts[2])
        return True

    def _may_be_container(self, name: str) -> bool:
        if self.namespace is not None and not name.startswith(path_part(self.namespace) + "_"):
            return False
        pieces = name.split("_")
        if len(pieces) != 3:  # a name with "_" in it: cannot tell, read it
            return True
        return ((self.pod is None or path_part(self.pod) == pieces[1])
                and (self.container is None or path_part(self.container) == pieces[2]))


# --------------------------------------------------------------------------------------------------- followers


@dataclass(eq=False)
class Subscription:
    """A follower: matching records appended after it subscribed arrive on its queue, through its event loop.
    `snapshot` holds the sizes the candidate files had then, so its backlog and its queue never overlap."""

    filter: Filter
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None]
    snapshot: dict[Path, int] = field(default_factory=dict)
    dropped: int = 0
    closed: bool = False

    def deliver(self, record: dict[str, Any]) -> None:
        """Queue a record (in the subscriber's loop); when the follower is too far behind, drop it and count."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("a follower is too slow: %d records dropped for it", self.dropped)

    def close(self) -> None:
        """End the follow: `get` returns None from now on (called in the subscriber's loop)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    async def get(self) -> dict[str, Any] | None:
        """The next record, or None once closed."""
        batch = await self.get_batch(1)
        return batch[0] if batch else None

    async def get_batch(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The next records (waiting for the first, then up to `limit` already queued); [] once closed."""
        if self.closed and self.queue.empty():
            return []
        batch: list[dict[str, Any]] = []
        record = await self.queue.get()
        while record is not None:
            batch.append(record)
            if len(batch) >= limit or self.queue.empty():
                return batch
            record = self.queue.get_nowait()
        self.closed = True  # the end marker: keep it for later calls
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)
        return batch


# --------------------------------------------------------------------------------------------------- the store


@dataclass
class Appended:
    """What one `append` wrote: records per kind ("component", "container", "other") and bytes."""

    records: Counter[str] = field(default_factory=Counter)
    bytes: int = 0


class LogStore:
    """Log records in JSON-lines files by day and source under `root`, kept `retention_days` days.

    `append` is thread-safe and blocking (fsync); use `append_async` from an event loop. `query` and `backlog` read
    files without the lock (a line being written is skipped); `follow`/`subscribe` are for coroutines.
    """

    def __init__(self, root: Path, retention_days: int = 7, *, open_files: int = OPEN_FILES) -> None:
        if retention_days < 1:
            raise LogStoreError(f"retention_days must be at least 1, not {retention_days}")
        self.root = Path(root)
        self.retention_days = retention_days
        self.open_files = open_files
        self._lock = threading.Lock()
        self._files: OrderedDict[Path, IO[bytes]] = OrderedDict()
        self._subscriptions: set[Subscription] = set()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogStoreError(f"cannot create the log directory {self.root}: {exc.strerror or exc}") from exc

    # ----------------------------------------------------------------------------------------------- writing

    def append(self, tag: str, entries: Iterable[Entry]) -> Appended:
        """Store a batch of one tag's entries durably (fsync'd when this returns) and tell the followers."""
        result = Appended()
        batches: dict[Path, list[bytes]] = {}
        records: list[dict[str, Any]] = []
        for entry in entries:
            record = stored_record(tag, entry)
            line = dumps(record)
            path = self.root / day_of(record["time"]) / (source_of(tag, entry.record) + SUFFIX)
            batches.setdefault(path, []).append(line)
            records.append(record)
            result.records[kind_of(entry.record)] += 1
            result.bytes += len(line)
        if not records:
            return result
        with self._lock:
            try:
                for path, lines in batches.items():
                    handle = self._handle(path)
                    handle.writelines(lines)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise LogStoreError(f"cannot store logs in {self.root}: {exc.strerror or exc}") from exc
            self._notify(records)
        return result

    async def append_async(self, tag: str, entries: Iterable[Entry]) -> Appended:
        """`append` in a worker thread, so an event loop does not wait for the disk."""
        return await asyncio.to_thread(self.append, tag, list(entries))

    def _handle(self, path: Path) -> IO[bytes]:
        """The open file for a path (caller holds the lock); a new file's directories are fsync'd too."""
        handle = self._files.get(path)
        if handle is not None:
            self._files.move_to_end(path)
            return handle
        created = not path.exists()
        if created:
            path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "ab")  # noqa: SIM115  (kept open in the cache)
        if created:
            self._fsync_dirs(path.parent)
        self._files[path] = handle
        while len(self._files) > self.open_files:
            _, oldest = self._files.popitem(last=False)
            oldest.close()
        return handle

    def _fsync_dirs(self, directory: Path) -> None:
        """fsync a new file's directory and its parents up to the root, so the new names survive a crash."""
        while True:
            fsync_dir(directory)
            if directory == self.root or self.root not in directory.parents:
                return
            directory = directory.parent

    def _notify(self, records: list[dict[str, Any]]) -> None:
        """Hand each follower the records it wants, through its loop (caller holds the lock)."""
        for sub in list(self._subscriptions):
            wanted = [r for r in records if sub.filter.matches(r)]
            if not wanted:
                continue
            try:
                for record in wanted:
                    sub.loop.call_soon_threadsafe(sub.deliver, record)
            except RuntimeError:  # its loop is closed: the follower is gone
                self._subscriptions.discard(sub)

    def close(self) -> None:
        """Close the open files (appending again reopens them)."""
        with self._lock:
            while self._files:
                _, handle = self._files.popitem()
                handle.close()

    # ----------------------------------------------------------------------------------------------- reading

    def days(self) -> list[str]:
        """The day directories there are, oldest first."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _DAY.match(p.name))
        except FileNotFoundError:
            return []

    def _candidates(self, flt: Filter) -> Iterator[Path]:
        """The files that may hold records the filter wants, by day and path."""
        for day in self.days():
            if not flt.wants_day(day):
                continue
            base = self.root / day
            for path in sorted(base.rglob("*" + SUFFIX)):
                parts = path.relative_to(base).with_suffix("").parts
                if flt.may_hold(parts):
                    yield path

    def query(self, node: str | None = None, component: str | None = None, namespace: str | None = None,
              pod: str | None = None, container: str | None = None, since: float | None = None,
              until: float | None = None, grep: re.Pattern[str] | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        """The stored records that match, sorted by time; with `limit`, only the newest `limit` of them."""
        flt = Filter(node, component, namespace, pod, container, since, until, grep)
        return self.select(flt, limit)

    def select(self, flt: Filter, limit: int | None = None,
               sizes: dict[Path, int] | None = None) -> list[dict[str, Any]]:
        """`query` with a Filter; with `sizes`, only those files, each up to its size (a follower's snapshot)."""
        paths = list(sizes) if sizes is not None else list(self._candidates(flt))
        found: list[dict[str, Any]] = []
        for path in paths:
            found.extend(self._read(path, flt, None if sizes is None else sizes[path]))
        found.sort(key=lambda r: r["time"])
        if limit is not None:
            found = found[-limit:] if limit > 0 else []
        return found

    async def select_async(self, flt: Filter, limit: int | None = None) -> list[dict[str, Any]]:
        """`select` in a worker thread (reading days of logs can take a while)."""
        return await asyncio.to_thread(self.select, flt, limit)

    @staticmethod
    def _read(path: Path, flt: Filter, size: int | None) -> Iterator[dict[str, Any]]:
        """The wanted records of one file (up to `size` bytes); a torn or unparseable line is skipped."""
        try:
            with open(path, "rb") as f:
                data = f.read() if size is None else f.read(size)
        except FileNotFoundError:  # expired meanwhile
            return
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                continue
            try:
                record = _loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and flt.matches(record):
                yield record

    # ----------------------------------------------------------------------------------------------- following

    def subscribe(self, flt: Filter, *, backlog: bool = False, maxsize: int = FOLLOW_BACKLOG) -> Subscription:
        """Start following (call in the event loop that will read it). With `backlog`, the subscription's snapshot
        records where the candidate files ended, atomically with the subscription, for `backlog()`."""
        sub = Subscription(flt, asyncio.get_running_loop(), asyncio.Queue(maxsize))
        with self._lock:
            self._subscriptions.add(sub)
            if backlog:
                sub.snapshot = {path: path.stat().st_size for path in self._candidates(flt)}
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to a follower."""
        with self._lock:
            self._subscriptions.discard(sub)
        sub.close()

    async def backlog(self, sub: Subscription, limit: int | None = None) -> list[dict[str, Any]]:
        """The matching records stored before `sub` subscribed (with backlog=True), sorted, the newest `limit`."""
        return await asyncio.to_thread(self.select, sub.filter, limit, sub.snapshot)

    async def follow(self, node: str | None = None, component: str | None = None, namespace: str | None = None,
                     pod: str | None = None, container: str | None = None, since: float | None = None,
                     until: float | None = None, grep: re.Pattern[str] | None = None, limit: int | None = None,
                     *, backlog: bool = False) -> AsyncGenerator[dict[str, Any], None]:
        """The matching records as they are appended, forever; with `backlog`, the stored ones first (the newest
        `limit`), each record exactly once. Close it (`aclose`, or `contextlib.aclosing`) to unsubscribe."""
        sub = self.subscribe(Filter(node, component, namespace, pod, container, since, until, grep), backlog=backlog)
        try:
            if backlog:
                for stored in await self.backlog(sub, limit):
                    yield stored
            while (record := await sub.get()) is not None:
                yield record
        finally:
            self.unsubscribe(sub)

    # ----------------------------------------------------------------------------------------------- retention

    def expire(self, now: float | None = None) -> list[str]:
        """Remove the day directories that ended more than retention_days ago; return their names."""
        now = time.time() if now is None else now
        today = datetime.fromtimestamp(now, UTC).date()
        oldest_kept = today - timedelta(days=self.retention_days)
        removed: list[str] = []
        with self._lock:
            for day in self.days():
                if date.fromisoformat(day) >= oldest_kept:
                    continue
                directory = self.root / day
                for path in [p for p in self._files if directory in p.parents]:
                    self._files.pop(path).close()
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(day)
        if removed:
            log.info("removed logs of %s (older than %d days)", ", ".join(removed), self.retention_days)
        return removed


__all__ = ["KINDS", "Appended", "Filter", "LogStore", "LogStoreError", "Subscription", "day_of", "dumps",
           "kind_of", "path_part", "source_of", "stored_record"]
