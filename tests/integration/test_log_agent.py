"""`harness log-agent` as a process, against a minimal Forward receiver written here on 127.0.0.1.

The agent tails temporary directories laid out as /var/log/harness and /var/log/pods and keeps its state in a
temporary data directory. The tests check the records' metadata, that nothing is lost when the agent is killed
with SIGKILL and restarted while the receiver stops acknowledging and then goes away, and that nothing is lost
across rotations (supervisord's renaming to .1, .2, ... and the runtime's renaming to .<timestamp>). Every wait is
for a condition, with a deadline; every process started is stopped at teardown, failed test or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from harness.kubelet.runtime.crilog import CriLogWriter, LineSplitter
from harness.logging import forward
from harness.logging.sources import GENERIC_TAG, record_tag
from harness.util.rotation import rotated_files
from tests.integration.apiserver_fixtures import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
NODE = "test-node"
POD_DIR = "team-a_web-7f9c_0b6e2c1a-5d4e-4f1b-9a3c-2e8d7f6a5b4c"
SEQ = re.compile(r"^seq (\d+)$")


# --------------------------------------------------------------------------------------------------- receiver


@dataclass
class Receiver:
    """A Forward aggregator in miniature: keeps every entry and acknowledges every chunk. With `acking` False it
    keeps what it receives but never answers (as an aggregator whose acks are lost): the agent must send again."""

    port: int = 0
    acking: bool = True
    entries: list[tuple[str, forward.Entry]] = field(default_factory=list)
    chunks: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and drop every connection (the agent sees its aggregator go away)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        unpacker = forward.new_unpacker()
        try:
            while data := await reader.read(256 * 1024):
                unpacker.feed(data)
                for raw in unpacker:
                    message = forward.decode(raw)
                    self.entries.extend((message.tag, e) for e in message.entries)
                    self.chunks += 1
                    if message.chunk is not None and self.acking:
                        writer.write(forward.ack(message.chunk))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    def records(self) -> list[dict[str, Any]]:
        return [e.record for _, e in self.entries]

    def numbers(self, kind: str) -> Counter[int]:
        """How many times each `seq N` message of a kind of source ("component" or "container") arrived."""
        key = "component" if kind == "component" else "pod"
        found: Counter[int] = Counter()
        for record in self.records():
            m = SEQ.match(str(record.get("message", "")))
            if m and key in record:
                found[int(m[1])] += 1
        return found


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


# --------------------------------------------------------------------------------------------------- agent


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    http_port: int
    log: Path

    async def metric(self, name: str) -> float:
        """A sample of the agent's /metrics (0 if absent)."""
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.http_port}/metrics",
                                                       timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text()
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == name:
                return float(value)
        return 0.0

    def kill9(self) -> None:
        """SIGKILL this agent (its own PID, started by the test)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Node:
    """A node's log directories and the agent's data directory, all under the test's temporary directory."""

    root: Path
    started: list[AgentProcess] = field(default_factory=list)

    @property
    def component_dir(self) -> Path:
        return self.root / "harness"

    @property
    def pod_log_dir(self) -> Path:
        return self.root / "pods" / POD_DIR / "web"

    def start_agent(self, receiver_port: int) -> AgentProcess:
        """`harness log-agent` on this node's directories, output appended to agent.log."""
        http_port = free_port()
        log = self.root / "agent.log"
        args = [sys.executable, "-m", "harness.cli", "log-agent", "--aggregator", f"127.0.0.1:{receiver_port}",
                "--node-name", NODE, "--data-dir", str(self.root / "data"),
                "--component-logs", str(self.component_dir / "*.log"),
                "--pod-logs", str(self.root / "pods" / "*" / "*" / "*.log"),
                "--http-address", "127.0.0.1", "--http-port", str(http_port), "--flush-interval", "0.25",
                "--ack-timeout", "2", "--log-level", "debug"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        agent = AgentProcess(proc, http_port, log)
        self.started.append(agent)
        return agent

    async def healthy(self, agent: AgentProcess) -> None:
        async def ok() -> bool:
            assert agent.proc.poll() is None, f"the agent exited: {self.log_tail()}"
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{agent.http_port}/healthz") as r:
                    return r.status == 200
            return False
        await wait_for(ok, within=30, interval=0.1, what="the agent's /healthz")

    def log_tail(self, lines: int = 60) -> str:
        path = self.root / "agent.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_all(self) -> None:
        for agent in self.started:
            if agent.proc.poll() is None:
                agent.proc.terminate()
                try:
                    agent.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    agent.proc.kill()
                    agent.proc.wait(timeout=10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.component_dir.mkdir()
    n.pod_log_dir.mkdir(parents=True)
    try:
        yield n
    finally:
        n.stop_all()
        print(f"--- agent log ({tmp_path / 'agent.log'}):\n{n.log_tail()}")


# --------------------------------------------------------------------------------------------------- writers


def append_text(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def component_line(message: str, level: str = "info", logger: str = "harness.test") -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    return f'ts={ts} level={level} logger={logger} msg="{message}"\n'


class SupervisordLog:
    """Appends to a log file and rotates it as supervisord does (x.log -> x.log.1 -> x.log.2 ...)."""

    def __init__(self, path: Path, max_bytes: int = 0, backups: int = 10) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self.rotations = 0
        self.f = open(path, "ab", buffering=0)  # noqa: SIM115 (closed by close())

    def write(self, text: str) -> None:
        self.f.write(text.encode())
        if self.max_bytes and self.f.tell() >= self.max_bytes:
            self.f.close()
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.rename(self.path.with_name(self.path.name + ".1"))
            self.f = open(self.path, "ab", buffering=0)  # noqa: SIM115
            self.rotations += 1

    def close(self) -> None:
        self.f.close()


class NumberWriter(threading.Thread):
    """Writes `seq 0`..`seq N-1` to a component log and to a container log, paced (a workload, not a wait)."""

    def __init__(self, node: Node, n: int, pause: float, rotate_bytes: int = 0) -> None:
        super().__init__(daemon=True)
        self.n, self.pause = n, pause
        self.component = SupervisordLog(node.component_dir / "apiserver.log", rotate_bytes)
        self.container = CriLogWriter(str(node.pod_log_dir / "0.log"), max_size=rotate_bytes or 0, max_files=10)
        self.splitter = LineSplitter()
        self.written = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.n):
                if self.halt.is_set():
                    return
                self.component.write(component_line(f"seq {i}"))
                self.container.write("stdout", self.splitter.feed(f"seq {i}\n".encode()))
                self.written = i + 1
                if i % 10 == 9:
                    time.sleep(self.pause * 10)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.component.close()
            self.container.close()


@pytest.fixture
def writers() -> Iterator[Callable[..., NumberWriter]]:
    made: list[NumberWriter] = []

    def make(*args: Any, **kwargs: Any) -> NumberWriter:
        w = NumberWriter(*args, **kwargs)
        made.append(w)
        w.start()
        return w
    try:
        yield make
    finally:
        for w in made:
            w.halt.set()
            w.join(timeout=10)


def missing(receiver: Receiver, n: int) -> dict[str, list[int]]:
    return {kind: sorted(set(range(n)) - set(receiver.numbers(kind))) for kind in ("component", "container")}


async def all_arrived(receiver: Receiver, n: int, within: float) -> None:
    async def done() -> bool:
        return not any(missing(receiver, n).values())
    try:
        await wait_for(done, within=within, interval=0.2, what=f"all {n} numbers of both kinds")
    except AssertionError:
        gaps = {k: (len(v), v[:20]) for k, v in missing(receiver, n).items()}
        raise AssertionError(f"missing (count, first): {gaps}") from None


def duplicates(receiver: Receiver) -> dict[str, int]:
    return {kind: sum(c - 1 for c in receiver.numbers(kind).values()) for kind in ("component", "container")}


# --------------------------------------------------------------------------------------------------- tests


async def test_records_carry_their_source(node: Node, receiver: Receiver) -> None:
    apiserver = node.component_dir / "apiserver.log"
    apiserver.write_text(component_line("before the agent started", "warning", "harness.apiserver"))
    (node.component_dir / "supervisord.log").write_text("supervisord's own log\n")
    (node.component_dir / "log-agent.log").write_text("the agent's own log\n")
    cri = CriLogWriter(str(node.pod_log_dir / "0.log"))
    splitter = LineSplitter()
    cri.write("stdout", splitter.feed(b"hello from stdout\n"))
    long_line = "L" * 40_000  # cut into 16 KiB partial records by the runtime
    cri.write("stderr", splitter.feed(long_line.encode() + b"\n"))

    agent = node.start_agent(receiver.port)
    await node.healthy(agent)
    append_text(apiserver, "a line in no particular format\n")
    cri.write("stderr", LineSplitter().feed(b"after the agent started\n"))
    cri.close()

    async def arrived() -> bool:
        return len(receiver.entries) >= 5
    await wait_for(arrived, within=30, interval=0.1, what="five records")
    by_message = {e.record["message"]: (tag, e) for tag, e in receiver.entries}
    assert set(by_message) == {"before the agent started", "a line in no particular format", "hello from stdout",
                               long_line, "after the agent started"}, sorted(by_message)[:10]
    tag, first = by_message["before the agent started"]
    assert first.record == {"node": NODE, "component": "apiserver", "message": "before the agent started",
                            "level": "warning", "logger": "harness.apiserver"}
    assert abs(first.time - time.time()) < 60
    assert by_message["a line in no particular format"][1].record == {
        "node": NODE, "component": "apiserver", "message": "a line in no particular format"}
    pod = {"node": NODE, "namespace": "team-a", "pod": "web-7f9c", "container": "web"}
    assert by_message["hello from stdout"][1].record == {**pod, "stream": "stdout", "message": "hello from stdout"}
    assert by_message[long_line][1].record == {**pod, "stream": "stderr", "message": long_line}
    for tag, entry in receiver.entries:
        assert tag in (record_tag(entry.record), GENERIC_TAG)

    async def acked() -> bool:
        return await agent.metric("harness_log_agent_records_forwarded_total") == 5
    await wait_for(acked, within=10, interval=0.1, what="five records acknowledged")
    assert await agent.metric('harness_log_agent_lines_read_total{kind="component"}') == 2
    assert await agent.metric('harness_log_agent_lines_read_total{kind="container"}') == 5  # 3 of them partial
    assert await agent.metric("harness_log_agent_forward_seconds_count") >= 1
    assert await agent.metric("harness_log_agent_buffer_bytes") == 0

    agent.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(agent.proc.wait, 15) == 0


async def test_no_loss_through_kill_and_aggregator_outage(node: Node, receiver: Receiver,
                                                         writers: Callable[..., NumberWriter]) -> None:
    n = 2000
    agent = node.start_agent(receiver.port)
    await node.healthy(agent)
    writer = writers(node, n, pause=0.004)

    async def some_arrived() -> bool:
        return len(receiver.numbers("component")) >= 200 and writer.written >= 400
    await wait_for(some_arrived, within=30, interval=0.05, what="the first records")
    assert writer.written < n, "the writer finished before the kill: nothing would be mid-stream"
    agent.kill9()
    killed_at, before = writer.written, len(receiver.entries)

    agent = node.start_agent(receiver.port)
    await node.healthy(agent)

    async def flowing_again() -> bool:
        return len(receiver.entries) > before
    await wait_for(flowing_again, within=30, interval=0.05, what="records from the restarted agent")

    receiver.acking = False  # stores, but acknowledges nothing: the agent times out and sends again

    async def retried() -> bool:
        return await agent.metric("harness_log_agent_retries_total") >= 1
    await wait_for(retried, within=30, interval=0.2, what="a retry after an unacknowledged chunk")
    await receiver.stop()  # then the aggregator goes away altogether
    down_at = writer.written

    async def retried_more() -> bool:
        return await agent.metric("harness_log_agent_retries_total") >= 3
    await wait_for(retried_more, within=30, interval=0.2, what="retries while the aggregator is down")
    receiver.acking = True
    await receiver.start()  # same port

    await asyncio.to_thread(writer.join, 60)
    assert writer.error is None and writer.written == n
    await all_arrived(receiver, n, within=90)
    dup = duplicates(receiver)
    print(f"no-loss: {n} numbers x 2 sources all arrived; killed at {killed_at} written, receiver down at "
          f"{down_at}; {len(receiver.entries)} records received, duplicates {dup}; "
          f"retries {await agent.metric('harness_log_agent_retries_total'):g}")

    async def drained() -> bool:
        return await agent.metric("harness_log_agent_buffer_bytes") == 0
    await wait_for(drained, within=30, interval=0.2, what="an empty buffer")


async def test_rotation_mid_stream_loses_nothing(node: Node, receiver: Receiver,
                                                 writers: Callable[..., NumberWriter]) -> None:
    n = 2000
    agent = node.start_agent(receiver.port)
    await node.healthy(agent)
    writer = writers(node, n, pause=0.002, rotate_bytes=8 * 1024)
    await asyncio.to_thread(writer.join, 60)
    assert writer.error is None and writer.written == n
    await all_arrived(receiver, n, within=60)
    cri_rotations = len(rotated_files(node.pod_log_dir / "0.log"))
    assert writer.component.rotations >= 5 and cri_rotations >= 5
    retries = await agent.metric("harness_log_agent_retries_total")
    print(f"rotation: {writer.component.rotations} supervisord and {cri_rotations}+ runtime rotations; "
          f"duplicates {duplicates(receiver)}; retries {retries:g}")
    # Nothing is read twice across a rotation: duplicates could only come from a resend.
    assert duplicates(receiver) == {"component": 0, "container": 0} or retries > 0
