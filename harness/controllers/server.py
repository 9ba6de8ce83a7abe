"""The controller-manager as a process: shared informers, the controllers, leader election, HTTP.

Only the leader (Lease kube-system/kube-controller-manager) runs controllers; losing the
lease ends the process with exit code 1 so its supervisor restarts it with fresh caches,
as upstream does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from dataclasses import dataclass, field

from harness.client import rest
from harness.client.events import EventRecorder
from harness.client.rest import Client
from harness.controllers.base import Context, Informers, Options
from harness.controllers.credentials import ControllerCredentials
from harness.controllers.manager import run_controllers
from harness.machinery.health import SecureServing, component_registry, health_server
from harness.machinery.leaderelection import LeaderElector

log = logging.getLogger("harness.controller-manager")


@dataclass
class Config:
    kubeconfig: str
    controllers: list[str]
    bind_address: str = "127.0.0.1"
    port: int = 10257
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    lease_name: str = "kube-controller-manager"
    lease_namespace: str = "kube-system"
    identity: str = ""
    options: Options = field(default_factory=Options)
    #: Each controller writes as its own kube-system service account (upstream's flag of the same name).
    use_service_account_credentials: bool = False
    #: HTTPS with delegated authentication and authorization on the secure port; None: plain HTTP.
    secure: SecureServing | None = None


async def serve(config: Config, *, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set (0) or leadership is lost (1)."""
    identity = config.identity or f"{socket.gethostname()}_{uuid.uuid4()}"
    registry = component_registry()
    client = Client.from_kubeconfig(config.kubeconfig, user_agent="harness-controller-manager")
    recorder = EventRecorder(client, component="controller-manager", host=socket.gethostname(),
                             reporting_instance=identity)
    credentials = ControllerCredentials(client) if config.use_service_account_credentials else None
    ctx = Context(client=client, informers=Informers(client), recorder=recorder, registry=registry,
                  options=config.options, credentials=credentials)
    stop = stop or asyncio.Event()
    leading = asyncio.Event()

    async def lead() -> None:
        leading.set()
        await run_controllers(ctx, config.controllers)

    async def work() -> int:
        await rest.wait_until_ready(client)
        recorder.start()
        if not config.leader_elect:
            await lead()
            return 0
        elector = LeaderElector(client, name=config.lease_name, namespace=config.lease_namespace,
                                identity=identity, lease_duration=config.lease_duration,
                                renew_deadline=config.renew_deadline, retry_period=config.retry_period)
        await elector.run(lead)
        log.error("leader election lost: stopping")
        return 1

    async with health_server(host=config.bind_address, port=config.port, registry=registry,
                             ready=leading.is_set, secure=config.secure, reviewer=client):
        log.info("serving health and metrics on %s://%s:%d", "https" if config.secure else "http",
                 config.bind_address, config.port)
        running = asyncio.create_task(work(), name="controller-manager")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                return running.result()
            return 0
        finally:
            for t in (running, stopped):
                t.cancel()
            await asyncio.gather(running, stopped, return_exceptions=True)
            await recorder.close()
            if credentials is not None:
                await credentials.close()
            await client.close()
