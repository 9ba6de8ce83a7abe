"""The log aggregator in-process on 127.0.0.1 (ports 0): Forward senders in, /query and `harness logs` out.

Senders are the real fluent-logger client and raw sockets speaking each Forward mode; `harness logs` runs as a
process (`python -m harness.cli logs`). Every wait is for a condition, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import pytest_asyncio
from fluent import sender

from harness.cli.logaggregator import ca_from_inventory, format_record, server_from_inventory
from harness.logging import forward
from harness.logging.aggregator import Aggregator, Config, parse_time, serve
from harness.logging.forward import Entry
from tests.integration.apiserver_fixtures import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@pytest_asyncio.fixture
async def aggregator(tmp_path: Path) -> AsyncIterator[Aggregator]:
    """A started aggregator on free loopback ports, stopped after the test."""
    agg = Aggregator(Config(bind_address="127.0.0.1", port=0, http_port=0, data_dir=tmp_path / "logs"))
    task = asyncio.create_task(agg.run())
    started = asyncio.create_task(agg.started.wait())
    await asyncio.wait((task, started), timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if task.done():
        task.result()
    assert agg.started.is_set(), "the aggregator did not start"
    try:
        yield agg
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def base_url(agg: Aggregator) -> str:
    return f"http://127.0.0.1:{agg.http_port}"


async def get(agg: Aggregator, path: str, **params: Any) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.get(base_url(agg) + path, params={k: str(v) for k, v in params.items()}) as response:
        return response.status, await response.text()


async def query(agg: Aggregator, **params: Any) -> list[dict[str, Any]]:
    status, text = await get(agg, "/query", **params)
    assert status == 200, text
    return [json.loads(line) for line in text.splitlines()]


async def wait_records(agg: Aggregator, count: int = 1, **params: Any) -> list[dict[str, Any]]:
    """The query's records once there are at least `count` of them."""
    async def enough() -> list[dict[str, Any]] | None:
        records = await query(agg, **params)
        return records if len(records) >= count else None

    result: list[dict[str, Any]] = await wait_for(enough, within=TIMEOUT, what=f"{count} records for {params}")
    return result


async def metric(agg: Aggregator, name: str) -> float:
    _, text = await get(agg, "/metrics")
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class ForwardConnection:
    """A raw Forward connection to the aggregator: send bytes, read acks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.unpacker = msgpack.Unpacker(raw=False)

    @classmethod
    async def open(cls, agg: Aggregator) -> ForwardConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", agg.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ack(self) -> str:
        """The next chunk id acknowledged."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                for chunk in forward.read_acks(self.unpacker):
                    return chunk
                data = await self.reader.read(65536)
                assert data, "the aggregator closed the connection"
                self.unpacker.feed(data)

    async def closed_by_peer(self) -> bool:
        async with asyncio.timeout(TIMEOUT):
            while data := await self.reader.read(65536):
                self.unpacker.feed(data)
        return True

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def component(node: str, name: str, message: str) -> dict[str, Any]:
    return {"node": node, "component": name, "message": message}


def container(node: str, ns: str, pod: str, name: str, message: str) -> dict[str, Any]:
    return {"node": node, "namespace": ns, "pod": pod, "container": name, "stream": "stdout", "message": message}


# --------------------------------------------------------------------------------------------------- senders


async def test_fluent_logger_records_are_stored_and_found(aggregator: Aggregator) -> None:
    def send() -> None:
        plain = sender.FluentSender("harness", host="127.0.0.1", port=aggregator.port)
        precise = sender.FluentSender("app", host="127.0.0.1", port=aggregator.port, nanosecond_precision=True)
        try:
            assert plain.emit("component.kubelet", component("worker-1", "kubelet", "synced pod web")), \
                plain.last_error
            assert precise.emit("access", {"path": "/index.html", "status": 200}), precise.last_error
            assert precise.emit("pod.default.web.httpd", container("worker-2", "default", "web", "httpd", "GET /"))
        finally:
            plain.close()
            precise.close()

    before = time.time()
    await asyncio.to_thread(send)
    (kubelet,) = await wait_records(aggregator, node="worker-1", component="kubelet")
    assert kubelet["message"] == "synced pod web"
    assert int(kubelet["time"]) == kubelet["time"]  # fluent-logger's plain time: whole seconds
    (other,) = await wait_records(aggregator, node="-")
    assert other["tag"] == "app.access" and other["status"] == 200
    assert before - 1 <= other["time"] <= time.time() + 1
    (pod,) = await wait_records(aggregator, namespace="default", pod="web", container="httpd")
    assert pod["message"] == "GET /" and pod["time"] != int(pod["time"])  # EventTime: fractions kept
    day = aggregator.store.root / time.strftime("%Y-%m-%d", time.gmtime(pod["time"]))
    assert (day / "worker-2/pods/default_web_httpd.jsonl").exists()
    assert (day / "other/app.access.jsonl").exists()
    assert await metric(aggregator, 'harness_log_aggregator_records_total{kind="other"}') == 1


async def test_every_forward_mode_is_acknowledged_after_storing(aggregator: Aggregator) -> None:
    conn = await ForwardConnection.open(aggregator)
    try:
        now = time.time()
        entries = [Entry(now + i / 10, component("worker-3", "proxy", f"packed {i}")) for i in range(3)]
        chunk = forward.new_chunk_id()
        await conn.send(forward.packed_forward("harness.component.proxy", entries, chunk))
        assert await conn.ack() == chunk
        assert len(aggregator.store.query(node="worker-3")) == 3  # stored before the ack

        chunk = forward.new_chunk_id()
        await conn.send(forward.packed_forward("harness.component.proxy",
                                               [Entry(now + 1, component("worker-3", "proxy", "gzipped"))],
                                               chunk, compress=True))
        assert await conn.ack() == chunk

        chunk = forward.new_chunk_id()
        await conn.send(msgpack.packb(["harness.component.proxy",
                                       [[forward.event_time(now + 2), component("worker-3", "proxy", "forward")]],
                                       {"chunk": chunk}], use_bin_type=True))
        assert await conn.ack() == chunk

        chunk = forward.new_chunk_id()
        await conn.send(msgpack.packb(["harness.component.proxy", int(now) + 3,
                                       component("worker-3", "proxy", "message"), {"chunk": chunk}],
                                      use_bin_type=True))
        assert await conn.ack() == chunk
    finally:
        await conn.close()
    records = await query(aggregator, node="worker-3", component="proxy")
    assert [r["message"] for r in records] == ["packed 0", "packed 1", "packed 2", "gzipped", "forward", "message"]
    assert records[0]["time"] == pytest.approx(now, abs=1e-6)
    assert await metric(aggregator, "harness_log_aggregator_acks_total") == 4


async def test_garbage_closes_only_that_connection(aggregator: Aggregator) -> None:
    good = await ForwardConnection.open(aggregator)
    bad = await ForwardConnection.open(aggregator)
    try:
        await bad.send(b"\xc1 this is not msgpack at all")
        assert await bad.closed_by_peer()
        other = await ForwardConnection.open(aggregator)
        await other.send(msgpack.packb("a string, not a message"))
        assert await other.closed_by_peer()
        await other.close()
        gz = await ForwardConnection.open(aggregator)
        await gz.send(msgpack.packb(["t", b"not gzip", {"compressed": "gzip"}], use_bin_type=True))
        assert await gz.closed_by_peer()
        await gz.close()

        chunk = forward.new_chunk_id()
        await good.send(forward.packed_forward("t", [Entry(time.time(), component("worker-4", "c", "still here"))],
                                               chunk))
        assert await good.ack() == chunk
        fresh = await ForwardConnection.open(aggregator)
        chunk = forward.new_chunk_id()
        await fresh.send(forward.packed_forward("t", [Entry(time.time(), component("worker-4", "c", "new"))], chunk))
        assert await fresh.ack() == chunk
        await fresh.close()
    finally:
        await good.close()
        await bad.close()
    assert await metric(aggregator, "harness_log_aggregator_protocol_errors_total") == 3
    assert [r["message"] for r in await query(aggregator, node="worker-4")] == ["still here", "new"]


# --------------------------------------------------------------------------------------------------- HTTP


async def test_health_metrics_and_bad_parameters(aggregator: Aggregator) -> None:
    for path in ("/healthz", "/readyz", "/livez"):
        assert await get(aggregator, path) == (200, "ok")
    status, text = await get(aggregator, "/metrics")
    assert status == 200
    for name in ("harness_log_aggregator_records_total", "harness_log_aggregator_bytes_total",
                 "harness_log_aggregator_connections", "harness_log_aggregator_store_seconds_bucket",
                 "process_resident_memory_bytes"):
        assert name in text
    bad = (({"grep": "(unclosed"}, "grep"), ({"since": "yesterday"}, "since"), ({"limit": "ten"}, "limit"),
           ({"follow": "maybe"}, "follow"), ({"nmespace": "x"}, "nmespace"))
    for params, wrong in bad:
        status, text = await get(aggregator, "/query", **params)
        assert status == 400 and f"bad parameter {wrong}" in text, (params, text)


async def test_since_grep_and_limit(aggregator: Aggregator) -> None:
    now = time.time()
    aggregator.store.append("t", [Entry(now - 7200, component("worker-5", "kubelet", "two hours ago")),
                                  Entry(now - 60, component("worker-5", "kubelet", "a minute ago")),
                                  Entry(now - 1, component("worker-5", "kubelet", "just now"))])
    assert [r["message"] for r in await query(aggregator, node="worker-5", since="10m")] == ["a minute ago",
                                                                                            "just now"]
    assert len(await query(aggregator, node="worker-5", since="3h")) == 3
    assert len(await query(aggregator, node="worker-5", since=f"{now - 30:.3f}")) == 1
    rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 120))
    assert len(await query(aggregator, node="worker-5", since=rfc3339)) == 2
    assert [r["message"] for r in await query(aggregator, node="worker-5", grep="ago$", limit=1)] == ["a minute ago"]


def test_parse_time() -> None:
    now = 1_800_000_000.0
    assert parse_time("10m", now) == now - 600
    assert parse_time("1h30m", now) == now - 5400
    assert parse_time("500ms", now) == now - 0.5
    assert parse_time("1795142401.5", now) == 1795142401.5
    assert parse_time("2026-11-26T02:40:01Z") == parse_time("2026-11-26T03:40:01+01:00")
    assert parse_time("2026-11-26T02:40:01") == parse_time("2026-11-26T02:40:01Z")
    with pytest.raises(ValueError, match="duration"):
        parse_time("ten minutes")


async def test_follow_streams_old_then_new_and_notices_the_client_leaving(aggregator: Aggregator) -> None:
    aggregator.store.append("t", [Entry(time.time(), component("worker-6", "dns", "before"))])
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.get(base_url(aggregator) + "/query", params={"node": "worker-6", "follow": "1"}) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"
        assert json.loads(await response.content.readline())["message"] == "before"
        await aggregator.store.append_async("t", [Entry(time.time(), component("worker-7", "dns", "elsewhere")),
                                                  Entry(time.time(), component("worker-6", "dns", "after"))])
        assert json.loads(await response.content.readline())["message"] == "after"
        assert await metric(aggregator, "harness_log_aggregator_followers") == 1
    await wait_for(lambda: _followers_gone(aggregator), within=TIMEOUT, what="the follower to be noticed gone")


async def _followers_gone(aggregator: Aggregator) -> bool:
    return not aggregator.store._subscriptions and await metric(aggregator, "harness_log_aggregator_followers") == 0


async def test_serve_returns_1_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = Config(bind_address="127.0.0.1", port=taken.getsockname()[1], http_port=0, data_dir=tmp_path)
        async with asyncio.timeout(TIMEOUT):
            assert await serve(config, stop=asyncio.Event()) == 1


async def test_serve_stops_on_the_event(tmp_path: Path) -> None:
    stop = asyncio.Event()
    http_port = free_port()
    task = asyncio.create_task(serve(Config(bind_address="127.0.0.1", port=0, http_port=http_port,
                                            data_dir=tmp_path), stop=stop))

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{http_port}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            assert not task.done(), task.result()
            return False

    await wait_for(ready, within=TIMEOUT, what="/readyz")
    stop.set()
    async with asyncio.timeout(TIMEOUT):
        assert await task == 0


# --------------------------------------------------------------------------------------------------- harness logs


async def harness_logs(*args: str, cwd: Path = REPO) -> tuple[int, str, str]:
    """`python -m harness.cli logs ARGS`: exit code, stdout, stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "harness.cli", "logs", *args, cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def rfc3339_ms(t: float) -> str:
    """How `harness logs` prints a record's time: UTC, milliseconds, `Z`."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_harness_logs_prints_matching_lines(aggregator: Aggregator) -> None:
    # Stamped an hour before now, not on a fixed day: the aggregator removes days older than its retention.
    t = float(int(time.time()) - 3600) + 0.125
    aggregator.store.append("t", [Entry(t, component("worker-8", "kubelet", "pulled image")),
                                  Entry(t + 1, container("worker-8", "default", "web-abc", "httpd", "GET / 200")),
                                  Entry(t + 2, container("worker-8", "other", "web-abc", "httpd", "not default")),
                                  Entry(t + 3, component("worker-9", "kubelet", "another node"))])
    server = base_url(aggregator)
    code, out, err = await harness_logs("--server", server, "--node", "worker-8", "--since", f"{t - 1}")
    assert code == 0, err
    assert out.splitlines() == [
        f"{rfc3339_ms(t)} worker-8 kubelet: pulled image",
        f"{rfc3339_ms(t + 1)} worker-8 default/web-abc/httpd stdout: GET / 200",
        f"{rfc3339_ms(t + 2)} worker-8 other/web-abc/httpd stdout: not default",
    ]
    code, out, err = await harness_logs("--server", server, "--pod", "web-abc", "--json", "--since", f"{t - 1}")
    assert code == 0, err
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["GET / 200"]
    code, out, err = await harness_logs("--server", server, "--component", "kubelet", "--grep", "another",
                                        "--since", f"{t - 1}")
    assert (code, out.strip()) == (0, f"{rfc3339_ms(t + 3)} worker-9 kubelet: another node")
    code, out, err = await harness_logs("--server", server, "--grep", "(")
    assert code == 1 and "bad parameter grep" in err


async def test_harness_logs_follow_sees_new_records(aggregator: Aggregator) -> None:
    aggregator.store.append("t", [Entry(time.time(), component("worker-10", "proxy", "first"))])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harness.cli", "logs", "--server", base_url(aggregator), "--node", "worker-10",
        "--follow", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).decode().endswith(" worker-10 proxy: first\n")
            await aggregator.store.append_async("t", [Entry(time.time(), component("worker-10", "proxy", "second"))])
            assert (await proc.stdout.readline()).decode().endswith(" worker-10 proxy: second\n")
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(TIMEOUT):
            await proc.wait()


async def test_harness_logs_says_what_is_missing(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await harness_logs("--server", url)
    assert code == 1 and url in err and "cluster must be up" in err, err
    code, _, err = await harness_logs("--name", "nosuch", cwd=tmp_path)
    assert code == 1 and "harness up --name nosuch" in err, err


def test_the_server_is_the_first_masters_node_ip(tmp_path: Path) -> None:
    hosts = tmp_path / "c1" / "hosts.yml"
    hosts.parent.mkdir()
    hosts.write_text("all:\n  children:\n    masters:\n      hosts:\n        master-1: {node_ip: 10.240.0.11}\n"
                     "        master-2: {node_ip: 10.240.0.12}\n    workers:\n      hosts: {}\n")
    assert server_from_inventory("c1", tmp_path) == "https://10.240.0.11:24220"
    assert ca_from_inventory("c1", tmp_path) == tmp_path / "c1" / "pki" / "ca.crt"
    hosts.write_text(hosts.read_text() + "  vars: {pki_source: /somewhere/pki}\n")
    assert ca_from_inventory("c1", tmp_path) == Path("/somewhere/pki/ca.crt")


def test_format_record() -> None:
    assert format_record({"time": 0.5, "tag": "app", "node": "-", "path": "/"}) == \
        '1970-01-01T00:00:00.500Z - other/app: {"path": "/"}'
    assert format_record({"time": 0, "node": "n", "component": "kubelet", "message": "line\n"}) == \
        "1970-01-01T00:00:00.000Z n kubelet: line"


async def test_stopping_ends_open_follows(tmp_path: Path) -> None:
    agg = Aggregator(Config(bind_address="127.0.0.1", port=0, http_port=0, data_dir=tmp_path))
    task = asyncio.create_task(agg.run())
    try:
        async with asyncio.timeout(TIMEOUT):
            await agg.started.wait()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session, \
                session.get(base_url(agg) + "/query", params={"follow": "1"}) as response:
            assert response.status == 200
            task.cancel()
            assert await response.content.read() == b""  # the stream ends instead of hanging
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
