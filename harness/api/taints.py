"""Taints and tolerations, matched as upstream's v1 helpers do (scheduler, node lifecycle, DaemonSets)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE = "NoSchedule", "NoExecute", "PreferNoSchedule"


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Upstream `Toleration.ToleratesTaint`: an empty key with Exists tolerates every taint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def tolerated(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def first_untolerated(taints: Iterable[Mapping[str, Any]], tolerations: list[dict[str, Any]],
                      effects: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The first taint with one of `effects` that no toleration tolerates (upstream order: the node's)."""
    for taint in taints:
        if taint.get("effect") in effects and not tolerated(tolerations, taint):
            return taint
    return None
