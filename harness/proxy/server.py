"""kube-proxy as a process: informers on Services and Endpoints, the proxy loop, /healthz and /metrics.

As upstream: /healthz on 0.0.0.0:10256 (for load balancers' node health checks) and /metrics
on 127.0.0.1:10249. `cleanup()` is `--cleanup`: remove every chain and jump, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from harness.api import registry
from harness.client import rest
from harness.client.rest import Client
from harness.machinery import informer
from harness.machinery.health import health_server
from harness.machinery.informer import Informer
from harness.proxy import iptables
from harness.proxy.proxier import IptablesProxier, Metrics, Proxier, ProxyError, ProxyLoop, Runner
from harness.proxy.userspace import DEFAULT_UDP_TIMEOUT, UserspaceProxier

log = logging.getLogger("harness.proxy")

SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
MODES = ("iptables", "userspace")


@dataclass
class Config:
    kubeconfig: str = ""
    mode: str = "iptables"
    cluster_cidr: str = iptables.DEFAULT_CLUSTER_CIDR
    hostname: str = ""
    min_sync_period: float = 1.0
    sync_period: float = 30.0
    healthz_host: str = "0.0.0.0"
    healthz_port: int = 10256  # 0: no healthz server
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 10249  # 0: no metrics server
    runner_prefix: tuple[str, ...] = ()  # run iptables under this prefix (e.g. nsenter), for tests
    proc_sys: Path | None = Path("/proc/sys")
    udp_timeout: float = DEFAULT_UDP_TIMEOUT  # userspace mode: idle UDP sessions are closed after this


def split_address(value: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `host` or `:port` (IPv4 or a name) as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    try:
        return host or "0.0.0.0", int(port)
    except ValueError:
        raise ProxyError(f"invalid address {value!r}: want HOST:PORT") from None


def make_proxier(config: Config, metrics: Metrics) -> Proxier:
    if config.mode == "userspace":
        return UserspaceProxier(metrics=metrics, udp_timeout=config.udp_timeout)
    if config.mode != "iptables":
        raise ProxyError(f"unknown proxy mode {config.mode!r}; supported: {', '.join(MODES)}")
    return IptablesProxier(cluster_cidr=config.cluster_cidr, runner=Runner(config.runner_prefix), metrics=metrics,
                           proc_sys=config.proc_sys)


class ProxyServer:
    """Every piece of one kube-proxy, built from a Config; `run()` runs them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.proxier = make_proxier(config, self.metrics)
        self.client = Client.from_kubeconfig(config.kubeconfig, user_agent="harness-proxy")
        self.service_informer = Informer(self.client, SERVICES)
        self.endpoints_informer = Informer(self.client, ENDPOINTS)
        self.loop = ProxyLoop(self.proxier, services=self.service_informer.cache.list,
                              endpoints=self.endpoints_informer.cache.get, metrics=self.metrics,
                              min_sync_period=config.min_sync_period, sync_period=config.sync_period)
        self.service_informer.add_handlers(**self.loop.service_handlers())
        self.endpoints_informer.add_handlers(**self.loop.endpoints_handlers())

    @property
    def ready(self) -> bool:
        return self.loop.synced.is_set()

    async def run(self) -> None:
        """Proxy until cancelled."""
        informers = (self.service_informer, self.endpoints_informer)
        await self.proxier.setup()
        async with contextlib.AsyncExitStack() as stack:
            if self.config.healthz_port:
                await stack.enter_async_context(health_server(host=self.config.healthz_host,
                                                              port=self.config.healthz_port,
                                                              registry=self.metrics.registry, ready=lambda: self.ready))
            if self.config.metrics_port:
                await stack.enter_async_context(health_server(host=self.config.metrics_host,
                                                              port=self.config.metrics_port,
                                                              registry=self.metrics.registry, ready=lambda: self.ready))
            try:
                await rest.wait_until_ready(self.client)
                await informer.start_all(*informers)
                await informer.wait_all_synced(*informers)
                log.info("caches synced: %d services, %d endpoints", len(self.service_informer.cache),
                         len(self.endpoints_informer.cache))
                await self.loop.run()
            finally:
                await informer.stop_all(*informers)
                await self.client.close()


async def serve(config: Config, stop: asyncio.Event) -> int:
    server = ProxyServer(config)
    task = asyncio.create_task(server.run(), name="proxy")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return 0
    except ProxyError as exc:
        log.error("%s", exc)
        return 1
    return 0


async def cleanup(config: Config) -> int:
    """Remove every chain and jump the proxier makes; 0 on success."""
    proxier = make_proxier(config, Metrics())
    try:
        await proxier.cleanup()
    except ProxyError as exc:
        log.error("cleanup failed: %s", exc)
        return 1
    return 0
