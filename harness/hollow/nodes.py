"""The node side of many hollow kubelets: registration, lease heartbeats and status posts.

Every node's next lease renewal and status post sit in one `Timetable`; one loop fires what
is due (each firing bounded by the shared API semaphore) and plans the next. First due times
are spread at random over an interval, and each next one adds a little jitter, so a thousand
nodes renew evenly rather than in lockstep. The Node watch (fed to `on_list`/`on_event`)
is how a node learns that it was deleted (it registers again) or that someone else changed
its status, e.g. the node-lifecycle controller marking it Unknown (it posts again at once).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from harness.api import errors, meta, registry
from harness.api import nodes as objects
from harness.client.rest import Client
from harness.hollow.addresses import PodIPs, fake_pod_cidr
from harness.hollow.timetable import Key, Timetable
from harness.machinery import nodelease

log = logging.getLogger(__name__)

NODES = registry.by_path("", "v1", "nodes")

REGISTER, LEASE, STATUS = "register", "lease", "status"
#: Upstream's lease controller jitters each renewal period by up to 4%.
JITTER = 0.04
#: Least time between two status posts of one node, so a status fight cannot become a busy loop.
MIN_STATUS_GAP = 1.0
#: Errors that retrying cannot fix.
FATAL = (errors.Invalid, errors.BadRequest, errors.Forbidden, errors.Unauthorized)


@dataclass
class HollowNode:
    """What one hollow kubelet knows about itself."""

    name: str
    index: int
    ip: str
    uid: str = ""  # empty: not registered (or deleted since)
    pod_cidr: str = ""
    paused: bool = False
    lease: dict[str, Any] | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)  # as the apiserver last showed them
    last_status: float = float("-inf")
    pools: dict[str, PodIPs] = field(default_factory=dict)

    def _pool_for(self, cidr: str) -> PodIPs:
        if cidr not in self.pools:
            self.pools[cidr] = PodIPs(cidr)
        return self.pools[cidr]

    def pool(self) -> PodIPs:
        """Where new pods get IPs: the node's podCIDR, or its fake range while it has none."""
        return self._pool_for(self.pod_cidr or fake_pod_cidr(self.index))

    def claim(self, owner: str, ip: str) -> None:
        cidrs = [c for c in (self.pod_cidr, fake_pod_cidr(self.index)) if c]
        for cidr in cidrs:
            if self._pool_for(cidr).claim(owner, ip):
                return

    def release(self, owner: str) -> None:
        for pool in self.pools.values():
            pool.release(owner)

    def observe(self, node: dict[str, Any]) -> None:
        self.uid = node["metadata"].get("uid", "")
        self.pod_cidr = (node.get("spec") or {}).get("podCIDR") or ""
        self.conditions = (node.get("status") or {}).get("conditions") or []


def _jittered(interval: float) -> float:
    return interval * (1 + JITTER * random.random())


class NodeAgent:
    """Registers, heartbeats and reports the status of every hollow node, from one timetable."""

    def __init__(self, client: Client, nodes: dict[str, HollowNode], shape: objects.NodeShape, *,
                 limit: asyncio.Semaphore, heartbeat: float, status_interval: float) -> None:
        self.client = client
        self.nodes = nodes
        self.shape = shape
        self.limit = limit
        self.heartbeat = heartbeat
        self.status_interval = status_interval
        self.table = Timetable()
        self._inflight: set[Key] = set()
        self._again: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the loop ------------------------------------------------------------------------

    def plan(self) -> None:
        """First renewals and posts, spread at random over their intervals."""
        now = self.table.now()
        for name in self.nodes:
            self.table.at((name, LEASE), now + random.random() * self.heartbeat)
            self.table.at((name, STATUS), now + random.random() * self.status_interval)

    async def run(self) -> None:
        try:
            while True:
                for key in await self.table.wait_due():
                    if key in self._inflight:
                        self._again.add(key)
                        continue
                    self._inflight.add(key)
                    task = asyncio.create_task(self._fire(key), name=f"hollow {key[1]} {key[0]}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fire(self, key: Key) -> None:
        name, action = key
        node = self.nodes[name]
        delay: float | None = None
        try:
            if not node.paused:
                async with self.limit:
                    delay = await self._act(node, action)
        except errors.ApiError as exc:
            log.warning("hollow node %s: %s failed: %s", name, action, exc)
            delay = min(self.heartbeat, 2.0)
        except Exception:
            log.exception("hollow node %s: %s failed", name, action)
            delay = min(self.heartbeat, 2.0)
        finally:
            self._inflight.discard(key)
        if node.paused:
            return
        if key in self._again:
            self._again.discard(key)
            self.table.after(key, 0)
        elif delay is not None and not self.table.scheduled(key):
            self.table.after(key, delay)

    async def _act(self, node: HollowNode, action: str) -> float | None:
        if action == REGISTER:
            await self.register(node)
            return None
        if action == LEASE:
            await self.renew_lease(node)
            return _jittered(self.heartbeat)
        await self.post_status(node)
        return _jittered(self.status_interval)

    # -- pause / resume ------------------------------------------------------------------

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        node.paused = True
        for action in (REGISTER, LEASE, STATUS):
            self.table.cancel((name, action))

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        node.paused = False
        if not node.uid:
            self.table.after((name, REGISTER), 0)
        self.table.after((name, LEASE), 0)
        self.table.after((name, STATUS), 0)

    # -- registration --------------------------------------------------------------------

    async def register_all(self, *, attempts: int = 5) -> None:
        """Register every node (create or adopt, then its lease), retrying what may pass later."""

        async def one(node: HollowNode) -> None:
            for attempt in range(attempts):
                try:
                    async with self.limit:
                        await self.register(node)
                    return
                except FATAL:
                    raise
                except errors.ApiError as exc:
                    if attempt == attempts - 1:
                        raise
                    log.info("hollow node %s: registration failed (%s); retrying", node.name, exc)
                    await asyncio.sleep(0.2 * 2 ** attempt)

        await asyncio.gather(*(one(n) for n in self.nodes.values()))

    async def register(self, node: HollowNode) -> None:
        """Create the Node, or adopt the one of that name; then make sure its lease exists."""
        now = meta.now_rfc3339()
        try:
            created = await self.client.create(NODES, objects.node_object(node.name, node.ip, self.shape, now=now))
            log.debug("hollow node %s registered", node.name)
        except errors.AlreadyExists:
            created = await self._adopt(node)
            log.debug("hollow node %s adopted an existing Node", node.name)
        node.observe(created)
        node.last_status = self.table.now()
        await self.renew_lease(node)

    async def _adopt(self, node: HollowNode) -> dict[str, Any]:
        for _ in range(5):
            existing = await self.client.get(NODES, node.name)
            relabelled = objects.adopted(existing, self.shape)
            if relabelled is not None:
                try:
                    existing = await self.client.update(NODES, relabelled)
                except errors.Conflict:
                    continue
            node.observe(existing)
            return await self._patch_status(node)
        raise errors.Conflict(f"node {node.name} kept changing while being adopted")

    # -- heartbeats ----------------------------------------------------------------------

    async def renew_lease(self, node: HollowNode) -> None:
        """Create or renew the node's Lease, as upstream's node lease controller does."""
        try:
            node.lease = await nodelease.renew(self.client, node.name, node.uid, node.lease)
        except errors.NotFound:
            node.lease = None
            raise

    async def post_status(self, node: HollowNode) -> None:
        try:
            await self._patch_status(node)
        except errors.NotFound:
            node.uid = ""
            self.table.after((node.name, REGISTER), 0)

    async def _patch_status(self, node: HollowNode) -> dict[str, Any]:
        body = objects.status_patch(node.name, node.ip, self.shape, now=meta.now_rfc3339(),
                                    current=node.conditions)
        node.last_status = self.table.now()
        updated = await self.client.patch(NODES, node.name, body, patch_type="strategic", subresource="status")
        node.observe(updated)
        return updated

    # -- what the Node watch shows -------------------------------------------------------

    def on_list(self, items: list[dict[str, Any]]) -> None:
        present = {meta.name_of(i) for i in items}
        for item in items:
            self.on_event("ADDED", item)
        for name, node in self.nodes.items():
            if name not in present and node.uid:
                self.on_event("DELETED", {"metadata": {"name": name, "uid": node.uid}})

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        node = self.nodes.get(meta.name_of(obj))
        if node is None:
            return
        if kind == "DELETED":
            if obj["metadata"].get("uid") not in (node.uid, ""):
                return  # an older incarnation; the node has registered again since
            node.uid = ""
            node.conditions = []
            if not node.paused:
                log.info("hollow node %s was deleted; registering again", node.name)
                self.table.after((node.name, REGISTER), 0)
            return
        node.observe(obj)
        if not node.paused and objects.status_outdated(obj, node.ip):
            when = max(self.table.now(), node.last_status + MIN_STATUS_GAP)
            self.table.at((node.name, STATUS), when)
