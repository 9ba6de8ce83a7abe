"""CRI log files: splitting output into records, writing and rotating files, and reading them as kubectl shows."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.kubelet.runtime.crilog import (
    MAX_LINE,
    CriLogError,
    CriLogWriter,
    LineSplitter,
    read_log,
)
from harness.util.crilog import split_line
from harness.util.rfc3339 import format_ns
from harness.util.rotation import rotated_files

CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] ")


# --------------------------------------------------------------------------------------------------- splitting


def test_splitter_full_lines_and_partial_rest() -> None:
    s = LineSplitter()
    assert s.feed(b"a\nbb\nc") == [(b"F", b"a"), (b"F", b"bb")]
    assert s.feed(b"cc\n") == [(b"F", b"ccc")]
    assert s.feed(b"tail") == []
    assert s.flush() == [(b"P", b"tail")]
    assert s.flush() == []


def test_splitter_empty_lines_and_crlf() -> None:
    assert LineSplitter().feed(b"\n\nx\r\n") == [(b"F", b""), (b"F", b""), (b"F", b"x")]


def test_splitter_long_lines_cut_at_16k() -> None:
    s = LineSplitter()
    exact = b"a" * MAX_LINE
    assert s.feed(exact + b"\n") == [(b"F", exact)]
    longer = b"b" * (MAX_LINE * 2 + 5)
    assert s.feed(longer + b"\n") == [(b"P", b"b" * MAX_LINE), (b"P", b"b" * MAX_LINE), (b"F", b"b" * 5)]


def test_splitter_long_unterminated_output_in_pieces() -> None:
    s = LineSplitter(max_len=4)
    assert s.feed(b"abcdefghij") == [(b"P", b"abcd"), (b"P", b"efgh")]
    assert s.feed(b"\n") == [(b"F", b"ij")]
    assert s.feed(b"abcd") == []
    assert s.feed(b"\n") == [(b"F", b"abcd")]


# --------------------------------------------------------------------------------------------------- writing


def test_writer_format(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    w = CriLogWriter(str(path))
    w.write("stdout", [(b"F", b"hello world"), (b"P", b"part")])
    w.write("stderr", [(b"F", b"")])
    w.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and all(CRI_LINE.match(line) for line in lines)
    assert [split_line(line)[1:] for line in lines] == [
        ("stdout", "F", b"hello world"),
        ("stdout", "P", b"part"),
        ("stderr", "F", b""),
    ]


def test_writer_without_path_discards() -> None:
    w = CriLogWriter(None)
    w.write("stdout", [(b"F", b"x")])
    w.close()


def test_writer_rotates_and_keeps_max_files(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    w = CriLogWriter(str(path), max_size=300, max_files=3)
    for i in range(100):
        w.write("stdout", [(b"F", b"line %03d" % i)])
    w.close()
    rotated = rotated_files(path)
    assert len(rotated) == 2
    for p in [*rotated, path]:
        assert p.stat().st_size <= 300
        assert re.fullmatch(r"0\.log(\.\d{8}-\d{6}\.\d{6})?", p.name)
    contents = [split_line(line)[3] for p in [*rotated, path] for line in p.read_bytes().splitlines()]
    assert contents == [b"line %03d" % i for i in range(100 - len(contents), 100)]


def test_writer_big_batch_is_spread_over_files(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    w = CriLogWriter(str(path), max_size=500, max_files=10)
    w.write("stdout", [(b"F", b"x" * 50)] * 30)
    w.close()
    files = [*rotated_files(path), path]
    assert all(p.stat().st_size <= 500 for p in files)
    assert sum(len(p.read_bytes().splitlines()) for p in files) == 30


def test_writer_appends_to_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"2026-01-01T00:00:00.000000000Z stdout F old\n")
    w = CriLogWriter(str(path))
    w.write("stdout", [(b"F", b"new")])
    w.close()
    assert [split_line(line)[3] for line in path.read_bytes().splitlines()] == [b"old", b"new"]


# --------------------------------------------------------------------------------------------------- reading


def write_log(path: Path, records: list[tuple[int, str, str, bytes]]) -> None:
    """(seconds after 2026-01-01, stream, tag, content) records."""
    base = 1_767_225_600
    with open(path, "ab") as f:
        for secs, stream, tag, content in records:
            f.write(f"{format_ns((base + secs) * 1_000_000_000)} {stream} {tag} ".encode() + content + b"\n")


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def collect(path: Path, **kw: object) -> bytes:
    kw.setdefault("follow", False)
    return b"".join([chunk async for chunk in read_log(path, **kw)])  # type: ignore[arg-type]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "0.log"
    write_log(
        path,
        [
            (1, "stdout", "F", b"one"),
            (2, "stderr", "F", b"err"),
            (3, "stdout", "P", b"tw"),
            (4, "stderr", "F", b"err2"),
            (5, "stdout", "F", b"o"),
            (6, "stdout", "F", b"three"),
        ],
    )
    return path


async def test_read_all(log: Path) -> None:
    assert await collect(log) == b"one\nerr\nerr2\ntwo\nthree\n"


async def test_read_stream_filter(log: Path) -> None:
    assert await collect(log, stream="stdout") == b"one\ntwo\nthree\n"
    assert await collect(log, stream="stderr") == b"err\nerr2\n"


async def test_read_timestamps_of_first_chunk(log: Path) -> None:
    out = (await collect(log, timestamps=True, stream="stdout")).splitlines()
    assert out == [b"2026-01-01T00:00:01Z one", b"2026-01-01T00:00:03Z two", b"2026-01-01T00:00:06Z three"]


async def test_read_tail_since_limit(log: Path) -> None:
    assert await collect(log, tail=2) == b"two\nthree\n"
    assert await collect(log, tail=0) == b""
    assert await collect(log, tail=100) == b"one\nerr\nerr2\ntwo\nthree\n"
    since = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert await collect(log, since=since) == b"err2\ntwo\nthree\n"
    assert await collect(log, since=since.replace(tzinfo=None) + timedelta(seconds=1)) == b"err2\nthree\n"
    assert await collect(log, limit_bytes=6) == b"one\ner"
    assert await collect(log, limit_bytes=0) == b""


async def test_read_skips_malformed_and_shows_unfinished_partial(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write_log(path, [(1, "stdout", "F", b"ok")])
    append(path, b"this is not cri\n")
    write_log(path, [(2, "stdout", "P", b"unfinished")])
    assert await collect(path) == b"ok\nunfinished"


async def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CriLogError):
        await collect(tmp_path / "nope.log")


async def test_tail_reaches_into_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write_log(tmp_path / "0.log.20260101-000000.000001", [(i, "stdout", "F", b"a%d" % i) for i in range(3)])
    write_log(tmp_path / "0.log.20260101-000010.000001", [(10, "stdout", "P", b"sp"), (11, "stdout", "F", b"lit")])
    write_log(path, [(20, "stdout", "F", b"c")])
    assert await collect(path) == b"c\n"
    assert await collect(path, tail=1) == b"c\n"
    assert await collect(path, tail=2) == b"split\nc\n"
    assert await collect(path, tail=4) == b"a1\na2\nsplit\nc\n"
    assert await collect(path, tail=50) == b"a0\na1\na2\nsplit\nc\n"


async def test_follow_sees_growth_and_rotation_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    writer = CriLogWriter(str(path), max_size=200, max_files=2)
    writer.write("stdout", [(b"F", b"first")])
    stop = asyncio.Event()
    got = bytearray()

    async def follow() -> None:
        async for chunk in read_log(path, follow=True, stop=stop, poll_interval=0.01):
            got.extend(chunk)

    task = asyncio.create_task(follow())
    expected = b"first\n" + b"".join(b"line %02d\n" % i for i in range(20))
    for i in range(20):  # about 45 bytes a line: rotates every few lines
        writer.write("stdout", [(b"F", b"line %02d" % i)])
        await asyncio.sleep(0.015)
    for _ in range(500):  # until the follower has it all (5 s at most)
        if bytes(got) == expected:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 2)
    writer.close()
    assert bytes(got) == expected
    assert len(rotated_files(path)) == 1


async def test_follow_until_exited_drains_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    writer = CriLogWriter(str(path))
    exited = False

    async def produce() -> None:
        nonlocal exited
        for i in range(5):
            writer.write("stdout", [(b"F", b"%d" % i)])
            await asyncio.sleep(0.01)
        writer.write("stdout", [(b"P", b"end")])
        writer.close()
        exited = True

    producer = asyncio.create_task(produce())
    out = b"".join(
        [c async for c in read_log(path, follow=True, until_exited=lambda: exited, poll_interval=0.005, tail=0)]
    )
    await producer
    assert out == b"0\n1\n2\n3\n4\nend"


async def test_follow_respects_limit(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write_log(path, [(1, "stdout", "F", b"abcdef")])
    out = b"".join([c async for c in read_log(path, follow=True, limit_bytes=3)])
    assert out == b"abc"
