"""Following log files through rotation and restarts, without losing lines.

A `Tailer` follows one path. It knows the file it reads by (device, inode), not by name, so when the writer
renames the file away (supervisord: `x.log` -> `x.log.1`; the container runtime: `0.log` -> `0.log.<stamp>`) it
reads the old file to its end before it opens the next one (the rotated file written after it, when the writer
rotated several times since the last look, else the new file at the path), and when the file shrinks (truncated in
place) it starts again from the beginning. It hands on complete lines only: the unterminated rest of a file waits
for its newline (unless it grows past `max_line`, or the file is finished: rotated away or deleted).

A `Position` (path, device, inode, offset of the end of the last complete line handed on) is what a reader commits
once it has stored those lines; `PositionStore` keeps positions in a small JSON file replaced atomically. A tailer
created with a position resumes there, in the same file even if it was rotated away meanwhile (it is looked for
among the path's `<name>.*` siblings), so an agent restarted after a crash resends at most what it had read but
not committed, and skips nothing.

A `Watcher` keeps a tailer for every path a glob matches, picking up new files as they appear (new pods) and
forgetting those that are deleted once they are read to the end.

Limits: a rotated file that the writer deleted (past its retention) before it was read is lost, as with any
tailer; so keep the agent's buffer from staying full longer than the writers' retention lasts.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from harness.util.files import write_atomic
from harness.util.rotation import rotated_files

log = logging.getLogger("harness.logging.tail")

FileId = tuple[int, int]
#: Bytes read from a file at a time.
READ_CHUNK = 256 * 1024
#: An unterminated line longer than this is handed on in pieces of this size.
MAX_LINE = 1024 * 1024
#: How long the path must stay missing, with the file read to its end, before a tailer calls it gone (a writer that
#: rotates by renaming leaves the path missing for a moment before it creates the new file).
GONE_GRACE = 1.0
STATE_VERSION = 1


class TailError(Exception):
    """A tail state file that cannot be written."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading a path stands: the file (device, inode) and the offset just past the last line handed on."""

    path: str
    dev: int
    ino: int
    offset: int

    @property
    def ident(self) -> FileId:
        """The file (device, inode) the position is in."""
        return (self.dev, self.ino)


@dataclass(frozen=True, slots=True)
class Line:
    """A complete line (without its newline) and where it is: the file it was read from and its byte range."""

    data: bytes
    ident: FileId
    start: int
    end: int


def file_id(st: os.stat_result) -> FileId:
    """What identifies a file whatever its name."""
    return (st.st_dev, st.st_ino)


def find_sibling(path: str, ident: FileId) -> str | None:
    """The file `ident` among `path` and its rotated siblings (`<name>.*` in the same directory), if still there."""
    for candidate in [path, *map(str, rotated_files(path, compressed=True))]:
        try:
            if file_id(os.stat(candidate)) == ident:
                return candidate
        except OSError:
            continue
    return None


def rotated_siblings(path: str) -> list[tuple[str, FileId, float]]:
    """The rotated files of `path` (`<name>.<N>` or `<name>.<timestamp>`, not compressed), oldest first, with
    their identity and modification time."""
    found: list[tuple[str, FileId, float]] = []
    for sibling in map(str, rotated_files(path)):
        try:
            st = os.stat(sibling)
        except OSError:
            continue
        found.append((sibling, file_id(st), st.st_mtime))
    return found


class Tailer:
    """Reads one path's lines as the file grows, rotates, shrinks or goes away; see the module docstring.

    Not thread-safe: one reader calls `read` and `position`.
    """

    def __init__(self, path: str, position: Position | None = None, *, from_head: bool = True,
                 rotated_since: float | None = None, max_line: int = MAX_LINE,
                 gone_grace: float = GONE_GRACE) -> None:
        self.path = path
        self.max_line = max_line
        self.gone_grace = gone_grace
        #: True once the path is gone and its last file is read to the end: the tailer has nothing more to read.
        self.gone = False
        #: True when the last `read` stopped at its byte budget: there may be more to read right away.
        self.more = False
        #: The I/O error that ended the last `read` early, if one did.
        self.error: OSError | None = None
        self._file: BinaryIO | None = None
        self._ident: FileId | None = None
        self._offset = 0
        self._partial = b""
        self._missing_since: float | None = None
        self._start(position, from_head, rotated_since)

    # ------------------------------------------------------------------------------------------ opening files

    def _start(self, position: Position | None, from_head: bool, rotated_since: float | None) -> None:
        """Open the file to read first: the position's file (wherever rotation put it); else, for a file new to
        the reader, the oldest of its rotated files written to since `rotated_since`; else the path's."""
        if position is None and rotated_since is not None:
            for sibling, ident, mtime in rotated_siblings(self.path):
                if mtime >= rotated_since and self._attach(sibling, 0, expect=ident):
                    log.info("reading %s from %s, rotated before it was found", self.path, sibling)
                    return
        if position is not None:
            found = find_sibling(self.path, position.ident)
            if found is not None and self._attach(found, position.offset, expect=position.ident):
                if found != self.path:
                    log.info("resuming %s in %s, rotated while stopped", self.path, found)
                return
            log.info("the file last read at %s is gone; reading the current one from its start", self.path)
            self._attach(self.path, 0)
            return
        if self._attach(self.path, 0) and not from_head:
            assert self._file is not None
            self._offset = self._file.seek(0, os.SEEK_END)

    def _attach(self, path: str, offset: int, expect: FileId | None = None) -> bool:
        """Open `path` (only if it is still the file `expect`) and read on from `offset` (0 if it is shorter)."""
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 (kept open; closed by _detach or close)
        except OSError:
            return False
        st = os.fstat(f.fileno())
        if expect is not None and file_id(st) != expect:
            f.close()
            return False
        if st.st_size < offset:
            log.warning("%s is shorter than the position %d: truncated, reading it from its start", path, offset)
            offset = 0
        f.seek(offset)
        self._file, self._ident, self._offset, self._partial = f, file_id(st), offset, b""
        self._missing_since = None
        return True

    def _detach(self) -> None:
        """Close the current file and forget where in it reading stood."""
        if self._file is not None:
            self._file.close()
        self._file, self._ident, self._offset, self._partial = None, None, 0, b""

    def close(self) -> None:
        """Close the file being read (the position stays valid)."""
        self._detach()

    # ------------------------------------------------------------------------------------------ reading

    def read(self, max_bytes: int = READ_CHUNK) -> list[Line]:
        """The complete lines that can be read now, from at most about `max_bytes` of file. An I/O error ends the
        read (the lines before it are returned) and is kept in `error`; the next read tries again."""
        lines: list[Line] = []
        self.error = None
        try:
            self._read(lines, max_bytes)
        except OSError as exc:
            self.error = exc
            self.more = False
        return lines

    def _read(self, lines: list[Line], max_bytes: int) -> None:
        """Read into `lines`; see `read`."""
        budget = max_bytes
        checked = False  # the path was seen to name another file (or none) before the last read to the end
        while budget > 0 and not self.gone:
            if self._file is None and not self._attach(self.path, 0):
                self.gone = self._missing_for_long()
                break
            data = self._read_some(budget)
            if data:
                budget -= len(data)
                self._split(data, lines)
                continue
            state = self._path_state()
            if state == "same":
                self._missing_since = None
                break
            if state == "missing" and not self._missing_for_long():
                break
            if not checked:
                # Read once more: what the writer wrote before renaming (or deleting) is all there now.
                checked = True
                continue
            self._finish(lines)
            if state == "other":
                # Rotated, and the old file read to its end: on to the next newer one, which is the path's file
                # unless the writer rotated more than once since we last looked.
                newer = self._next_rotated()
                self._detach()
                checked = False
                if newer is not None:
                    self._attach(newer[0], 0, expect=newer[1])
            else:
                self.gone = True
        self.more = budget <= 0

    def _read_some(self, budget: int) -> bytes:
        """Up to `budget` more bytes of the current file, starting over if it was truncated under us."""
        assert self._file is not None
        pos = self._offset + len(self._partial)
        if os.fstat(self._file.fileno()).st_size < pos:
            log.warning("%s was truncated: reading it from its start", self.path)
            self._file.seek(0)
            self._offset, self._partial = 0, b""
        return self._file.read(min(budget, READ_CHUNK)) or b""

    def _split(self, data: bytes, lines: list[Line]) -> None:
        """Append the complete lines of what was read to `lines`; keep the unterminated rest."""
        assert self._ident is not None
        buf = self._partial + data if self._partial else data
        base, ident = self._offset, self._ident
        start = 0
        find = buf.find
        while (nl := find(b"\n", start)) >= 0:
            lines.append(Line(buf[start:nl], ident, base + start, base + nl + 1))
            start = nl + 1
        rest = buf[start:]
        while len(rest) >= self.max_line:
            lines.append(Line(rest[: self.max_line], ident, base + start, base + start + self.max_line))
            start += self.max_line
            rest = rest[self.max_line :]
        self._offset, self._partial = base + start, rest

    def _finish(self, lines: list[Line]) -> None:
        """The current file is complete: its unterminated rest is a line too."""
        if self._partial and self._ident is not None:
            end = self._offset + len(self._partial)
            lines.append(Line(self._partial, self._ident, self._offset, end))
            self._offset, self._partial = end, b""

    def _next_rotated(self) -> tuple[str, FileId] | None:
        """The rotated sibling written after the current file, if the current file is one and has such a sibling."""
        if self._ident is None:
            return None
        siblings = rotated_siblings(self.path)
        for i, (_, ident, _) in enumerate(siblings):
            if ident == self._ident:
                return siblings[i + 1][:2] if i + 1 < len(siblings) else None
        return None

    def _path_state(self) -> str:
        """Whether the path names the file being read ("same"), another one ("other") or nothing ("missing")."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "same"
        return "same" if file_id(st) == self._ident else "other"

    def _missing_for_long(self) -> bool:
        """Whether the path has been missing for the grace period (a rotating writer leaves it missing briefly)."""
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since = now
        return now - self._missing_since >= self.gone_grace

    def position(self) -> Position | None:
        """Where to resume after the lines handed on so far (None while no file is open)."""
        if self._ident is None:
            return None
        return Position(self.path, self._ident[0], self._ident[1], self._offset)

    @property
    def ident(self) -> FileId | None:
        """The file being read."""
        return self._ident


# --------------------------------------------------------------------------------------------------- positions


class PositionStore:
    """Tail positions in a JSON file, `{"version": 1, "files": {path: {"dev", "ino", "offset"}}}`.

    `save` writes a temporary file, fsyncs it and renames it over the old one (then fsyncs the directory), so
    after a crash the file holds either the old or the new positions, never a mix.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._saved: dict[str, Position] | None = None

    def load(self) -> dict[str, Position]:
        """The saved positions; none if there is no state file, or it cannot be read (then files are read again
        from their start: duplicates, not loss)."""
        try:
            raw = json.loads(self.path.read_text())
            files = raw["files"]
            positions = {p: Position(p, int(v["dev"]), int(v["ino"]), int(v["offset"])) for p, v in files.items()}
        except FileNotFoundError:
            positions = {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable tail positions %s: %s", self.path, exc)
            positions = {}
        self._saved = dict(positions)
        return positions

    def save(self, positions: Mapping[str, Position]) -> bool:
        """Replace the saved positions, atomically and durably; False if nothing changed (nothing written)."""
        if self._saved is not None and dict(positions) == self._saved:
            return False
        doc = {"version": STATE_VERSION,
               "files": {p: {"dev": v.dev, "ino": v.ino, "offset": v.offset} for p, v in sorted(positions.items())}}
        try:
            write_atomic(self.path, json.dumps(doc, separators=(",", ":")), durable=True)
        except OSError as exc:
            raise TailError(f"cannot save tail positions to {self.path}: {exc}") from exc
        self._saved = dict(positions)
        return True


# --------------------------------------------------------------------------------------------------- watcher


class Watcher:
    """A tailer for every file a glob pattern matches (except those `exclude` rejects).

    `scan` adds tailers for new files; `read` reads them all and drops those that are gone (deleted and read
    to the end). Files there at the first scan with no saved position are read from their start if `from_head`,
    else from their end; files that appear later are read from their start, beginning with any rotated files
    they already left behind since the previous scan.
    """

    def __init__(self, pattern: str, *, positions: Mapping[str, Position] | None = None,
                 exclude: Callable[[str], bool] | None = None, from_head: bool = True,
                 max_line: int = MAX_LINE, gone_grace: float = GONE_GRACE) -> None:
        self.pattern = pattern
        self.exclude = exclude or (lambda path: False)
        self.from_head = from_head
        self.max_line = max_line
        self.gone_grace = gone_grace
        self.tailers: dict[str, Tailer] = {}
        self._resume = {p: v for p, v in (positions or {}).items() if self.claims(p)}
        self._scanned = False
        self._last_scan = 0.0
        self._errors: dict[str, str] = {}

    def claims(self, path: str) -> bool:
        """Whether `path` is one of this watcher's files."""
        return fnmatch.fnmatchcase(path, self.pattern) and not self.exclude(path)

    def scan(self) -> list[str]:
        """Start following the files that appeared since the last scan; the paths added."""
        added: list[str] = []
        paths: Iterable[str] = sorted(glob.glob(self.pattern))
        if not self._scanned:
            # Also resume files that had a position but are not at their path now (rotated while we were stopped).
            paths = sorted(set(paths) | set(self._resume))
        # A file found after the first scan is new: what it held at the last scan, and what it held in files it
        # was rotated to since, is unread (modification times are coarse: a second of margin, duplicates at worst).
        rotated_since = self._last_scan - 1.0 if self._scanned else None
        self._last_scan = time.time()
        for path in paths:
            if path in self.tailers or not self.claims(path):
                continue
            position = self._resume.pop(path, None)
            self.tailers[path] = Tailer(path, position, from_head=self.from_head or self._scanned,
                                        rotated_since=rotated_since, max_line=self.max_line,
                                        gone_grace=self.gone_grace)
            added.append(path)
        self._scanned = True
        self._resume.clear()
        return added

    def read(self, max_bytes: int) -> tuple[list[tuple[str, list[Line]]], list[str], bool]:
        """Read every file, sharing `max_bytes` between them: (path, lines) for those that had lines, the paths
        forgotten because they are gone (their last lines are in the first list), and whether a file stopped at
        its share of the budget (there is more to read right away)."""
        out: list[tuple[str, list[Line]]] = []
        gone: list[str] = []
        more = False
        share = max(max_bytes // max(len(self.tailers), 1), 64 * 1024)
        for path, tailer in list(self.tailers.items()):
            lines = tailer.read(share)
            if tailer.error is not None:  # an I/O error on one file: the others go on, it is tried again later
                if str(tailer.error) != self._errors.get(path):
                    log.warning("cannot read %s: %s", path, tailer.error)
                    self._errors[path] = str(tailer.error)
            else:
                self._errors.pop(path, None)
            more = more or tailer.more
            if lines:
                out.append((path, lines))
            if tailer.gone:
                tailer.close()
                del self.tailers[path]
                gone.append(path)
        return out, gone, more

    def positions(self) -> dict[str, Position]:
        """The position of every followed file that has one."""
        return {p: pos for p, t in self.tailers.items() if (pos := t.position()) is not None}

    def close(self) -> None:
        """Close every file."""
        for tailer in self.tailers.values():
            with contextlib.suppress(OSError):
                tailer.close()


__all__ = ["GONE_GRACE", "MAX_LINE", "FileId", "Line", "Position", "PositionStore", "TailError", "Tailer",
           "Watcher", "file_id", "find_sibling", "rotated_siblings"]
