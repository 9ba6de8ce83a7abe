"""Controllers: seed the caches, call reconcile, assert the exact API actions made."""

from __future__ import annotations

from typing import Any

from harness.controllers.base import (
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    SERVICE_ACCOUNTS,
)
from harness.controllers.namespace import NamespaceController
from harness.controllers.nodeipam import NodeIpamController
from harness.controllers.replicaset import ReplicaSetController
from harness.controllers.serviceaccount import ServiceAccountController
from tests.unit.fakes import context


def replicaset(name: str, replicas: int, *, uid: str = "rs-uid") -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1, "resourceVersion": "5"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def pod(name: str, labels: dict[str, str], *, owner_uid: str = "", phase: str = "Running", ready: bool = True,
        node: str = "n1", created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": labels,
                          "resourceVersion": "3", "creationTimestamp": created}
    if owner_uid:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": owner_uid,
                                  "controller": True}]
    conditions = [{"type": "Ready", "status": "True" if ready else "False",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    return {"metadata": md, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "conditions": conditions}}


async def test_replicaset_creates_missing_pods_from_its_template() -> None:
    ctx, client, informers, recorder = context()
    informers.seed(REPLICASETS, replicaset("web", 3))
    c = ReplicaSetController(ctx)
    await c.reconcile("ns/web")
    creates = [a for a in client.actions if a[0] == "create"]
    assert len(creates) == 3
    body = creates[0][3]
    assert body["metadata"]["generateName"] == "web-" and body["metadata"]["labels"] == {"app": "web"}
    (ref,) = body["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid",
                   "controller": True, "blockOwnerDeletion": True}
    assert ("Normal", "SuccessfulCreate") in recorder.events
    # The creations are expected: reconciling again before the cache shows them creates nothing.
    client.actions.clear()
    await c.reconcile("ns/web")
    assert [a for a in client.actions if a[0] == "create"] == []


async def test_replicaset_deletes_the_least_valuable_pods_first() -> None:
    ctx, client, informers, _ = context()
    informers.seed(REPLICASETS, replicaset("web", 1))
    informers.seed(PODS, pod("ready", {"app": "web"}, owner_uid="rs-uid"),
                   pod("pending", {"app": "web"}, owner_uid="rs-uid", phase="Pending", ready=False),
                   pod("unscheduled", {"app": "web"}, owner_uid="rs-uid", phase="Pending", ready=False, node=""))
    await ReplicaSetController(ctx).reconcile("ns/web")
    deletes = [a[3] for a in client.actions if a[0] == "delete"]
    assert deletes == ["unscheduled", "pending"]


async def test_replicaset_adopts_matching_orphans_and_writes_status() -> None:
    ctx, client, informers, _ = context()
    informers.seed(REPLICASETS, replicaset("web", 1))
    informers.seed(PODS, pod("orphan", {"app": "web"}), pod("other", {"app": "db"}))
    await ReplicaSetController(ctx).reconcile("ns/web")
    patches = [a for a in client.actions if a[0] == "patch"]
    assert [p[3] for p in patches] == ["orphan"]
    assert patches[0][4]["metadata"]["ownerReferences"][0]["uid"] == "rs-uid"
    statuses = [a for a in client.actions if a[0] == "update" and a[2] == "status"]
    assert statuses and statuses[-1][3]["status"]["observedGeneration"] == 1


async def test_replicaset_releases_owned_pods_that_stop_matching() -> None:
    ctx, client, informers, _ = context()
    informers.seed(REPLICASETS, replicaset("web", 0))
    informers.seed(PODS, pod("relabelled", {"app": "other"}, owner_uid="rs-uid"))
    await ReplicaSetController(ctx).reconcile("ns/web")
    (patch,) = [a for a in client.actions if a[0] == "patch"]
    assert patch[3] == "relabelled" and patch[4]["metadata"]["ownerReferences"] is None


async def test_namespace_controller_empties_then_finalizes() -> None:
    ctx, client, informers, _ = context()
    ns = {"metadata": {"name": "gone", "deletionTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "9"},
          "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}}
    informers.seed(NAMESPACES, ns)
    client.lists[("configmaps", "gone")] = [{"metadata": {"name": "cm"}}]
    c = NamespaceController(ctx)
    await c.reconcile("gone")
    assert client.actions == [("delete", "configmaps", "gone", "cm")]
    client.actions.clear()
    client.lists.clear()
    await c.reconcile("gone")
    (finalize,) = client.actions
    assert finalize[:3] == ("update", "namespaces", "finalize") and finalize[3]["spec"]["finalizers"] == []


async def test_serviceaccount_controller_creates_default_once() -> None:
    ctx, client, informers, _ = context()
    informers.seed(NAMESPACES, {"metadata": {"name": "team"}, "status": {"phase": "Active"}})
    c = ServiceAccountController(ctx)
    await c.reconcile("team")
    assert [(a[0], a[1], a[2]) for a in client.actions] == [("create", "serviceaccounts", "team")]
    informers.seed(SERVICE_ACCOUNTS, {"metadata": {"name": "default", "namespace": "team"}})
    client.actions.clear()
    await c.reconcile("team")
    assert client.actions == []


async def test_nodeipam_gives_each_node_a_distinct_cidr() -> None:
    ctx, client, informers, _recorder = context()
    informers.seed(NODES, {"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.0.0/24"}},
                   {"metadata": {"name": "b"}, "spec": {}}, {"metadata": {"name": "c"}, "spec": {}})
    c = NodeIpamController(ctx)
    await c.reconcile("b")
    await c.reconcile("c")
    patches = {a[3]: a[4]["spec"]["podCIDR"] for a in client.actions}
    assert patches == {"b": "10.244.1.0/24", "c": "10.244.2.0/24"}


async def queued(c: ReplicaSetController) -> list[str]:
    keys = []
    while len(c.queue):
        key = await c.queue.get()
        assert key is not None
        keys.append(key)
        c.queue.done(key)
    return keys


async def test_pod_events_wake_their_owner_or_the_owners_that_could_adopt_them() -> None:
    ctx, _, informers, _ = context()
    db = replicaset("db", 1, uid="db-uid")
    db["spec"]["selector"] = {"matchLabels": {"app": "db"}}
    informers.seed(REPLICASETS, replicaset("web", 2), {**db, "metadata": {**db["metadata"], "name": "db"}})
    c = ReplicaSetController(ctx)
    c.expectations.expect_creations("ns/web", 1)
    c.pods.added(pod("owned", {"app": "web"}, owner_uid="rs-uid"))
    assert c.expectations.satisfied("ns/web")
    assert await queued(c) == ["ns/web"]
    orphan = pod("orphan", {"app": "db"})
    c.pods.added(orphan)
    assert await queued(c) == ["ns/db"]
    c.pods.updated(orphan, {**orphan, "metadata": {**orphan["metadata"], "labels": {"app": "web"}}})
    assert await queued(c) == ["ns/web"]
    c.pods.updated(orphan, {**orphan, "status": {"phase": "Running"}})  # nothing an owner cares about
    assert await queued(c) == []
    assert c.pods.owner_key(pod("stale", {"app": "web"}, owner_uid="old-uid")) is None
