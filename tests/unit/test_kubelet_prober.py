"""Probes: exec/httpGet/tcpSocket/grpc handlers against local servers, and the worker's thresholds and gating."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from aiohttp import web

from harness.kubelet.prober.prober import USER_AGENT, ProbeResult, failure_message, resolve_port, run_probe
from harness.kubelet.prober.worker import ProbeTarget, ProbeWorker

LOCAL = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------- exec


class FakeExec:
    def __init__(self, *results: tuple[int, bytes] | BaseException) -> None:
        self.results = list(results)
        self.calls: list[tuple[list[str], float]] = []

    async def __call__(self, argv: list[str], seconds: float) -> tuple[int, bytes]:
        self.calls.append((argv, seconds))
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, BaseException):
            raise result
        return result


async def test_exec_probe_results_and_expansion() -> None:
    probe = {"exec": {"command": ["cat", "$(FILE)"]}, "timeoutSeconds": 2}
    container = {"env": [{"name": "FILE", "value": "/tmp/healthy"}]}
    fake = FakeExec((0, b"ok\n"))
    assert await run_probe(probe, pod_ip=LOCAL, exec_fn=fake, container=container) == ProbeResult(True, "ok\n")
    assert fake.calls == [(["cat", "/tmp/healthy"], 2.0)]

    failing = FakeExec((1, b"cat: can't open '/tmp/healthy': No such file or directory\n"))
    result = await run_probe(probe, pod_ip=LOCAL, exec_fn=failing, container=container)
    assert result == ProbeResult(False, "cat: can't open '/tmp/healthy': No such file or directory\n")
    assert failure_message("liveness", result) == \
        "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory\n"


async def test_exec_probe_timeout_and_runtime_error() -> None:
    probe = {"exec": {"command": ["sh", "-c", "sleep 10"]}}
    assert await run_probe(probe, pod_ip=LOCAL, exec_fn=FakeExec(TimeoutError())) == \
        ProbeResult(False, 'command "sh -c sleep 10" timed out')
    result = await run_probe(probe, pod_ip=LOCAL, exec_fn=FakeExec(RuntimeError("container not running")))
    assert result.errored and result.message == "container not running"


async def test_exec_probe_output_is_capped() -> None:
    result = await run_probe({"exec": {"command": ["x"]}}, pod_ip=LOCAL, exec_fn=FakeExec((2, b"a" * 50_000)))
    assert not result.success and len(result.message) == 10 * 1024


# ---------------------------------------------------------------------------------------------- httpGet


@pytest.fixture
async def http_server() -> AsyncIterator[int]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="secret details")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def elsewhere(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{request.url.port}/ok", text="moved")

    async def headers(request: web.Request) -> web.Response:
        ok = (request.headers.get("User-Agent") == USER_AGENT and request.headers.get("X-Probe") == "yes"
              and request.host == "example.test" and request.headers.get("Accept") == "*/*"
              and request.query.get("q") == "1")
        return web.Response(status=200 if ok else 400, text=str(dict(request.headers)))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    app = web.Application()
    for path, handler in [("/ok", ok), ("/fail", fail), ("/redirect", redirect), ("/loop", loop),
                          ("/elsewhere", elsewhere), ("/headers", headers), ("/slow", slow)]:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, LOCAL, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield int(port)
    finally:
        await runner.cleanup()


def http_probe(path: str, port: int | str, **extra: Any) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port, **extra}, "timeoutSeconds": 1}


async def test_http_success_failure_and_redirects(http_server: int) -> None:
    port = http_server
    assert await run_probe(http_probe("/ok", port), pod_ip=LOCAL) == ProbeResult(True, "fine")
    result = await run_probe(http_probe("/fail", port), pod_ip=LOCAL)
    assert result == ProbeResult(False, "HTTP probe failed with statuscode: 500")
    assert failure_message("liveness", result) == "Liveness probe failed: HTTP probe failed with statuscode: 500"
    assert await run_probe(http_probe("/redirect", port), pod_ip=LOCAL) == ProbeResult(True, "fine")
    # A redirect to another host is not followed: the 302 itself counts, as a warning.
    result = await run_probe(http_probe("/elsewhere", port), pod_ip=LOCAL)
    assert result.success and result.warning
    assert result.message == "Probe terminated redirects, Response body: moved"
    result = await run_probe(http_probe("/loop", port), pod_ip=LOCAL)
    assert result == ProbeResult(False, f'Get "http://{LOCAL}:{port}/loop": stopped after 10 redirects')


async def test_http_headers_named_port_and_host(http_server: int) -> None:
    container = {"ports": [{"name": "web", "containerPort": http_server}]}
    probe = http_probe("/headers?q=1", "web", httpHeaders=[{"name": "X-Probe", "value": "yes"},
                                                           {"name": "Host", "value": "example.test"}])
    assert (await run_probe(probe, pod_ip=LOCAL, container=container)).success
    by_host = http_probe("/ok", http_server, host=LOCAL, scheme="HTTP")
    assert (await run_probe(by_host, pod_ip="192.0.2.254")).success


async def test_http_connection_refused_and_timeout(http_server: int) -> None:
    closed = free_port()
    result = await run_probe(http_probe("/healthz", closed), pod_ip=LOCAL)
    assert result == ProbeResult(False, f'Get "http://{LOCAL}:{closed}/healthz": dial tcp {LOCAL}:{closed}: '
                                        "connect: connection refused")
    slow = {**http_probe("/slow", http_server), "timeoutSeconds": 0.2}
    result = await run_probe(slow, pod_ip=LOCAL)
    assert result == ProbeResult(False, f'Get "http://{LOCAL}:{http_server}/slow": context deadline exceeded '
                                        "(Client.Timeout exceeded while awaiting headers)")


async def test_unknown_named_port_is_a_probe_error() -> None:
    result = await run_probe(http_probe("/", "metrics"), pod_ip=LOCAL, container={"ports": []})
    assert result.errored and result.message == 'strconv.Atoi: parsing "metrics": invalid syntax'
    assert resolve_port("8080", {}) == 8080
    with pytest.raises(ValueError, match="invalid port number: 70000"):
        resolve_port(70000, {})


# ---------------------------------------------------------------------------------------------- tcpSocket / grpc


async def test_tcp_probe() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), LOCAL, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        assert await run_probe({"tcpSocket": {"port": port}}, pod_ip=LOCAL) == ProbeResult(True, "")
    finally:
        server.close()
        await server.wait_closed()
    closed = free_port()
    assert await run_probe({"tcpSocket": {"port": closed, "host": LOCAL}}, pod_ip="192.0.2.254") == \
        ProbeResult(False, f"dial tcp {LOCAL}:{closed}: connect: connection refused")


@pytest.fixture
async def grpc_server() -> AsyncIterator[tuple[int, int]]:
    """One server with the health service (service "sick" is NOT_SERVING), one without it."""

    async def check(request: bytes, context: Any) -> bytes:
        return b"\x08\x02" if request == b"\x0a\x04sick" else b"\x08\x01"

    health = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)})
    with_health = grpc.aio.server()
    with_health.add_generic_rpc_handlers((health,))
    without = grpc.aio.server()
    ports = (with_health.add_insecure_port(f"{LOCAL}:0"), without.add_insecure_port(f"{LOCAL}:0"))
    await with_health.start()
    await without.start()
    try:
        yield ports
    finally:
        await with_health.stop(None)
        await without.stop(None)


async def test_grpc_probe(grpc_server: tuple[int, int]) -> None:
    healthy, plain = grpc_server
    assert await run_probe({"grpc": {"port": healthy}}, pod_ip=LOCAL) == ProbeResult(True, "service is serving")
    assert await run_probe({"grpc": {"port": healthy, "service": "sick"}}, pod_ip=LOCAL) == \
        ProbeResult(False, 'service unhealthy (responded with "NOT_SERVING")')
    result = await run_probe({"grpc": {"port": plain}}, pod_ip=LOCAL)
    assert not result.success
    assert result.message.startswith("error: this server does not implement the grpc health protocol "
                                      "(grpc.health.v1.Health)")
    closed = free_port()
    result = await run_probe({"grpc": {"port": closed}, "timeoutSeconds": 0.3}, pod_ip=LOCAL)
    assert result == ProbeResult(False, f'timeout: failed to connect service "{LOCAL}:{closed}" within 0.3s: '
                                        "context deadline exceeded")


# ---------------------------------------------------------------------------------------------- worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Harness:
    """A worker around a scripted exec probe, recording what it publishes."""

    def __init__(self, kind: str, outcomes: list[int], restart_policy: str = "Always", **probe: Any) -> None:
        self.clock = Clock()
        self.outcomes = outcomes
        self.execs: list[str] = []
        self.results: list[tuple[str, bool, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.target: ProbeTarget | None = ProbeTarget("c1", running=True, started_at=self.clock.now,
                                                      started=kind != "startup", pod_ip=LOCAL)
        container = {"name": "app", f"{kind}Probe": {"exec": {"command": ["check"]}, **probe}}
        pod = {"metadata": {"name": "p"}, "spec": {"restartPolicy": restart_policy, "containers": [container]}}
        self.worker = ProbeWorker(kind, pod, container, target=lambda: self.target,  # type: ignore[arg-type]
                                  exec_fn=self.exec, on_result=self.on_result, on_event=self.on_event,
                                  sleep=self.clock.sleep, clock=self.clock)

    async def exec(self, container_id: str, argv: list[str], seconds: float) -> tuple[int, bytes]:
        self.execs.append(container_id)
        code = self.outcomes.pop(0) if self.outcomes else 0
        return code, b"" if code == 0 else b"unhealthy"

    def on_result(self, kind: str, success: bool, message: str) -> None:
        self.results.append((kind, success, message))

    async def on_event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    async def steps(self, count: int) -> None:
        for _ in range(count):
            assert await self.worker.step()
            self.clock.now += self.worker.period


async def test_worker_knobs_come_from_the_probe_with_upstream_defaults() -> None:
    worker = Harness("readiness", []).worker
    assert (worker.initial_delay, worker.period, worker.timeout, worker.success_threshold,
            worker.failure_threshold) == (0, 10, 1, 1, 3)
    worker = Harness("liveness", [], initialDelaySeconds=5, periodSeconds=2, timeoutSeconds=3, successThreshold=1,
                     failureThreshold=4).worker
    assert (worker.initial_delay, worker.period, worker.timeout, worker.failure_threshold) == (5, 2, 3, 4)


async def test_readiness_starts_not_ready_and_follows_thresholds() -> None:
    h = Harness("readiness", [0, 0, 1, 1, 0, 1, 1, 1], successThreshold=2, failureThreshold=3)
    assert h.worker.result is False
    await h.steps(1)
    assert h.results == []                      # one success is below successThreshold=2
    await h.steps(1)
    assert h.results == [("readiness", True, "")]
    await h.steps(3)                            # fail, fail, success: the failure run is broken
    assert h.results == [("readiness", True, "")]
    await h.steps(3)
    assert h.results[-1] == ("readiness", False, "Readiness probe failed: unhealthy")
    assert h.worker.result is False
    assert h.events.count(("readiness", "Unhealthy", "Readiness probe failed: unhealthy")) == 5


async def test_liveness_failure_holds_until_a_new_container() -> None:
    h = Harness("liveness", [1, 1, 1, 1, 1, 0])
    assert h.worker.result is True
    await h.steps(3)
    assert h.results == [("liveness", False, "Liveness probe failed: unhealthy")]
    await h.steps(2)
    assert h.execs == ["c1", "c1", "c1"]        # on hold: the failed container is not probed again
    h.target = ProbeTarget("c2", running=True, started_at=h.clock.now, pod_ip=LOCAL)
    await h.steps(1)
    assert h.results[-1] == ("liveness", True, "")  # a new container starts from liveness success
    assert h.execs[-1] == "c2"


async def test_initial_delay_counts_from_container_start() -> None:
    h = Harness("readiness", [], initialDelaySeconds=25, periodSeconds=10)
    await h.steps(2)                            # t = 0s, 10s after the start
    assert h.execs == []
    await h.steps(2)                            # t = 20s: still waiting; t = 30s: probed
    assert h.execs == ["c1"]
    assert h.results == [("readiness", True, "")]


async def test_startup_gates_the_other_probes() -> None:
    startup = Harness("startup", [1, 0])
    assert startup.worker.result is None
    await startup.steps(2)
    assert startup.results == [("startup", True, "")]
    startup.target = ProbeTarget("c1", running=True, started_at=0, started=True)
    await startup.steps(2)
    assert len(startup.execs) == 2              # once started, the startup probe stops probing

    liveness = Harness("liveness", [])
    liveness.target = ProbeTarget("c1", running=True, started_at=0, started=False)
    await liveness.steps(3)
    assert liveness.execs == []


async def test_startup_failure_is_reported() -> None:
    h = Harness("startup", [1, 1], failureThreshold=2)
    await h.steps(2)
    assert h.results == [("startup", False, "Startup probe failed: unhealthy")]


async def test_containers_that_are_not_running_are_not_probed() -> None:
    h = Harness("readiness", [0])
    await h.steps(1)
    assert h.results == [("readiness", True, "")]
    h.target = ProbeTarget("c1", running=False, terminated=True)
    await h.steps(1)
    assert h.execs == ["c1"]
    assert h.results[-1] == ("readiness", False, "")

    never = Harness("readiness", [], restart_policy="Never")
    never.target = ProbeTarget("c1", running=False, terminated=True)
    assert await never.worker.step() is False   # it will not come back: the worker exits

    waiting = Harness("liveness", [])
    waiting.target = None
    assert await waiting.worker.step()
    waiting.target = ProbeTarget("", running=False)
    assert await waiting.worker.step()
    assert waiting.execs == []


async def test_pod_deletion_and_completion_end_the_worker() -> None:
    h = Harness("liveness", [1, 1])
    await h.steps(2)
    h.target = ProbeTarget("c1", running=True, started_at=0, pod_deleting=True)
    assert await h.worker.step() is False
    assert h.worker.result is True and h.results == []
    done = Harness("readiness", [])
    done.target = ProbeTarget("c1", running=True, pod_finished=True)
    assert await done.worker.step() is False


async def test_run_loop_sleeps_a_period_between_probes_and_stops() -> None:
    h = Harness("readiness", [], periodSeconds=7)
    task = h.worker.start()
    for _ in range(200):
        if len(h.execs) >= 3:
            break
        await asyncio.sleep(0)
    h.worker.stop()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)  # cancelled, or ended at its check
    assert task.done()
    assert len(h.execs) >= 3
    assert set(h.clock.sleeps) == {7.0}


async def test_run_returns_when_the_pod_is_finished() -> None:
    h = Harness("readiness", [])
    h.target = ProbeTarget("c1", running=True, pod_finished=True)
    await asyncio.wait_for(h.worker.run(), 2)
    assert h.execs == []
