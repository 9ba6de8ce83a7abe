"""DaemonSet controller: seed nodes, pods and revisions, reconcile, assert the exact API actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from harness.controllers.base import NODES, PODS
from harness.controllers.daemonset import (
    DAEMONSETS,
    HASH_LABEL,
    REVISIONS,
    DaemonSetController,
    revision_data,
    template_hash,
)
from tests.unit.fakes import context

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def daemonset(*, max_unavailable: Any = 1, selector: dict[str, str] | None = None, image: str = "agent:1",
              **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 2, "resourceVersion": "5"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": selector or {},
                                           "containers": [{"name": "c", "image": image}]}},
                     **spec}}


def node(name: str, *taints: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": list(taints)} if taints else {}}


def pod(name: str, node_name: str, hash_: str, *, ready: bool = True, created: str = "2026-01-01T00:00:00Z",
        phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "3",
                         "creationTimestamp": created, "labels": {"app": "agent", HASH_LABEL: hash_},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                                              "uid": "ds-uid", "controller": True}]},
            "spec": {"nodeName": node_name},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                                       "lastTransitionTime": "2025-12-31T00:00:00Z"}]}}


def revision(ds: dict[str, Any], number: int, *, hash_: str = "") -> dict[str, Any]:
    hash_ = hash_ or template_hash(ds)
    return {"metadata": {"name": f"agent-{hash_}", "namespace": "ns", "uid": f"rev-{number}",
                         "labels": {HASH_LABEL: hash_},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                                              "uid": "ds-uid", "controller": True}]},
            "data": revision_data(ds), "revision": number}


def controller(ds: dict[str, Any]) -> tuple[DaemonSetController, Any, Any, Any]:
    ctx, client, informers, recorder = context()
    informers.seed(DAEMONSETS, ds)
    c = DaemonSetController(ctx)
    c.now = lambda: NOW
    return c, client, informers, recorder


def verbs(actions: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    return [(a[0], a[1]) for a in actions]


async def test_one_pod_is_created_per_eligible_node_pinned_by_node_affinity() -> None:
    ds = daemonset(selector={"role": "web"})
    c, client, informers, recorder = controller(ds)
    informers.seed(NODES, node("n1", role="web"), node("n3", role="db"),
                   node("n2", {"key": "dedicated", "value": "x", "effect": "NoSchedule"}, role="web"),
                   node("n4", {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, role="web"))
    await c.reconcile("ns/agent")
    assert verbs(client.actions) == [("create", "controllerrevisions"), ("create", "pods"), ("create", "pods"),
                                     ("update", "daemonsets")]
    hash_ = template_hash(ds)
    rev = client.actions[0][3]
    assert rev["metadata"]["name"] == f"agent-{hash_}" and rev["revision"] == 1
    assert rev["data"]["spec"]["template"]["$patch"] == "replace"
    first, second = client.actions[1][3], client.actions[2][3]
    assert first["metadata"]["labels"] == {"app": "agent", HASH_LABEL: hash_}
    assert first["metadata"]["generateName"] == "agent-"
    assert first["metadata"]["ownerReferences"][0]["uid"] == "ds-uid"
    for body, name in ((first, "n1"), (second, "n4")):
        required = body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert required == {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}]}
    assert {(t["key"].rsplit("/", 1)[1], t["effect"]) for t in first["spec"]["tolerations"]} == {
        ("not-ready", "NoExecute"), ("unreachable", "NoExecute"), ("disk-pressure", "NoSchedule"),
        ("memory-pressure", "NoSchedule"), ("pid-pressure", "NoSchedule"), ("unschedulable", "NoSchedule")}
    status = client.actions[3][3]["status"]
    assert (status["desiredNumberScheduled"], status["currentNumberScheduled"], status["observedGeneration"]) == (
        2, 0, 2)
    assert recorder.events == [("Normal", "SuccessfulCreate")] * 2
    # The creations are expected: a reconcile before the cache shows them creates nothing.
    informers.seed(REVISIONS, {**rev, "metadata": {**rev["metadata"], "uid": "rev-1"}})
    client.actions.clear()
    await c.reconcile("ns/agent")
    assert [a for a in client.actions if a[0] == "create"] == []


async def test_surplus_misplaced_and_evicted_daemon_pods_are_deleted() -> None:
    ds = daemonset(selector={"role": "web"})
    c, client, informers, _ = controller(ds)
    informers.seed(REVISIONS, revision(ds, 1))
    hash_ = template_hash(ds)
    no_execute = {"key": "maintenance", "effect": "NoExecute"}
    no_schedule = {"key": "dedicated", "effect": "NoSchedule"}
    informers.seed(NODES, node("n1", role="web"), node("n2", role="db"), node("n3", no_execute, role="web"),
                   node("n4", no_schedule, role="web"))
    informers.seed(PODS, pod("old", "n1", hash_, created="2026-01-01T00:00:00Z"),
                   pod("new", "n1", hash_, created="2026-01-01T00:05:00Z"),
                   pod("misplaced", "n2", hash_), pod("evicted", "n3", hash_), pod("stays", "n4", hash_))
    await c.reconcile("ns/agent")
    deletes = sorted(a[3] for a in client.actions if a[0] == "delete")
    assert deletes == ["evicted", "misplaced", "new"]
    status = client.actions[-1][3]["status"]
    assert (status["desiredNumberScheduled"], status["numberMisscheduled"]) == (1, 3)


async def test_a_rolling_update_replaces_old_pods_on_at_most_max_unavailable_nodes() -> None:
    old_ds, ds = daemonset(image="agent:1"), daemonset(image="agent:2")
    c, client, informers, _ = controller(ds)
    informers.seed(REVISIONS, revision(old_ds, 1))
    old_hash = template_hash(old_ds)
    informers.seed(NODES, node("n1"), node("n2"), node("n3"), node("n4"))
    informers.seed(PODS, pod("a", "n1", old_hash), pod("b", "n2", old_hash), pod("c", "n3", old_hash),
                   pod("broken", "n4", old_hash, ready=False))
    await c.reconcile("ns/agent")
    assert verbs(client.actions) == [("create", "controllerrevisions"), ("delete", "pods"), ("delete", "pods"),
                                     ("update", "daemonsets")]
    assert client.actions[0][3]["revision"] == 2
    # The unavailable old pod goes without using the budget; one available old pod goes with it.
    assert [a[3] for a in client.actions[1:3]] == ["broken", "a"]
    status = client.actions[-1][3]["status"]
    assert (status["updatedNumberScheduled"], status["numberAvailable"], status["numberUnavailable"]) == (0, 3, 1)


async def test_a_rolling_update_waits_while_the_budget_is_used_up() -> None:
    old_ds, ds = daemonset(image="agent:1"), daemonset(image="agent:2", max_unavailable="50%")
    c, client, informers, _ = controller(ds)
    informers.seed(REVISIONS, revision(old_ds, 1), revision(ds, 2))
    old_hash, hash_ = template_hash(old_ds), template_hash(ds)
    informers.seed(NODES, node("n1"), node("n2"), node("n3"), node("n4"))
    informers.seed(PODS, pod("a", "n1", hash_, ready=False), pod("b", "n2", old_hash),
                   pod("c", "n3", old_hash), pod("d", "n4", hash_))
    await c.reconcile("ns/agent")  # 50% of 4 = 2; n1's new pod is not ready yet: one more may go
    assert [(a[0], a[3]) for a in client.actions if a[0] != "update"] == [("delete", "b")]


async def test_a_rolled_back_template_reuses_its_revision_with_a_new_number_and_old_ones_are_pruned() -> None:
    ds = daemonset(image="agent:1", revisionHistoryLimit=1)
    c, client, informers, _ = controller(ds)
    informers.seed(REVISIONS, revision(ds, 1), revision(daemonset(image="agent:2"), 2),
                   revision(daemonset(image="agent:3"), 3))
    await c.reconcile("ns/agent")
    updates = [a for a in client.actions if a[:2] == ("update", "controllerrevisions")]
    assert len(updates) == 1 and updates[0][3]["revision"] == 4
    deletes = [a[3] for a in client.actions if a[:2] == ("delete", "controllerrevisions")]
    assert deletes == [f"agent-{template_hash(daemonset(image='agent:2'))}"]


async def test_failed_daemon_pods_are_replaced_with_backoff() -> None:
    ds = daemonset()
    c, client, informers, recorder = controller(ds)
    informers.seed(REVISIONS, revision(ds, 1))
    informers.seed(NODES, node("n1"))
    informers.seed(PODS, pod("crashed", "n1", template_hash(ds), phase="Failed", ready=False))
    await c.reconcile("ns/agent")
    assert verbs(client.actions)[:2] == [("delete", "pods"), ("create", "pods")]
    assert ("Warning", "FailedDaemonPod") in recorder.events
    c.expectations.forget("ns/agent")
    client.actions.clear()
    c.now = lambda: NOW + timedelta(seconds=0.5)  # within the 1 s backoff: left alone
    await c.reconcile("ns/agent")
    assert [a for a in client.actions if a[0] == "delete"] == []
