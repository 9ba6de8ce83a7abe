"""Printers for the core kinds whose columns are computed, not copied: pods, nodes,
services, endpoints and events.

The pod STATUS column is the one users read most, so `_pod_status` follows upstream's
printPod step by step: the phase (or status.reason), then the first init container that
has not finished (`Init:1/2`, `Init:CrashLoopBackOff`), then the last app container
reporting a waiting or terminated reason, then `Terminating` for a pod being deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harness.api import conditions, meta
from harness.api.meta import Obj
from harness.api.nodes import address_of, ready_status
from harness.api.pods import is_ready, is_terminal
from harness.apiserver.printers import (
    Printer,
    age,
    age_col,
    col,
    dig,
    doc,
    format_labels,
    name_col,
    parse_time,
    since,
)

# -- pods -----------------------------------------------------------------------------------


@dataclass
class _Restarts:
    """Restart count and the latest restart time over a set of container statuses."""

    count: int = 0
    last: datetime | None = None

    def add(self, status: Obj) -> None:
        self.count += int(status.get("restartCount") or 0)
        finished = parse_time(dig(status, "lastState", "terminated", "finishedAt"))
        if finished is not None and (self.last is None or finished > self.last):
            self.last = finished


def _terminated_reason(terminated: Obj, prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + terminated["reason"]
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _is_sidecar(spec: Obj | None) -> bool:
    return (spec or {}).get("restartPolicy") == "Always"


def _init_status(pod: Obj, reason: str, restarts: _Restarts, sidecars: _Restarts) -> tuple[str, int, bool]:
    """Walk init containers: the reason while initializing, ready sidecars, and whether initializing."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    ready = 0
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts.add(cs)
        sidecar = _is_sidecar(init_specs.get(cs.get("name")))
        if sidecar:
            sidecars.add(cs)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and int(terminated.get("exitCode") or 0) == 0:
            continue
        if sidecar and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if terminated:
            return _terminated_reason(terminated, "Init:"), ready, True
        if waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return "Init:" + waiting["reason"], ready, True
        return f"Init:{i}/{len(init_specs)}", ready, True
    return reason, ready, False


def _containers_status(pod: Obj, reason: str, restarts: _Restarts) -> tuple[str, int]:
    """Walk app containers, last first: the reason to show and how many are ready."""
    status = pod.get("status") or {}
    ready, running = 0, False
    for cs in reversed(status.get("containerStatuses") or []):
        restarts.add(cs)
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            reason = _terminated_reason(terminated)
        elif cs.get("ready") and state.get("running") is not None:
            running = True
            ready += 1
    if reason == "Completed" and running:
        reason = "Running" if is_ready(pod) else "NotReady"
    return reason, ready


def _pod_status(pod: Obj) -> tuple[str, int, _Restarts]:
    """(STATUS, ready containers, restarts) as `kubectl get pods` shows them."""
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    if (conditions.get(pod, "PodScheduled") or {}).get("reason") == "SchedulingGated":
        reason = "SchedulingGated"
    restarts, sidecars = _Restarts(), _Restarts()
    reason, ready, initializing = _init_status(pod, reason, restarts, sidecars)
    if not initializing or conditions.is_true(pod, "Initialized"):
        restarts = sidecars
        reason, ready_apps = _containers_status(pod, reason, restarts)
        ready += ready_apps
    if meta.is_terminating(pod):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif not is_terminal(pod):
            reason = "Terminating"
    return reason, ready, restarts


def pod_cells(pod: Obj, now: datetime) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason, ready, restarts = _pod_status(pod)
    total = len(spec.get("containers") or []) + sum(_is_sidecar(c) for c in spec.get("initContainers") or [])
    restarts_text = str(restarts.count)
    if restarts.count and restarts.last is not None:
        restarts_text = f"{restarts.count} ({since(restarts.last, now)} ago)"
    pod_ips = status.get("podIPs") or []
    pod_ip = (pod_ips[0].get("ip") if pod_ips else status.get("podIP")) or "<none>"
    gates = spec.get("readinessGates") or []
    readiness = "<none>"
    if gates:
        readiness = f"{sum(conditions.is_true(pod, g.get('conditionType')) for g in gates)}/{len(gates)}"
    return [dig(pod, "metadata", "name", default=""), f"{ready}/{total}", reason, restarts_text, age(pod, now),
            pod_ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", readiness]


def pod_conditions(pod: Obj) -> list[dict[str, str]]:
    """Row conditions upstream sets on finished pods."""
    phase = dig(pod, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return []


# -- nodes ----------------------------------------------------------------------------------


def node_status(node: Obj) -> str:
    """Ready / NotReady / Unknown, plus SchedulingDisabled when cordoned."""
    ready = ready_status(node)
    words = ["Unknown" if ready is None else "Ready" if ready == "True" else "NotReady"]
    if dig(node, "spec", "unschedulable"):
        words.append("SchedulingDisabled")
    return ",".join(words)


def node_roles(node: Obj) -> str:
    roles = set()
    for key, value in (dig(node, "metadata", "labels", default={})).items():
        if key.startswith("node-role.kubernetes.io/") and key.removeprefix("node-role.kubernetes.io/"):
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(node: Obj, kind: str) -> str:
    address = address_of(node, kind)
    return "<none>" if address is None else address


def _node_cells(node: Obj, now: datetime) -> list[Any]:
    info = dig(node, "status", "nodeInfo", default={})
    return [dig(node, "metadata", "name", default=""), node_status(node), node_roles(node), age(node, now),
            info.get("kubeletVersion", ""), _node_address(node, "InternalIP"), _node_address(node, "ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


# -- services and endpoints -----------------------------------------------------------------


def _external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    external = spec.get("externalIPs") or []
    svc_type = spec.get("type") or "ClusterIP"
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if svc_type == "LoadBalancer":
        ingress = dig(svc, "status", "loadBalancer", "ingress", default=[])
        lb = [i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")]
        return ",".join([*lb, *external]) or "<pending>"
    if svc_type == "ExternalName":
        return str(spec.get("externalName", ""))
    return "<unknown>"


def _ports(svc: Obj) -> str:
    pieces = []
    for p in dig(svc, "spec", "ports", default=[]):
        node_port = f":{p['nodePort']}" if p.get("nodePort") else ""
        pieces.append(f"{p.get('port', 0)}{node_port}/{p.get('protocol') or 'TCP'}")
    return ",".join(pieces) or "<none>"


def _service_cells(svc: Obj, now: datetime) -> list[Any]:
    spec = svc.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [dig(svc, "metadata", "name", default=""), spec.get("type") or "ClusterIP",
            cluster_ips[0] if cluster_ips else "<none>", _external_ip(svc), _ports(svc), age(svc, now),
            format_labels(spec.get("selector"))]


def format_endpoints(endpoints: Obj) -> str:
    """Up to three `ip:port` pairs, then "+ N more..."; "<none>" when there are none."""
    subsets = endpoints.get("subsets") or []
    if not subsets:
        return "<none>"
    shown: list[str] = []
    total = 0
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        pairs = list(addresses) if not ports else [
            f"[{ip}]:{p.get('port')}" if ":" in ip else f"{ip}:{p.get('port')}" for p in ports for ip in addresses]
        total += len(pairs)
        shown.extend(pairs[: max(0, 3 - len(shown))])
    text = ",".join(shown)
    return f"{text} + {total - 3} more..." if total > 3 else text


# -- events ---------------------------------------------------------------------------------


def _event_cells(ev: Obj, now: datetime) -> list[Any]:
    first = since(ev.get("firstTimestamp"), now) if ev.get("firstTimestamp") else since(ev.get("eventTime"), now)
    last = since(ev.get("lastTimestamp"), now) if ev.get("lastTimestamp") else first
    count = ev.get("count") or 0
    series = ev.get("series")
    if series:
        last, count = since(series.get("lastObservedTime"), now), series.get("count") or 0
    elif not count:
        count = 1
    involved = ev.get("involvedObject") or {}
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = ev.get("source") or {}
    component = source.get("component") or ev.get("reportingComponent") or ""
    host = source.get("host") or ev.get("reportingInstance") or ""
    return [last, ev.get("type", ""), ev.get("reason", ""), target, involved.get("fieldPath", ""),
            f"{component}, {host}" if host else component, str(ev.get("message", "")).strip(), first, count,
            dig(ev, "metadata", "name", default="")]


_EVENT = "CoreV1Event"

CORE: dict[str, Printer] = {
    "Pod": Printer((
        name_col(), col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        col("Status", "The aggregate status of the containers in this pod."),
        col("Restarts", "The number of times the containers in this pod have been restarted and when the "
                        "last container in this pod has restarted."),
        age_col(), col("IP", doc("V1PodStatus", "podIP"), priority=1),
        col("Node", doc("V1PodSpec", "nodeName"), priority=1),
        col("Nominated Node", doc("V1PodStatus", "nominatedNodeName"), priority=1),
        col("Readiness Gates", doc("V1PodSpec", "readinessGates"), priority=1)), pod_cells),
    "Node": Printer((
        name_col(), col("Status", "The status of the node"), col("Roles", "The roles of the node"), age_col(),
        col("Version", doc("V1NodeSystemInfo", "kubeletVersion")),
        col("Internal-IP", doc("V1NodeStatus", "addresses"), priority=1),
        col("External-IP", doc("V1NodeStatus", "addresses"), priority=1),
        col("OS-Image", doc("V1NodeSystemInfo", "osImage"), priority=1),
        col("Kernel-Version", doc("V1NodeSystemInfo", "kernelVersion"), priority=1),
        col("Container-Runtime", doc("V1NodeSystemInfo", "containerRuntimeVersion"), priority=1)), _node_cells),
    "Service": Printer((
        name_col(), col("Type", doc("V1ServiceSpec", "type")), col("Cluster-IP", doc("V1ServiceSpec", "clusterIP")),
        col("External-IP", doc("V1ServiceSpec", "externalIPs")), col("Port(s)", doc("V1ServiceSpec", "ports")),
        age_col(), col("Selector", doc("V1ServiceSpec", "selector"), priority=1)), _service_cells),
    "Endpoints": Printer((name_col(), col("Endpoints", doc("V1Endpoints", "subsets")), age_col()),
                         lambda o, now: [dig(o, "metadata", "name", default=""), format_endpoints(o), age(o, now)]),
    "Event": Printer((
        col("Last Seen", doc(_EVENT, "lastTimestamp")), col("Type", doc(_EVENT, "type")),
        col("Reason", doc(_EVENT, "reason")), col("Object", doc(_EVENT, "involvedObject")),
        col("Subobject", doc("V1ObjectReference", "fieldPath"), priority=1),
        col("Source", doc(_EVENT, "source"), priority=1), col("Message", doc(_EVENT, "message")),
        col("First Seen", doc(_EVENT, "firstTimestamp"), priority=1),
        col("Count", doc(_EVENT, "count"), priority=1), name_col(priority=1)), _event_cells),
}
