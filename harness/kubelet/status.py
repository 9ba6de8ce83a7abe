"""A pod's `status` computed from what the runtime reports, as upstream's kubelet computes it.

Pure functions: the sync loop gathers, for every container of the spec, its latest and
previous attempts (`ContainerInfo`), why it is waiting if it is, and what its probes say;
`pod_status` turns that into phase, conditions and container statuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.api.conditions import transition_time
from harness.api.pods import TERMINAL_PHASES
from harness.kubelet.runtime.types import ContainerInfo

RUNTIME_SCHEME = "runc://"


@dataclass
class ContainerView:
    """One container of the spec, as the kubelet sees it during a sync."""

    spec: dict[str, Any]
    current: ContainerInfo | None = None   # the latest attempt
    previous: ContainerInfo | None = None  # the attempt before it
    waiting: tuple[str, str] | None = None  # (reason, message): CrashLoopBackOff, ErrImagePull, ...
    ready: bool = False
    started: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.current is not None and self.current.state == "running"

    @property
    def exited(self) -> bool:
        return self.current is not None and self.current.state == "exited"

    @property
    def succeeded(self) -> bool:
        return self.exited and self.current is not None and self.current.exit_code == 0


def seconds(stamp: str | None) -> str | None:
    """An API time (`metav1.Time`, whole seconds) from the runtime's RFC 3339 time with nanoseconds."""
    if not stamp:
        return None
    head = stamp.split(".", 1)[0].rstrip("Z")
    return head + "Z"


def terminated(info: ContainerInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"exitCode": info.exit_code if info.exit_code is not None else 0,
                           "reason": info.reason or ("Completed" if info.exit_code == 0 else "Error"),
                           "startedAt": seconds(info.started_at), "finishedAt": seconds(info.finished_at),
                           "containerID": RUNTIME_SCHEME + info.id}
    if info.exit_code is not None and info.exit_code > 128 and info.reason != "StartError":
        out["signal"] = info.exit_code - 128
    if info.message:
        out["message"] = info.message
    return out


def container_status(view: ContainerView, *, default_waiting: str = "ContainerCreating") -> dict[str, Any]:
    cur = view.current
    status: dict[str, Any] = {"name": view.name, "image": view.spec.get("image", ""),
                              "imageID": cur.image_id if cur else "", "restartCount": cur.attempt if cur else 0,
                              "ready": view.ready, "started": view.started}
    if cur is not None:
        status["containerID"] = RUNTIME_SCHEME + cur.id
    last: dict[str, Any] = {}
    if cur is not None and cur.state == "running":
        state: dict[str, Any] = {"running": {"startedAt": seconds(cur.started_at)}}
        if view.previous is not None:
            last = {"terminated": terminated(view.previous)}
    elif view.waiting is not None:
        reason, message = view.waiting
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if cur is not None and cur.state == "exited":
            last = {"terminated": terminated(cur)}
        elif view.previous is not None:
            last = {"terminated": terminated(view.previous)}
    elif cur is not None and cur.state == "exited":
        state = {"terminated": terminated(cur)}
        if view.previous is not None:
            last = {"terminated": terminated(view.previous)}
    else:
        state = {"waiting": {"reason": default_waiting}}
    status["state"] = state
    status["lastState"] = last
    return status


def phase(restart_policy: str, init: list[ContainerView], main: list[ContainerView]) -> str:
    """Upstream's getPhase: Pending until init is done and every container started once; then by policy."""
    for view in init:
        if view.succeeded:
            continue
        if view.exited and restart_policy == "Never":
            return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for view in main:
        if view.running:
            running += 1
        elif view.exited:
            stopped += 1
            if view.succeeded:
                succeeded += 1
        elif view.current is not None and view.current.state == "unknown":
            return "Unknown"
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(ctype: str, ok: bool, previous: dict[str, dict[str, Any]], now: str, reason: str = "",
               message: str = "") -> dict[str, Any]:
    status = "True" if ok else "False"
    cond: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None,
                            "lastTransitionTime": transition_time(previous.get(ctype), status, now)}
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def conditions(pod: dict[str, Any], pod_phase: str, init: list[ContainerView], main: list[ContainerView], *,
               sandbox_ready: bool, now: str) -> list[dict[str, Any]]:
    previous = {c.get("type", ""): c for c in (pod.get("status") or {}).get("conditions") or []}
    out = [_condition("PodReadyToStartContainers", sandbox_ready, previous, now)]
    unready_init = [v.name for v in init if not v.succeeded]
    out.append(_condition("Initialized", not unready_init, previous, now, "ContainersNotInitialized",
                          f"containers with incomplete status: [{' '.join(unready_init)}]"))
    if pod_phase in TERMINAL_PHASES:
        reason, unready = "PodCompleted", []
        ready = False
    else:
        unready = [v.name for v in main if not v.ready]
        ready = not unready and not unready_init
        reason = "ContainersNotReady"
    message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    out.append(_condition("ContainersReady", ready, previous, now, reason, message))
    gates = [g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []]
    missing = [g for g in gates if (previous.get(g or "") or {}).get("status") != "True"]
    pod_ready = ready and not missing
    ready_reason, ready_message = reason, message
    if ready and missing:
        ready_reason, ready_message = "ReadinessGatesNotReady", f"corresponding condition of pod readiness gate " \
                                                                f'"{missing[0]}" does not exist.'
    out.append(_condition("Ready", pod_ready, previous, now, ready_reason, ready_message))
    scheduled = previous.get("PodScheduled") or {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                                 "lastTransitionTime": now}
    out.append(scheduled)
    for ctype, cond in previous.items():  # conditions others own (readiness gates, DisruptionTarget, ...)
        if ctype not in {c["type"] for c in out}:
            out.append(cond)
    return out


def pod_status(pod: dict[str, Any], init: list[ContainerView], main: list[ContainerView], *, pod_ip: str,
               host_ip: str, start_time: str, sandbox_ready: bool, now: str,
               message: str = "", reason: str = "") -> dict[str, Any]:
    spec = pod.get("spec") or {}
    pod_phase = phase(spec.get("restartPolicy") or "Always", init, main)
    init_done = all(v.succeeded for v in init)
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": conditions(pod, pod_phase, init, main, sandbox_ready=sandbox_ready, now=now),
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "startTime": start_time,
        "containerStatuses": [container_status(v, default_waiting="ContainerCreating" if init_done
                                               else "PodInitializing") for v in main],
        "qosClass": (pod.get("status") or {}).get("qosClass") or qos_class(pod),
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if init:
        status["initContainerStatuses"] = [container_status(v, default_waiting="PodInitializing"
                                                            if i else "ContainerCreating")
                                           for i, v in enumerate(init)]
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    return status


def qos_class(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    requests_any = limits_any = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        requests_any |= bool(req)
        limits_any |= bool(lim)
        for name in ("cpu", "memory"):
            if name not in lim or (name in req and req[name] != lim[name]):
                guaranteed = False
    if not requests_any and not limits_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
