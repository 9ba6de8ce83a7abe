"""Log forwarding over TLS with the Forward protocol's shared-key handshake, on 127.0.0.1.

The certificates and the shared key are the cluster PKI's own (`pki.ensure` for a master at 127.0.0.1): the
aggregator serves `machines/master-1/log-aggregator` on both ports and holds `forward-shared-key`. Agents and the
aggregator run as processes (`python -m harness.cli ...`, as supervisord runs them); raw clients check what the
Forward port does with a peer that skips TLS or the handshake. Every wait is for a condition, with a deadline; every
process started is stopped at teardown, failed test or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from harness.cluster import pki
from harness.cluster.local import NodeSpec
from harness.logging import forward
from harness.logging.aggregator import Aggregator, Config
from harness.logging.forward import Entry
from harness.logging.logstore import Filter
from harness.util import x509
from tests.integration.apiserver_fixtures import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
MASTER = "master-1"
SEQ = re.compile(r"seq (\d+)$")


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls") / "pki"
    pki.ensure(directory, pki.plan([NodeSpec(MASTER, "master", "127.0.0.1")], service_cidr="10.96.0.0/12"),
               key_kind="ecdsa")
    return directory


def ca_context(pki_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))


def component_line(message: str) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    return f'ts={ts} level=info logger=harness.test msg="{message}"\n'


# --------------------------------------------------------------------------------------------------- processes


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path
    http_port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class Processes:
    root: Path
    pki: Path
    started: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], http_port: int) -> Proc:
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=REPO)
        started = Proc(proc, log, http_port)
        self.started.append(started)
        return started

    def aggregator(self, forward_port: int) -> Proc:
        http_port = free_port()
        cert = self.pki / "machines" / MASTER / "log-aggregator"
        return self.spawn("aggregator", [
            "log-aggregator", "--bind-address", "127.0.0.1", "--port", str(forward_port),
            "--http-port", str(http_port), "--data-dir", str(self.root / "logs"),
            "--tls-cert-file", f"{cert}.crt", "--tls-private-key-file", f"{cert}.key",
            "--shared-key-file", str(self.pki / pki.FORWARD_SHARED_KEY), "--self-hostname", f"{MASTER}-log-aggregator",
            "--log-level", "debug"], http_port)

    def agent(self, node: str, forward_port: int, *, key_file: Path, ca_file: Path) -> Proc:
        base = self.root / node
        (base / "harness").mkdir(parents=True, exist_ok=True)
        http_port = free_port()
        return self.spawn(f"agent-{node}", [
            "log-agent", "--aggregator", f"127.0.0.1:{forward_port}", "--node-name", node,
            "--data-dir", str(base / "data"), "--component-logs", str(base / "harness" / "*.log"), "--pod-logs", "",
            "--http-address", "127.0.0.1", "--http-port", str(http_port), "--flush-interval", "0.25",
            "--ack-timeout", "5", "--ca-file", str(ca_file), "--shared-key-file", str(key_file),
            "--log-level", "debug"], http_port)

    def stop(self, p: Proc) -> None:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
            try:
                p.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(timeout=10)

    def stop_all(self) -> None:
        for p in self.started:
            self.stop(p)


@pytest.fixture
def procs(tmp_path: Path, pki_dir: Path) -> Iterator[Processes]:
    ps = Processes(tmp_path, pki_dir)
    try:
        yield ps
    finally:
        ps.stop_all()
        for p in ps.started:
            print(f"--- {p.log.name}:\n{p.tail(30)}")


async def https_get(pki_dir: Path, port: int, path: str, **params: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.get(f"https://127.0.0.1:{port}{path}", params=params, ssl=ca_context(pki_dir)) as response:
        return response.status, await response.text()


async def metric(url: str, name: str, context: ssl.SSLContext | bool = True) -> float:
    """A sample of a /metrics page (0 if absent)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.get(url, ssl=context) as response:
        text = await response.text()
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


async def healthy(p: Proc, url: str, context: ssl.SSLContext | bool = True) -> None:
    async def ok() -> bool:
        assert p.proc.poll() is None, f"{p.log.name}: exited\n{p.tail()}"
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, \
                    s.get(url, ssl=context) as r:
                return r.status == 200
        return False
    await wait_for(ok, within=TIMEOUT, interval=0.1, what=f"{url} of {p.log.name}")


async def seqs(pki_dir: Path, agg: Proc, node: str) -> set[int]:
    status, text = await https_get(pki_dir, agg.http_port, "/query", node=node, component="apiserver")
    assert status == 200, text
    return {int(m[1]) for line in text.splitlines() if (m := SEQ.search(json.loads(line)["message"]))}


async def started_aggregator(procs: Processes) -> tuple[Proc, int]:
    port = free_port()
    agg = procs.aggregator(port)
    await healthy(agg, f"https://127.0.0.1:{agg.http_port}/readyz", ca_context(procs.pki))
    return agg, port


# --------------------------------------------------------------------------------------------------- agents


async def test_an_agent_with_the_cluster_ca_and_key_delivers_over_tls(procs: Processes) -> None:
    agg, port = await started_aggregator(procs)
    agent = procs.agent("worker-1", port, key_file=procs.pki / pki.FORWARD_SHARED_KEY, ca_file=procs.pki / "ca.crt")
    (procs.root / "worker-1" / "harness" / "apiserver.log").write_text(
        "".join(component_line(f"seq {i}") for i in range(50)))
    await healthy(agent, f"http://127.0.0.1:{agent.http_port}/healthz")

    async def delivered() -> bool:
        return await seqs(procs.pki, agg, "worker-1") == set(range(50))
    await wait_for(delivered, within=TIMEOUT, interval=0.2, what="the 50 lines at the aggregator")
    agg_metrics = f"https://127.0.0.1:{agg.http_port}/metrics"
    assert await metric(agg_metrics, 'harness_log_aggregator_handshake_failures_total{reason="shared_key_mismatch"}',
                        ca_context(procs.pki)) == 0
    assert "shared key as worker-1" in agent.log_text() and "TLS verified against" in agent.log_text()
    assert "proved the shared key" in agg.log_text()


async def test_a_wrong_key_is_refused_and_nothing_is_lost(procs: Processes) -> None:
    agg, port = await started_aggregator(procs)
    key_file = procs.root / "wrong-key"
    key_file.write_text("not-the-cluster-key\n")
    agent = procs.agent("worker-2", port, key_file=key_file, ca_file=procs.pki / "ca.crt")
    (procs.root / "worker-2" / "harness" / "apiserver.log").write_text(
        "".join(component_line(f"seq {i}") for i in range(30)))
    agent_metrics = f"http://127.0.0.1:{agent.http_port}/metrics"
    agg_metrics = f"https://127.0.0.1:{agg.http_port}/metrics"
    mismatch = 'harness_log_aggregator_handshake_failures_total{reason="shared_key_mismatch"}'

    async def refused_twice() -> bool:
        assert agent.proc.poll() is None, agent.tail()
        with contextlib.suppress(aiohttp.ClientError):
            return (await metric(agg_metrics, mismatch, ca_context(procs.pki)) >= 2
                    and await metric(agent_metrics, "harness_log_agent_handshake_failures_total") >= 2
                    and await metric(agent_metrics, "harness_log_agent_buffer_bytes") > 0)
        return False
    await wait_for(refused_twice, within=TIMEOUT, interval=0.2,
                   what="the aggregator refusing the key twice while the agent keeps its buffer")
    assert await seqs(procs.pki, agg, "worker-2") == set(), "records of a refused agent were stored"
    assert "authentication failed: shared_key mismatch" in agent.log_text(), agent.tail()
    assert "is not the aggregator's key" in agent.log_text()
    assert "hostname 'worker-2'): shared_key mismatch" in agg.log_text(), agg.tail()

    # given the right key, the same agent (same data directory: buffer and positions) delivers everything
    procs.stop(agent)
    key_file.write_text((procs.pki / pki.FORWARD_SHARED_KEY).read_text())
    procs.agent("worker-2", port, key_file=key_file, ca_file=procs.pki / "ca.crt")

    async def delivered() -> set[int] | None:
        got = await seqs(procs.pki, agg, "worker-2")
        return got if got == set(range(30)) else None
    await wait_for(delivered, within=TIMEOUT, interval=0.2, what="the 30 lines once the key is right")


async def test_an_agent_does_not_send_to_an_aggregator_its_ca_did_not_sign(procs: Processes) -> None:
    agg, port = await started_aggregator(procs)
    other_ca = procs.root / "other-ca.crt"
    x509.save(x509.new_ca("someone-else", key_kind="ecdsa"), other_ca)
    agent = procs.agent("worker-3", port, key_file=procs.pki / pki.FORWARD_SHARED_KEY, ca_file=other_ca)
    (procs.root / "worker-3" / "harness" / "apiserver.log").write_text(component_line("seq 0"))

    async def failed() -> bool:
        return "CERTIFICATE_VERIFY_FAILED" in agent.log_text()
    await wait_for(failed, within=TIMEOUT, interval=0.2, what="the agent refusing the aggregator's certificate")
    assert await seqs(procs.pki, agg, "worker-3") == set()


# --------------------------------------------------------------------------------------------------- raw peers


def secure_config(tmp_path: Path, pki_dir: Path, **more: Any) -> Config:
    """The master's certificate and the cluster's key, a short handshake timeout."""
    cert = pki_dir / "machines" / MASTER / "log-aggregator"
    return Config(bind_address="127.0.0.1", port=0, http_port=0, data_dir=tmp_path / "logs",
                  tls_cert_file=f"{cert}.crt", tls_key_file=f"{cert}.key",
                  shared_key=forward.read_shared_key(str(pki_dir / pki.FORWARD_SHARED_KEY)),
                  self_hostname="aggregator", handshake_timeout=1.0, **more)


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Aggregator]:
    """An in-process aggregator, started (its ports bound), stopped afterwards."""
    agg = Aggregator(config)
    task = asyncio.create_task(agg.run())
    try:
        started = asyncio.create_task(agg.started.wait())
        await asyncio.wait((task, started), timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()
        assert agg.started.is_set(), "the aggregator did not start"
        yield agg
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest_asyncio.fixture
async def secure(tmp_path: Path, pki_dir: Path) -> AsyncIterator[Aggregator]:
    async with running(secure_config(tmp_path, pki_dir)) as agg:
        yield agg


def failures(agg: Aggregator, reason: str) -> float:
    value = agg.metrics.registry.get_sample_value("harness_log_aggregator_handshake_failures_total",
                                                  {"reason": reason})
    return value or 0.0


async def replies_until_closed(reader: asyncio.StreamReader) -> list[Any]:
    """Every message the aggregator sends until it closes the connection."""
    unpacker = forward.new_unpacker()
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                return list(unpacker)
            unpacker.feed(data)


EVENTS = forward.packed_forward("harness.component.apiserver", [Entry(time.time(), {"message": "hi"})], "chunk-1")


async def test_a_plain_tcp_client_is_not_served(secure: Aggregator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", secure.port)
    writer.write(EVENTS)
    await writer.drain()
    replies = await replies_until_closed(reader)
    writer.close()
    assert replies == [], "a client without TLS got Forward replies"
    assert secure.store.select(Filter()) == []


async def test_a_client_that_skips_the_handshake_is_refused(secure: Aggregator, pki_dir: Path) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", secure.port, ssl=ca_context(pki_dir))
    writer.write(EVENTS)
    await writer.drain()
    replies = await replies_until_closed(reader)
    writer.close()
    assert [r[0] for r in replies] == ["HELO", "PONG"], replies
    assert replies[1] == ["PONG", False, "invalid ping message", "", ""]
    assert failures(secure, "invalid_ping_message") == 1
    assert secure.store.select(Filter()) == []


async def test_a_client_silent_after_helo_is_closed(secure: Aggregator, pki_dir: Path) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", secure.port, ssl=ca_context(pki_dir))
    replies = await replies_until_closed(reader)
    writer.close()
    assert [r[0] for r in replies] == ["HELO"]
    assert failures(secure, "timeout") == 1


async def test_a_client_with_the_key_may_send_events_with_its_ping(secure: Aggregator, pki_dir: Path) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", secure.port, ssl=ca_context(pki_dir))
    unpacker = forward.new_unpacker()

    async def next_reply() -> Any:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for reply in unpacker:
                    return reply
                data = await reader.read(65536)
                assert data, "the aggregator closed the connection"
                unpacker.feed(data)

    helo = forward.parse_helo(await next_reply())
    salt = forward.new_salt()
    ping = forward.ping(helo, hostname="raw-client", shared_key=secure.config.shared_key, salt=salt)
    writer.write(forward.pack(ping) + EVENTS)  # events right behind the PING, in one write
    await writer.drain()
    assert forward.check_pong(await next_reply(), hostname="raw-client", salt=salt, nonce=helo.nonce,
                              shared_key=secure.config.shared_key) == "aggregator"
    assert await next_reply() == {"ack": "chunk-1"}
    writer.close()
    assert [r["message"] for r in secure.store.select(Filter())] == ["hi"]


async def test_the_http_port_is_https_only(secure: Aggregator, pki_dir: Path) -> None:
    assert await https_get(pki_dir, secure.http_port, "/healthz") == (200, "ok")
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                session.get(f"http://127.0.0.1:{secure.http_port}/healthz") as response:
            await response.text()
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                session.get(f"https://127.0.0.1:{secure.http_port}/healthz") as response:  # the system's CAs
            await response.text()


async def test_with_a_client_ca_forward_wants_a_client_certificate_and_https_does_not(tmp_path: Path,
                                                                                        pki_dir: Path) -> None:
    async with running(secure_config(tmp_path, pki_dir, client_ca_file=str(pki_dir / "ca.crt"))) as agg:
        reader, writer = await asyncio.open_connection("127.0.0.1", agg.port, ssl=ca_context(pki_dir))
        assert await replies_until_closed(reader) == [], "served a client without a certificate"
        writer.close()
        with_cert = ca_context(pki_dir)
        with_cert.load_cert_chain(pki_dir / "prometheus.crt", pki_dir / "prometheus.key")  # of the cluster CA
        reader, writer = await asyncio.open_connection("127.0.0.1", agg.port, ssl=with_cert)
        unpacker = forward.new_unpacker()
        async with asyncio.timeout(TIMEOUT):
            while not (messages := list(unpacker)):
                data = await reader.read(65536)
                assert data, "closed before the HELO"
                unpacker.feed(data)
        assert forward.parse_helo(messages[0]).nonce
        writer.close()
        assert await https_get(pki_dir, agg.http_port, "/healthz") == (200, "ok")
