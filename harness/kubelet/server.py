"""The kubelet API on port 10250: container logs, the pods bound here, health and metrics.

`/containerLogs/<ns>/<pod>/<container>` takes the query parameters the apiserver's `pods/log`
passes through (follow, tailLines, previous, timestamps, sinceSeconds, sinceTime, limitBytes)
and streams what `kubectl logs` prints. Served over HTTPS when given a certificate.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest

from harness.auth.user import NO_CHECK_TIME
from harness.kubelet import execstream
from harness.kubelet.runtime.crilog import CriLogError, read_log
from harness.machinery.delegatedauth import DelegatedAuth
from harness.util import certreload, rfc3339

if TYPE_CHECKING:
    from harness.kubelet.kubelet import Kubelet


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, not {raw!r}") from None


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def build_app(kubelet: Kubelet, *, auth: DelegatedAuth | None = None) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if not kubelet.ready.is_set():
            return web.Response(status=503, text="kubelet is starting: registering the node and syncing pods\n")
        return web.Response(text="ok")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(kubelet.registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def pods(request: web.Request) -> web.Response:
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": kubelet.bound_pods()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def container_logs(request: web.Request) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        pod = kubelet.find_pod(ns, name)
        if pod is None:
            return _status(404, "NotFound", f'pod "{name}" in namespace "{ns}" is not on node '
                                            f'"{kubelet.config.node_name}"')
        names = [c["name"] for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]]
        if container not in names:
            return _status(400, "BadRequest", f"container {container} is not valid for pod {name}")
        attempts = kubelet.container_attempts(pod["metadata"]["uid"], container)
        previous = _flag(request, "previous")
        if previous:
            if len(attempts) < 2:
                return _status(400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" '
                                                  "not found")
            info = attempts[-2]
        else:
            if not attempts:
                return _status(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                                                  "ContainerCreating")
            info = attempts[-1]
        if not info.log_path:
            return _status(404, "NotFound", f'no logs for container "{container}" in pod "{name}"')
        since: datetime | None = None
        since_seconds = _int(request, "sinceSeconds")
        if since_seconds is not None:
            since = datetime.now(UTC) - timedelta(seconds=since_seconds)
        elif request.query.get("sinceTime"):
            since = rfc3339.parse_time(request.query["sinceTime"])
        follow = _flag(request, "follow") and not previous
        response = web.StreamResponse(headers={"Content-Type": "text/plain", "Cache-Control": "no-cache"})
        await response.prepare(request)
        cid = info.id

        def exited() -> bool:
            fresh = kubelet.runtime.info(cid)
            return fresh is None or fresh.state == "exited"

        try:
            async for chunk in read_log(Path(info.log_path), follow=follow, tail=_int(request, "tailLines"),
                                        since=since, timestamps=_flag(request, "timestamps"),
                                        limit_bytes=_int(request, "limitBytes"), stop=None, until_exited=exited):
                await response.write(chunk)
        except CriLogError:
            pass  # no log file (yet): the container wrote nothing
        await response.write_eof()
        return response

    async def exec_(request: web.Request) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        pod = kubelet.find_pod(ns, name)
        if pod is None:
            return _status(404, "NotFound", f'pod "{name}" in namespace "{ns}" is not on node '
                                            f'"{kubelet.config.node_name}"')
        attempts = kubelet.container_attempts(pod["metadata"]["uid"], container)
        if not attempts or attempts[-1].state != "running":
            return _status(400, "BadRequest", f"container {container} is not running in pod {name}")
        command = request.query.getall("command", [])
        if not command:
            return _status(400, "BadRequest", "you must specify at least 1 command")
        return await execstream.serve(request, kubelet.runtime.exec_command(attempts[-1].id, command),
                                      argv=command, stdin=_flag(request, "input") or _flag(request, "stdin"))

    app = web.Application(middlewares=[auth.middleware()] if auth is not None else [])
    app.router.add_get("/exec/{namespace}/{pod}/{container}", exec_)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/pods", pods)
    app.router.add_get("/pods/", pods)
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return app


def tls_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """The kubelet API's TLS: its serving certificate, and client certificates of `client_ca` asked for (not
    required: a bearer token will do)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    certreload.follow(context, cert, key)
    if client_ca:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.verify_flags |= NO_CHECK_TIME  # dates checked by the authenticator: an expired certificate is 401
    return context


def healthz_app(kubelet: Kubelet) -> web.Application:
    """`--healthz-port`: /healthz alone, in plain HTTP and without authentication, as upstream's 10248."""
    async def healthz(request: web.Request) -> web.Response:
        if not kubelet.ready.is_set():
            return web.Response(status=503, text="kubelet is starting\n")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def serve(kubelet: Kubelet, *, host: str, port: int, cert: str = "", key: str = "", client_ca: str = "",
                auth: DelegatedAuth | None = None, healthz_host: str = "", healthz_port: int = 0) -> AsyncIterator[Any]:
    context = tls_context(cert, key, client_ca) if cert and key else None
    runners = [web.AppRunner(build_app(kubelet, auth=auth), access_log=None, shutdown_timeout=1.0)]
    sites: list[tuple[str, int, ssl.SSLContext | None]] = [(host, port, context)]
    if healthz_port:
        runners.append(web.AppRunner(healthz_app(kubelet), access_log=None, shutdown_timeout=1.0))
        sites.append((healthz_host or "127.0.0.1", healthz_port, None))
    try:
        for runner, (site_host, site_port, site_context) in zip(runners, sites, strict=True):
            await runner.setup()
            await web.TCPSite(runner, site_host, site_port, ssl_context=site_context).start()
        yield runners[0]
    finally:
        for runner in runners:
            await asyncio.shield(runner.cleanup())
