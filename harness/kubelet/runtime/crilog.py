"""Container logs in the CRI file format: the shim's writer and the kubelet's reader.

Each line of a log file is `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\\n`. A line the container
wrote that is longer than 16 KiB is cut into `P` (partial) records and a final `F` record, and an unterminated
chunk at EOF is written as `P`, as containerd does. The writer rotates `<name>.log` to
`<name>.log.<YYYYmmdd-HHMMSS.ffffff>` when it grows past a size, keeping a number of files in all. Lines are read
and joined by harness.util.crilog, which the log agent shares.

The writer half is stdlib-only and cheap to import (the per-container shim uses it); the reader imports asyncio
only when called.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness.util.crilog import CriJoiner, CriMessage, CriParseError, parse_line
from harness.util.rfc3339 import datetime_ns, format_ns, parse_ns, trim_fraction
from harness.util.rotation import rotated_files

if TYPE_CHECKING:
    import asyncio

MAX_LINE = 16 * 1024
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 5
READ_CHUNK = 64 * 1024
YIELD_CHUNK = 32 * 1024

_EOF, _CHUNK, _LIMIT = 0, 1, 2


class CriLogError(Exception):
    """A CRI log file that cannot be read."""


# --------------------------------------------------------------------------------------------------- writer


class LineSplitter:
    """Cuts one stream's bytes into CRI records: (b"F", line) per line, (b"P", chunk) for over-long or unfinished."""

    def __init__(self, max_len: int = MAX_LINE) -> None:
        self.max_len = max_len
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[bytes, bytes]] = []
        start = 0
        limit = self.max_len
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                while len(buf) - start > limit:
                    out.append((b"P", buf[start : start + limit]))
                    start += limit
                break
            while nl - start > limit:
                out.append((b"P", buf[start : start + limit]))
                start += limit
            end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl
            out.append((b"F", buf[start:end]))
            start = nl + 1
        self._buf = buf[start:]
        return out

    def flush(self) -> list[tuple[bytes, bytes]]:
        """What is left at EOF: an unterminated chunk, written as partial."""
        rest, self._buf = self._buf, b""
        return [(b"P", rest)] if rest else []


class CriLogWriter:
    """Appends CRI records to a log file and rotates it by size. Thread-safe; never raises on I/O errors.

    `path` None discards everything (the container has no log file). `fd`, if given, is an already opened
    (O_APPEND) descriptor of `path`.
    """

    def __init__(
        self,
        path: str | None,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_files: int = DEFAULT_MAX_FILES,
        fd: int | None = None,
    ) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self._lock = threading.Lock()
        self._closed = False
        self._fd: int | None = fd
        self._size = 0
        if path is not None and fd is None:
            self._fd = open_log(path)
        if self._fd is not None:
            try:
                self._size = os.fstat(self._fd).st_size
            except OSError:
                self._size = 0

    def write(self, stream: str, records: list[tuple[bytes, bytes]]) -> None:
        """Write records of one stream (from LineSplitter) with the current time."""
        if not records or self.path is None:
            return
        with self._lock:
            if self._closed:
                return
            head = f"{format_ns()} {stream} ".encode()
            lines = [head + tag + b" " + content + b"\n" for tag, content in records]
            if self.max_size <= 0:
                self._write(b"".join(lines))
                return
            # Rotate before a line that would take a non-empty file past max_size.
            batch: list[bytes] = []
            pending = 0
            for line in lines:
                if self._size + pending + len(line) > self.max_size and self._size + pending > 0:
                    self._write(b"".join(batch))
                    batch, pending = [], 0
                    self._rotate()
                batch.append(line)
                pending += len(line)
            self._write(b"".join(batch))

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._size += n
        except OSError:
            pass

    def _rotate(self) -> None:
        assert self.path is not None
        ns = time.time_ns()
        secs, frac = divmod(ns, 1_000_000_000)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(secs)) + f".{frac // 1000:06d}"
        with contextlib.suppress(OSError):
            os.rename(self.path, f"{self.path}.{stamp}")
        old, self._fd = self._fd, open_log(self.path)
        self._size = 0
        if old is not None:
            os.close(old)
        keep = max(self.max_files - 1, 0)
        rotated = rotated_files(self.path, compressed=True)
        for stale in rotated[: max(len(rotated) - keep, 0)]:
            with contextlib.suppress(OSError):
                stale.unlink()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def open_log(path: str) -> int | None:
    """Open (create) a log file for appending; None if that is impossible (e.g. its directory is gone)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------- reader


class _Decoder:
    """CRI lines -> what `kubectl logs` prints: partials joined, filtered by stream and time."""

    def __init__(self, stream: str | None, since_ns: int | None, timestamps: bool) -> None:
        self.stream = stream
        self.since_ns = since_ns
        self.timestamps = timestamps
        # Whole lines however long, as the kubelet shows them: no limit on a joined message.
        self.joiner = CriJoiner(max_message=None)

    def line(self, raw: bytes) -> bytes | None:
        try:
            line = parse_line(raw)
        except CriParseError:
            return None
        if self.stream is not None and line.stream != self.stream:
            return None
        message = self.joiner.feed(line)
        return None if message is None else self._message(message, b"\n")

    def _message(self, message: CriMessage, end: bytes) -> bytes | None:
        if self.since_ns is not None and parse_ns(message.timestamp) < self.since_ns:
            return None
        if self.timestamps:
            return trim_fraction(message.timestamp).encode() + b" " + message.content + end
        return message.content + end

    def flush(self) -> list[bytes]:
        """Unfinished partial lines at the very end, without a newline (as the kubelet shows them)."""
        out = []
        for message in self.joiner.flush():
            msg = self._message(message, b"")
            if msg is not None:
                out.append(msg)
        return out


class _Tail:
    """An open log file read forward line by line; remembers which file (device, inode) it is."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        st = os.fstat(self.f.fileno())
        self.ident = (st.st_dev, st.st_ino)
        self.rest = b""

    def lines(self, max_bytes: int = READ_CHUNK) -> list[bytes] | None:
        """Complete lines read from up to `max_bytes` more of the file; None at EOF."""
        data = self.f.read(max_bytes)
        if not data:
            return None
        data = self.rest + data if self.rest else data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        return data[:cut].splitlines() if cut else []

    def read_all_lines(self) -> list[bytes]:
        out: list[bytes] = []
        while (chunk := self.lines(1 << 20)) is not None:
            out.extend(chunk)
        return out

    def close(self) -> None:
        self.f.close()


def _same_file(path: Path, ident: tuple[int, int]) -> bool | None:
    """Whether `path` is still the file `ident`; None when nothing is at `path`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino) == ident


def _lines_of(path: Path) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _tail_history(cur: _Tail, path: Path, tail: int, decoder_args: tuple[str | None, int | None, bool]) -> (
    tuple[list[bytes], _Decoder]
):
    """The last `tail` messages of the current file, reaching into rotated files when it has fewer."""
    current = cur.read_all_lines()
    older = rotated_files(path)
    used = 0
    while True:
        decoder = _Decoder(*decoder_args)
        history: deque[bytes] = deque(maxlen=tail)
        files = older[len(older) - used :] if used else []
        for raw in _iter_files(files, current):
            msg = decoder.line(raw)
            if msg is not None:
                history.append(msg)
        if len(history) >= tail or used >= len(older):
            return list(history), decoder
        used += 1


def _iter_files(files: list[Path], current: list[bytes]) -> Iterator[bytes]:
    for f in files:
        yield from _lines_of(f)
    yield from current


async def read_log(
    path: Path,
    *,
    follow: bool,
    tail: int | None = None,
    since: datetime | None = None,
    timestamps: bool = False,
    limit_bytes: int | None = None,
    stop: asyncio.Event | None = None,
    stream: str | None = None,
    until_exited: Callable[[], bool] | None = None,
    poll_interval: float = 0.1,
) -> AsyncIterator[bytes]:
    """What `kubectl logs` shows of a CRI log file, in chunks.

    Reads the current file (and, for `tail`, rotated ones when the current file has fewer lines). With `follow`
    it then polls for growth and follows rotation until `stop` is set or, with `until_exited`, until that says
    the container has exited and the file is drained. Raises CriLogError if the file does not exist.
    """
    import asyncio  # here, not at module level: the shim imports this module and must start fast

    path = Path(path)
    try:
        cur = _Tail(path)
    except FileNotFoundError as exc:
        raise CriLogError(f"log file {path} does not exist") from exc
    remaining = limit_bytes
    since_ns = datetime_ns(since) if since is not None else None
    out = bytearray()

    def take(msg: bytes) -> bool:
        """Add to output; False once the byte limit is reached."""
        nonlocal remaining
        if remaining is not None:
            if len(msg) >= remaining:
                out.extend(msg[:remaining])
                remaining = 0
                return False
            remaining -= len(msg)
        out.extend(msg)
        return True

    try:
        if remaining is not None and remaining <= 0:
            return
        if tail is not None:
            if tail > 0:
                history, decoder = _tail_history(cur, path, tail, (stream, since_ns, timestamps))
            else:
                cur.read_all_lines()
                history, decoder = [], _Decoder(stream, since_ns, timestamps)
            for msg in history:
                if not take(msg):
                    yield bytes(out)
                    return
        else:
            decoder = _Decoder(stream, since_ns, timestamps)

        async def stopped(wait: float) -> bool:
            if stop is None:
                if wait:
                    await asyncio.sleep(wait)
                return False
            if not stop.is_set() and wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            return stop.is_set()

        def drain(full: bool) -> int:
            """Read what is in the current file now: _EOF, _CHUNK (enough to yield first) or _LIMIT."""
            while (lines := cur.lines()) is not None:
                for raw in lines:
                    msg = decoder.line(raw)
                    if msg is not None and not take(msg):
                        return _LIMIT
                if not full and len(out) >= YIELD_CHUNK:
                    return _CHUNK
            return _EOF

        while True:
            got = drain(False)
            if out:
                yield bytes(out)
                out.clear()
            if got == _LIMIT:
                return
            if got == _CHUNK:
                continue
            if not follow:
                break
            exited = until_exited() if until_exited is not None else False
            same = _same_file(path, cur.ident)
            if same is False:
                # Rotated: finish the old file (still open), then go on with the new one.
                if drain(True) == _LIMIT:
                    yield bytes(out)
                    return
                try:
                    new = _Tail(path)
                except FileNotFoundError:
                    continue
                cur.close()
                cur = new
                continue
            if exited:
                if drain(True) == _LIMIT:
                    yield bytes(out)
                    return
                break
            # Nothing new (or the file is briefly missing while the writer reopens it): wait.
            if await stopped(poll_interval):
                break
        for msg in decoder.flush():
            if not take(msg):
                break
        if out:
            yield bytes(out)
    finally:
        cur.close()
