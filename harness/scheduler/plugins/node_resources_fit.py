"""NodeResourcesFit: a pod fits where its requests fit in allocatable minus what is requested.

Filter counts every pod the scheduler knows on the node, assumed ones included, and gives
upstream's reasons ("Insufficient cpu", "Insufficient memory", "Too many pods"). Score is a
scoring strategy, as upstream configures it: LeastAllocated (default: prefer emptier nodes,
which spreads load) or MostAllocated (bin-packing). Scoring counts a container without a
cpu/memory request as 100m/200Mi, so that best-effort pods spread too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from harness.scheduler.framework import MAX_NODE_SCORE, CycleState, Handle, NodeInfo, PodInfo, Status

NAME = "NodeResourcesFit"
TOO_MANY_PODS = "Too many pods"
LEAST_ALLOCATED, MOST_ALLOCATED = "LeastAllocated", "MostAllocated"
DEFAULT_RESOURCES: Mapping[str, int] = {"cpu": 1, "memory": 1}


def insufficient(resource: str) -> str:
    return f"Insufficient {resource}"


def fit_reasons(pod: PodInfo, node: NodeInfo) -> list[str]:
    """Everything about the node's capacity the pod does not fit (upstream `fitsRequest`)."""
    reasons = []
    if len(node.pods) + 1 > node.allocatable_pods:
        reasons.append(TOO_MANY_PODS)
    req = pod.requests
    if not (req.milli_cpu or req.memory or req.ephemeral_storage or req.scalar):
        return reasons
    free, used = node.allocatable, node.requested
    if req.milli_cpu > 0 and req.milli_cpu > free.milli_cpu - used.milli_cpu:
        reasons.append(insufficient("cpu"))
    if req.memory > 0 and req.memory > free.memory - used.memory:
        reasons.append(insufficient("memory"))
    if req.ephemeral_storage > 0 and req.ephemeral_storage > free.ephemeral_storage - used.ephemeral_storage:
        reasons.append(insufficient("ephemeral-storage"))
    for name, amount in req.scalar.items():
        if amount > 0 and amount > free.scalar.get(name, 0) - used.scalar.get(name, 0):
            reasons.append(insufficient(name))
    return reasons


def least_allocated(requested: int, allocatable: int) -> int:
    if requested > allocatable:
        return 0
    return (allocatable - requested) * MAX_NODE_SCORE // allocatable


def most_allocated(requested: int, allocatable: int) -> int:
    # Unrequested pods count as 100m/200Mi, so a node can look more than full: cap it.
    return min(requested, allocatable) * MAX_NODE_SCORE // allocatable


def scaled_requested(node: NodeInfo, pod: PodInfo, resource: str) -> tuple[int, int]:
    """(requested after placing the pod, allocatable) of one resource, as scoring counts them."""
    if resource == "cpu":
        return node.non_zero.milli_cpu + pod.non_zero.milli_cpu, node.allocatable.milli_cpu
    if resource == "memory":
        return node.non_zero.memory + pod.non_zero.memory, node.allocatable.memory
    if resource == "ephemeral-storage":
        return node.requested.ephemeral_storage + pod.requests.ephemeral_storage, node.allocatable.ephemeral_storage
    return (node.requested.scalar.get(resource, 0) + pod.requests.scalar.get(resource, 0),
            node.allocatable.scalar.get(resource, 0))


class NodeResourcesFit:
    NAME = NAME

    def __init__(self, handle: Handle, *, scoring_strategy: str = LEAST_ALLOCATED,
                 resources: Mapping[str, int] = DEFAULT_RESOURCES, **args: Any) -> None:
        scorers: dict[str, Callable[[int, int], int]] = {LEAST_ALLOCATED: least_allocated,
                                                          MOST_ALLOCATED: most_allocated}
        if scoring_strategy not in scorers:
            raise ValueError(f"{NAME}: scoring strategy must be one of {sorted(scorers)}, not {scoring_strategy!r}")
        self.scorer = scorers[scoring_strategy]
        self.resources = tuple(resources.items())

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        req, free, used = pod.requests, node.allocatable, node.requested
        if (len(node.pods) < node.allocatable_pods and req.milli_cpu <= free.milli_cpu - used.milli_cpu
                and req.memory <= free.memory - used.memory and not req.scalar
                and req.ephemeral_storage <= free.ephemeral_storage - used.ephemeral_storage):
            return None  # the common case, without building a list (this runs per node per pod)
        reasons = fit_reasons(pod, node)
        return Status.unschedulable(*reasons) if reasons else None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = weights = 0
        for resource, weight in self.resources:
            requested, allocatable = scaled_requested(node, pod, resource)
            if allocatable == 0:
                continue
            total += self.scorer(requested, allocatable) * weight
            weights += weight
        return total // weights if weights else 0
