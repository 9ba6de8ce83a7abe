"""Node lifecycle: notice nodes that stopped reporting, taint them, and evict their pods.

Every `node_monitor_period` each node is checked. Its last sign of life is the newer of its
Lease's renewTime (kube-node-lease/<node>) and its Ready condition's lastHeartbeatTime; older
than `node_monitor_grace_period`, its conditions become Unknown ("Kubelet stopped posting
node status.") and its pods not Ready. Conditions then map to taints, as upstream: Ready
False → node.kubernetes.io/not-ready, Unknown → node.kubernetes.io/unreachable, each both
NoExecute (evicts) and NoSchedule (keeps new pods off); memory/disk/PID pressure, network
unavailable and `spec.unschedulable` → their NoSchedule taints.

The one idea of the eviction half: it keeps no timers. A pod on a node with NoExecute taints
is due for deletion at the earliest `taint.timeAdded + tolerationSeconds` over the taints
(using, per taint, the first toleration that matches it): at once if a taint is not tolerated
at all, never if no matching toleration has tolerationSeconds. A reconcile deletes the pods
that are due and requeues the node for the next deadline, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from harness.api import conditions, errors, meta, registry
from harness.api.nodes import LEASE_NAMESPACE, ready_status
from harness.api.pods import is_ready
from harness.api.taints import tolerates
from harness.controllers.base import NODES, PODS, Context, Controller

log = logging.getLogger(__name__)

LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
NO_EXECUTE, NO_SCHEDULE = "NoExecute", "NoSchedule"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
#: (condition, status) → the NoSchedule taint it stands for (upstream's nodeConditionToTaintKeyStatusMap).
CONDITION_TAINTS = {("Ready", "False"): NOT_READY, ("Ready", "Unknown"): UNREACHABLE,
                    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
                    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
                    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
                    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable"}
#: The taints this controller owns: added and removed only here.
MANAGED = {(NOT_READY, NO_EXECUTE), (UNREACHABLE, NO_EXECUTE), (UNSCHEDULABLE, NO_SCHEDULE),
           *((key, NO_SCHEDULE) for key in CONDITION_TAINTS.values())}
#: The conditions set to Unknown when the kubelet goes quiet (upstream's list).
MONITORED = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
STOPPED = "Kubelet stopped posting node status."
NEVER = "Kubelet never posted node status."


def _time(text: Any) -> datetime | None:
    try:
        return meta.parse_time(str(text)) if text else None
    except ValueError:
        return None


def last_heartbeat(node: dict[str, Any], lease: dict[str, Any] | None) -> datetime | None:
    """The newer of the lease's renewTime and the Ready condition's lastHeartbeatTime."""
    times = [_time(((lease or {}).get("spec") or {}).get("renewTime")),
             _time((conditions.get(node, "Ready") or {}).get("lastHeartbeatTime"))]
    return max((t for t in times if t is not None), default=None)


def unknown_conditions(node: dict[str, Any], now: str) -> list[dict[str, Any]]:
    """The node's conditions with the monitored ones set to Unknown (missing ones added)."""
    held = (node.get("status") or {}).get("conditions") or []
    out = []
    for c in held:
        if c.get("type") in MONITORED and c.get("status") != "Unknown":
            c = {**c, "status": "Unknown", "reason": "NodeStatusUnknown", "message": STOPPED,
                 "lastTransitionTime": now}
        out.append(c)
    seen = {c.get("type") for c in held}
    created = node["metadata"].get("creationTimestamp") or now
    out += [{"type": t, "status": "Unknown", "reason": "NodeStatusNeverUpdated", "message": NEVER,
             "lastHeartbeatTime": created, "lastTransitionTime": now} for t in MONITORED if t not in seen]
    return out


def wanted_taints(node: dict[str, Any], now: str) -> list[dict[str, Any]]:
    """The node's taints with the ones this controller owns matching its conditions (new ones stamped `now`)."""
    status = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    want = {(key, NO_SCHEDULE) for (ctype, value), key in CONDITION_TAINTS.items() if status.get(ctype) == value}
    if (node.get("spec") or {}).get("unschedulable"):
        want.add((UNSCHEDULABLE, NO_SCHEDULE))
    no_execute = {"False": NOT_READY, "Unknown": UNREACHABLE}.get(str(status.get("Ready")))
    if no_execute is not None:
        want.add((no_execute, NO_EXECUTE))
    kept = [t for t in _taints(node) if (t.get("key"), t.get("effect")) not in MANAGED - want]
    have = {(t.get("key"), t.get("effect")) for t in kept}
    return kept + [{"key": key, "effect": effect, "timeAdded": now} for key, effect in sorted(want - have)]


def eviction_time(tolerations: Iterable[Mapping[str, Any]], taints: list[tuple[dict[str, Any], datetime]],
                  now: datetime) -> datetime | None:
    """When a pod must go from a node with these NoExecute taints (each with its start); None: never."""
    tolerations = list(tolerations)
    deadline: datetime | None = None
    for taint, since in taints:
        used = next((t for t in tolerations if tolerates(t, taint)), None)
        if used is None:
            return now
        seconds = used.get("tolerationSeconds")
        if seconds is None:
            continue
        due = since + timedelta(seconds=max(0, int(seconds)))
        deadline = due if deadline is None else min(deadline, due)
    return deadline


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    event_source = "node-controller"
    workers = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.now: Callable[[], datetime] = meta.now
        #: (node, taint key, value) → when first seen, for NoExecute taints without timeAdded.
        self.first_seen: dict[tuple[str, str, str], datetime] = {}

    def setup(self) -> None:
        self.ctx.informers(NODES).add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.ctx.informers(LEASES)
        self.ctx.informers(PODS).add_handlers(on_add=self._pod_changed,
                                              on_update=lambda old, new: self._pod_changed(new))

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        name = (pod.get("spec") or {}).get("nodeName")
        node = self.ctx.informers(NODES).cache.get(name) if name else None
        if node is None or meta.is_terminating(pod):
            return
        if ready_status(node) == "Unknown" or any(t.get("effect") == NO_EXECUTE for t in _taints(node)):
            self.queue.add(str(name))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(super().run())
            group.create_task(self._monitor())

    async def _monitor(self) -> None:
        while not self.queue.shutting_down:
            for node in self.ctx.informers(NODES).cache.list():
                self.enqueue(node)
            await asyncio.sleep(self.ctx.options.node_monitor_period)

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        node = self.ctx.informers(NODES).cache.get(key)
        if node is None:
            self.first_seen = {k: v for k, v in self.first_seen.items() if k[0] != key}
            return
        now = self.now()
        node = await self._monitor_health(node, now)
        node = await self._sync_taints(node, now)
        if ready_status(node) == "Unknown":
            await self._mark_pods_not_ready(key, now)
        await self._evict(node, now)

    def _stale(self, node: dict[str, Any], now: datetime) -> bool:
        lease = self.ctx.informers(LEASES).cache.get(meta.object_key(LEASE_NAMESPACE, meta.name_of(node)))
        last, grace = last_heartbeat(node, lease), self.ctx.options.node_monitor_grace_period
        if last is None:
            last, grace = _time(node["metadata"].get("creationTimestamp")) or now, \
                self.ctx.options.node_startup_grace_period
        return (now - last).total_seconds() > grace

    async def _monitor_health(self, node: dict[str, Any], now: datetime) -> dict[str, Any]:
        if not self._stale(node, now):
            return node
        unknown = unknown_conditions(node, meta.format_time(now))
        if unknown == (node.get("status") or {}).get("conditions"):
            return node
        name = node["metadata"]["name"]
        log.info("node %s stopped posting status: marking its conditions Unknown", name)
        updated = await self.ctx.client.update_status(
            NODES, {**node, "status": {**(node.get("status") or {}), "conditions": unknown}})
        if ready_status(node) == "True":
            self.ctx.recorder.event(node, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        return updated

    async def _sync_taints(self, node: dict[str, Any], now: datetime) -> dict[str, Any]:
        ready = ready_status(node)
        if ready is None:
            return node  # not reported yet: the startup grace period decides
        taints = _taints(node)
        wanted = wanted_taints(node, meta.format_time(now))
        if wanted == taints:
            return node
        name = node["metadata"]["name"]
        patch = {"spec": {"taints": wanted or None},
                 "metadata": {"resourceVersion": node["metadata"].get("resourceVersion")}}
        response = await self.ctx.client.patch(NODES, name, patch)
        log.info("node %s (Ready=%s): taints now %s", name, ready, [t.get("key") for t in wanted])
        rv = (response.get("metadata") or {}).get("resourceVersion") or node["metadata"].get("resourceVersion")
        return {**node, "metadata": {**node["metadata"], "resourceVersion": rv},
                "spec": {**(node.get("spec") or {}), "taints": wanted}}

    async def _mark_pods_not_ready(self, node_name: str, now: datetime) -> None:
        """Upstream's MarkPodsNotReady: nobody else will say that these pods stopped serving."""
        for pod in self.ctx.informers(PODS).cache.by_index("node", node_name):
            if not is_ready(pod):
                continue
            status = pod.get("status") or {}
            marked = [{**c, "status": "False", "lastTransitionTime": meta.format_time(now)}
                      if c.get("type") == "Ready" else c for c in status.get("conditions") or []]
            try:
                await self.ctx.client.update_status(PODS, {**pod, "status": {**status, "conditions": marked}})
            except (errors.NotFound, errors.Conflict):
                continue  # gone, or changed: the next period looks again
            self.ctx.recorder.event(pod, "Warning", "NodeNotReady", "Node is not ready")

    # -- taint-based eviction --------------------------------------------------------------

    def _no_execute(self, node: dict[str, Any], now: datetime) -> list[tuple[dict[str, Any], datetime]]:
        """The node's NoExecute taints, each with when it started (timeAdded, else when first seen)."""
        name = node["metadata"]["name"]
        taints = [t for t in _taints(node) if t.get("effect") == NO_EXECUTE]
        keys = {(name, str(t.get("key")), str(t.get("value") or "")): t for t in taints}
        self.first_seen = {k: v for k, v in self.first_seen.items() if k[0] != name or k in keys}
        return [(t, _time(t.get("timeAdded")) or self.first_seen.setdefault(k, now)) for k, t in keys.items()]

    async def _evict(self, node: dict[str, Any], now: datetime) -> None:
        name = node["metadata"]["name"]
        taints = self._no_execute(node, now)
        if not taints:
            return
        next_due: datetime | None = None
        for pod in self.ctx.informers(PODS).cache.by_index("node", name):
            if meta.is_terminating(pod):
                continue
            due = eviction_time((pod.get("spec") or {}).get("tolerations") or [], taints, now)
            if due is None:
                continue
            if due <= now:
                await self._evict_pod(pod, name)
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None:
            self.queue.add_after(name, (next_due - now).total_seconds())

    async def _evict_pod(self, pod: dict[str, Any], node: str) -> None:
        md = pod["metadata"]
        log.info("evicting pod %s/%s from node %s (NoExecute taint)", md["namespace"], md["name"], node)
        self.ctx.recorder.event(pod, "Normal", "TaintManagerEviction",
                                f"Marking for deletion Pod {md['namespace']}/{md['name']}")
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.ctx.client.delete(PODS, md["name"], md["namespace"], preconditions={"uid": md["uid"]})


def _taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    return list((node.get("spec") or {}).get("taints") or [])
