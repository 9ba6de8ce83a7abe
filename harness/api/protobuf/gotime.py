"""Times and durations as Go's JSON writes them: metav1.Time (RFC 3339, whole seconds), metav1.MicroTime (six
fractional digits), and time.Duration strings ("1h0m0s", "1.5s", "100ms"), read and written for the protobuf
converter."""

from __future__ import annotations

import calendar
import re
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from harness.api.protobuf.wire import ProtobufError
from harness.util.rfc3339 import parse_time


def format_time(seconds: int) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    try:
        t = time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        raise ProtobufError(f"the protobuf body is malformed: time {seconds} is out of range") from None
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
            f"{t.tm_sec:02d}Z")


def format_micro_time(seconds: int, nanos: int) -> str:
    """metav1.MicroTime: RFC 3339 in UTC with six fractional digits."""
    if not 0 <= nanos < 1_000_000_000:
        raise ProtobufError(f"the protobuf body is malformed: nanos {nanos} is out of range")
    return f"{format_time(seconds)[:-1]}.{nanos // 1000:06d}Z"


def parse_rfc3339(text: Any) -> tuple[int, int]:
    """(seconds since the epoch, nanoseconds) of an RFC 3339 time; ValueError saying why not."""
    if not isinstance(text, str):
        raise ValueError(f"expected an RFC 3339 time string, got {type(text).__name__}")
    # The usual `2026-12-07T10:00:00Z` / `...00.123456Z` without a detour through datetime.
    if len(text) >= 20 and text[-1] == "Z" and text[4] == "-" and text[10] == "T" and text[19] in "Z.":
        try:
            secs = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                                    int(text[14:16]), int(text[17:19]), 0, 0, 0))
            frac = text[20:-1] if text[19] == "." else ""
            if frac and not frac.isdigit():
                raise ValueError(text)
            return secs, int(frac[:9].ljust(9, "0")) if frac else 0
        except ValueError:
            pass
    try:
        when = parse_time(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    return calendar.timegm(when.utctimetuple()), when.microsecond * 1000


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string ("1h0m0s", "1.5s", "-300ms"), as time.ParseDuration reads it."""
    s = text
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(text)
    total = Decimal(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(text)
        try:
            total += Decimal(m.group(1)) * _DURATION_UNITS[m.group(2)]
        except InvalidOperation:
            raise ValueError(text) from None
        pos = m.end()
    return sign * int(total)


def format_duration(ns: int) -> str:
    """A Go duration string, as time.Duration.String writes it: "0s", "1.5s", "1h0m0s", "100ms", "1µs"."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000:
        text = f"{u}ns"
    elif u < 1_000_000:
        text = _fraction(u, 1_000, 3) + "µs"
    elif u < 1_000_000_000:
        text = _fraction(u, 1_000_000, 6) + "ms"
    else:
        minutes, rest = divmod(u, 60_000_000_000)
        text = _fraction(rest, 1_000_000_000, 9) + "s"
        if minutes:
            hours, minutes = divmod(minutes, 60)
            text = f"{minutes}m{text}"
            if hours:
                text = f"{hours}h{text}"
    return "-" + text if neg else text


def _fraction(value: int, unit: int, digits: int) -> str:
    whole, frac = divmod(value, unit)
    tail = str(frac).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)
