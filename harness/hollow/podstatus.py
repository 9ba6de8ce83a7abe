"""The pod statuses a hollow kubelet writes: Running when a pod lands, terminated when it is deleted.

Pure functions from a pod (as read) and the time to its new `status`. The one idea: the
status is merged into what is there, never rebuilt from nothing — conditions merge by type
(the scheduler's PodScheduled stays as it wrote it) and a condition keeps its
lastTransitionTime while its status does not change.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from harness.api import conditions, meta, pods

RUNNING_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def merge_conditions(current: list[dict[str, Any]], wanted: list[dict[str, Any]], *,
                     now: str) -> list[dict[str, Any]]:
    """`current` with each wanted condition set by type (appended if new); transition time moves on change."""
    out = [dict(c) for c in current]
    index = {c.get("type"): i for i, c in enumerate(out)}
    for cond in wanted:
        i = index.get(cond["type"])
        before = out[i] if i is not None else {}
        merged = {"lastProbeTime": None, **before, **cond}
        merged["lastTransitionTime"] = conditions.transition_time(before, cond["status"], now)
        if i is None:
            index[cond["type"]] = len(out)
            out.append(merged)
        else:
            out[i] = merged
    return out


def container_id(pod: dict[str, Any], name: str) -> str:
    return f"hollow://{pod['metadata'].get('uid', '')}-{name}"


def image_id(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{image.split('@')[0]}@sha256:{digest}"


def _container_status(pod: dict[str, Any], ctr: dict[str, Any], state: dict[str, Any], *,
                      ready: bool) -> dict[str, Any]:
    image = str(ctr.get("image") or "")
    return {"name": ctr["name"], "image": image, "imageID": image_id(image),
            "containerID": container_id(pod, ctr["name"]), "ready": ready, "started": ready,
            "restartCount": 0, "state": state, "lastState": {}}


def needs_running(pod: dict[str, Any]) -> bool:
    """A pod this kubelet should still start: bound, not deleted, not yet Running or finished."""
    return not meta.is_terminating(pod) and not pods.is_terminal(pod) and pods.phase_of(pod) != "Running"


def all_terminated(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    done = {s.get("name") for s in status.get("containerStatuses") or []
            if "terminated" in (s.get("state") or {})}
    return all(n in done for n in names)


def running_status(pod: dict[str, Any], *, host_ip: str, pod_ip: str, now: str) -> dict[str, Any]:
    """The pod's status once its containers run here: phase Running, every container ready."""
    status = copy.deepcopy(pod.get("status") or {})
    spec = pod.get("spec") or {}
    status["phase"] = "Running"
    wanted = [{"type": t, "status": "True"} for t in RUNNING_CONDITIONS]
    current = status.get("conditions") or []
    if any(c.get("type") == "PodScheduled" for c in current):
        wanted = wanted[1:]  # the scheduler's word on scheduling stands
    status["conditions"] = merge_conditions(current, wanted, now=now)
    status["hostIP"] = host_ip
    status["hostIPs"] = [{"ip": host_ip}]
    status["podIP"] = pod_ip
    status["podIPs"] = [{"ip": pod_ip}]
    status.setdefault("startTime", now)
    started = {"running": {"startedAt": now}}
    status["containerStatuses"] = [_container_status(pod, c, started, ready=True)
                                   for c in spec.get("containers") or []]
    if spec.get("initContainers"):
        done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                               "containerID": ""}}
        status["initContainerStatuses"] = []
        for c in spec["initContainers"]:
            entry = _container_status(pod, c, copy.deepcopy(done), ready=True)
            entry["state"]["terminated"]["containerID"] = entry["containerID"]
            entry["started"] = False
            status["initContainerStatuses"].append(entry)
    return status


def terminated_status(pod: dict[str, Any], *, now: str) -> dict[str, Any]:
    """The pod's status once its containers have stopped for its deletion: each exited 0, phase Succeeded."""
    status = copy.deepcopy(pod.get("status") or {})
    previous = {s.get("name"): s for s in status.get("containerStatuses") or []}
    out = []
    for ctr in (pod.get("spec") or {}).get("containers") or []:
        before = previous.get(ctr["name"]) or {}
        started_at = ((before.get("state") or {}).get("running") or {}).get("startedAt") or now
        state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started_at,
                                "finishedAt": now, "containerID": container_id(pod, ctr["name"])}}
        entry = _container_status(pod, ctr, state, ready=False)
        if before:
            entry["lastState"] = before.get("lastState") or {}
        out.append(entry)
    status["containerStatuses"] = out
    status["phase"] = "Succeeded"
    stopped = [{"type": t, "status": "False", "reason": "PodCompleted"} for t in ("ContainersReady", "Ready")]
    status["conditions"] = merge_conditions(status.get("conditions") or [], stopped, now=now)
    return status
