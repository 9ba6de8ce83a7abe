"""The `default/kubernetes` Service and its Endpoints: the live apiservers (upstream's controlplane controllers).

Each apiserver makes sure the Service exists (cluster IP = the first address of the service
range, port `https` 443 -> the apiserver's port, no selector) and keeps a coordination.k8s.io
Lease `kube-system/apiserver-<id>` labelled `apiserver.kubernetes.io/identity=kube-apiserver`
renewed, with the address and port it serves on in annotations. Every tick it rewrites the
`default/kubernetes` Endpoints from the unexpired leases and deletes expired ones, so apiservers
sharing etcd all appear, and one that stops disappears (at once when it shuts down cleanly,
after its lease duration when it dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime
from typing import Any

from harness.api import errors, identity, meta, registry
from harness.apiserver.genericregistry import DeleteOptions
from harness.apiserver.state import ApiServer
from harness.apiserver.watchcache import decode
from harness.auth.user import UserInfo
from harness.storage.backend import StorageError

log = logging.getLogger(__name__)

SERVICE_NAME = "kubernetes"
SERVICE_NAMESPACE = "default"
LEASE_NAMESPACE = identity.LEASE_NAMESPACE
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
IDENTITY_VALUE = "kube-apiserver"
IDENTITY = (IDENTITY_LABEL, IDENTITY_VALUE)
ADDRESS_ANNOTATION = identity.ADDRESS_ANNOTATION
PORT_ANNOTATION = identity.PORT_ANNOTATION
SERVICE_LABELS = {"component": "apiserver", "provider": "kubernetes"}
SYSTEM_USER = UserInfo("system:apiserver", ("system:masters",))

SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")


def lease_name(address: str, port: int) -> str:
    return identity.lease_name("apiserver", address, port)


def kubernetes_service(cluster_ip: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": dict(SERVICE_LABELS)},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}


def ports_match(service: dict[str, Any]) -> bool:
    """Whether the Service still serves `https` 443/TCP (the target port may differ per apiserver)."""
    ports = (service.get("spec") or {}).get("ports") or []
    return len(ports) == 1 and all(ports[0].get(k) == v for k, v in (("name", "https"), ("port", 443),
                                                                      ("protocol", "TCP")))


def live_endpoints(leases: list[dict[str, Any]], now: datetime) -> list[tuple[str, int]]:
    return identity.live_endpoints(leases, now, IDENTITY)


def endpoint_subsets(endpoints: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return identity.endpoint_subsets(endpoints, [("https", "TCP")])


class ApiServerEndpoints:
    """This apiserver's part in keeping `default/kubernetes` and its Endpoints right."""

    def __init__(self, server: ApiServer, cluster_ip: str) -> None:
        config = server.config
        self.server = server
        self.cluster_ip = cluster_ip
        self.port = config.advertised_port
        self.address = identity.advertised_address(config.advertise_address, config.bind_address)
        self.lease_name = lease_name(self.address, self.port)
        self.holder = f"kube-apiserver-{uuid.uuid4()}"
        self.duration = max(1, int(config.identity_lease_duration_seconds))
        self.interval = config.identity_lease_renew_interval

    # -- the Service -----------------------------------------------------------------------------

    async def ensure_service(self) -> None:
        store = self.server.stores[SERVICES]
        try:
            current = await store.get(SERVICE_NAMESPACE, SERVICE_NAME)
        except errors.NotFound:
            try:
                await store.create(SERVICE_NAMESPACE, kubernetes_service(self.cluster_ip, self.port),
                                   user=SYSTEM_USER)
                log.info("created service default/kubernetes (%s)", self.cluster_ip)
            except errors.AlreadyExists:
                pass  # another apiserver was first
            return
        if not ports_match(current):
            def fix(obj: dict[str, Any]) -> dict[str, Any]:
                obj["spec"]["ports"] = kubernetes_service(self.cluster_ip, self.port)["spec"]["ports"]
                return obj
            await store.guaranteed_update(SERVICE_NAMESPACE, SERVICE_NAME, fix, user=SYSTEM_USER)

    # -- the lease -------------------------------------------------------------------------------

    async def renew_lease(self) -> None:
        store = self.server.stores[LEASES]
        wanted = identity.identity_lease(self.lease_name, IDENTITY, self.address, self.port, self.holder,
                                         self.duration, meta.now())
        try:
            await store.guaranteed_update(LEASE_NAMESPACE, self.lease_name, lambda obj: identity.renewed(obj, wanted),
                                          user=SYSTEM_USER)
        except errors.NotFound:
            with contextlib.suppress(errors.AlreadyExists):
                await store.create(LEASE_NAMESPACE, wanted, user=SYSTEM_USER)

    # -- the Endpoints ---------------------------------------------------------------------------

    async def _leases(self) -> list[dict[str, Any]]:
        # Read from etcd, not the watch cache: a lease renewed a moment ago must count.
        page = await self.server.backend.list(LEASES.key_prefix(LEASE_NAMESPACE))
        return [decode(rec.value, rec.revision) for rec in page.records]

    async def reconcile_endpoints(self, *, without_self: bool = False) -> None:
        now = meta.now()
        leases = await self._leases()
        live = [e for e in live_endpoints(leases, now) if not (without_self and e == (self.address, self.port))]
        for lease in leases:
            if identity.lease_expired(lease, now) and identity.carries(lease, IDENTITY):
                await self._delete_lease(lease)
        subsets = endpoint_subsets(live)
        store = self.server.stores[ENDPOINTS]
        try:
            current = await store.get(SERVICE_NAMESPACE, SERVICE_NAME)
        except errors.NotFound:
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE,
                                 "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                    "subsets": subsets}
            with contextlib.suppress(errors.AlreadyExists):
                await store.create(SERVICE_NAMESPACE, body, user=SYSTEM_USER)
            return
        if (current.get("subsets") or []) == subsets:
            return

        def rewrite(obj: dict[str, Any]) -> dict[str, Any]:
            obj["subsets"] = subsets
            return obj
        await store.guaranteed_update(SERVICE_NAMESPACE, SERVICE_NAME, rewrite, user=SYSTEM_USER)

    async def _delete_lease(self, lease: dict[str, Any]) -> None:
        md = lease["metadata"]
        opts = DeleteOptions(preconditions={"uid": md.get("uid"), "resourceVersion": md.get("resourceVersion")})
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.server.stores[LEASES].delete(LEASE_NAMESPACE, md["name"], opts, user=SYSTEM_USER)

    # -- running ---------------------------------------------------------------------------------

    async def tick(self) -> None:
        await self.ensure_service()
        await self.renew_lease()
        await self.reconcile_endpoints()

    async def run(self) -> None:
        """Tick every renew interval until cancelled; errors are logged and retried on the next tick."""
        while True:
            try:
                await self.tick()
            except (errors.ApiError, StorageError) as exc:
                log.warning("kubernetes service/endpoints reconcile failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """On shutdown: drop this apiserver's lease and its address from the Endpoints."""
        try:
            lease = await self.server.stores[LEASES].get(LEASE_NAMESPACE, self.lease_name)
            if (lease.get("spec") or {}).get("holderIdentity") == self.holder:
                await self._delete_lease(lease)
            await self.reconcile_endpoints(without_self=True)
        except (errors.ApiError, StorageError) as exc:
            log.warning("removing this apiserver from default/kubernetes failed: %s", exc)


__all__ = ["ApiServerEndpoints", "endpoint_subsets", "kubernetes_service", "lease_name", "live_endpoints"]
