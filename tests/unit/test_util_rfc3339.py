"""RFC 3339 time stamps (harness.util.rfc3339): writing them at each precision, reading them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from harness.util.rfc3339 import (
    datetime_ns,
    format_ns,
    format_time,
    parse_epoch,
    parse_ns,
    parse_time,
    trim_fraction,
)

TS = "2026-11-25T23:01:02.000012345Z"
EPOCH = 1795647662.000012345
WHEN = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def test_timestamps() -> None:
    assert format_ns(1_700_000_000_000_000_123) == "2023-11-14T22:13:20.000000123Z"
    assert trim_fraction("2023-11-14T22:13:20.120000000Z") == "2023-11-14T22:13:20.12Z"
    assert trim_fraction("2023-11-14T22:13:20.000000000Z") == "2023-11-14T22:13:20Z"
    assert trim_fraction("2023-11-14T22:13:20Z") == "2023-11-14T22:13:20Z"
    assert parse_ns("2023-11-14T22:13:20.000000123Z") == 1_700_000_000_000_000_123
    assert parse_ns("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500_000_000
    assert parse_ns("2023-11-14T22:13:20Z") == 1_700_000_000_000_000_000
    assert datetime_ns(datetime(2023, 11, 14, 22, 13, 20, 7, tzinfo=UTC)) == 1_700_000_000_000_007_000
    with pytest.raises(ValueError):
        parse_ns("yesterday")


def test_parse_timestamps() -> None:
    assert parse_epoch("1970-01-01T00:00:00Z") == 0
    assert parse_epoch("1970-01-01T00:00:01.5Z") == 1.5
    assert parse_epoch("1970-01-01T02:00:00+02:00") == 0
    assert parse_epoch("1970-01-01T00:00:00.25-01:30") == 5400.25
    assert parse_epoch(TS) == pytest.approx(EPOCH, abs=1e-6)
    assert parse_epoch("2026-11-25T23:01:02.123Z") == pytest.approx(1795647662.123)
    for bad in ("2026-11-25 23:01:02Z", "2026-11-25T23:01:02", "2026-11-25T23:01:02+0200", "soon"):
        with pytest.raises(ValueError):
            parse_epoch(bad)


def test_format_time_at_each_precision() -> None:
    assert format_time(WHEN) == "2026-01-02T03:04:05Z"
    assert format_time(WHEN, digits=3) == "2026-01-02T03:04:05.123Z"  # cut, not rounded
    assert format_time(WHEN, digits=6) == "2026-01-02T03:04:05.123456Z"
    assert format_time(WHEN.replace(microsecond=0), digits=6) == "2026-01-02T03:04:05.000000Z"
    # other zones are written in UTC; a naive datetime is UTC already
    assert format_time(WHEN.astimezone(timezone(timedelta(hours=-5)))) == "2026-01-02T03:04:05Z"
    assert format_time(WHEN.replace(tzinfo=None), digits=6) == "2026-01-02T03:04:05.123456Z"
    # epoch seconds
    assert format_time(0.5, digits=3) == "1970-01-01T00:00:00.500Z"
    assert format_time(WHEN.timestamp(), digits=6) == "2026-01-02T03:04:05.123456Z"
    with pytest.raises(ValueError):
        format_time(WHEN, digits=9)


def test_format_ns_is_fixed_width_and_sortable() -> None:
    assert format_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_ns(1_000_000_001) == "1970-01-01T00:00:01.000000001Z"
    assert len(format_ns()) == len("2026-11-25T23:01:02.000012345Z")
    assert sorted([format_ns(2_000_000_000), format_ns(999_999_999)]) == [format_ns(999_999_999),
                                                                          format_ns(2_000_000_000)]


@pytest.mark.parametrize("text", [
    "2026-01-02T03:04:05Z",
    "2026-01-02T03:04:05.1Z",
    "2026-01-02T03:04:05.123456Z",
    "2026-01-02T03:04:05.123456789Z",
    "2026-01-02T04:04:05.5+01:00",
    "2026-01-01T22:04:05-05:00",
    "2026-01-02t03:04:05z",
])
def test_lenient_and_strict_readers_agree(text: str) -> None:
    when = parse_time(text)
    assert when.tzinfo is not None
    # the strict reader keeps nanoseconds, the datetime microseconds
    assert parse_ns(text) // 1000 == datetime_ns(when) // 1000
    assert parse_epoch(text) == pytest.approx(when.timestamp(), abs=1e-6)


def test_round_trips() -> None:
    for digits in (0, 3, 6):
        text = format_time(WHEN, digits=digits)
        assert format_time(parse_time(text), digits=digits) == text
    ns = 1_795_647_662_000_012_345
    assert parse_ns(format_ns(ns)) == ns
    assert parse_ns(trim_fraction(format_ns(ns - 12_345))) == ns - 12_345
    assert datetime_ns(parse_time(format_time(WHEN, digits=6))) == datetime_ns(WHEN)


def test_parse_time_zones() -> None:
    assert parse_time("2026-01-02T03:04:05Z") == WHEN.replace(microsecond=0)
    assert parse_time("2026-01-02T05:04:05+02:00") == WHEN.replace(microsecond=0)
    assert parse_time("2026-01-02T03:04:05") == WHEN.replace(microsecond=0)  # no zone: UTC
    assert parse_time("2026-01-02T03:04:05").tzinfo is not None
    with pytest.raises(ValueError):
        parse_time("soon")
    with pytest.raises(ValueError):
        parse_time("")


def test_strict_reader_checks_ranges_and_zone() -> None:
    for bad in ("2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:00:00+1:00",
                "2026-01-01T00:00:00+aa:bb", "2026-01-01T00:00:00.5", "2026-01-01T00:00:00Zjunk"):
        with pytest.raises(ValueError):
            parse_ns(bad)
    # the second's cache does not let a bad zone through on a second line of the same second
    assert parse_ns("2026-01-01T00:00:00Z") == parse_ns("2026-01-01T00:00:00.000Z")
    with pytest.raises(ValueError):
        parse_ns("2026-01-01T00:00:00X")
