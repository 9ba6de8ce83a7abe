"""Conditions: the `status.conditions` list of pods, nodes and workloads, read and written by type.

The one idea (upstream's `podutil.UpdatePodCondition`, `meta.SetStatusCondition`): a
condition's `lastTransitionTime` moves only when its status changes; reporting the same
status again keeps the time it first took that status. Lookups return the condition as it
is in the object, which callers treat as read-only like the object itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.api.meta import Obj

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def find(status: Mapping[str, Any] | None, ctype: str) -> Obj | None:
    """The condition of type `ctype` in a `status` (the first, if listed twice), or None."""
    return next((c for c in (status or {}).get("conditions") or () if c.get("type") == ctype), None)


def get(obj: Mapping[str, Any], ctype: str) -> Obj | None:
    """The condition of type `ctype` in an object's status, or None."""
    return find(obj.get("status"), ctype)


def is_true(obj: Mapping[str, Any], ctype: str) -> bool:
    """Whether the object has the condition `ctype` with status True."""
    return (get(obj, ctype) or {}).get("status") == TRUE


def transition_time(previous: Mapping[str, Any] | None, status: str, now: str) -> str:
    """The `lastTransitionTime` of a condition now in `status`: the previous one's while its status holds."""
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        return str(previous["lastTransitionTime"])
    return now


def replace(status: Obj, condition: Obj) -> None:
    """Put `condition` in `status` in place of any of its type, at the end (as upstream's setters append)."""
    remove(status, condition["type"])
    status.setdefault("conditions", []).append(condition)


def remove(status: Obj, ctype: str) -> None:
    """Drop the conditions of type `ctype`; a list left empty goes too."""
    kept = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)
