"""The small HTTP server every component runs beside its work: /healthz, /livez, /readyz, /metrics.

Started and stopped as an async context manager, so it lives exactly as long as the
component's main loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest


def component_registry() -> CollectorRegistry:
    """A component's metrics registry, with the process and platform metrics every upstream component serves
    (process_cpu_seconds_total, process_resident_memory_bytes, ..., python_info)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


@asynccontextmanager
async def health_server(*, host: str, port: int, registry: CollectorRegistry,
                        ready: Callable[[], bool] = lambda: True) -> AsyncIterator[web.AppRunner]:
    async def ok(request: web.Request) -> web.Response:
        if request.path.startswith("/readyz") and not ready():
            return web.Response(status=503, text="not ready\n")
        return web.Response(text="ok")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, ok)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield runner
    finally:
        await runner.cleanup()
