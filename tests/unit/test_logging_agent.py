"""The log agent's parts: CRI parsing, the rotation-proof tailer and its positions, the file buffer, records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.kubelet.runtime.crilog import CriLogWriter, LineSplitter
from harness.logging import forward
from harness.logging.agent import Agent, AgentConfig, AgentError
from harness.logging.buffer import BufferCorruptError, FileBuffer
from harness.logging.sources import (
    GENERIC_TAG,
    PodLogSource,
    SourcePathError,
    chunk_tag,
    component_name,
    component_record,
    container_record,
    parse_component_line,
    pod_log_source,
    record_tag,
)
from harness.logging.tail import Line, Position, PositionStore, Tailer, Watcher, file_id, find_sibling
from harness.util.crilog import CriMessage, parse_line
from harness.util.rotation import rotated_files

TS = "2026-11-25T23:01:02.000012345Z"
EPOCH = 1795647662.000012345


def write(path: Path, data: str | bytes) -> None:
    """Append to a file, as a log writer does."""
    with open(path, "ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def texts(lines: list[Line]) -> list[str]:
    return [line.data.decode() for line in lines]


def rotate_supervisord(path: Path, backups: int = 10) -> None:
    """What supervisord does when a log reaches stdout_logfile_maxbytes: x.log.N-1 -> x.log.N, ..., x.log -> x.log.1;
    the next write creates x.log."""
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{n + 1}"))
    path.rename(path.with_name(path.name + ".1"))


# --------------------------------------------------------------------------------------------------- tailer


def test_tailer_keeps_a_partial_last_line(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, "one\ntw")
    t = Tailer(str(log))
    assert texts(t.read()) == ["one"]
    assert t.read() == []
    write(log, "o\r\nthree\n")
    lines = t.read()
    assert texts(lines) == ["two\r", "three"]
    assert (lines[0].start, lines[0].end, lines[1].end) == (4, 9, 15)
    assert t.position() == Position(str(log), *file_id(log.stat()), 15)


def test_tailer_follows_supervisord_rotation(tmp_path: Path) -> None:
    log = tmp_path / "apiserver.log"
    write(log, "1\n2\n")
    t = Tailer(str(log))
    assert texts(t.read()) == ["1", "2"]
    write(log, "3\n4\nunfinished")  # not read before rotation
    rotate_supervisord(log)
    write(log, "-rest\n5\n")
    assert texts(t.read()) == ["3", "4", "unfinished", "-rest", "5"]
    write(log, "6\n")
    rotate_supervisord(log)
    assert texts(t.read()) == ["6"]  # the new file does not exist yet: the path is briefly missing
    assert not t.gone
    write(log, "7\n")
    assert texts(t.read()) == ["7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apiserver.log", "apiserver.log.1", "apiserver.log.2"]


def test_tailer_reads_every_file_of_several_rotations(tmp_path: Path) -> None:
    log = tmp_path / "scheduler.log"
    write(log, "1\n")
    t = Tailer(str(log))
    assert texts(t.read()) == ["1"]
    for n in range(2, 6):  # four rotations before the next read (as while the buffer was full)
        write(log, f"{n}\n")
        rotate_supervisord(log)
    write(log, "6\n")
    assert texts(t.read()) == ["2", "3", "4", "5", "6"]
    position = t.position()
    t.close()
    for n in range(7, 9):  # and two more while the agent is stopped
        write(log, f"{n}\n")
        rotate_supervisord(log)
    write(log, "9\n")
    assert texts(Tailer(str(log), position).read()) == ["7", "8", "9"]


def test_tailer_follows_cri_rotation(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    writer = CriLogWriter(str(log), max_size=2000, max_files=20)
    splitter = LineSplitter()
    t = Tailer(str(log))
    seen: list[str] = []
    for batch in range(20):
        for i in range(10):
            writer.write("stdout", splitter.feed(f"message {batch * 10 + i:04d} {'x' * 40}\n".encode()))
        if batch % 3 == 0:  # read now and then: several rotations may happen in between
            seen += [parse_line(line.data).content.decode()[:12] for line in t.read()]
    seen += [parse_line(line.data).content.decode()[:12] for line in t.read()]
    writer.close()
    assert len(rotated_files(log)) > 5
    assert seen == [f"message {n:04d}" for n in range(200)]


def test_tailer_starts_over_when_truncated(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, "old line one\nold line two\n")
    t = Tailer(str(log))
    assert len(t.read()) == 2
    os.truncate(log, 0)
    write(log, "new\n")
    assert texts(t.read()) == ["new"]
    assert t.position() is not None and t.position().offset == 4  # type: ignore[union-attr]


def test_tailer_resumes_from_a_saved_position(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    store = PositionStore(tmp_path / "positions.json")
    write(log, "1\n2\n3")
    t = Tailer(str(log))
    assert texts(t.read()) == ["1", "2"]
    position = t.position()
    assert position is not None
    assert store.save({str(log): position}) is True
    assert store.save({str(log): position}) is False  # unchanged: not written again
    t.close()
    write(log, "\n4\n")
    restarted = Tailer(str(log), PositionStore(tmp_path / "positions.json").load()[str(log)])
    assert texts(restarted.read()) == ["3", "4"]
    assert not (tmp_path / "positions.json.tmp").exists()
    saved = json.loads((tmp_path / "positions.json").read_text())
    assert saved["files"][str(log)]["offset"] == 4


def test_tailer_resumes_in_a_file_rotated_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "kubelet.log"
    write(log, "1\n2\n")
    t = Tailer(str(log))
    t.read()
    position = t.position()
    t.close()
    write(log, "3\n")
    rotate_supervisord(log)
    write(log, "4\n")
    assert position is not None and find_sibling(str(log), position.ident) == str(log) + ".1"
    assert texts(Tailer(str(log), position).read()) == ["3", "4"]
    # the position's file is gone altogether: the current file is read from its start
    (tmp_path / "kubelet.log.1").unlink()
    assert texts(Tailer(str(log), position).read()) == ["4"]


def test_tailer_without_position_from_end(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, "history\n")
    t = Tailer(str(log), from_head=False)
    assert t.read() == []
    write(log, "new\n")
    assert texts(t.read()) == ["new"]


def test_tailer_budget_and_long_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, "x" * 25 + "\n" + "short\n" * 100)
    t = Tailer(str(log), max_line=10)
    assert texts(t.read(max_bytes=10)) == ["x" * 10]
    assert t.more
    rest = t.read()
    assert texts(rest)[:2] == ["x" * 15, "short"] and len(rest) == 101 and not t.more


def test_watcher_discovers_and_forgets_files(tmp_path: Path) -> None:
    (tmp_path / "ns_web_u1" / "app").mkdir(parents=True)
    first = tmp_path / "ns_web_u1" / "app" / "0.log"
    write(first, "a\n")
    w = Watcher(str(tmp_path / "*" / "*" / "*.log"), gone_grace=0.0)
    assert w.scan() == [str(first)]
    lines, gone, _ = w.read(1 << 20)
    assert [(p, texts(ls)) for p, ls in lines] == [(str(first), ["a"])] and gone == []
    # a new pod appears after the first scan: read from its start
    (tmp_path / "ns_db_u2" / "pg").mkdir(parents=True)
    second = tmp_path / "ns_db_u2" / "pg" / "0.log"
    write(second, "b\n")
    assert w.scan() == [str(second)]
    # the first pod is deleted with a line not yet read: it is read, then forgotten
    write(first, "last\n")
    first.unlink()
    lines, gone, _ = w.read(1 << 20)
    assert {p: texts(ls) for p, ls in lines} == {str(first): ["last"], str(second): ["b"]}
    assert gone == [str(first)]
    assert set(w.positions()) == {str(second)}


def test_watcher_reads_what_a_new_file_rotated_before_it_was_found(tmp_path: Path) -> None:
    write(tmp_path / "old.log.1", "rotated before the first scan\n")
    w = Watcher(str(tmp_path / "*.log"))
    assert w.scan() == []
    log = tmp_path / "proxy.log"
    for n in range(3):
        write(log, f"{n}\n")
        rotate_supervisord(log)
    write(log, "3\n")
    assert w.scan() == [str(log)]
    assert [texts(ls) for _, ls in w.read(1 << 20)[0]] == [["0", "1", "2", "3"]]


def test_watcher_excludes_and_from_end(tmp_path: Path) -> None:
    for name in ("apiserver.log", "log-agent.log"):
        write(tmp_path / name, "old\n")
    w = Watcher(str(tmp_path / "*.log"), exclude=lambda p: p.endswith("/log-agent.log"), from_head=False)
    assert w.scan() == [str(tmp_path / "apiserver.log")]
    assert w.read(1 << 20)[0] == []
    write(tmp_path / "apiserver.log", "new\n")
    write(tmp_path / "dns.log", "born later\n")
    w.scan()
    got = {p: texts(ls) for p, ls in w.read(1 << 20)[0]}
    assert got == {str(tmp_path / "apiserver.log"): ["new"], str(tmp_path / "dns.log"): ["born later"]}


def test_position_store_ignores_a_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "positions.json").write_text("{not json")
    assert PositionStore(tmp_path / "positions.json").load() == {}
    assert PositionStore(tmp_path / "missing.json").load() == {}


# --------------------------------------------------------------------------------------------------- buffer


def test_buffer_chunks_by_size_and_age(tmp_path: Path) -> None:
    queued: list[int] = []
    buf = FileBuffer(tmp_path, chunk_max_bytes=200, chunk_max_age=60.0, on_queued=lambda: queued.append(1))
    for i in range(10):
        buf.append(1000.0 + i, {"message": f"line {i}", "pad": "x" * 20})
    buf.sync()
    chunks = buf.queued()
    assert len(chunks) >= 2 and len(queued) == len(chunks)
    assert [c.seq for c in chunks] == sorted(c.seq for c in chunks)
    assert buf.close_if_due() is False
    assert buf.close_if_due(now=1e12) is True
    everything = [e for c in buf.queued() for e in buf.read_entries(c)]
    assert [e.record["message"] for e in everything] == [f"line {i}" for i in range(10)]
    assert everything[3].time == pytest.approx(1003.0)
    assert buf.total_bytes == sum(c.size for c in buf.queued()) == sum(c.path.stat().st_size for c in buf.queued())
    for c in buf.queued():
        buf.ack(c)
    assert buf.total_bytes == 0 and list(tmp_path.iterdir()) == []


def test_buffer_survives_reopen_with_unacked_and_torn_chunks(tmp_path: Path) -> None:
    buf = FileBuffer(tmp_path, chunk_max_bytes=1 << 20)
    for i in range(3):
        buf.append(float(i), {"n": i})
    buf.close_current()
    sent, unsent = buf.queued()[0], None
    for i in range(3, 5):
        buf.append(float(i), {"n": i})
    buf.close_current()
    unsent = buf.queued()[1]
    buf.append(5.0, {"n": 5})
    buf.append(6.0, {"n": 6})
    buf.sync()  # the current chunk is on disk, not closed: as a kill -9 would leave it
    open_chunk = next(tmp_path.glob("*.open"))
    write(open_chunk, forward.pack_entries([forward.Entry(7.0, {"n": 7})])[:-3])  # a record cut by the crash
    del buf  # no close: the process died

    reopened = FileBuffer(tmp_path)
    chunks = reopened.queued()
    assert [c.id for c in chunks[:2]] == [sent.id, unsent.id]  # ids survive: a resend can be recognised
    assert [[e.record["n"] for e in reopened.read_entries(c)] for c in chunks] == [[0, 1, 2], [3, 4], [5, 6]]
    assert not list(tmp_path.glob("*.open"))
    reopened.ack(chunks[0])
    reopened.append(8.0, {"n": 8})
    reopened.close_current()
    again = FileBuffer(tmp_path)
    assert [[e.record["n"] for e in again.read_entries(c)] for c in again.queued()] == [[3, 4], [5, 6], [8]]
    assert again.queued()[-1].seq > chunks[-1].seq


def test_buffer_full_means_back_pressure(tmp_path: Path) -> None:
    buf = FileBuffer(tmp_path, max_bytes=1000, chunk_max_bytes=300)
    while not buf.full():
        buf.append(1.0, {"message": "x" * 50})
    assert buf.space() == 0
    buf.sync()
    for c in buf.queued():
        buf.ack(c)
    assert not buf.full()


def test_buffer_sets_aside_a_corrupt_chunk(tmp_path: Path) -> None:
    buf = FileBuffer(tmp_path)
    buf.append(1.0, {"n": 1})
    buf.close_current()
    chunk = buf.queued()[0]
    chunk.path.write_bytes(b"\xc1\xc1\xc1")
    with pytest.raises(BufferCorruptError):
        buf.read_entries(chunk)
    buf.quarantine(chunk)
    assert buf.queued() == [] and [p.suffix for p in tmp_path.iterdir()] == [".bad"]
    assert FileBuffer(tmp_path).queued() == []


# --------------------------------------------------------------------------------------------------- records


def test_component_records() -> None:
    line = r'ts=2026-11-25T23:01:02.123Z level=warning logger=harness.dns msg="say \"hi\"\nbye" exc="Trace\nErr"'
    when, record = component_record("node-1", "dns", line, read_time=5.0)
    assert when == pytest.approx(1795647662.123)
    assert record == {"node": "node-1", "component": "dns", "message": 'say "hi"\nbye\nTrace\nErr',
                      "level": "warning", "logger": "harness.dns"}
    assert component_record("node-1", "dns", "Traceback (most recent call last):", 5.0) == (
        5.0, {"node": "node-1", "component": "dns", "message": "Traceback (most recent call last):"})
    parsed = parse_component_line('ts=never level=info logger=x msg="m"')
    assert parsed is not None and parsed.time is None
    assert component_name("/var/log/harness/controller-manager.log") == "controller-manager"
    assert record_tag(record) == "harness.component.dns"


def test_container_records() -> None:
    source = pod_log_source("/var/log/pods/kube-system_coredns-7d8f_1a2b-3c4d-5e/coredns/3.log")
    assert source == PodLogSource("kube-system", "coredns-7d8f", "1a2b-3c4d-5e", "coredns")
    assert pod_log_source("/var/log/pods/ns_a_b_c/app/0.log").pod == "a_b"
    for bad in ("/var/log/pods/nounderscore/app/0.log", "/var/log/pods/ns_uid/app/0.log", "0.log"):
        with pytest.raises(SourcePathError):
            pod_log_source(bad)
    when, record = container_record("node-2", source, CriMessage(7.5, "stderr", "é".encode()))
    assert when == 7.5
    assert record == {"node": "node-2", "namespace": "kube-system", "pod": "coredns-7d8f", "container": "coredns",
                      "stream": "stderr", "message": "é"}
    assert record_tag(record) == "harness.pod.kube-system.coredns-7d8f.coredns"
    component = forward.Entry(1.0, {"component": "dns"})
    assert chunk_tag([forward.Entry(1.0, record), forward.Entry(2.0, record)]) == record_tag(record)
    assert chunk_tag([forward.Entry(1.0, record), component]) == GENERIC_TAG


def _agent(tmp_path: Path) -> Agent:
    return Agent(AgentConfig(node="n1", data_dir=tmp_path / "data", component_logs=str(tmp_path / "c" / "*.log"),
                             pod_logs=str(tmp_path / "pods" / "*" / "*" / "*.log"), http_port=0))


def test_agent_collects_both_kinds_and_holds_partial_lines(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    pod_dir = tmp_path / "pods" / "default_web-1_u-1" / "nginx"
    pod_dir.mkdir(parents=True)
    write(tmp_path / "c" / "kubelet.log", 'ts=2026-11-25T23:01:02.000Z level=info logger=harness.kubelet msg="up"\n')
    write(tmp_path / "c" / "log-agent.log", "not forwarded\n")
    write(pod_dir / "0.log", f"{TS} stdout F whole\n{TS} stdout P half\n")
    agent = _agent(tmp_path)
    with pytest.raises(AgentError):
        _agent(tmp_path)  # one agent per data directory
    agent.collect_once()
    agent.buffer.close_current()
    records = [e.record for c in agent.buffer.queued() for e in agent.buffer.read_entries(c)]
    assert sorted((r.get("component") or r["pod"], r["message"]) for r in records) == [("kubelet", "up"),
                                                                                       ("web-1", "whole")]
    # the position of the pod log stays before the unfinished line, so a restart reads it again
    saved = json.loads((tmp_path / "data" / "positions.json").read_text())["files"]
    assert saved[str(pod_dir / "0.log")]["offset"] == len(f"{TS} stdout F whole\n")
    agent.close()
    write(pod_dir / "0.log", f"{TS} stdout F -and-done\n")
    restarted = _agent(tmp_path)
    restarted.collect_once()
    restarted.buffer.close_current()
    records = [e.record for c in restarted.buffer.queued() for e in restarted.buffer.read_entries(c)]
    assert [r["message"] for r in records if "pod" in r] == ["whole", "half-and-done"]
    restarted.close()


def test_agent_stops_reading_when_the_buffer_is_full(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    log = tmp_path / "c" / "etcd.log"
    n = 6000
    write(log, "".join(f"line {i:05d} {'x' * 40}\n" for i in range(n)))  # ~300 KiB
    agent = Agent(AgentConfig(node="n1", data_dir=tmp_path / "data", component_logs=str(tmp_path / "c" / "*.log"),
                              pod_logs="", buffer_max_bytes=128 * 1024, chunk_max_bytes=16 * 1024))
    read: list[int] = []

    def lines_read() -> int:
        return int(agent.registry.get_sample_value("harness_log_agent_lines_read_total", {"kind": "component"}) or 0)

    for _ in range(10):
        agent.collect_once()
        if agent.buffer.full():
            break
    assert agent.buffer.full() and 0 < lines_read() < n
    stuck = lines_read()
    assert agent.collect_once() is False and lines_read() == stuck  # back-pressure: nothing read, nothing dropped
    committed = json.loads((tmp_path / "data" / "positions.json").read_text())["files"][str(log)]["offset"]
    assert 0 < committed < log.stat().st_size
    for _ in range(100):  # the "aggregator" acknowledges everything queued; reading resumes
        for chunk in agent.buffer.queued():
            read += [e.record["message"] for e in agent.buffer.read_entries(chunk)]
            agent.buffer.ack(chunk)
        agent.collect_once()
        agent.buffer.close_current()
        if lines_read() == n and not agent.buffer.queued():
            break
    assert read == [f"line {i:05d} {'x' * 40}" for i in range(n)]
    agent.close()
