"""NodePorts: two pods cannot hold the same hostPort (protocol, IP) on one node."""

from __future__ import annotations

from typing import Any

from harness.scheduler.framework import SKIP, CycleState, Handle, NodeInfo, PodInfo, Status

NAME = "NodePorts"
REASON = "node(s) didn't have free ports for the requested pod ports"
_REJECTED = Status.unschedulable(REASON)


class NodePorts:
    NAME = NAME

    def __init__(self, handle: Handle, **args: Any) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if pod.host_ports else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.used_ports and any(node.port_in_use(ip, proto, port) for ip, proto, port in pod.host_ports):
            return _REJECTED
        return None
