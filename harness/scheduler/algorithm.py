"""The scheduling algorithm: filter nodes, score the feasible ones, pick the best.

Two upstream ideas keep it fast on big clusters. Filtering stops once enough feasible nodes
are found (`num_feasible_nodes_to_find`: all of a small cluster, then a share that shrinks
from 50% towards 5% as the cluster grows, never fewer than 100 nodes), and each cycle starts
where the last one stopped, so every node gets its turn. A pod that fits nowhere is checked
against every node, so its FitError can say why, per node, in upstream's words:
"0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu."
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.scheduler.framework import Code, CycleState, NodeInfo, PodInfo, Status
from harness.scheduler.runtime import Framework

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5
BASE_PERCENTAGE_OF_NODES_TO_SCORE = 50
NO_NODES_AVAILABLE = "no nodes available to schedule pods"


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int = 0) -> int:
    """How many feasible nodes are enough (upstream `numFeasibleNodesToFind`); 0% means adaptive."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return num_all_nodes
    if percentage <= 0:
        percentage = max(BASE_PERCENTAGE_OF_NODES_TO_SCORE - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def unschedulable_message(num_all_nodes: int, statuses: Iterable[Status], pre_filter: Status | None = None) -> str:
    """Upstream `FitError.Error()`: how many nodes gave each reason, sorted as strings."""
    if num_all_nodes == 0:
        return NO_NODES_AVAILABLE
    message = f"0/{num_all_nodes} nodes are available:"
    if pre_filter is not None and pre_filter.message:
        return f"{message} {pre_filter.message}."
    histogram = Counter(reason for status in statuses for reason in status.reasons)
    reasons = sorted(f"{count} {reason}" for reason, count in histogram.items())
    if reasons:
        message += f" {', '.join(reasons)}."
    return message


class FitError(Exception):
    """The pod fits no node; `statuses` says why, node by node."""

    def __init__(self, pod: PodInfo, num_all_nodes: int, statuses: dict[str, Status],
                 pre_filter: Status | None = None) -> None:
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.statuses = statuses
        self.pre_filter = pre_filter
        super().__init__(unschedulable_message(num_all_nodes, statuses.values(), pre_filter))

    @property
    def message(self) -> str:
        return str(self)


class SchedulingError(Exception):
    """A plugin failed (Error status): not the pod's fault, retried after backoff."""


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    node: str
    evaluated: int  # nodes filtered
    feasible: int  # of which fit


class Algorithm:
    def __init__(self, framework: Framework, *, percentage_of_nodes_to_score: int = 0,
                 rng: random.Random | None = None) -> None:
        self.framework = framework
        self.percentage = percentage_of_nodes_to_score
        self.rng = rng or random.Random()
        self._next_start = 0

    def schedule(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> ScheduleResult:
        """The node for `pod`; FitError if none fits, SchedulingError if a plugin failed."""
        if not nodes:
            raise FitError(pod, 0, {})
        status = self.framework.run_pre_filter(state, pod)
        if status is not None:
            if status.code is Code.ERROR:
                raise SchedulingError(f"running PreFilter: {status.message}")
            raise FitError(pod, len(nodes), {}, status)
        feasible, statuses, evaluated = self.find_feasible(state, pod, nodes)
        if not feasible:
            raise FitError(pod, len(nodes), statuses)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        status = self.framework.run_pre_score(state, pod, feasible)
        if status is not None:
            raise SchedulingError(f"running PreScore: {status.message}")
        try:
            totals = self.framework.run_score(state, pod, feasible)
        except ValueError as exc:
            raise SchedulingError(str(exc)) from exc
        return ScheduleResult(self.select_host(feasible, totals), evaluated, len(feasible))

    def find_feasible(self, state: CycleState, pod: PodInfo,
                      nodes: Sequence[NodeInfo]) -> tuple[list[NodeInfo], dict[str, Status], int]:
        """Nodes that pass every Filter, starting after where the last cycle stopped."""
        total = len(nodes)
        wanted = num_feasible_nodes_to_find(total, self.percentage)
        start = self._next_start % total
        filters = self.framework.filters(state)
        feasible: list[NodeInfo] = []
        statuses: dict[str, Status] = {}
        evaluated = 0
        for node in itertools.chain(itertools.islice(nodes, start, None), itertools.islice(nodes, start)):
            evaluated += 1
            for check in filters:
                status = check(state, pod, node)
                if status is not None and status.code is not Code.SUCCESS:
                    if status.code is Code.ERROR:
                        raise SchedulingError(f"running Filter on node {node.name}: {status.message}")
                    statuses[node.name] = status
                    break
            else:
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
        self._next_start = (start + evaluated) % total
        return feasible, statuses, evaluated

    def select_host(self, nodes: Sequence[NodeInfo], totals: Sequence[int]) -> str:
        """The highest total; ties broken uniformly at random (reservoir sampling, as upstream)."""
        best, best_score, ties = nodes[0].name, totals[0], 1
        for node, score in zip(nodes[1:], totals[1:], strict=True):
            if score > best_score:
                best, best_score, ties = node.name, score, 1
            elif score == best_score:
                ties += 1
                if self.rng.randrange(ties) == 0:
                    best = node.name
        return best
