"""NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate it.

Cordoning is the taint `node.kubernetes.io/unschedulable:NoSchedule` in all but name; a pod
that tolerates that taint (as DaemonSet pods do) may still land there.
"""

from __future__ import annotations

from typing import Any

from harness.api.taints import NO_SCHEDULE, tolerated
from harness.scheduler.framework import CycleState, Handle, NodeInfo, PodInfo, Status

NAME = "NodeUnschedulable"
REASON = "node(s) were unschedulable"
TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": NO_SCHEDULE}
_REJECTED = Status.unschedulable(REASON, resolvable=False)


class NodeUnschedulable:
    NAME = NAME

    def __init__(self, handle: Handle, **args: Any) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.unschedulable or tolerated(pod.tolerations, TAINT):
            return None
        return _REJECTED
