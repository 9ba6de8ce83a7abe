"""The scheduler as a process: informers, cache, queue and loop, leader election, HTTP.

Informers, cache and queue run on every replica, so a standby is warm; only the leader
schedules (leader election on a Lease, kube-system/kube-scheduler by default). Losing the
lease ends `serve()` with exit code 1 — as upstream, the process exits and its supervisor
restarts it, rather than trusting a cache built while someone else was scheduling. The HTTP
side (/healthz, /livez, /readyz, /metrics) is the shared health server; stopping (SIGTERM)
cancels the scheduler: in-flight bindings finish, then the lease is released for a successor.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from dataclasses import dataclass

from harness.api import registry
from harness.client import rest
from harness.client.events import EventRecorder
from harness.client.rest import Client
from harness.machinery import informer
from harness.machinery.health import SecureServing, health_server
from harness.machinery.informer import Informer
from harness.machinery.leaderelection import LeaderElector
from harness.scheduler.cache import SchedulerCache
from harness.scheduler.eventhandlers import EventHandlers
from harness.scheduler.framework import Handle
from harness.scheduler.metrics import Metrics
from harness.scheduler.profile import DEFAULT_SCHEDULER_NAME, default_profile
from harness.scheduler.queue import SchedulingQueue
from harness.scheduler.runtime import Framework
from harness.scheduler.scheduler import Scheduler

log = logging.getLogger("harness.scheduler")

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")


@dataclass
class Config:
    kubeconfig: str
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    bind_address: str = "127.0.0.1"
    port: int = 10259
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    lease_name: str = "kube-scheduler"
    lease_namespace: str = "kube-system"
    identity: str = ""  # default: <hostname>_<uuid>, as upstream
    #: HTTPS with delegated authentication and authorization on the secure port; None: plain HTTP.
    secure: SecureServing | None = None
    percentage_of_nodes_to_score: int = 0  # 0: adaptive
    assume_ttl: float = 30.0
    initial_backoff: float = 1.0
    max_backoff: float = 10.0
    unschedulable_timeout: float = 60.0


class SchedulerServer:
    """Every piece of one scheduler, built from a Config; `run()` runs them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.identity = config.identity or f"{socket.gethostname()}_{uuid.uuid4()}"
        self.client = Client.from_kubeconfig(config.kubeconfig, user_agent="harness-scheduler")
        self.metrics = Metrics()
        self.cache = SchedulerCache(assume_ttl=config.assume_ttl)
        self.queue = SchedulingQueue(initial_backoff=config.initial_backoff, max_backoff=config.max_backoff,
                                     unschedulable_timeout=config.unschedulable_timeout)
        self.metrics.watch_queue(self.queue.pending)
        self.pod_informer = Informer(self.client, PODS)
        self.node_informer = Informer(self.client, NODES)
        handlers = EventHandlers(self.cache, self.queue, scheduler_name=config.scheduler_name)
        self.pod_informer.add_handlers(**handlers.pod_callbacks())
        self.node_informer.add_handlers(**handlers.node_callbacks())
        self.recorder = EventRecorder(self.client, component=config.scheduler_name, host=socket.gethostname(),
                                      reporting_instance=self.identity)
        profile = default_profile(scheduler_name=config.scheduler_name,
                                  percentage_of_nodes_to_score=config.percentage_of_nodes_to_score)
        self.scheduler = Scheduler(client=self.client, framework=Framework(profile, Handle(self.client)),
                                   cache=self.cache, queue=self.queue, pods=self.pod_informer.cache.get,
                                   recorder=self.recorder, metrics=self.metrics,
                                   percentage_of_nodes_to_score=profile.percentage_of_nodes_to_score)
        self.elector: LeaderElector | None = None
        if config.leader_elect:
            self.elector = LeaderElector(self.client, name=config.lease_name, namespace=config.lease_namespace,
                                         identity=self.identity, lease_duration=config.lease_duration,
                                         renew_deadline=config.renew_deadline, retry_period=config.retry_period)

    @property
    def ready(self) -> bool:
        return self.pod_informer.synced and self.node_informer.synced

    async def run(self) -> int:
        """Schedule (while leading) until cancelled; 1 if leadership was lost."""
        informers = (self.pod_informer, self.node_informer)
        cleanup = asyncio.create_task(self.scheduler.cleanup_assumed(), name="scheduler-assumed-cleanup")
        try:
            await rest.wait_until_ready(self.client)
            await informer.start_all(*informers)
            await informer.wait_all_synced(*informers)
            log.info("caches synced: %d nodes, %d pods pending", len(self.cache.node_list()), len(self.queue))
            self.recorder.start()
            if self.elector is None:
                await self.scheduler.run()
                return 0
            await self.elector.run(self.scheduler.run)
            if self.queue.closed:  # we stopped scheduling ourselves, and released the lease
                return 0
            log.error("leader election lost: stopping")
            return 1
        finally:
            cleanup.cancel()
            self.queue.close()
            await self.recorder.close()
            await informer.stop_all(*informers)
            await asyncio.gather(cleanup, return_exceptions=True)
            await self.client.close()


async def serve(config: Config, *, stop: asyncio.Event | None = None,
                server: SchedulerServer | None = None) -> int:
    """Serve until `stop` is set or the task is cancelled (0), or leadership is lost (1)."""
    server = server or SchedulerServer(config)
    stop = stop or asyncio.Event()
    async with health_server(host=config.bind_address, port=config.port, registry=server.metrics.registry,
                             ready=lambda: server.ready, secure=config.secure, reviewer=server.client):
        log.info("serving health and metrics on %s://%s:%d", "https" if config.secure else "http",
                 config.bind_address, config.port)
        running = asyncio.create_task(server.run(), name="scheduler")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if running.done() and not running.cancelled():
                if running.exception() is not None:
                    log.error("scheduler failed", exc_info=running.exception())
                    return 1
                return running.result()
            return 0
        finally:
            for task in (running, stopped):
                task.cancel()
            await asyncio.gather(running, stopped, return_exceptions=True)
