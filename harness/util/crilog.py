"""Container log lines in the CRI file format: reading one line, and joining partial lines into messages.

Each line of a container log file is `<RFC3339Nano timestamp> <stdout|stderr> <F|P>[:more] <content>`. A line the
container wrote that was longer than the runtime's limit (16 KiB) arrives as `P` (partial) fragments followed by a
final `F`, and output the container left unterminated is written as `P` too. `parse_line` reads one line;
`CriJoiner` puts fragments back together, one message per stream. Content stays bytes: fragments are cut at byte
boundaries, so they are decoded only once joined. The kubelet's reader (`kubectl logs`) and the log agent both read
through here; the writer is the container runtime's.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from harness.util.rfc3339 import parse_epoch

#: A joined message longer than this is handed on as it is, without waiting for its final fragment.
MAX_MESSAGE = 1024 * 1024


class CriParseError(ValueError):
    """A line that is not in the CRI log format, or a timestamp that is not RFC 3339."""


@dataclass(frozen=True, slots=True)
class CriLine:
    """One parsed CRI log line: when it was written (epoch seconds), its stream, whether it is a fragment; and the
    time stamp as written (nanoseconds, for readers that show it or compare it exactly)."""

    time: float
    stream: str
    partial: bool
    content: bytes
    timestamp: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class CriMessage:
    """A whole message of one stream: its fragments joined, timed by the first of them."""

    time: float
    stream: str
    content: bytes
    timestamp: str = field(default="", compare=False)


def split_line(line: bytes) -> tuple[str, str, str, bytes]:
    """(timestamp, stream, tag, content) of one CRI log line (a trailing newline is allowed), the timestamp checked
    only for its shape; CriParseError when it is not a CRI log line."""
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
    if tag.split(b":", 1)[0] not in (b"F", b"P"):  # the tag may carry more fields after a colon
        raise CriParseError(f"unknown tag {tag[:20]!r} in CRI log line")
    if len(ts) < 20 or ts[10:11] not in (b"T", b"t"):
        raise CriParseError(f"bad timestamp {ts[:40]!r} in CRI log line")
    return ts.decode("ascii", "replace"), name, tag.decode("ascii", "replace"), parts[3] if len(parts) > 3 else b""


def parse_line(line: bytes) -> CriLine:
    """One CRI log line (a trailing newline is allowed), its timestamp read; CriParseError when it is not one."""
    ts, stream, tag, content = split_line(line)
    try:
        when = parse_epoch(ts)
    except ValueError as exc:
        raise CriParseError(f"bad timestamp {ts[:40]!r} in CRI log line") from exc
    return CriLine(when, stream, tag.startswith("P"), content, ts)


@dataclass
class _Pending:
    """A stream's fragments so far, with the first one's time and mark and when it was seen."""

    time: float
    timestamp: str
    mark: Hashable
    since: float
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class CriJoiner:
    """Joins `P` fragments with the `F` line that ends them, separately for stdout and stderr.

    Each fragment may come with a `mark` (the agent passes where in which file the fragment starts): `marks()`
    names the first fragment of every unfinished message, so a reader can avoid committing a file position past
    something that is not yet a message. A message over `max_message` bytes (None: no limit) is handed on
    unfinished; `flush_stale` hands on those whose end has not come for a while (a container that prints a prompt).
    """

    def __init__(self, max_message: int | None = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._pending: dict[str, _Pending] = {}

    def feed(self, line: CriLine, mark: Hashable = None, now: float = 0.0) -> CriMessage | None:
        """The message `line` completes, if any (a fragment is kept until its message is complete)."""
        pending = self._pending.get(line.stream)
        if pending is None:
            if not line.partial:
                return CriMessage(line.time, line.stream, line.content, line.timestamp)
            pending = self._pending[line.stream] = _Pending(line.time, line.timestamp, mark, now)
        pending.parts.append(line.content)
        pending.size += len(line.content)
        if line.partial and (self.max_message is None or pending.size < self.max_message):
            return None
        del self._pending[line.stream]
        return CriMessage(pending.time, line.stream, b"".join(pending.parts), pending.timestamp)

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
        return CriMessage(pending.time, stream, b"".join(pending.parts), pending.timestamp)


__all__ = ["MAX_MESSAGE", "CriJoiner", "CriLine", "CriMessage", "CriParseError", "parse_line",
           "split_line"]
