"""What every controller shares: the context it runs in, and the reconcile-loop plumbing.

A controller names the informers it needs (shared by kind across controllers, so the
process holds one watch per kind), registers handlers that turn object changes into queue
keys, and implements `reconcile(key)`. Objects from the caches are read-only: copy before
changing, write through the client.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry

from harness.api import meta, registry
from harness.api.registry import Kind
from harness.machinery.informer import (
    Informer,
    index_by_namespace,
    index_by_node,
    index_by_owner,
)
from harness.machinery.workqueue import WorkQueue, run_workers

log = logging.getLogger(__name__)

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
NAMESPACES = registry.by_path("", "v1", "namespaces")
SERVICE_ACCOUNTS = registry.by_path("", "v1", "serviceaccounts")
REPLICASETS = registry.by_path("apps", "v1", "replicasets")
REPLICATION_CONTROLLERS = registry.by_path("", "v1", "replicationcontrollers")
DEPLOYMENTS = registry.by_path("apps", "v1", "deployments")

#: Indexes every shared informer keeps.
INDEXERS = {"namespace": index_by_namespace, "node": index_by_node, "owner": index_by_owner}


class Recorder(Protocol):
    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


@runtime_checkable
class ComponentRecorders(Protocol):
    """A recorder that can attribute events to a controller (EventRecorder.for_component)."""

    def for_component(self, component: str) -> Recorder: ...


class ApiClient(Protocol):
    """The part of harness.client.rest.Client controllers use (a test fake implements it too)."""

    async def get(self, kind: Kind, name: str, namespace: str = "", *, subresource: str = "") -> dict[str, Any]: ...
    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str = "", *,
                     dry_run: bool = False) -> dict[str, Any]: ...
    async def update(self, kind: Kind, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]: ...
    async def update_status(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]: ...
    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str = "", *, patch_type: str = "merge",
                    subresource: str = "") -> dict[str, Any]: ...
    async def delete(self, kind: Kind, name: str, namespace: str = "", *, grace_period: int | None = None,
                     propagation_policy: str = "", preconditions: dict[str, str] | None = None) -> dict[str, Any]: ...
    async def list(self, kind: Kind, namespace: str = "", *, label_selector: str = "", field_selector: str = "",
                   limit: int = 0, continue_token: str = "", resource_version: str = "") -> dict[str, Any]: ...


class Informers:
    """Shared informers, one per kind, created on first use."""

    def __init__(self, client: Any, *, resync_period: float = 0.0) -> None:
        self.client = client
        self.resync_period = resync_period
        self._by_kind: dict[Kind, Informer] = {}

    def __call__(self, kind: Kind) -> Informer:
        informer = self._by_kind.get(kind)
        if informer is None:
            informer = Informer(self.client, kind, resync_period=self.resync_period, indexers=dict(INDEXERS))
            self._by_kind[kind] = informer
        return informer

    async def start(self) -> None:
        for informer in self._by_kind.values():
            await informer.start()

    async def wait_synced(self) -> None:
        for informer in self._by_kind.values():
            await informer.wait_synced()

    async def stop(self) -> None:
        for informer in self._by_kind.values():
            await informer.stop()


@dataclass
class Options:
    """Tunables of the controller-manager; tests shorten the periods."""

    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_mask_size: int = 24
    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 50.0
    #: How long a new node may take to post its first status before it is marked Unknown.
    node_startup_grace_period: float = 60.0
    pod_eviction_timeout: float = 300.0
    #: The cluster CA that root-ca-cert-publisher puts into every namespace (--root-ca-file).
    root_ca_file: str = ""
    #: Seconds between full recalculations of every ResourceQuota (upstream's --resource-quota-sync-period, 5m).
    resource_quota_sync_period: float = 300.0
    #: The CA csrsigning issues certificates with (--cluster-signing-cert-file, --cluster-signing-key-file), and
    #: for how long at most (--cluster-signing-duration, upstream's 8760h).
    cluster_signing_cert_file: str = ""
    cluster_signing_key_file: str = ""
    cluster_signing_duration: float = 8760 * 3600.0
    extra: dict[str, Any] = field(default_factory=dict)


class Credentials(Protocol):
    """Gives each controller a client of its own identity (`--use-service-account-credentials`)."""

    async def client_for(self, service_account: str) -> Any: ...


@dataclass
class Context:
    client: ApiClient
    informers: Informers
    recorder: Recorder
    registry: CollectorRegistry
    options: Options = field(default_factory=Options)
    #: When set, each controller writes as its own service account; `client` then only reads and elects.
    credentials: Credentials | None = None


class Controller:
    """Base of every controller: a queue of keys, workers, and `reconcile`."""

    name: ClassVar[str] = ""
    workers: ClassVar[int] = 1
    #: The source.component of this controller's Events (upstream's names; default `<name>-controller`).
    event_source: ClassVar[str] = ""

    def __init__(self, ctx: Context) -> None:
        if isinstance(ctx.recorder, ComponentRecorders):
            ctx = dataclasses.replace(ctx, recorder=ctx.recorder.for_component(self.event_source
                                                                               or f"{self.name}-controller"))
        self.ctx = ctx
        self.queue = WorkQueue(self.name, registry=ctx.registry)

    def setup(self) -> None:
        """Register informer handlers that enqueue keys."""

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, self.workers)

    def enqueue(self, obj: dict[str, Any]) -> None:
        self.queue.add(meta.key_of(obj))

    def enqueue_handlers(self) -> dict[str, Callable[..., None]]:
        """Handlers that enqueue the changed object itself."""
        return {"on_add": self.enqueue, "on_update": lambda old, new: self.enqueue(new),
                "on_delete": self.enqueue}


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with controller: true, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: dict[str, Any], kind: Kind) -> dict[str, Any]:
    md = owner["metadata"]
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": md["name"], "uid": md["uid"],
            "controller": True, "blockOwnerDeletion": True}
