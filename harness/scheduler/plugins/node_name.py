"""NodeName: a pod that names its node (`spec.nodeName`) fits that node only."""

from __future__ import annotations

from typing import Any

from harness.scheduler.framework import CycleState, Handle, NodeInfo, PodInfo, Status

NAME = "NodeName"
REASON = "node(s) didn't match the requested node name"
_REJECTED = Status.unschedulable(REASON, resolvable=False)


class NodeName:
    NAME = NAME

    def __init__(self, handle: Handle, **args: Any) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        wanted = pod.node_name
        return None if not wanted or wanted == node.name else _REJECTED
