"""The scheduler's cache: a NodeInfo per node, counting every pod bound there — or assumed.

Binding takes a round trip, and the bound pod comes back through the watch later still; if
the scheduler only counted what the watch had shown it, it would place the next pods on
resources already promised. So a pod is *assumed* the moment the cycle picks its node: it
counts on that node at once. The watch confirming the binding turns the assumption into a
plain pod; a failed binding forgets it; and an assumption the watch never confirms expires
`assume_ttl` seconds after its binding finished (a lost event must not leak capacity).

Pods are keyed by uid, so a pod deleted and re-created under its name is a different pod.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.api import meta
from harness.api.pods import is_terminal
from harness.scheduler.framework import NodeInfo, PodInfo

log = logging.getLogger(__name__)

@dataclass(slots=True)
class _Counted:
    info: PodInfo
    node: str
    assumed: bool = False
    deadline: float | None = None  # set when an assumed pod's binding finished


class SchedulerCache:
    def __init__(self, *, assume_ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.assume_ttl = assume_ttl
        self.clock = clock
        self._nodes: dict[str, NodeInfo] = {}
        self._pods: dict[str, _Counted] = {}
        self._node_list: list[NodeInfo] | None = None

    # -- the view the scheduling cycle reads ----------------------------------------------------

    def node_list(self) -> list[NodeInfo]:
        """Every node known as a Node object, in a stable order (rebuilt only when nodes come or go)."""
        if self._node_list is None:
            self._node_list = sorted((n for n in self._nodes.values() if n.node is not None), key=lambda n: n.name)
        return self._node_list

    def node(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    def pod_count(self) -> int:
        return len(self._pods)

    def assumed_count(self) -> int:
        return sum(1 for c in self._pods.values() if c.assumed)

    def has_pod(self, uid: str) -> bool:
        """Whether the pod counts on some node already (bound, or assumed while binding)."""
        return uid in self._pods

    def is_assumed(self, uid: str) -> bool:
        counted = self._pods.get(uid)
        return counted is not None and counted.assumed

    # -- nodes --------------------------------------------------------------------------------

    def add_node(self, node: dict[str, Any]) -> None:
        name = meta.name_of(node)
        info = self._nodes.get(name)
        if info is None:
            self._nodes[name] = NodeInfo(name, node)
            self._node_list = None
        else:
            if info.node is None:
                self._node_list = None
            info.set_node(node)

    update_node = add_node

    def remove_node(self, node: dict[str, Any]) -> None:
        """The node is gone; its pods stay counted (on a node-less NodeInfo) until they are deleted."""
        name = meta.name_of(node)
        info = self._nodes.get(name)
        if info is None:
            return
        self._node_list = None
        if info.pods:
            info.node = None
        else:
            del self._nodes[name]

    # -- pods from the watch ------------------------------------------------------------------

    def add_pod(self, pod: dict[str, Any]) -> None:
        """A bound pod (new, changed, or confirming an assumption)."""
        if is_terminal(pod):
            self.remove_pod(pod)  # finished pods hold no resources
            return
        info = PodInfo(pod)
        counted = self._pods.get(info.uid)
        if counted is not None:
            if counted.assumed and counted.node != info.node_name:
                log.warning("pod %s was assumed on %s but bound to %s", info.key, counted.node, info.node_name)
            self._uncount(counted)
        self._count(_Counted(info, info.node_name))

    update_pod = add_pod

    def remove_pod(self, pod: dict[str, Any]) -> None:
        counted = self._pods.get(PodInfo(pod).uid)
        if counted is not None:
            self._uncount(counted)

    # -- assumptions --------------------------------------------------------------------------

    def assume(self, pod: PodInfo, node_name: str) -> None:
        """Count `pod` (already carrying spec.nodeName) on `node_name` before the binding lands."""
        if pod.uid in self._pods:
            raise ValueError(f"pod {pod.key} is already in the scheduler cache")
        self._count(_Counted(pod, node_name, assumed=True))

    def finish_binding(self, pod: PodInfo) -> None:
        """The binding call returned: the watch has `assume_ttl` seconds to confirm it."""
        counted = self._pods.get(pod.uid)
        if counted is not None and counted.assumed:
            counted.deadline = self.clock() + self.assume_ttl

    def forget(self, pod: PodInfo) -> None:
        """The binding failed: stop counting the assumed pod."""
        counted = self._pods.get(pod.uid)
        if counted is not None and counted.assumed:
            self._uncount(counted)

    def cleanup_expired(self) -> list[PodInfo]:
        """Forget assumptions the watch never confirmed in time; returns them."""
        now = self.clock()
        expired = [c for c in self._pods.values() if c.assumed and c.deadline is not None and c.deadline <= now]
        for counted in expired:
            log.warning("assumed pod %s on node %s expired: its binding never showed up", counted.info.key,
                        counted.node)
            self._uncount(counted)
        return [c.info for c in expired]

    # -- bookkeeping --------------------------------------------------------------------------

    def _count(self, counted: _Counted) -> None:
        self._pods[counted.info.uid] = counted
        info = self._nodes.get(counted.node)
        if info is None:  # a pod bound to a node we have not seen (yet)
            info = self._nodes[counted.node] = NodeInfo(counted.node)
        info.add_pod(counted.info)

    def _uncount(self, counted: _Counted) -> None:
        self._pods.pop(counted.info.uid, None)
        info = self._nodes.get(counted.node)
        if info is None:
            return
        info.remove_pod(counted.info)
        if info.node is None and not info.pods:
            del self._nodes[counted.node]
