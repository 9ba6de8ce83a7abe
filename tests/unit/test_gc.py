"""Garbage collector: build the graph through the informer handlers, reconcile uids, assert the exact writes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from harness.api import registry
from harness.api.meta import key_of
from harness.api.registry import Kind
from harness.controllers.base import PODS, REPLICASETS, Context, Options
from harness.controllers.garbagecollector import GarbageCollector
from harness.machinery.workqueue import WorkQueue
from tests.unit.fakes import FakeClient, FakeInformers, FakeRecorder

DEPLOYMENTS = registry.by_path("apps", "v1", "deployments")
CONFIGMAPS = registry.by_path("", "v1", "configmaps")


class Client(FakeClient):
    """Also records the propagation policy of each delete."""

    async def delete(self, kind: Kind, name: str, namespace: str = "", **kw: Any) -> dict[str, Any]:
        await super().delete(kind, name, namespace)
        self.actions[-1] += (kw.get("propagation_policy", ""),)
        return {}


def setup() -> tuple[GarbageCollector, Client, FakeInformers]:
    informers = FakeInformers()
    client = Client(informers)
    ctx = Context(client=client, informers=informers, recorder=FakeRecorder(),  # type: ignore[arg-type]
                  registry=CollectorRegistry(), options=Options())
    gc = GarbageCollector(ctx)
    gc.setup()
    return gc, client, informers


def seen(gc: GarbageCollector, informers: FakeInformers, kind: Kind, *objs: dict[str, Any]) -> None:
    """Objects in the cache *and* the graph, as after the informer's on_add."""
    for obj in objs:
        informers.seed(kind, obj)
        gc._added(kind, obj)


def gone(gc: GarbageCollector, informers: FakeInformers, kind: Kind, obj: dict[str, Any]) -> None:
    informers(kind).cache.pop(key_of(obj))
    gc._deleted(kind, obj)


async def drain(queue: WorkQueue) -> set[str]:
    keys = set()
    while len(queue):
        key = await queue.get()
        assert key is not None
        keys.add(key)
        queue.done(key)
    return keys


def ref(kind: str, name: str, uid: str, *, block: bool = True, api_version: str = "apps/v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": block}


def obj(name: str, uid: str, *refs: dict[str, Any], deleting: str = "", ns: str = "ns") -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns, "uid": uid, "resourceVersion": "7"}
    if refs:
        md["ownerReferences"] = list(refs)
    if deleting:
        md.update(deletionTimestamp="2026-01-01T00:00:00Z", finalizers=[deleting])
    return {"metadata": md, "spec": {}}


async def test_a_dependent_whose_owner_is_gone_is_deleted_in_the_background() -> None:
    gc, client, informers = setup()
    seen(gc, informers, PODS, obj("web-1", "p1", ref("ReplicaSet", "web", "rs-gone")))
    assert await drain(gc.queue) == {"p1"}  # its owner is not in the graph: worth a look
    await gc.reconcile("p1")
    assert client.actions == [("delete", "pods", "ns", "web-1", "Background")]
    assert "rs-gone" in gc.absent  # the next dependent of that owner needs no GET


async def test_an_owner_the_cache_has_not_seen_yet_is_found_with_a_live_get() -> None:
    gc, client, informers = setup()
    seen(gc, informers, PODS, obj("web-1", "p1", ref("ReplicaSet", "web", "rs-1")))
    informers.seed(REPLICASETS, obj("web", "rs-1"))  # in the apiserver, not yet in the graph
    await gc.reconcile("p1")
    assert client.actions == []


async def test_owners_are_matched_by_uid_not_by_name_or_kind() -> None:
    gc, client, informers = setup()
    seen(gc, informers, DEPLOYMENTS, obj("renamed", "owner-1"))
    seen(gc, informers, PODS, obj("web-1", "p1", ref("ReplicaSet", "old-name", "owner-1")))
    assert await drain(gc.queue) == set()
    await gc.reconcile("p1")
    assert client.actions == []


async def test_a_live_owner_keeps_the_dependent_and_dangling_references_are_dropped() -> None:
    gc, client, informers = setup()
    seen(gc, informers, CONFIGMAPS, obj("keeper", "cm-1"))
    live, dangling = ref("ConfigMap", "keeper", "cm-1", api_version="v1"), ref("ReplicaSet", "web", "rs-gone")
    seen(gc, informers, PODS, obj("web-1", "p1", live, dangling))
    await gc.reconcile("p1")
    assert client.actions == [("patch", "pods", "ns", "web-1",
                               {"metadata": {"ownerReferences": [live], "resourceVersion": "7"}})]


async def test_foreground_deletion_deletes_dependents_then_removes_its_finalizer() -> None:
    gc, client, informers = setup()
    rs = obj("web", "rs-1", deleting="foregroundDeletion")
    pods = [obj(f"web-{i}", f"p{i}", ref("ReplicaSet", "web", "rs-1")) for i in (1, 2)]
    seen(gc, informers, REPLICASETS, rs)
    seen(gc, informers, PODS, *pods)
    await drain(gc.queue)
    await gc.reconcile("rs-1")
    assert client.actions == []  # blocked by its pods, which are queued for deletion
    assert await drain(gc.queue) == {"p1", "p2"}
    await gc.reconcile("p1")
    await gc.reconcile("p2")
    assert client.actions == [("delete", "pods", "ns", "web-1", "Background"),
                              ("delete", "pods", "ns", "web-2", "Background")]
    client.actions.clear()
    for pod in pods:
        gone(gc, informers, PODS, pod)
    assert "rs-1" in await drain(gc.queue)  # its last blocking dependent went away
    await gc.reconcile("rs-1")
    assert client.actions == [("patch", "replicasets", "ns", "web",
                               {"metadata": {"finalizers": None, "resourceVersion": "7"}})]


async def test_foreground_deletion_cascades_foreground_to_dependents_with_dependents() -> None:
    gc, client, informers = setup()
    seen(gc, informers, DEPLOYMENTS, obj("web", "d-1", deleting="foregroundDeletion"))
    seen(gc, informers, REPLICASETS, obj("web-abc", "rs-1", ref("Deployment", "web", "d-1")))
    seen(gc, informers, PODS, obj("web-abc-1", "p1", ref("ReplicaSet", "web-abc", "rs-1")))
    await gc.reconcile("rs-1")
    assert client.actions == [("delete", "replicasets", "ns", "web-abc", "Foreground")]


async def test_a_dependent_with_another_live_owner_only_loses_the_reference() -> None:
    gc, client, informers = setup()
    seen(gc, informers, REPLICASETS, obj("web", "rs-1", deleting="foregroundDeletion"), obj("other", "rs-2"))
    first, second = ref("ReplicaSet", "web", "rs-1"), ref("ReplicaSet", "other", "rs-2", block=False)
    seen(gc, informers, PODS, obj("shared", "p1", first, second))
    await gc.reconcile("p1")
    assert client.actions == [("patch", "pods", "ns", "shared",
                               {"metadata": {"ownerReferences": [second], "resourceVersion": "7"}})]


async def test_non_blocking_dependents_do_not_hold_up_foreground_deletion() -> None:
    gc, client, informers = setup()
    seen(gc, informers, REPLICASETS, obj("web", "rs-1", deleting="foregroundDeletion"))
    seen(gc, informers, PODS, obj("web-1", "p1", ref("ReplicaSet", "web", "rs-1", block=False)))
    await gc.reconcile("rs-1")
    assert client.actions == [("patch", "replicasets", "ns", "web",
                               {"metadata": {"finalizers": None, "resourceVersion": "7"}})]
    assert "p1" in await drain(gc.queue)  # still deleted, just not waited for


async def test_orphan_finalizer_removes_the_reference_from_every_dependent_then_itself() -> None:
    gc, client, informers = setup()
    seen(gc, informers, REPLICASETS, obj("web", "rs-1", deleting="orphan"))
    seen(gc, informers, PODS, obj("web-1", "p1", ref("ReplicaSet", "web", "rs-1")),
         obj("web-2", "p2", ref("ReplicaSet", "web", "rs-1")))
    assert await drain(gc.queue) == {"rs-1"}
    await gc.reconcile("rs-1")
    assert client.actions == [
        ("patch", "pods", "ns", "web-1", {"metadata": {"ownerReferences": None, "resourceVersion": "7"}}),
        ("patch", "pods", "ns", "web-2", {"metadata": {"ownerReferences": None, "resourceVersion": "7"}}),
        ("patch", "replicasets", "ns", "web", {"metadata": {"finalizers": None, "resourceVersion": "7"}}),
    ]


async def test_deleting_an_owner_queues_its_dependents_across_kinds() -> None:
    gc, _, informers = setup()
    rs = obj("web", "rs-1")
    seen(gc, informers, REPLICASETS, rs)
    seen(gc, informers, PODS, obj("web-1", "p1", ref("ReplicaSet", "web", "rs-1")))
    seen(gc, informers, CONFIGMAPS, obj("conf", "cm-1", ref("ReplicaSet", "web", "rs-1")))
    assert await drain(gc.queue) == set()
    gone(gc, informers, REPLICASETS, rs)
    assert await drain(gc.queue) == {"p1", "cm-1"}
    assert "rs-1" not in gc.graph


async def test_objects_being_deleted_without_gc_finalizers_are_left_alone() -> None:
    gc, client, informers = setup()
    pod = obj("web-1", "p1", ref("ReplicaSet", "web", "rs-gone"))
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    seen(gc, informers, PODS, pod)
    await gc.reconcile("p1")
    assert client.actions == []
