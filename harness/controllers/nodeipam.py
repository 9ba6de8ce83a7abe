"""Node IPAM: give each node a pod CIDR (one /24 of the cluster CIDR) in `spec.podCIDR`.

The set of allocated CIDRs is read from the nodes themselves, so a restarted
controller-manager never hands out a CIDR twice; one worker keeps allocation serial.
"""

from __future__ import annotations

import ipaddress
import logging

from harness.api import errors
from harness.controllers.base import NODES, Context, Controller

log = logging.getLogger(__name__)


class CIDRsExhausted(Exception):
    pass


def next_free(cluster: ipaddress.IPv4Network | ipaddress.IPv6Network, mask: int, used: set[str]) -> str:
    for subnet in cluster.subnets(new_prefix=mask):
        if str(subnet) not in used:
            return str(subnet)
    raise CIDRsExhausted(f"no free /{mask} left in {cluster}")


class NodeIpamController(Controller):
    name = "nodeipam"
    event_source = "cidrAllocator"
    workers = 1

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.cluster = ipaddress.ip_network(ctx.options.cluster_cidr)
        self.mask = ctx.options.node_cidr_mask_size
        self.pending: dict[str, str] = {}  # node -> CIDR written but not yet seen in the cache

    def setup(self) -> None:
        self.ctx.informers(NODES).add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))

    def _used(self) -> set[str]:
        used = {n.get("spec", {}).get("podCIDR") for n in self.ctx.informers(NODES).cache.list()}
        return {c for c in used if c} | set(self.pending.values())

    async def reconcile(self, key: str) -> None:
        node = self.ctx.informers(NODES).cache.get(key)
        if node is None:
            self.pending.pop(key, None)
            return
        if node.get("spec", {}).get("podCIDR"):
            self.pending.pop(key, None)
            return
        cidr = self.pending.get(key) or next_free(self.cluster, self.mask, self._used())
        self.pending[key] = cidr
        try:
            await self.ctx.client.patch(NODES, key, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except errors.NotFound:
            self.pending.pop(key, None)
            return
        self.ctx.recorder.event(node, "Normal", "CIDRAssignmentSucceeded", f"Node {key} got pod CIDR {cidr}")
        log.info("node %s: pod CIDR %s", key, cidr)
