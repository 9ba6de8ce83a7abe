"""The scheduling framework: the extension points plugins implement and the data they see.

The one idea: a scheduling cycle is synchronous. Filter and Score read `NodeInfo`s straight
out of the scheduler cache — there is no snapshot copy — and that is safe because nothing
awaits between "snapshot" and assume, so no informer handler can run in between. Hence
plugins never change what they are given, and Filter/Score stay cheap: they run once per
node per pod. Status (None is success), CycleState and one Protocol per extension point are
here; `NodeInfo` and `PodInfo` (harness.scheduler.nodeinfo) are re-exported.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from harness.scheduler.nodeinfo import NodeInfo, PodInfo, Resource, pod_requests, zone_key

if TYPE_CHECKING:
    from harness.client.rest import Client

# NodeInfo and PodInfo live in nodeinfo (with the resource arithmetic); plugins import them from here.
__all__ = ["MAX_NODE_SCORE", "SKIP", "BindPlugin", "Code", "CycleState", "FilterPlugin", "Handle", "NodeInfo",
           "NormalizeScorePlugin", "PodInfo", "PreFilterPlugin", "PreScorePlugin", "ReservePlugin", "Resource",
           "ScorePlugin", "Status", "default_normalize_score", "pod_requests", "succeeded", "zone_key"]

MAX_NODE_SCORE = 100


class Code(enum.Enum):
    SUCCESS = "Success"
    ERROR = "Error"
    UNSCHEDULABLE = "Unschedulable"
    UNSCHEDULABLE_AND_UNRESOLVABLE = "UnschedulableAndUnresolvable"
    SKIP = "Skip"  # from PreFilter/PreScore: this plugin has nothing to say about this pod


@dataclass(frozen=True, slots=True)
class Status:
    """Why a plugin said no (or Skip, or Error). Plugins return None for success."""

    code: Code
    reasons: tuple[str, ...] = ()

    @classmethod
    def unschedulable(cls, *reasons: str, resolvable: bool = True) -> Status:
        return cls(Code.UNSCHEDULABLE if resolvable else Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons)

    @classmethod
    def error(cls, message: str) -> Status:
        return cls(Code.ERROR, (message,))

    @property
    def rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)


SKIP = Status(Code.SKIP)


def succeeded(status: Status | None) -> bool:
    return status is None or status.code is Code.SUCCESS


class CycleState:
    """Scratch space for one pod's scheduling cycle: plugins pass data from PreFilter to Filter."""

    __slots__ = ("_data", "skip_filter", "skip_score")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.skip_filter: set[str] = set()
        self.skip_score: set[str] = set()

    def read(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value


def default_normalize_score(scores: list[int], *, reverse: bool = False) -> None:
    """Scale raw scores so the highest becomes 100 (or, reversed, the lowest does), in place."""
    highest = max(scores, default=0)
    if highest == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, score in enumerate(scores):
        scaled = MAX_NODE_SCORE * score // highest
        scores[i] = MAX_NODE_SCORE - scaled if reverse else scaled


# -- extension points ---------------------------------------------------------------------


@dataclass
class Handle:
    """What a plugin may use besides its arguments: the API client (binders need it)."""

    client: Client | None = None


@runtime_checkable
class PreFilterPlugin(Protocol):
    NAME: ClassVar[str]

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        """Once per cycle: compute what Filter needs, reject the pod outright, or SKIP Filter."""


@runtime_checkable
class FilterPlugin(Protocol):
    NAME: ClassVar[str]

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """Can the pod run on this node? None for yes; a Status with the reason for no."""


@runtime_checkable
class PreScorePlugin(Protocol):
    NAME: ClassVar[str]

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status | None:
        """Once per cycle, over the feasible nodes: prepare Score, or SKIP it."""


@runtime_checkable
class ScorePlugin(Protocol):
    NAME: ClassVar[str]

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        """A raw score for a feasible node; 0-100 after normalize_score (if the plugin has one)."""


@runtime_checkable
class NormalizeScorePlugin(Protocol):
    NAME: ClassVar[str]

    def normalize_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                        scores: list[int]) -> Status | None:
        """Rewrite `scores` (aligned with `nodes`) in place into 0-100."""


@runtime_checkable
class ReservePlugin(Protocol):
    NAME: ClassVar[str]

    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """The pod is assumed on node_name: hold whatever it needs there."""

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        """Undo reserve: a later step failed (must be idempotent)."""


@runtime_checkable
class BindPlugin(Protocol):
    NAME: ClassVar[str]

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """Tell the apiserver; SKIP lets the next binder try."""
