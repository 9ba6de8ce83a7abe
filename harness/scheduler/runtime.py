"""A profile made real: its plugins built once, and each extension point run over them.

Filter is the hot path (pods x nodes x plugins), so the runtime hands the algorithm a plain
list of bound `filter` methods for the cycle, with the plugins PreFilter said to skip left
out; everything else runs once per cycle or once per feasible node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.scheduler.framework import (
    MAX_NODE_SCORE,
    BindPlugin,
    Code,
    CycleState,
    FilterPlugin,
    Handle,
    NodeInfo,
    NormalizeScorePlugin,
    PodInfo,
    PreFilterPlugin,
    PreScorePlugin,
    ReservePlugin,
    ScorePlugin,
    Status,
    succeeded,
)
from harness.scheduler.plugins import REGISTRY
from harness.scheduler.profile import Profile

FilterFunc = Callable[[CycleState, PodInfo, NodeInfo], "Status | None"]


class Framework:
    """The plugins of one profile, in the order the profile lists them at each point."""

    def __init__(self, profile: Profile, handle: Handle, registry: Mapping[str, type] = REGISTRY) -> None:
        self.profile = profile
        self._instances: dict[str, Any] = {}

        def build(name: str) -> Any:
            if name not in self._instances:
                if name not in registry:
                    raise ValueError(f"profile {profile.scheduler_name!r} names unknown plugin {name!r}; "
                                     f"known: {', '.join(sorted(registry))}")
                self._instances[name] = registry[name](handle, **profile.plugin_args.get(name, {}))
            return self._instances[name]

        def point(names: Sequence[str], protocol: type, what: str) -> list[Any]:
            plugins = [build(n) for n in names]
            for name, plugin in zip(names, plugins, strict=True):
                if not isinstance(plugin, protocol):
                    raise ValueError(f"plugin {name!r} does not implement {what}")
            return plugins

        self.pre_filter: list[PreFilterPlugin] = point(profile.pre_filter, PreFilterPlugin, "PreFilter")
        self.filter: list[FilterPlugin] = point(profile.filter, FilterPlugin, "Filter")
        self.pre_score: list[PreScorePlugin] = point(profile.pre_score, PreScorePlugin, "PreScore")
        scorers: list[ScorePlugin] = point([n for n, _ in profile.score], ScorePlugin, "Score")
        self.score = [(p, weight, p if isinstance(p, NormalizeScorePlugin) else None)
                      for p, (_, weight) in zip(scorers, profile.score, strict=True)]
        self.reserve: list[ReservePlugin] = point(profile.reserve, ReservePlugin, "Reserve")
        self.bind: list[BindPlugin] = point(profile.bind, BindPlugin, "Bind")
        if not self.bind:
            raise ValueError(f"profile {profile.scheduler_name!r} has no Bind plugin")

    def plugin(self, name: str) -> Any:
        return self._instances[name]

    def run_pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        """None to go on; the first rejection or error otherwise. SKIPs are noted in `state`."""
        for plugin in self.pre_filter:
            status = plugin.pre_filter(state, pod)
            if status is None or status.code is Code.SUCCESS:
                continue
            if status.code is Code.SKIP:
                state.skip_filter.add(plugin.NAME)
                continue
            return status
        return None

    def filters(self, state: CycleState) -> list[FilterFunc]:
        return [p.filter for p in self.filter if p.NAME not in state.skip_filter]

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        for check in self.filters(state):
            status = check(state, pod, node)
            if not succeeded(status):
                return status
        return None

    def run_pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status | None:
        for plugin in self.pre_score:
            status = plugin.pre_score(state, pod, nodes)
            if status is not None and status.code is Code.SKIP:
                state.skip_score.add(plugin.NAME)
            elif not succeeded(status):
                return status
        return None

    def run_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        """Weighted sum of every Score plugin's normalised score, per node (aligned with `nodes`).

        Raises ValueError if a plugin fails or scores outside 0-100.
        """
        totals = [0] * len(nodes)
        for plugin, weight, normalizer in self.score:
            if plugin.NAME in state.skip_score:
                continue
            scores = [plugin.score(state, pod, node) for node in nodes]
            if normalizer is not None:
                status = normalizer.normalize_score(state, pod, nodes, scores)
                if not succeeded(status):
                    raise ValueError(f"plugin {plugin.NAME} failed to normalise scores: {status}")
            if scores and (min(scores) < 0 or max(scores) > MAX_NODE_SCORE):
                raise ValueError(f"plugin {plugin.NAME} scored outside [0, {MAX_NODE_SCORE}]: {min(scores)}..."
                                 f"{max(scores)}")
            for i, score in enumerate(scores):
                totals[i] += score * weight
        return totals

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for plugin in self.reserve:
            status = plugin.reserve(state, pod, node_name)
            if not succeeded(status):
                return status
        return None

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for plugin in reversed(self.reserve):
            plugin.unreserve(state, pod, node_name)

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for plugin in self.bind:
            status = await plugin.bind(state, pod, node_name)
            if status is not None and status.code is Code.SKIP:
                continue
            return status
        return Status.error(f"no bind plugin bound pod {pod.key}")
