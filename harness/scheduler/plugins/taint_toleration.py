"""TaintToleration: NoSchedule/NoExecute taints keep out pods that don't tolerate them.

Score counts the PreferNoSchedule taints a pod does not tolerate; fewer is better, so the
normalised score is reversed (no such taint → 100).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.api.taints import NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE, first_untolerated, tolerated
from harness.scheduler.framework import (
    SKIP,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    default_normalize_score,
)

NAME = "TaintToleration"
_PREFERRED = f"{NAME}/preferNoSchedule"


def reason(taint: Mapping[str, Any]) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"


class TaintToleration:
    NAME = NAME

    def __init__(self, handle: Handle, **args: Any) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.taints:
            return None
        taint = first_untolerated(node.taints, pod.tolerations, (NO_SCHEDULE, NO_EXECUTE))
        return None if taint is None else Status.unschedulable(reason(taint), resolvable=False)

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status | None:
        if not any(n.taints for n in nodes):
            return SKIP
        state.write(_PREFERRED, [t for t in pod.tolerations if t.get("effect") in (None, "", PREFER_NO_SCHEDULE)])
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        tolerations = state.read(_PREFERRED)
        return sum(1 for t in node.taints if t.get("effect") == PREFER_NO_SCHEDULE and not tolerated(tolerations, t))

    def normalize_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                        scores: list[int]) -> Status | None:
        default_normalize_score(scores, reverse=True)
        return None
