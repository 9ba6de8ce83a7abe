"""What a pod's status says about it, read the same way by every component (upstream's `pkg/api/v1/pod`).

A pod is ready when its Ready condition is True; available once it has been ready for
`minReadySeconds`; terminal once its phase is Succeeded or Failed (it never runs again);
active while it is neither terminal nor being deleted — the pods a controller counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from harness.api import conditions, meta

READY = "Ready"
SUCCEEDED, FAILED = "Succeeded", "Failed"
#: The phases a pod never leaves.
TERMINAL_PHASES = (SUCCEEDED, FAILED)


def phase_of(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_terminal(pod: Mapping[str, Any]) -> bool:
    """Succeeded or Failed: its containers are done for good."""
    return phase_of(pod) in TERMINAL_PHASES


def is_active(pod: Mapping[str, Any]) -> bool:
    """Neither terminal nor being deleted (upstream's `controller.IsPodActive`)."""
    return not meta.is_terminating(pod) and not is_terminal(pod)


def is_ready(pod: Mapping[str, Any]) -> bool:
    """The Ready condition is True (upstream's `IsPodReady`)."""
    return conditions.is_true(pod, READY)


def is_available(pod: Mapping[str, Any], min_ready_seconds: int, now: datetime) -> bool:
    """Ready, and for at least `min_ready_seconds` by its Ready condition's lastTransitionTime (`IsPodAvailable`)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds == 0:
        return True
    since = (conditions.get(pod, READY) or {}).get("lastTransitionTime")
    return bool(since) and (now - meta.parse_time(str(since))).total_seconds() >= min_ready_seconds
