"""host-gw for machines without a kubelet: keep a route to every Node's podCIDR via its InternalIP.

The kubelet programs these routes on workers itself. Masters run no kubelet (docs/architecture.md, "Ansible roles"),
yet they must answer pods: the cluster DNS and the apiservers run there, behind ClusterIPs that kube-proxy on the
pod's node DNATs to a master's IP without masquerading (the source is a pod IP). This agent, `harness pod-routes`,
is flannel's host-gw backend reduced to that: a Node informer, and `HostGwRoutes.sync` whenever the wanted routes
change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from harness.api import registry
from harness.api.nodes import address_of
from harness.client.rest import Client
from harness.kubelet.network.routes import HostGwRoutes
from harness.machinery.informer import Informer

log = logging.getLogger(__name__)

NODES = registry.by_path("", "v1", "nodes")


def node_routes(nodes: Iterable[dict[str, Any]], *, skip: str | None = None) -> dict[str, str]:
    """{podCIDR: InternalIP} of every Node that has both, except the Node named `skip` (this machine's own)."""
    wanted: dict[str, str] = {}
    for node in nodes:
        if node["metadata"]["name"] == skip:
            continue
        cidr, ip = (node.get("spec") or {}).get("podCIDR"), address_of(node, "InternalIP")
        if cidr and ip:
            wanted[cidr] = ip
    return wanted


def describe(routes: dict[str, str]) -> str:
    return ", ".join(f"{cidr} via {ip}" for cidr, ip in sorted(routes.items())) or "none"


class PodRouteAgent:
    """Keeps this machine's host-gw routes equal to the Nodes' podCIDRs, until `stop` is set."""

    def __init__(self, client: Client, *, routes: HostGwRoutes | None = None, retry: float = 5.0) -> None:
        self.routes = routes or HostGwRoutes()
        self.informer = Informer(client, NODES)
        self.retry = retry
        self.programmed: dict[str, str] | None = None
        self._changed = asyncio.Event()
        self.informer.add_handlers(on_add=lambda _n: self._changed.set(),
                                   on_update=lambda _o, _n: self._changed.set(),
                                   on_delete=lambda _n: self._changed.set())

    async def run(self, stop: asyncio.Event) -> None:
        await self.informer.start()
        try:
            await self.informer.wait_synced()
            self._changed.set()
            while not stop.is_set():
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._changed.wait())]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED, timeout=self.retry)
                for w in waiters:
                    w.cancel()
                if stop.is_set():
                    break
                self._changed.clear()
                self.sync()
        finally:
            await self.informer.stop()

    def sync(self) -> None:
        """Program the routes if they differ from what was last programmed; a failure is retried next round."""
        wanted = node_routes(self.informer.cache.list())
        if wanted == self.programmed:
            return
        try:
            self.routes.sync(wanted)
        except Exception:
            log.exception("could not program host-gw routes")
            self.programmed = None
            self._changed.set()  # try again after the retry interval
            return
        self.programmed = wanted
        log.info("host-gw routes: %s", describe(wanted))


__all__ = ["PodRouteAgent", "describe", "node_routes"]
