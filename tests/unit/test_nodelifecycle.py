"""Node lifecycle: seed nodes, leases and pods, fix the clock, reconcile, assert the exact writes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from harness.api import meta
from harness.controllers.base import NODES, PODS
from harness.controllers.nodelifecycle import (
    LEASES,
    NOT_READY,
    UNREACHABLE,
    NodeLifecycleController,
    eviction_time,
)
from tests.unit.fakes import context

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> str:
    return meta.format_time(T0 + timedelta(seconds=seconds))


def node(name: str = "n1", *, ready: str | None = "True", heartbeat: float = 0,
         taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    conditions = [{"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                   "lastHeartbeatTime": at(heartbeat), "lastTransitionTime": at(-1000)}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready, "reason": "KubeletReady", "lastHeartbeatTime":
                           at(heartbeat), "lastTransitionTime": at(-1000)})
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "4", "creationTimestamp": at(-2000)},
            "spec": {"taints": taints} if taints else {}, "status": {"conditions": conditions}}


def lease(name: str, renewed: float) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "renewTime": at(renewed).replace("Z", ".000000Z")}}


def pod(name: str, *tolerations: dict[str, Any], ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "2"}
    if terminating:
        md["deletionTimestamp"] = at(0)
    return {"metadata": md, "spec": {"nodeName": "n1", "tolerations": list(tolerations)},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def tolerate(key: str, seconds: int | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"key": key, "operator": "Exists", "effect": "NoExecute"}
    if seconds is not None:
        t["tolerationSeconds"] = seconds
    return t


def controller(now: float) -> tuple[NodeLifecycleController, Any, Any, Any]:
    ctx, client, informers, recorder = context()
    c = NodeLifecycleController(ctx)
    c.now = lambda: T0 + timedelta(seconds=now)
    return c, client, informers, recorder


async def test_a_node_silent_past_the_grace_period_goes_unknown_tainted_and_its_pods_not_ready() -> None:
    c, client, informers, recorder = controller(now=60)  # grace period 50 s
    informers.seed(NODES, node(heartbeat=0))
    informers.seed(LEASES, lease("n1", renewed=5))
    informers.seed(PODS, pod("web", tolerate(UNREACHABLE, 300)))
    await c.reconcile("n1")
    (status, taint, pod_status) = client.actions
    assert status[:3] == ("update", "nodes", "status")
    conditions = {c["type"]: c for c in status[3]["status"]["conditions"]}
    assert conditions["Ready"] == {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                                   "message": "Kubelet stopped posting node status.",
                                   "lastHeartbeatTime": at(0), "lastTransitionTime": at(60)}
    assert conditions["MemoryPressure"]["status"] == "Unknown"
    # Upstream adds the monitored conditions the kubelet never posted.
    assert conditions["DiskPressure"]["reason"] == "NodeStatusNeverUpdated"
    assert taint == ("patch", "nodes", "", "n1", {
        "spec": {"taints": [{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": at(60)},
                            {"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": at(60)}]},
        "metadata": {"resourceVersion": "4"}})
    assert pod_status[:3] == ("update", "pods", "status")
    assert pod_status[3]["status"]["conditions"] == [{"type": "Ready", "status": "False",
                                                      "lastTransitionTime": at(60)}]
    assert recorder.events == [("Normal", "NodeNotReady"), ("Warning", "NodeNotReady")]
    assert "n1" in c.queue._waiting  # back when the pod's 300 s toleration runs out


async def test_a_fresh_lease_keeps_a_node_whose_status_is_old() -> None:
    c, client, informers, _ = controller(now=600)
    informers.seed(NODES, node(heartbeat=0))
    informers.seed(LEASES, lease("n1", renewed=590))
    await c.reconcile("n1")
    assert client.actions == []


async def test_a_node_that_never_reported_gets_the_startup_grace_period() -> None:
    c, client, informers, _ = controller(now=-2000 + 59)
    informers.seed(NODES, node(ready=None))
    await c.reconcile("n1")
    assert client.actions == []
    c.now = lambda: T0 + timedelta(seconds=-2000 + 61)
    await c.reconcile("n1")
    status = client.actions[0][3]["status"]["conditions"]
    assert {c["type"]: c["reason"] for c in status}["Ready"] == "NodeStatusNeverUpdated"
    assert client.actions[1][4]["spec"]["taints"][0]["key"] == UNREACHABLE


async def test_ready_false_means_the_not_ready_taint_and_ready_again_removes_it() -> None:
    c, client, informers, _ = controller(now=10)
    informers.seed(NODES, node(ready="False", heartbeat=5))
    await c.reconcile("n1")
    assert client.actions == [("patch", "nodes", "", "n1", {
        "spec": {"taints": [{"key": NOT_READY, "effect": "NoExecute", "timeAdded": at(10)},
                            {"key": NOT_READY, "effect": "NoSchedule", "timeAdded": at(10)}]},
        "metadata": {"resourceVersion": "4"}})]
    client.actions.clear()
    own = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    informers.seed(NODES, node(heartbeat=5, taints=[own, {"key": NOT_READY, "effect": "NoExecute"},
                                                    {"key": NOT_READY, "effect": "NoSchedule"}]))
    await c.reconcile("n1")
    assert client.actions == [("patch", "nodes", "", "n1", {"spec": {"taints": [own]},
                                                             "metadata": {"resourceVersion": "4"}})]


async def test_pressure_conditions_and_cordoning_map_to_no_schedule_taints() -> None:
    c, client, informers, _ = controller(now=10)
    pressured = node(heartbeat=5)
    pressured["status"]["conditions"][0]["status"] = "True"  # MemoryPressure
    pressured["spec"] = {"unschedulable": True, "taints": [{"key": "node.kubernetes.io/disk-pressure",
                                                           "effect": "NoSchedule", "timeAdded": at(0)}]}
    informers.seed(NODES, pressured)
    await c.reconcile("n1")
    ((_, _, _, _, patch),) = client.actions
    assert patch["spec"]["taints"] == [
        {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule", "timeAdded": at(10)},
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": at(10)}]


async def test_pods_are_evicted_when_their_toleration_of_the_taint_runs_out() -> None:
    c, client, informers, recorder = controller(now=100)
    taint = {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": at(0)}
    informers.seed(NODES, node(ready="Unknown", heartbeat=-100,
                               taints=[taint, {"key": UNREACHABLE, "effect": "NoSchedule"}]))
    informers.seed(LEASES, lease("n1", renewed=95))  # back, but its kubelet has not said Ready yet
    informers.seed(PODS, pod("intolerant", ready=False), pod("short", tolerate(UNREACHABLE, 60), ready=False),
                   pod("long", tolerate(UNREACHABLE, 300), ready=False),
                   pod("forever", tolerate(UNREACHABLE), ready=False),
                   pod("leaving", ready=False, terminating=True))
    await c.reconcile("n1")
    assert client.actions == [("delete", "pods", "ns", "intolerant"), ("delete", "pods", "ns", "short")]
    assert recorder.events == [("Normal", "TaintManagerEviction")] * 2
    ready_at, _ = c.queue._waiting["n1"]
    assert abs(ready_at - asyncio.get_running_loop().time() - 200) < 1  # "long" is due at 300 s


def test_eviction_time_takes_the_earliest_deadline_over_the_taints() -> None:
    now = T0 + timedelta(seconds=10)
    unreachable = ({"key": UNREACHABLE, "effect": "NoExecute"}, T0)
    custom = ({"key": "maintenance", "effect": "NoExecute"}, T0 + timedelta(seconds=5))
    assert eviction_time([], [unreachable], now) == now
    assert eviction_time([tolerate(UNREACHABLE)], [unreachable], now) is None
    both = [tolerate(UNREACHABLE, 300), {"operator": "Exists", "tolerationSeconds": 30}]
    assert eviction_time(both, [unreachable, custom], now) == T0 + timedelta(seconds=35)
    assert eviction_time([tolerate(UNREACHABLE, -5)], [unreachable], now) == T0


async def test_pod_changes_wake_the_node_only_when_it_has_no_execute_taints() -> None:
    c, _, informers, _ = controller(now=0)
    informers.seed(NODES, node("calm"), node("n1", taints=[{"key": "x", "effect": "NoExecute"}]))
    c._pod_changed({**pod("a"), "spec": {"nodeName": "calm"}})
    c._pod_changed(pod("b"))
    assert len(c.queue) == 1 and await c.queue.get() == "n1"
