"""`HollowCluster`: N simulated nodes in one process, for tests, benchmarks and `harness hollow-nodes`.

Two watches (Nodes labelled hollow, and every bound Pod), one timetable of heartbeats and
one pool of pod workers serve all N nodes, sharing one client connection pool and one
semaphore that bounds concurrent API calls — so a thousand nodes cost a thousand entries
in a heap and a dict, not a thousand sleeping loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from harness.api import errors, registry
from harness.api import nodes as objects
from harness.client.rest import Client
from harness.hollow.addresses import node_ip
from harness.hollow.nodes import NODES, HollowNode, NodeAgent
from harness.hollow.pods import BOUND, PODS, PodAgent
from harness.hollow.watching import list_watch

log = logging.getLogger(__name__)

NAMESPACES = registry.by_path("", "v1", "namespaces")
#: Concurrent API calls at most (watches aside), across every node of the cluster.
CONCURRENCY = 32
#: Marks the Nodes a hollow cluster runs, so it only watches its own.
HOLLOW_LABEL = "node.harness.dev/hollow"


class HollowCluster:
    """Nodes that register, heartbeat and run pods (on paper) without running anything."""

    def __init__(self, client: Client, *, count: int, prefix: str = "hollow", cpu: str = "4", memory: str = "16Gi",
                 pods: int = 110, labels: dict[str, str] | None = None, heartbeat: float = 10.0,
                 status_interval: float = 60.0, taints: list[dict[str, Any]] | None = None) -> None:
        if count < 0:
            raise ValueError(f"count must not be negative, not {count}")
        if heartbeat <= 0 or status_interval <= 0:
            raise ValueError("heartbeat and status_interval must be positive")
        self.client = client
        self.shape = objects.NodeShape(cpu=cpu, memory=memory, pods=pods,
                                       labels={HOLLOW_LABEL: "true", **(labels or {})}, taints=list(taints or []))
        self.node_names: list[str] = [f"{prefix}-{i}" for i in range(count)]
        self.nodes: dict[str, HollowNode] = {name: HollowNode(name, i, node_ip(i))
                                             for i, name in enumerate(self.node_names)}
        limit = asyncio.Semaphore(CONCURRENCY)
        self._node_agent = NodeAgent(client, self.nodes, self.shape, limit=limit, heartbeat=heartbeat,
                                     status_interval=status_interval)
        self._pod_agent = PodAgent(client, self.nodes, limit=limit)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Register every node (returning once all are), then start heartbeats and the pod watch."""
        if self._tasks:
            raise RuntimeError("this HollowCluster is already started")
        await self._ensure_lease_namespace()
        await self._node_agent.register_all()
        self._node_agent.plan()
        nodes_synced, pods_synced = asyncio.Event(), asyncio.Event()
        agent, pods = self._node_agent, self._pod_agent
        self._tasks = [
            asyncio.create_task(agent.run(), name="hollow heartbeats"),
            asyncio.create_task(list_watch(self.client, NODES, on_list=agent.on_list, on_event=agent.on_event,
                                           label_selector=f"{HOLLOW_LABEL}=true", synced=nodes_synced),
                                name="hollow node watch"),
            asyncio.create_task(list_watch(self.client, PODS, on_list=pods.on_list, on_event=pods.on_event,
                                           field_selector=BOUND, synced=pods_synced),
                                name="hollow pod watch"),
            asyncio.create_task(pods.run(), name="hollow pod workers"),
        ]
        synced: asyncio.Future[Any] = asyncio.gather(nodes_synced.wait(), pods_synced.wait())
        done, _ = await asyncio.wait([synced, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        if synced not in done:
            synced.cancel()
            await self.stop()
            raise RuntimeError("a hollow node loop ended before the watches were established")
        if self.node_names:
            log.info("%d hollow nodes registered (%s..%s)", len(self.nodes), self.node_names[0], self.node_names[-1])

    async def stop(self) -> None:
        """Stop every loop. The Nodes, Leases and pods stay as they are, as after a kubelet died."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def pause_heartbeats(self, node: str) -> None:
        """Make a node play dead: no lease renewals, no status posts, its pods left alone."""
        self._node_agent.pause(self._known(node))

    def resume_heartbeats(self, node: str) -> None:
        self._node_agent.resume(self._known(node))
        self._pod_agent.resync_node(node)

    def node(self, name: str) -> HollowNode:
        """What the simulated kubelet of `name` knows (its IP, uid, podCIDR, whether it is paused)."""
        return self.nodes[self._known(name)]

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        """The pods bound to `node`, as last seen by the pod watch."""
        return self._pod_agent.pods_on(self._known(node))

    def _known(self, node: str) -> str:
        if node not in self.nodes:
            raise KeyError(f"{node!r} is not a node of this hollow cluster")
        return node

    async def _ensure_lease_namespace(self) -> None:
        # The apiserver makes kube-node-lease at start; an older or foreign one may not have.
        with contextlib.suppress(errors.AlreadyExists):
            await self.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": objects.LEASE_NAMESPACE}})
