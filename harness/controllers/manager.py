"""The controller-manager: every controller in `CONTROLLERS`, in one process, one leader.

Controllers share informers (one watch per kind for the whole process) and an event
recorder; each has its own work queue and workers. The process runs them only while it
holds the `kube-controller-manager` Lease, like upstream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from harness.controllers.base import Context, Controller
from harness.controllers.certificates import CSRApprovingController, CSRCleanerController, CSRSigningController
from harness.controllers.clusterroleaggregation import ClusterRoleAggregationController
from harness.controllers.daemonset import DaemonSetController
from harness.controllers.deployment import DeploymentController
from harness.controllers.endpoints import EndpointsController
from harness.controllers.garbagecollector import GarbageCollector
from harness.controllers.namespace import NamespaceController
from harness.controllers.nodeipam import NodeIpamController
from harness.controllers.nodelifecycle import NodeLifecycleController
from harness.controllers.replicaset import ReplicaSetController, ReplicationControllerController
from harness.controllers.resourcequota import ResourceQuotaController
from harness.controllers.rootcacertpublisher import RootCACertPublisher
from harness.controllers.serviceaccount import ServiceAccountController
from harness.controllers.tokencleaner import TokenCleaner

log = logging.getLogger(__name__)

CONTROLLERS: dict[str, type[Controller]] = {
    "namespace": NamespaceController,
    "serviceaccount": ServiceAccountController,
    "nodeipam": NodeIpamController,
    "replicaset": ReplicaSetController,
    "replicationcontroller": ReplicationControllerController,
    "deployment": DeploymentController,
    "garbagecollector": GarbageCollector,
    "nodelifecycle": NodeLifecycleController,
    "endpoints": EndpointsController,
    "daemonset": DaemonSetController,
    "clusterrole-aggregation": ClusterRoleAggregationController,
    "root-ca-cert-publisher": RootCACertPublisher,
    "csrapproving": CSRApprovingController,
    "csrsigning": CSRSigningController,
    "csrcleaner": CSRCleanerController,
    "tokencleaner": TokenCleaner,
    "resourcequota": ResourceQuotaController,
}


#: The kube-system service account each controller acts as with --use-service-account-credentials: upstream's
#: names, which the bootstrap policy's system:controller:<account> roles are bound to.
SERVICE_ACCOUNTS: dict[str, str] = {
    "namespace": "namespace-controller",
    "serviceaccount": "service-account-controller",
    "nodeipam": "node-controller",
    "replicaset": "replicaset-controller",
    "replicationcontroller": "replication-controller",
    "deployment": "deployment-controller",
    "garbagecollector": "generic-garbage-collector",
    "nodelifecycle": "node-controller",
    "endpoints": "endpoint-controller",
    "daemonset": "daemon-set-controller",
    "clusterrole-aggregation": "clusterrole-aggregation-controller",
    "root-ca-cert-publisher": "root-ca-cert-publisher",
    "csrapproving": "certificate-controller",
    "csrsigning": "certificate-controller",
    "csrcleaner": "certificate-controller",
    "tokencleaner": "token-cleaner",
    "resourcequota": "resourcequota-controller",
}


#: Off unless named, as upstream's (kubeadm runs `--controllers=*,bootstrapsigner,tokencleaner`).
DISABLED_BY_DEFAULT = frozenset({"tokencleaner"})


def select(spec: str) -> list[str]:
    """`*` (all on by default), or a comma list where `-name` disables one: as upstream's --controllers."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    chosen: list[str] = []
    for n in names:
        if n == "*":
            chosen += [c for c in CONTROLLERS if c not in chosen and c not in DISABLED_BY_DEFAULT]
        elif n.startswith("-"):
            chosen = [c for c in chosen if c != n[1:]]
        elif n in CONTROLLERS:
            chosen.append(n)
        else:
            raise ValueError(f"unknown controller {n!r}; known: {', '.join(CONTROLLERS)}")
    return chosen


async def run_controllers(ctx: Context, names: list[str]) -> None:
    """Set up the named controllers, sync their informers, and run them until cancelled."""
    controllers = []
    for n in names:
        own = ctx
        if ctx.credentials is not None:
            own = dataclasses.replace(ctx, client=await ctx.credentials.client_for(SERVICE_ACCOUNTS[n]))
        controllers.append(CONTROLLERS[n](own))
    for c in controllers:
        c.setup()
    await ctx.informers.start()
    await ctx.informers.wait_synced()
    log.info("controllers running: %s", ", ".join(names))
    try:
        await asyncio.gather(*(c.run() for c in controllers))
    finally:
        for c in controllers:
            c.queue.shutdown()
        await ctx.informers.stop()
