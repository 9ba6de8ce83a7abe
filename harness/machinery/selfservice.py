"""A process that keeps the Service pointing at itself: `kube-system/kube-dns` for the DNS servers.

Each instance ensures the Service exists, renews its own identity Lease and rewrites the
Endpoints from the unexpired leases (see `harness.api.identity`), so a cluster with one DNS
server per master has every live one behind 10.96.0.10, and a dead one drops out when its
lease runs out. It talks through the REST client, as any other component.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from harness.api import errors, identity, meta, registry
from harness.client.rest import Client

log = logging.getLogger(__name__)

SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")


class ServiceRegistrar:
    def __init__(self, client: Client, service: dict[str, Any], *, label: tuple[str, str], lease_prefix: str,
                 address: str, port: int, ports: list[identity.PortSpec], duration: int = 15,
                 interval: float = 5.0) -> None:
        self.client = client
        self.service = service
        self.label = label
        self.address = address
        self.port = port
        self.ports = ports
        self.duration = duration
        self.interval = interval
        self.namespace = service["metadata"]["namespace"]
        self.name = service["metadata"]["name"]
        self.lease_name = identity.lease_name(lease_prefix, address, port)
        self.holder = f"{lease_prefix}-{uuid.uuid4()}"

    async def ensure_service(self) -> None:
        try:
            await self.client.get(SERVICES, self.name, self.namespace)
        except errors.NotFound:
            with contextlib.suppress(errors.AlreadyExists):
                await self.client.create(SERVICES, self.service, self.namespace)

    async def renew_lease(self) -> None:
        wanted = identity.identity_lease(self.lease_name, self.label, self.address, self.port, self.holder,
                                         self.duration, meta.now())
        try:
            current = await self.client.get(LEASES, self.lease_name, identity.LEASE_NAMESPACE)
        except errors.NotFound:
            with contextlib.suppress(errors.AlreadyExists):
                await self.client.create(LEASES, wanted, identity.LEASE_NAMESPACE)
            return
        await self.client.update(LEASES, identity.renewed(current, wanted))

    async def reconcile_endpoints(self, *, without_self: bool = False) -> None:
        now = meta.now()
        leases = (await self.client.list(LEASES, identity.LEASE_NAMESPACE))["items"]
        live = [e for e in identity.live_endpoints(leases, now, self.label)
                if not (without_self and e == (self.address, self.port))]
        subsets = identity.endpoint_subsets(live, self.ports)
        try:
            current = await self.client.get(ENDPOINTS, self.name, self.namespace)
        except errors.NotFound:
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "subsets": subsets}
            with contextlib.suppress(errors.AlreadyExists):
                await self.client.create(ENDPOINTS, body, self.namespace)
            return
        if (current.get("subsets") or []) != subsets:
            current["subsets"] = subsets
            await self.client.update(ENDPOINTS, current)

    async def tick(self) -> None:
        await self.ensure_service()
        await self.renew_lease()
        await self.reconcile_endpoints()

    async def run(self) -> None:
        """Tick every interval until cancelled; failures are logged and retried on the next tick."""
        while True:
            try:
                await self.tick()
            except (errors.ApiError, OSError) as exc:
                log.warning("%s/%s: registering this server failed: %s", self.namespace, self.name, exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Leave: drop this server's lease and its address from the Endpoints."""
        try:
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                await self.client.delete(LEASES, self.lease_name, identity.LEASE_NAMESPACE)
            await self.reconcile_endpoints(without_self=True)
        except (errors.ApiError, OSError) as exc:
            log.warning("%s/%s: deregistering this server failed: %s", self.namespace, self.name, exc)
