"""Container log lines in the CRI file format, as the log agent reads them.

Each line of a container log file is `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`. A line the
container wrote that was longer than the runtime's limit (16 KiB) arrives as `P` (partial) fragments followed by a
final `F`, and output the container left unterminated is written as `P` too. `parse_line` reads one line;
`CriJoiner` puts fragments back together, one message per stream.

The kubelet has its own reader (harness.kubelet.runtime.crilog), but a component layer may not import another, so
the agent's parser lives here; it returns epoch seconds and keeps the content as bytes (fragments are cut at byte
boundaries, so they are decoded only once joined).
"""

from __future__ import annotations

import calendar
from collections.abc import Hashable
from dataclasses import dataclass, field

STREAMS = ("stdout", "stderr")
#: A joined message longer than this is handed on as it is, without waiting for its final fragment.
MAX_MESSAGE = 1024 * 1024


class CriParseError(ValueError):
    """A line that is not in the CRI log format, or a timestamp that is not RFC 3339."""


@dataclass(frozen=True, slots=True)
class CriLine:
    """One parsed CRI log line: when it was written (epoch seconds), its stream, whether it is a fragment."""

    time: float
    stream: str
    partial: bool
    content: bytes


@dataclass(frozen=True, slots=True)
class CriMessage:
    """A whole message of one stream: its fragments joined, timed by the first of them."""

    time: float
    stream: str
    content: bytes


class _SecondsCache:
    """Remembers the epoch second of the last `YYYY-MM-DDTHH:MM:SS` prefix seen (lines of one second share it)."""

    prefix = ""
    seconds = 0


_cache = _SecondsCache()


def parse_timestamp(ts: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp: `Z` or a `±hh:mm` offset, any number of fractional digits."""
    prefix = ts[:19]
    try:
        if prefix == _cache.prefix:
            secs = _cache.seconds
        else:
            if len(prefix) != 19 or prefix[4] != "-" or prefix[7] != "-" or prefix[10] not in "Tt" \
                    or prefix[13] != ":" or prefix[16] != ":":
                raise ValueError(prefix)
            secs = calendar.timegm((int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]), int(prefix[11:13]),
                                    int(prefix[14:16]), int(prefix[17:19]), 0, 0, 0))
            _cache.prefix, _cache.seconds = prefix, secs
        i = 19
        frac = 0.0
        if i < len(ts) and ts[i] == ".":
            j = i + 1
            while j < len(ts) and ts[j].isdigit():
                j += 1
            if j > i + 1:
                frac = int(ts[i + 1 : j]) / 10 ** (j - i - 1)
            i = j
        zone = ts[i:]
        if zone not in ("Z", "z"):
            if len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":":
                raise ValueError(zone)
            offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
            secs = secs - offset if zone[0] == "+" else secs + offset
    except (ValueError, IndexError) as exc:
        raise CriParseError(f"bad timestamp {ts[:40]!r}") from exc
    return secs + frac


def parse_line(line: bytes) -> CriLine:
    """One CRI log line (a trailing newline is allowed); CriParseError when it is not one."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        raise CriParseError(f"not a CRI log line: {line[:80]!r}")
    ts, stream, tag = parts[0], parts[1], parts[2]
    if stream == b"stdout":
        name = "stdout"
    elif stream == b"stderr":
        name = "stderr"
    else:
        raise CriParseError(f"unknown stream {stream[:20]!r} in CRI log line")
    flag = tag.split(b":", 1)[0]  # the tag may carry more fields after a colon
    if flag not in (b"F", b"P"):
        raise CriParseError(f"unknown tag {tag[:20]!r} in CRI log line")
    return CriLine(parse_timestamp(ts.decode("ascii", "replace")), name, flag == b"P",
                   parts[3] if len(parts) > 3 else b"")


@dataclass
class _Pending:
    """A stream's fragments so far, with the mark of the first one and when it was seen."""

    time: float
    mark: Hashable
    since: float
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class CriJoiner:
    """Joins `P` fragments with the `F` line that ends them, separately for stdout and stderr.

    Each fragment may come with a `mark` (the agent passes where in which file the fragment starts): `marks()`
    names the first fragment of every unfinished message, so a reader can avoid committing a file position past
    something that is not yet a message. A message over `max_message` bytes is handed on unfinished;
    `flush_stale` hands on those whose end has not come for a while (a container that prints a prompt).
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._pending: dict[str, _Pending] = {}

    def feed(self, line: CriLine, mark: Hashable = None, now: float = 0.0) -> CriMessage | None:
        """The message `line` completes, if any (a fragment is kept until its message is complete)."""
        pending = self._pending.get(line.stream)
        if pending is None:
            if not line.partial:
                return CriMessage(line.time, line.stream, line.content)
            pending = self._pending[line.stream] = _Pending(line.time, mark, now)
        pending.parts.append(line.content)
        pending.size += len(line.content)
        if line.partial and pending.size < self.max_message:
            return None
        del self._pending[line.stream]
        return CriMessage(pending.time, line.stream, b"".join(pending.parts))

    def marks(self) -> list[Hashable]:
        """The marks of the first fragments of the unfinished messages."""
        return [p.mark for p in self._pending.values()]

    def flush_stale(self, now: float, max_age: float) -> list[CriMessage]:
        """Hand on, unfinished, the messages whose first fragment came more than `max_age` before `now`."""
        stale = [s for s, p in self._pending.items() if now - p.since > max_age]
        return [self._take(s) for s in stale]

    def flush(self) -> list[CriMessage]:
        """Hand on every unfinished message (the file is gone: no end will come)."""
        return [self._take(s) for s in list(self._pending)]

    def _take(self, stream: str) -> CriMessage:
        """Remove a stream's unfinished message and return it as it is."""
        pending = self._pending.pop(stream)
        return CriMessage(pending.time, stream, b"".join(pending.parts))


__all__ = ["MAX_MESSAGE", "STREAMS", "CriJoiner", "CriLine", "CriMessage", "CriParseError", "parse_line",
           "parse_timestamp"]
