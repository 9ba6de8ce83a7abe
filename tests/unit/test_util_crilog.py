"""CRI log lines (harness.util.crilog): reading one line, joining partial lines into messages."""

from __future__ import annotations

import pytest

from harness.util.crilog import CriJoiner, CriLine, CriMessage, CriParseError, parse_line, split_line

TS = "2026-11-25T23:01:02.000012345Z"
EPOCH = 1795647662.000012345


def test_split_line() -> None:
    assert split_line(b"2026-11-25T23:01:02.000000001Z stdout F hello  world\n") == (
        "2026-11-25T23:01:02.000000001Z",
        "stdout",
        "F",
        b"hello  world",
    )
    assert split_line(b"2026-11-25T23:01:02Z stderr P ") == ("2026-11-25T23:01:02Z", "stderr", "P", b"")
    assert split_line(b"2026-11-25T23:01:02Z stderr F") == ("2026-11-25T23:01:02Z", "stderr", "F", b"")


@pytest.mark.parametrize(
    "line",
    [b"", b"garbage", b"2026-11-25T23:01:02Z stdin F x", b"2026-11-25T23:01:02Z stdout X x", b"notatime stdout F x"],
)
def test_split_line_rejects(line: bytes) -> None:
    with pytest.raises(CriParseError):
        split_line(line)


def test_parse_cri_lines() -> None:
    line = parse_line(f"{TS} stdout F hello world\n".encode())
    assert line == CriLine(pytest.approx(EPOCH, abs=1e-6), "stdout", False, b"hello world")  # type: ignore[arg-type]
    assert parse_line(f"{TS} stderr P part".encode()).partial is True
    assert parse_line(f"{TS} stdout F ".encode()).content == b""
    assert parse_line(f"{TS} stdout F".encode()).content == b""
    assert parse_line(f"{TS} stdout F:extra  two  spaces".encode()).content == b" two  spaces"
    for bad in (b"", b"no spaces", f"{TS} stdin F x".encode(), f"{TS} stdout X x".encode(),
                b"yesterday stdout F x", b"2026-13-45T99:00:00Z stdout F x"):
        with pytest.raises(CriParseError):
            parse_line(bad)


def test_parsed_line_keeps_the_timestamp_as_written() -> None:
    line = parse_line(f"{TS} stdout F x".encode())
    assert line.timestamp == TS
    # not part of equality: a line built without it (the agent's tests, a reader that has only the time) is equal
    assert line == CriLine(line.time, "stdout", False, b"x")


def test_joiner_joins_partials_per_stream() -> None:
    j = CriJoiner()
    assert j.feed(parse_line(f"{TS} stdout P aaa".encode()), mark="m1") is None
    # stderr is independent of stdout's unfinished line
    assert j.feed(parse_line(f"{TS} stderr F err".encode())) == CriMessage(pytest.approx(EPOCH), "stderr", b"err")  # type: ignore[arg-type]
    assert j.feed(parse_line(b"2026-11-25T23:01:03Z stdout P bbb"), mark="m2") is None
    assert j.marks() == ["m1"]
    joined = j.feed(parse_line(b"2026-11-25T23:01:04Z stdout F ccc"))
    assert joined is not None and joined.content == b"aaabbbccc" and joined.time == pytest.approx(EPOCH)
    assert j.marks() == []
    # bytes are joined before decoding: a UTF-8 character cut between fragments survives
    euro = "€".encode()
    j.feed(CriLine(1.0, "stdout", True, euro[:1]))
    msg = j.feed(CriLine(2.0, "stdout", False, euro[1:]))
    assert msg is not None and msg.content.decode() == "€" and msg.time == 1.0


def test_joined_message_has_the_first_fragments_timestamp() -> None:
    j = CriJoiner()
    j.feed(parse_line(f"{TS} stdout P a".encode()))
    joined = j.feed(parse_line(b"2026-11-25T23:01:09Z stdout F b"))
    assert joined is not None and joined.timestamp == TS


def test_joiner_limits_and_stale_partials() -> None:
    j = CriJoiner(max_message=10)
    assert j.feed(CriLine(1.0, "stdout", True, b"12345")) is None
    big = j.feed(CriLine(1.0, "stdout", True, b"67890"))
    assert big is not None and big.content == b"1234567890"
    j.feed(CriLine(5.0, "stderr", True, b"prompt> "), mark="x", now=100.0)
    assert j.flush_stale(now=102.0, max_age=5.0) == []
    assert j.flush_stale(now=106.0, max_age=5.0) == [CriMessage(5.0, "stderr", b"prompt> ")]
    j.feed(CriLine(6.0, "stdout", True, b"left"))
    assert j.flush() == [CriMessage(6.0, "stdout", b"left")]


def test_joiner_without_a_limit_waits_for_the_end() -> None:
    j = CriJoiner(max_message=None)
    for _ in range(100):
        assert j.feed(CriLine(1.0, "stdout", True, b"x" * 1024 * 1024)) is None
    whole = j.feed(CriLine(2.0, "stdout", False, b"end"))
    assert whole is not None and len(whole.content) == 100 * 1024 * 1024 + 3
