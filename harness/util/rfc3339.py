"""RFC 3339 time stamps, written and read the way Kubernetes and the CRI log format use them.

Written always in UTC with a `Z`: whole seconds (`metav1.Time`), milliseconds (our log lines), microseconds
(`metav1.MicroTime`), or nanoseconds at a fixed width of nine digits (CRI log lines and container records: fixed
width keeps them sortable as text). `trim_fraction` turns the last into what Go's `time.RFC3339Nano` prints.

Two readers: `parse_time` is lenient (anything `datetime.fromisoformat` takes, plus `z`; no zone means UTC) and
gives an aware datetime, for API fields and user input; `parse_ns` and `parse_epoch` are strict (`T`, a `Z` or
`±hh:mm` zone, any number of fractional digits) and fast, for log lines read by the million: lines written in the
same second share a cached conversion of their `YYYY-MM-DDTHH:MM:SS` prefix.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_TIMESPEC = {0: "seconds", 3: "milliseconds", 6: "microseconds"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000
_SECOND = timedelta(seconds=1)


def _utc(when: datetime | float) -> datetime:
    """`when` as a naive datetime in UTC: epoch seconds, or a datetime (naive means UTC)."""
    if not isinstance(when, datetime):
        return datetime.fromtimestamp(when, UTC).replace(tzinfo=None)
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo is not None else when


def format_time(when: datetime | float, *, digits: int = 0) -> str:
    """`when` (a datetime, naive meaning UTC, or epoch seconds) in UTC with 0, 3 or 6 fractional digits, e.g.
    `2026-01-02T03:04:05Z` (`metav1.Time`) or `2026-01-02T03:04:05.123456Z` (`metav1.MicroTime`); the fraction is
    cut, not rounded."""
    if digits not in _TIMESPEC:
        raise ValueError(f"digits must be 0, 3 or 6, not {digits}")
    return _utc(when).isoformat(timespec=_TIMESPEC[digits]) + "Z"


class _Second:
    """The last whole second formatted or parsed, as (epoch second, `YYYY-MM-DDTHH:MM:SS`): one tuple, so that a
    thread never sees the second of one entry with the text of another."""

    formatted: tuple[int, str] = (-1, "")
    parsed: tuple[str, int] = ("", 0)


def format_ns(ns: int | None = None) -> str:
    """Nanoseconds since the epoch (default: now) with nine fractional digits, e.g. `2026-11-25T23:01:02.000012345Z`."""
    if ns is None:
        ns = time.time_ns()
    secs, frac = divmod(ns, _NS)
    last_secs, prefix = _Second.formatted
    if secs != last_secs:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _Second.formatted = (secs, prefix)
    return f"{prefix}.{frac:09d}Z"


def trim_fraction(text: str) -> str:
    """A time stamp as Go's RFC3339Nano prints it: the fraction's trailing zeros dropped, and the dot with them
    when nothing is left (`...20.120000000Z` -> `...20.12Z`, `...20.000000000Z` -> `...20Z`); kubectl shows this."""
    dot = text.find(".", 19)
    if dot != 19:
        return text
    end = dot + 1
    while end < len(text) and text[end].isdigit():
        end += 1
    frac = text[dot + 1 : end].rstrip("0")
    return text[:dot] + ("." + frac if frac else "") + text[end:]


def parse_time(text: str) -> datetime:
    """An aware datetime from RFC 3339 text (`Z`, `z` or an offset; any fraction, kept to the microsecond; no zone
    means UTC) or anything else `datetime.fromisoformat` reads; ValueError otherwise."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _whole_seconds(prefix: str) -> int:
    """Epoch seconds of a `YYYY-MM-DDTHH:MM:SS` prefix (as UTC); ValueError if it is not one."""
    if len(prefix) != 19 or prefix[4] != "-" or prefix[7] != "-" or prefix[10] not in "Tt" \
            or prefix[13] != ":" or prefix[16] != ":":
        raise ValueError(prefix)
    fields = (prefix[0:4], prefix[5:7], prefix[8:10], prefix[11:13], prefix[14:16], prefix[17:19])
    if not all(f.isdigit() for f in fields):
        raise ValueError(prefix)
    year, month, day, hour, minute, second = (int(f) for f in fields)
    # datetime() checks the ranges (month 13, hour 25...), which calendar.timegm would roll over silently.
    return (datetime(year, month, day, hour, minute, second, tzinfo=UTC) - _EPOCH) // _SECOND


def parse_ns(text: str) -> int:
    """Nanoseconds since the epoch of a strict RFC 3339 time stamp: `T`, a `Z` or `±hh:mm` zone, any number of
    fractional digits (beyond nine they are cut); ValueError otherwise."""
    prefix = text[:19]
    try:
        last_prefix, secs = _Second.parsed
        if prefix != last_prefix:
            secs = _whole_seconds(prefix)
            _Second.parsed = (prefix, secs)
        i = 19
        frac = 0
        if i < len(text) and text[i] == ".":
            j = i + 1
            while j < len(text) and text[j].isdigit():
                j += 1
            frac = int(text[i + 1 : j][:9].ljust(9, "0"))
            i = j
        zone = text[i:]
        if zone not in ("Z", "z"):
            if len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":" \
                    or not (zone[1:3].isdigit() and zone[4:6].isdigit()):
                raise ValueError(f"bad zone {zone!r}")
            offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
            secs = secs - offset if zone[0] == "+" else secs + offset
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not an RFC 3339 time stamp: {text[:40]!r}") from exc
    return secs * _NS + frac


def parse_epoch(text: str) -> float:
    """Epoch seconds of a strict RFC 3339 time stamp (as `parse_ns`); ValueError otherwise."""
    return parse_ns(text) / _NS


def datetime_ns(when: datetime) -> int:
    """Nanoseconds since the epoch of a datetime (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000


__all__ = ["datetime_ns", "format_ns", "format_time", "parse_epoch", "parse_ns", "parse_time", "trim_fraction"]
