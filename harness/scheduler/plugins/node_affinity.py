"""NodeAffinity: `nodeSelector` and required node affinity filter; preferred affinity scores.

Terms are compiled once per cycle (PreFilter / PreScore) into label requirements, so the
per-node work is a few dict lookups. As upstream: required terms are ORed, the expressions
within a term ANDed, a term with nothing in it matches no node, and an invalid term (unknown
operator, Gt with two values, a field other than metadata.name) matches no node either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.api import selectors as sel
from harness.scheduler.framework import (
    SKIP,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    default_normalize_score,
)

NAME = "NodeAffinity"
REASON = "node(s) didn't match Pod's node affinity/selector"
_REJECTED = Status.unschedulable(REASON, resolvable=False)
_REQUIRED, _PREFERRED = f"{NAME}/required", f"{NAME}/preferred"
_OPERATORS = {"In": sel.IN, "NotIn": sel.NOT_IN, "Exists": sel.EXISTS, "DoesNotExist": sel.DOES_NOT_EXIST,
              "Gt": sel.GREATER_THAN, "Lt": sel.LESS_THAN}
_FIELD_OPERATORS = ("In", "NotIn")
_NAME_FIELD = "metadata.name"


class Term:
    """One NodeSelectorTerm: label requirements AND metadata.name requirements."""

    __slots__ = ("fields", "labels", "valid")

    def __init__(self, term: Mapping[str, Any]) -> None:
        self.valid = True
        self.labels = tuple(self._requirement(e, _OPERATORS) for e in term.get("matchExpressions") or ())
        self.fields = tuple(self._requirement(e, _FIELD_OPERATORS) for e in term.get("matchFields") or ())
        if any(r.key != _NAME_FIELD for r in self.fields) or not (self.labels or self.fields):
            self.valid = False

    def _requirement(self, expr: Mapping[str, Any], allowed: Mapping[str, str] | tuple[str, ...]) -> sel.Requirement:
        op = str(expr.get("operator") or "")
        if op not in allowed:
            self.valid = False
            return sel.Requirement("", sel.EXISTS)
        values = tuple(str(v) for v in expr.get("values") or ())
        if (op in ("Gt", "Lt") and len(values) != 1) or (op in ("In", "NotIn") and not values):
            self.valid = False
        return sel.Requirement(str(expr.get("key") or ""), _OPERATORS[op], values)

    def matches(self, node: NodeInfo) -> bool:
        if not self.valid:
            return False
        labels = node.labels
        if not all(r.matches(labels) for r in self.labels):
            return False
        return not self.fields or all(r.matches({_NAME_FIELD: node.name}) for r in self.fields)


class Required:
    """The pod's hard constraints: every nodeSelector label, and one of the required terms."""

    __slots__ = ("node_selector", "terms")

    def __init__(self, pod: Mapping[str, Any]) -> None:
        spec = pod.get("spec") or {}
        self.node_selector: dict[str, str] = spec.get("nodeSelector") or {}
        required = _node_affinity(spec).get("requiredDuringSchedulingIgnoredDuringExecution")
        self.terms: tuple[Term, ...] | None = None
        if required is not None:
            self.terms = tuple(Term(t) for t in required.get("nodeSelectorTerms") or ())

    @property
    def empty(self) -> bool:
        return not self.node_selector and self.terms is None

    def matches(self, node: NodeInfo) -> bool:
        labels = node.labels
        for key, value in self.node_selector.items():
            if labels.get(key) != value:
                return False
        return self.terms is None or any(t.matches(node) for t in self.terms)


def _node_affinity(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return (spec.get("affinity") or {}).get("nodeAffinity") or {}


class NodeAffinity:
    NAME = NAME

    def __init__(self, handle: Handle, **args: Any) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        required = Required(pod.pod)
        if required.empty:
            return SKIP
        state.write(_REQUIRED, required)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        required: Required = state.read(_REQUIRED)
        return None if required.matches(node) else _REJECTED

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> Status | None:
        preferred = _node_affinity(pod.pod.get("spec") or {}).get("preferredDuringSchedulingIgnoredDuringExecution")
        terms = [(int(p.get("weight") or 0), Term(p.get("preference") or {})) for p in preferred or ()]
        terms = [(w, t) for w, t in terms if w and t.valid]
        if not terms:
            return SKIP
        state.write(_PREFERRED, terms)
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        return sum(weight for weight, term in state.read(_PREFERRED) if term.matches(node))

    def normalize_score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo],
                        scores: list[int]) -> Status | None:
        default_normalize_score(scores)
        return None
