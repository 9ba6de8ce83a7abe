"""The kubelet's own Node: registration, Lease renewals every 10 s, status posts on change or every minute.

The Node object comes from `harness.api.nodes`, the builders the hollow nodes use too. The
agent also tells the kubelet the node's `spec.podCIDR` (set by the controller-manager's node
IPAM controller) and the podCIDRs of the other nodes, for host-gw routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from harness.api import errors, meta, registry
from harness.api import nodes as objects
from harness.client.rest import Client
from harness.kubelet import machine
from harness.kubelet.config import KubeletConfig
from harness.machinery import nodelease

log = logging.getLogger(__name__)

NODES = registry.by_path("", "v1", "nodes")
JITTER = 0.04
MIN_STATUS_GAP = 1.0


def shape_of(config: KubeletConfig) -> objects.NodeShape:
    return objects.NodeShape(
        cpu=config.cpu or machine.cpu_count(), memory=config.memory or machine.memory_capacity(),
        pods=config.max_pods, labels=dict(config.labels), taints=list(config.taints),
        info=machine.node_info(config.node_name, config.runc), kubelet_port=config.port)


class NodeAgent:
    """Keeps this node registered, its lease fresh and its status current."""

    def __init__(self, client: Client, config: KubeletConfig, *,
                 on_pod_cidr: Callable[[str], None] = lambda cidr: None) -> None:
        self.client = client
        self.config = config
        self.shape = shape_of(config)
        self.on_pod_cidr = on_pod_cidr
        self.uid = ""
        self.pod_cidr = ""
        self.conditions: list[dict[str, Any]] = []
        self.lease: dict[str, Any] | None = None
        self.registered = asyncio.Event()
        self._status_due = asyncio.Event()

    @property
    def name(self) -> str:
        return self.config.node_name

    def observe(self, node: dict[str, Any]) -> None:
        """The Node as the apiserver holds it (from registration, a status post or the watch)."""
        self.uid = node["metadata"].get("uid", "")
        self.conditions = (node.get("status") or {}).get("conditions") or []
        cidr = (node.get("spec") or {}).get("podCIDR") or ""
        if cidr != self.pod_cidr:
            self.pod_cidr = cidr
            if cidr:
                log.info("node %s has podCIDR %s", self.name, cidr)
                self.on_pod_cidr(cidr)
        if objects.status_outdated(node, self.config.node_ip):
            self._status_due.set()

    def deleted(self, node: dict[str, Any]) -> None:
        if node["metadata"].get("uid") in (self.uid, ""):
            log.warning("node %s was deleted; registering again", self.name)
            self.uid = ""
            self.registered.clear()
            self._status_due.set()

    async def register(self) -> None:
        """Create the Node, or take over the existing one of that name (as after a kubelet restart)."""
        delay = 0.2
        while True:
            try:
                await self._register_once()
                self.registered.set()
                return
            except (errors.Invalid, errors.BadRequest, errors.Forbidden, errors.Unauthorized):
                raise
            except (errors.ApiError, OSError) as exc:
                log.warning("node %s: registration failed (%s); retrying in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 7.0)

    async def _register_once(self) -> None:
        now = meta.now_rfc3339()
        try:
            node = await self.client.create(NODES, objects.node_object(self.name, self.config.node_ip, self.shape,
                                                                       now=now))
            log.info("node %s registered", self.name)
        except errors.AlreadyExists:
            existing = await self.client.get(NODES, self.name)
            relabelled = objects.adopted(existing, self.shape)
            if relabelled is not None:
                existing = await self.client.update(NODES, relabelled)
            self.observe(existing)
            node = await self._post_status()
            log.info("node %s already registered; took it over", self.name)
        self.observe(node)
        await self.renew_lease()

    async def renew_lease(self) -> None:
        try:
            self.lease = await nodelease.renew(self.client, self.name, self.uid, self.lease)
        except errors.NotFound:
            self.lease = None
            raise

    async def _post_status(self) -> dict[str, Any]:
        body = objects.status_patch(self.name, self.config.node_ip, self.shape, now=meta.now_rfc3339(),
                                    current=self.conditions)
        node = await self.client.patch(NODES, self.name, body, patch_type="strategic", subresource="status")
        self.observe(node)
        return node

    async def run(self) -> None:
        """Heartbeat forever: the lease every `heartbeat` seconds, the status on change or every `status_interval`."""
        if not self.registered.is_set():
            await self.register()
        loop = asyncio.get_running_loop()
        next_status = loop.time() + self.config.status_interval
        next_lease = loop.time() + self.config.heartbeat * (1 + JITTER * random.random())
        last_post = loop.time()
        while True:
            timeout = max(0.0, min(next_status, next_lease) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_due.wait(), timeout)
            # a status fight (someone else rewriting our conditions) must not become a busy loop
            await asyncio.sleep(max(0.0, last_post + MIN_STATUS_GAP - loop.time()))
            try:
                if not self.registered.is_set():
                    await self.register()
                if self._status_due.is_set() or loop.time() >= next_status:
                    self._status_due.clear()
                    await self._post_status()
                    last_post = loop.time()
                    next_status = loop.time() + self.config.status_interval
                if loop.time() >= next_lease:
                    await self.renew_lease()
                    next_lease = loop.time() + self.config.heartbeat * (1 + JITTER * random.random())
            except errors.NotFound:
                self.uid = ""
                self.registered.clear()
            except (errors.ApiError, OSError) as exc:
                log.warning("node %s: heartbeat failed: %s", self.name, exc)
                await asyncio.sleep(min(self.config.heartbeat, 2.0))
