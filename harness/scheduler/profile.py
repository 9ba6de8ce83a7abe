"""Scheduling profiles: which plugins run at each extension point, and score weights.

A profile names plugins; it never imports them (harness.scheduler.plugins.REGISTRY finds
them), so a profile is plain data a config file could hold. The default mirrors
kube-scheduler's, minus what needs objects we do not schedule with (volumes, pod affinity),
and with SelectorSpread in PodTopologySpread's place and weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_SCHEDULER_NAME = "default-scheduler"


@dataclass(frozen=True)
class Profile:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    pre_filter: tuple[str, ...] = ()
    filter: tuple[str, ...] = ()
    pre_score: tuple[str, ...] = ()
    score: tuple[tuple[str, int], ...] = ()  # (plugin, weight)
    reserve: tuple[str, ...] = ()
    bind: tuple[str, ...] = ()
    #: Keyword arguments a plugin is built with, by plugin name.
    plugin_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Stop filtering once this share of nodes is feasible; 0 = adaptive, as upstream (see algorithm).
    percentage_of_nodes_to_score: int = 0


DEFAULT = Profile(
    pre_filter=("NodePorts", "NodeAffinity"),
    # Cheap, decisive checks first: a node fails at the first plugin that rejects it.
    filter=("NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodePorts", "NodeResourcesFit"),
    pre_score=("TaintToleration", "NodeAffinity", "SelectorSpread"),
    score=(("TaintToleration", 3), ("NodeAffinity", 2), ("NodeResourcesFit", 1),
           ("NodeResourcesBalancedAllocation", 1), ("SelectorSpread", 2)),
    bind=("DefaultBinder",),
    plugin_args={"NodeResourcesFit": {"scoring_strategy": "LeastAllocated"}},
)


def default_profile(*, scheduler_name: str = DEFAULT_SCHEDULER_NAME, percentage_of_nodes_to_score: int = 0) -> Profile:
    return replace(DEFAULT, scheduler_name=scheduler_name, percentage_of_nodes_to_score=percentage_of_nodes_to_score)
