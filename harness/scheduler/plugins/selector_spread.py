"""SelectorSpread: spread the pods of one controller (ReplicaSet, ...) across nodes and zones.

Upstream finds a pod's siblings through the Services and controllers selecting it; here a
sibling is a pod with the same controller ownerReference, which every NodeInfo counts as pods
come and go, so Score is one dict lookup. Fewer siblings score higher; where nodes carry zone
labels, the zone's count weighs 2/3 (upstream `zoneWeighting`). A pod with no controller is
not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.scheduler.framework import MAX_NODE_SCORE, SKIP, CycleState, Handle, NodeInfo, PodInfo, Status

NAME = "SelectorSpread"
ZONE_WEIGHTING = 2.0 / 3.0


class SelectorSpread:
    NAME = NAME

    def __init__(self, handle: Handle, **args: Any) -> None:
        pass

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status | None:
        return None if pod.owner else SKIP

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        return node.owner_counts.get(pod.owner, 0)

    def normalize_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                        scores: list[int]) -> Status | None:
        by_zone: dict[str, int] = {}
        for node, count in zip(nodes, scores, strict=True):
            if node.zone:
                by_zone[node.zone] = by_zone.get(node.zone, 0) + count
        max_node = max(scores, default=0)
        max_zone = max(by_zone.values(), default=0)
        for i, (node, count) in enumerate(zip(nodes, scores, strict=True)):
            score = float(MAX_NODE_SCORE)
            if max_node > 0:
                score = MAX_NODE_SCORE * (max_node - count) / max_node
            if node.zone:
                zone_score = float(MAX_NODE_SCORE)
                if max_zone > 0:
                    zone_score = MAX_NODE_SCORE * (max_zone - by_zone[node.zone]) / max_zone
                score = score * (1.0 - ZONE_WEIGHTING) + ZONE_WEIGHTING * zone_score
            scores[i] = int(score)
        return None
