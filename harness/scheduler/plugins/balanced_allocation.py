"""NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory would be used evenly.

Score is 100 * (1 - the standard deviation of the requested/allocatable fractions), counting
real requests (not scoring's 100m/200Mi stand-ins), as upstream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.scheduler.framework import MAX_NODE_SCORE, CycleState, Handle, NodeInfo, PodInfo

NAME = "NodeResourcesBalancedAllocation"


def requested_fraction(node: NodeInfo, pod: PodInfo, resource: str) -> float | None:
    if resource == "cpu":
        requested, allocatable = node.requested.milli_cpu + pod.requests.milli_cpu, node.allocatable.milli_cpu
    elif resource == "memory":
        requested, allocatable = node.requested.memory + pod.requests.memory, node.allocatable.memory
    else:
        requested = node.requested.scalar.get(resource, 0) + pod.requests.scalar.get(resource, 0)
        allocatable = node.allocatable.scalar.get(resource, 0)
    if allocatable == 0:
        return None
    return min(requested / allocatable, 1.0)


def balanced_score(fractions: list[float]) -> int:
    if len(fractions) == 2:
        std = abs(fractions[0] - fractions[1]) / 2
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    else:
        std = 0.0
    return int((1 - std) * MAX_NODE_SCORE)


class BalancedAllocation:
    NAME = NAME

    def __init__(self, handle: Handle, *, resources: Mapping[str, int] | None = None, **args: Any) -> None:
        self.resources = tuple(resources or ("cpu", "memory"))

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        fractions = [f for r in self.resources if (f := requested_fraction(node, pod, r)) is not None]
        return balanced_score(fractions)
