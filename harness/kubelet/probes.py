"""Container probes: run one probe (`run_probe`) and keep one probe's result over time (`ProbeWorker`).

`run_probe` does what upstream's prober does for each handler and words its output the same way:
exec (exit code 0 = success, the output is the message), httpGet (200 <= status < 400, same-host redirects
followed, `HTTP probe failed with statuscode: 500`), tcpSocket (a connect within the timeout) and grpc
(`grpc.health.v1.Health/Check`, when grpcio is importable).

`ProbeWorker` is upstream's prober worker for one (pod, container, kind): it waits `initialDelaySeconds` after
the container started, probes every `periodSeconds`, applies `successThreshold`/`failureThreshold`, holds
liveness/readiness until the startup probe succeeded, and calls `on_result` when the result changes.
Initial results are upstream's: readiness failure (not ready), liveness success, startup unknown (not started).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl
from multidict import CIMultiDict

from harness.kubelet.env import expand_static

#: What the kubelet's probes send as User-Agent: kube-probe/<major>.<minor> of the cluster version.
USER_AGENT = "kube-probe/1.37"
#: Upstream reads at most this much of an exec probe's output or an HTTP probe's body.
MAX_OUTPUT = 10 * 1024
MAX_REDIRECTS = 10

ProbeKind = Literal["liveness", "readiness", "startup"]
#: exec_fn(argv, timeout_seconds) -> (exit code, combined output); raises TimeoutError when it timed out.
ExecFn = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]


@dataclass(frozen=True)
class ProbeResult:
    """One probe run. `errored`: the probe could not be run at all (upstream's Unknown: the result is ignored).
    `warning`: a success upstream reports with a ProbeWarning event (an HTTP redirect it did not follow)."""

    success: bool
    message: str
    errored: bool = False
    warning: bool = False


def _failure(message: str) -> ProbeResult:
    return ProbeResult(False, message)


def _error(message: str) -> ProbeResult:
    return ProbeResult(False, message, errored=True)


async def run_probe(probe: dict[str, Any], *, pod_ip: str, exec_fn: ExecFn | None = None,
                    container: dict[str, Any] | None = None, user_agent: str = USER_AGENT) -> ProbeResult:
    """Run one probe once. `container` resolves named ports and expands `$(VAR)` in exec commands."""
    container = container or {}
    timeout = float(probe.get("timeoutSeconds") or 1)
    if probe.get("exec") is not None:
        if exec_fn is None:
            return _error("exec probes need an exec function")
        command = expand_static(list(probe["exec"].get("command") or []), container)
        return await _exec_probe(command, timeout, exec_fn)
    if probe.get("httpGet") is not None:
        return await _http_probe(probe["httpGet"], container, pod_ip, timeout, user_agent)
    if probe.get("tcpSocket") is not None:
        action = probe["tcpSocket"]
        try:
            port = resolve_port(action.get("port"), container)
        except ValueError as err:
            return _error(str(err))
        return await _tcp_probe(str(action.get("host") or pod_ip), port, timeout)
    if probe.get("grpc") is not None:
        action = probe["grpc"]
        return await _grpc_probe(pod_ip, int(action.get("port") or 0), str(action.get("service") or ""), timeout,
                                 user_agent)
    return _error(f"missing probe handler for container {container.get('name', '')}")


def resolve_port(port: object, container: dict[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports (upstream ResolveContainerPort)."""
    if isinstance(port, bool) or port is None:
        raise ValueError(f"intOrString had no kind: {port!r}")
    if isinstance(port, int):
        number = port
    else:
        name = str(port)
        named = [p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == name]
        if named:
            number = int(named[0] or 0)
        else:
            try:
                number = int(name, 10)
            except ValueError:
                raise ValueError(f'strconv.Atoi: parsing "{name}": invalid syntax') from None
    if 0 < number < 65536:
        return number
    raise ValueError(f"invalid port number: {number}")


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def go_duration(seconds: float) -> str:
    """A timeout as Go prints a time.Duration of whole or fractional seconds ("1s", "1.5s")."""
    return f"{seconds:g}s"


def failure_message(kind: str, result: ProbeResult) -> str:
    """The Unhealthy/ProbeWarning event text upstream records for a probe run."""
    if result.errored:
        return f"{kind.capitalize()} probe errored and resulted in unknown state: {result.message}"
    if result.warning:
        return f"{kind.capitalize()} probe warning: {result.message}"
    return f"{kind.capitalize()} probe failed: {result.message}"


# ---------------------------------------------------------------------------------------------- handlers


async def _exec_probe(command: list[str], limit: float, exec_fn: ExecFn) -> ProbeResult:
    try:
        # exec_fn enforces the limit itself; the margin only guards against one that does not.
        code, output = await asyncio.wait_for(exec_fn(command, limit), limit + 1.0)
    except TimeoutError:
        return _failure(f'command "{" ".join(command)}" timed out')
    except Exception as err:  # the runtime could not exec: upstream's Unknown
        return _error(str(err) or type(err).__name__)
    text = output[:MAX_OUTPUT].decode("utf-8", errors="replace")
    return ProbeResult(code == 0, text)


def _dial_error(host: str, port: int, err: OSError | None) -> str:
    address = join_host_port(host, port)
    if err is None or isinstance(err, TimeoutError):
        return f"dial tcp {address}: i/o timeout"
    text = os.strerror(err.errno) if err.errno else str(err)
    return f"dial tcp {address}: connect: {text[:1].lower()}{text[1:]}"


async def _tcp_probe(host: str, port: int, limit: float) -> ProbeResult:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    except TimeoutError:
        return _failure(_dial_error(host, port, None))
    except OSError as err:
        return _failure(_dial_error(host, port, err))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, "")


def _probe_url(scheme: str, host: str, port: int, path: str) -> str:
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{scheme}://{join_host_port(host, port)}{path}"


def _probe_headers(action: dict[str, Any], user_agent: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for header in action.get("httpHeaders") or []:
        headers.add(str(header.get("name") or ""), str(header.get("value") or ""))
    if "User-Agent" not in headers:
        headers["User-Agent"] = user_agent
    if "Accept" not in headers:
        headers["Accept"] = "*/*"
    elif not headers.get("Accept"):
        del headers["Accept"]
    return headers


async def _http_probe(action: dict[str, Any], container: dict[str, Any], pod_ip: str, limit: float,
                      user_agent: str) -> ProbeResult:
    scheme = str(action.get("scheme") or "HTTP").lower()
    host = str(action.get("host") or pod_ip)
    try:
        port = resolve_port(action.get("port"), container)
    except ValueError as err:
        return _error(str(err))
    url = _probe_url(scheme, host, port, str(action.get("path") or ""))
    headers = _probe_headers(action, user_agent)
    first_host = urlsplit(url).hostname
    connector = aiohttp.TCPConnector(ssl=False, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=limit)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        for redirects in range(MAX_REDIRECTS + 1):
            try:
                async with session.get(yarl.URL(url), headers=headers, allow_redirects=False) as response:
                    body = await response.content.read(MAX_OUTPUT)
                    status = response.status
                    location = response.headers.get("Location")
            except TimeoutError:
                return _failure(f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
                                "headers)")
            except aiohttp.ClientConnectorError as err:
                parsed = urlsplit(url)
                dial = _dial_error(parsed.hostname or host, parsed.port or port, err.os_error)
                return _failure(f'Get "{url}": {dial}')
            except aiohttp.ClientError as err:
                return _failure(f'Get "{url}": {err}')
            if status in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                if urlsplit(target).hostname == first_host:
                    if redirects == MAX_REDIRECTS - 1:
                        return _failure(f'Get "{target}": stopped after {MAX_REDIRECTS} redirects')
                    url = target
                    continue
            return _http_result(status, body.decode("utf-8", errors="replace"))
    return _failure(f'Get "{url}": stopped after {MAX_REDIRECTS} redirects')


def _http_result(status: int, body: str) -> ProbeResult:
    if 200 <= status < 400:
        if status >= 300:
            return ProbeResult(True, f"Probe terminated redirects, Response body: {body}", warning=True)
        return ProbeResult(True, body)
    return _failure(f"HTTP probe failed with statuscode: {status}")


_HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _health_request(service: str) -> bytes:
    """grpc.health.v1.HealthCheckRequest{service} in protobuf wire format."""
    data = service.encode()
    if not data:
        return b""
    length = bytearray()
    size = len(data)
    while True:
        byte = size & 0x7F
        size >>= 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            break
    return b"\x0a" + bytes(length) + data


def _health_status(message: bytes) -> int:
    """The `status` (field 1, varint) of a grpc.health.v1.HealthCheckResponse; 0 when absent."""
    if len(message) >= 2 and message[0] == 0x08:
        value, shift = 0, 0
        for byte in message[1:]:
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
    return 0


async def _grpc_probe(host: str, port: int, service: str, limit: float, user_agent: str) -> ProbeResult:
    try:
        import grpc  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - grpcio comes with aetcd
        return _failure("grpc probes are not supported")
    address = join_host_port(host, port)
    deadline = time.monotonic() + limit
    async with grpc.aio.insecure_channel(address, options=[("grpc.primary_user_agent", user_agent)]) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), limit)
        except TimeoutError:
            return _failure(f'timeout: failed to connect service "{address}" within {go_duration(limit)}: '
                            "context deadline exceeded")
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            response = await check(_health_request(service), timeout=max(deadline - time.monotonic(), 0.001))
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return _failure("error: this server does not implement the grpc health protocol "
                                f"(grpc.health.v1.Health): {err.details()}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return _failure(f"timeout: health rpc did not complete within {go_duration(limit)}")
            name = "".join(word.capitalize() for word in code.name.split("_"))
            return _failure(f"error: health rpc probe failed: rpc error: code = {name} desc = {err.details()}")
    status = _health_status(bytes(response))
    if status != 1:
        return _failure(f'service unhealthy (responded with "{_HEALTH_STATUS.get(status, str(status))}")')
    return ProbeResult(True, "service is serving")


# ---------------------------------------------------------------------------------------------- worker


@dataclass(frozen=True)
class ProbeTarget:
    """What the worker needs to know about its container right now (upstream reads it from the status manager).

    container_id: the current attempt's id, "" while none was created; a new id resets the result.
    running/terminated: the container's state (neither = waiting).
    started_at: when it started running, on the worker's clock (time.time() by default).
    started: containerStatus.started, true once the startup probe succeeded (or at once without one).
    pod_finished: the pod reached Succeeded/Failed (the worker exits); pod_deleting: deletionTimestamp is set.
    """

    container_id: str
    running: bool
    started_at: float | None = None
    started: bool = True
    pod_ip: str = ""
    terminated: bool = False
    pod_finished: bool = False
    pod_deleting: bool = False


#: exec in a container: container_exec(container_id, argv, timeout) -> (exit code, output).
ContainerExecFn = Callable[[str, list[str], float], Awaitable[tuple[int, bytes]]]
#: on_result(kind, success, message): the published result changed. May be a coroutine function.
ResultFn = Callable[[str, bool, str], Awaitable[None] | None]
#: on_event(kind, reason, message): an Unhealthy or ProbeWarning event for one probe run.
EventFn = Callable[[str, str, str], Awaitable[None] | None]

_INITIAL: dict[str, bool | None] = {"readiness": False, "liveness": True, "startup": None}


class ProbeWorker:
    """Probes one container periodically and publishes the result (upstream prober worker)."""

    def __init__(self, kind: ProbeKind, pod: dict[str, Any], container: dict[str, Any], *,
                 target: Callable[[], ProbeTarget | None], exec_fn: ContainerExecFn, on_result: ResultFn,
                 on_event: EventFn | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.time,
                 initial_delay: float | None = None, period: float | None = None, timeout: float | None = None,
                 success_threshold: int | None = None, failure_threshold: int | None = None,
                 user_agent: str = USER_AGENT) -> None:
        if kind not in _INITIAL:
            raise ValueError(f"unknown probe kind {kind!r}")
        self.kind = kind
        self.pod = pod
        self.container = container
        self.probe: dict[str, Any] = dict(container.get(f"{kind}Probe") or {})
        self.initial_delay = float(_pick(initial_delay, self.probe.get("initialDelaySeconds"), 0))
        self.period = float(_pick(period, self.probe.get("periodSeconds"), 10))
        self.timeout = float(_pick(timeout, self.probe.get("timeoutSeconds"), 1))
        self.success_threshold = int(_pick(success_threshold, self.probe.get("successThreshold"), 1))
        self.failure_threshold = int(_pick(failure_threshold, self.probe.get("failureThreshold"), 3))
        self.probe["timeoutSeconds"] = self.timeout
        self._target = target
        self._exec = exec_fn
        self._on_result = on_result
        self._on_event = on_event
        self._sleep = sleep
        self._clock = clock
        self._user_agent = user_agent
        self._result: bool | None = _INITIAL[kind]
        self.container_id = ""
        self._on_hold = False
        self._last: bool | None = None
        self._run = 0
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    @property
    def result(self) -> bool | None:
        """The published result for `container_id`: True/False, None for a startup probe not yet decided."""
        return self._result

    def start(self) -> asyncio.Task[None]:
        """Run the loop in a task of the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"probe-{self.kind}")
        return self._task

    def stop(self) -> None:
        """Stop probing; the loop ends at its next await."""
        self._stopped = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def run(self) -> None:
        while not self._stopped:
            if not await self.step():
                return
            await self._sleep(self.period)

    async def step(self) -> bool:
        """One tick of the loop (upstream doProbe); False when the worker should exit."""
        target = self._target()
        if target is None:
            return True
        if target.pod_finished:
            return False
        if not target.container_id:
            return True
        if target.container_id != self.container_id:
            self.container_id = target.container_id
            self._last, self._run, self._on_hold = None, 0, False
            await self._publish(_INITIAL[self.kind], "")
        if self._on_hold:
            return True
        if not target.running:
            if self.kind == "readiness":
                await self._publish(False, "")
            restart_never = (self.pod.get("spec") or {}).get("restartPolicy") == "Never"
            return not (target.terminated and restart_never)
        if target.pod_deleting and self.kind in ("liveness", "startup"):
            await self._publish(True, "")
            return False
        if target.started_at is not None and self._clock() - target.started_at < self.initial_delay:
            return True
        if target.started == (self.kind == "startup"):
            return True  # startup probes stop once started; the others wait for it
        container_id = self.container_id

        async def exec_in_container(argv: list[str], seconds: float) -> tuple[int, bytes]:
            return await self._exec(container_id, argv, seconds)

        outcome = await run_probe(self.probe, pod_ip=target.pod_ip, exec_fn=exec_in_container,
                                  container=self.container, user_agent=self._user_agent)
        if outcome.errored or outcome.warning or not outcome.success:
            await self._event("ProbeWarning" if outcome.warning else "Unhealthy", failure_message(self.kind, outcome))
        if outcome.errored:
            return True
        if outcome.success == self._last:
            self._run += 1
        else:
            self._last, self._run = outcome.success, 1
        threshold = self.success_threshold if outcome.success else self.failure_threshold
        if self._run < threshold:
            return True
        message = "" if outcome.success else failure_message(self.kind, outcome)
        await self._publish(outcome.success, message)
        if not outcome.success and self.kind in ("liveness", "startup"):
            self._on_hold, self._run = True, 0  # wait for the restarted container
        return True

    async def _publish(self, value: bool | None, message: str) -> None:
        if value == self._result:
            return
        self._result = value
        if value is not None:
            await _call(self._on_result, self.kind, value, message)

    async def _event(self, reason: str, message: str) -> None:
        if self._on_event is not None:
            await _call(self._on_event, self.kind, reason, message)


def _pick(explicit: float | None, from_probe: object, default: float) -> float:
    if explicit is not None:
        return explicit
    if isinstance(from_probe, int | float) and not isinstance(from_probe, bool) and from_probe > 0:
        return from_probe
    return default


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    outcome = fn(*args)
    if inspect.isawaitable(outcome):
        await outcome


__all__ = [
    "MAX_OUTPUT",
    "USER_AGENT",
    "ContainerExecFn",
    "ExecFn",
    "ProbeKind",
    "ProbeResult",
    "ProbeTarget",
    "ProbeWorker",
    "failure_message",
    "go_duration",
    "join_host_port",
    "resolve_port",
    "run_probe",
]
