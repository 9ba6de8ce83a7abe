"""Pure logic of the apiserver: watch filtering, continue tokens, content negotiation, strategies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.api import errors, registry
from harness.apiserver import codec, strategies
from harness.apiserver.listing import decode_continue, encode_continue
from harness.apiserver.watchcache import Watcher, WatchEvent

PODS = registry.by_path("", "v1", "pods")
DEPLOYMENTS = registry.by_path("apps", "v1", "deployments")
NAMESPACES = registry.by_path("", "v1", "namespaces")


def obj(name: str, labels: dict[str, str], ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": "1"}}


def app_is_web(o: dict[str, Any]) -> bool:
    return bool(o["metadata"]["labels"].get("app") == "web")


@pytest.mark.parametrize(("before", "after", "seen"), [
    ({"app": "web"}, {"app": "web"}, "MODIFIED"),
    ({"app": "db"}, {"app": "web"}, "ADDED"),
    ({"app": "web"}, {"app": "db"}, "DELETED"),
    ({"app": "db"}, {"app": "db"}, None),
])
def test_watcher_turns_selector_transitions_into_added_and_deleted(
        before: dict[str, str], after: dict[str, str], seen: str | None) -> None:
    w = Watcher(namespace="", predicate=app_is_web, after=0)
    event = w.filtered(WatchEvent("MODIFIED", obj("a", after), 5, obj("a", before)))
    assert (event.type if event else None) == seen


def test_watcher_skips_other_namespaces_and_old_revisions() -> None:
    w = Watcher(namespace="team", predicate=None, after=10)
    w.deliver(WatchEvent("ADDED", obj("a", {}, ns="other"), 11))
    w.deliver(WatchEvent("ADDED", obj("b", {}, ns="team"), 9))
    w.deliver(WatchEvent("ADDED", obj("c", {}, ns="team"), 12))
    got = w.queue.get_nowait()
    assert got is not None and got.obj["metadata"]["name"] == "c"
    assert w.queue.empty()


def test_watcher_that_falls_too_far_behind_is_closed() -> None:
    w = Watcher(namespace="", predicate=None, after=0)
    w.queue = type(w.queue)(maxsize=2)
    for i in range(3):
        w.deliver(WatchEvent("ADDED", obj(f"o{i}", {}), i + 1))
    assert w.closed and w.overflowed
    items = [w.queue.get_nowait() for _ in range(w.queue.qsize())]
    assert items[-1] is None


def test_continue_token_round_trips_and_rejects_garbage() -> None:
    token = encode_continue(42, "ns/name\x00")
    assert decode_continue(token) == (42, "ns/name\x00")
    for bad in ("!!!", "e30", encode_continue(0, "x")):
        with pytest.raises(errors.BadRequest):
            decode_continue(bad)


@pytest.mark.parametrize(("accept", "view", "media"), [
    ("", "", codec.JSON),
    ("application/json", "", codec.JSON),
    ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", "Table", codec.JSON),
    ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", "PartialObjectMetadata", codec.JSON),
    ("application/yaml", "", codec.YAML),
    ("application/vnd.kubernetes.protobuf,*/*", "", codec.PROTOBUF),
])
def test_negotiate_picks_the_first_acceptable_view(accept: str, view: str, media: str) -> None:
    out = codec.negotiate(accept)
    assert (out.view, out.media_type) == (view, media)


def test_negotiate_serves_protobuf_when_asked_first() -> None:
    assert codec.negotiate("application/vnd.kubernetes.protobuf").media_type == codec.PROTOBUF
    with pytest.raises(errors.NotAcceptable):
        codec.negotiate("text/html")


def test_decode_object_checks_kind_and_version_against_the_url() -> None:
    ok = codec.decode_object(b'{"metadata": {"name": "x"}}', "application/json", PODS)
    assert (ok["apiVersion"], ok["kind"]) == ("v1", "Pod")
    with pytest.raises(errors.BadRequest, match="API version"):
        codec.decode_object(b'{"apiVersion": "apps/v1", "kind": "Pod"}', "application/json", PODS)
    with pytest.raises(errors.BadRequest, match="kind"):
        codec.decode_object(b'{"apiVersion": "v1", "kind": "Service"}', "application/json", PODS)
    with pytest.raises(errors.UnsupportedMediaType):
        codec.decode_object(b"{}", "text/plain", PODS)


def test_prepare_for_create_resets_server_fields_and_status() -> None:
    pod = {"metadata": {"generateName": "web-", "uid": "forged", "resourceVersion": "9"},
           "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}}
    strategies.prepare_for_create(PODS, pod, namespace="ns")
    md = pod["metadata"]
    assert md["name"].startswith("web-") and len(md["name"]) == 9
    assert md["uid"] != "forged" and "resourceVersion" not in md and md["namespace"] == "ns"
    assert md["generation"] == 1
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_prepare_for_update_keeps_status_and_bumps_generation_on_spec_change() -> None:
    old = {"metadata": {"name": "d", "uid": "u", "generation": 3}, "spec": {"replicas": 1},
           "status": {"replicas": 1}}
    new = {"metadata": {"name": "d", "uid": "x"}, "spec": {"replicas": 2}, "status": {"replicas": 9}}
    strategies.prepare_for_update(DEPLOYMENTS, new, old, subresource="")
    assert new["metadata"]["uid"] == "u" and new["metadata"]["generation"] == 4
    assert new["status"] == {"replicas": 1}
    status_update = {"metadata": {"name": "d"}, "spec": {"replicas": 7}, "status": {"replicas": 2}}
    strategies.prepare_for_update(DEPLOYMENTS, status_update, old, subresource="status")
    assert status_update["spec"] == {"replicas": 1} and status_update["status"] == {"replicas": 2}
    assert status_update["metadata"]["generation"] == 3


def test_pod_grace_period_rules() -> None:
    s = strategies.strategy_for(PODS)
    unscheduled = {"spec": {}, "status": {}}
    running = {"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}}
    done = {"spec": {"nodeName": "n"}, "status": {"phase": "Succeeded"}}
    assert s.grace_period(unscheduled, None) == 0
    assert s.grace_period(running, None) == 5 and s.grace_period(running, 0) == 0
    assert s.grace_period(done, 30) == 0


def test_service_type_change_drops_node_ports_and_keeps_cluster_ip() -> None:
    services = registry.by_path("", "v1", "services")
    old = {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.7",
                                               "externalTrafficPolicy": "Cluster",
                                               "ports": [{"port": 80, "nodePort": 30080}]}}
    new = {"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "externalTrafficPolicy": "Cluster",
                                               "ports": [{"port": 80, "nodePort": 30080}]}}
    strategies.prepare_for_update(services, new, old, subresource="")
    assert new["spec"] == {"type": "ClusterIP", "clusterIP": "10.96.0.7", "ports": [{"port": 80}]}


def test_a_strategy_without_hooks_changes_nothing() -> None:
    s = strategies.strategy_for(registry.by_path("", "v1", "configmaps"))
    assert s == strategies.Strategy()
    obj = {"metadata": {"name": "c", "finalizers": ["x"]}, "spec": {"finalizers": ["kubernetes"]},
           "status": {"phase": "Active"}}
    before = copy.deepcopy(obj)
    assert s.kind_finalizers(obj) == []
    s.mark_terminating(obj)
    s.prepare_update(obj, before)
    assert obj == before


def test_namespace_strategy_holds_deletion_on_spec_finalizers_and_marks_terminating() -> None:
    s = strategies.strategy_for(NAMESPACES)
    assert s.kind_finalizers({"spec": {"finalizers": ["kubernetes"]}}) == ["kubernetes"]
    assert s.kind_finalizers({"spec": {"finalizers": []}}) == [] and s.kind_finalizers({}) == []
    ns: dict[str, Any] = {"metadata": {"name": "team"}, "status": {"phase": "Active"}}
    s.mark_terminating(ns)
    assert ns["status"] == {"phase": "Terminating"}


def test_finalize_subresource_changes_spec_finalizers_only() -> None:
    old = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "uid": "u", "labels": {"a": "1"}},
           "spec": {"finalizers": ["kubernetes", "other"]}, "status": {"phase": "Terminating"}}
    new = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": {"a": "2"}},
           "spec": {"finalizers": ["other"], "extra": True}, "status": {"phase": "Active"}}
    strategies.prepare_for_update(NAMESPACES, new, old, subresource="finalize")
    assert new["spec"] == {"finalizers": ["other"]} and new["status"] == {"phase": "Terminating"}
    assert new["metadata"] == {"name": "team", "uid": "u", "labels": {"a": "2"}}
    emptied = {"metadata": {"name": "team"}}
    strategies.prepare_for_update(NAMESPACES, emptied, old, subresource="finalize")
    assert emptied["spec"] == {"finalizers": []} and emptied["kind"] == "Namespace"
