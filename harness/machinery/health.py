"""The small HTTP server every component runs beside its work: /healthz, /livez, /readyz, /metrics.

Started and stopped as an async context manager, so it lives exactly as long as the
component's main loop.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest

from harness.auth.user import NO_CHECK_TIME
from harness.machinery.delegatedauth import DelegatedAuth, Reviewer
from harness.util import certreload


def component_registry() -> CollectorRegistry:
    """A component's metrics registry, with the process and platform metrics every upstream component serves
    (process_cpu_seconds_total, process_resident_memory_bytes, ..., python_info)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


@dataclass(frozen=True)
class SecureServing:
    """A secure port as the scheduler's and controller-manager's: HTTPS with this certificate, callers authenticated
    (client certificates of `client_ca_file`, tokens through TokenReview, else anonymous) and authorized by the
    apiserver (SubjectAccessReview), except at the always-allowed paths (upstream's
    --authorization-always-allow-paths)."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""
    always_allow_paths: tuple[str, ...] = ("/healthz", "/readyz", "/livez")

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        certreload.follow(context, self.cert_file, self.key_file)
        if self.client_ca_file:
            context.load_verify_locations(cafile=self.client_ca_file)
            context.verify_mode = ssl.CERT_OPTIONAL
            context.verify_flags |= NO_CHECK_TIME  # dates checked by the authenticator: expired is 401
        return context

    def auth(self, reviewer: Reviewer) -> DelegatedAuth:
        return DelegatedAuth(reviewer, always_allow_paths=self.always_allow_paths, anonymous=True)


@asynccontextmanager
async def health_server(*, host: str, port: int, registry: CollectorRegistry,
                        ready: Callable[[], bool] = lambda: True, secure: SecureServing | None = None,
                        reviewer: Reviewer | None = None) -> AsyncIterator[web.AppRunner]:
    """Serve /healthz, /livez, /readyz and /metrics; with `secure`, over HTTPS and with the apiserver (through
    `reviewer`, the component's client) deciding who may see what."""
    tls = secure.context() if secure is not None else None
    auth = secure.auth(reviewer) if secure is not None and reviewer is not None else None
    async def ok(request: web.Request) -> web.Response:
        if request.path.startswith("/readyz") and not ready():
            return web.Response(status=503, text="not ready\n")
        return web.Response(text="ok")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application(middlewares=[auth.middleware()] if auth is not None else [])
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, ok)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    try:
        yield runner
    finally:
        await runner.cleanup()
