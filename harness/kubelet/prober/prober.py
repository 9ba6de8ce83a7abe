"""Run one container probe, as upstream's prober does (`pkg/kubelet/prober/prober.go`): `run_probe`.

Each handler answers and words its output as upstream's: exec (exit code 0 = success, the output is the message),
httpGet (200 <= status < 400, same-host redirects followed, `HTTP probe failed with statuscode: 500`), tcpSocket (a
connect within the timeout) and grpc (`grpc.health.v1.Health/Check`, when grpcio is importable). Keeping a result
over time is the worker's job (`prober/worker.py`).
"""


import asyncio
import contextlib
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


__all__ = [
    "MAX_OUTPUT",
    "USER_AGENT",
    "ExecFn",
    "ProbeKind",
    "ProbeResult",
    "failure_message",
    "go_duration",
    "join_host_port",
    "resolve_port",
    "run_probe",
]
