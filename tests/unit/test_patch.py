"""PATCH: JSON patch, merge patch and strategic merge patch, with the patches kubectl really sends."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from harness.api import errors, registry, schema
from harness.api.patch import (
    MAX_JSON_PATCH_OPERATIONS,
    PATCH_CONTENT_TYPES,
    apply_json_patch,
    apply_merge_patch,
    apply_patch,
    apply_strategic_merge_patch,
)

POD = registry.by_kind("v1", "Pod")
NODE = registry.by_kind("v1", "Node")
SERVICE = registry.by_kind("v1", "Service")
ENDPOINTS = registry.by_kind("v1", "Endpoints")
DEPLOYMENT = registry.by_kind("apps/v1", "Deployment")
ROLE = registry.by_kind("rbac.authorization.k8s.io/v1", "Role")
WIDGET = registry.Kind("example.com", "v1", "Widget", "widgets", True, model="NoSuchModel")


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7",
                     "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a.io/one", "a.io/two"]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.25",
                         "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"},
                                 {"name": "C", "value": "3"}]},
                        {"name": "sidecar", "image": "busybox", "args": ["sleep", "3600"]},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
                },
            },
        },
    }


def smp(obj: dict[str, Any], patch: dict[str, Any], kind: registry.Kind = DEPLOYMENT) -> dict[str, Any]:
    before_obj, before_patch = copy.deepcopy(obj), copy.deepcopy(patch)
    out = apply_strategic_merge_patch(obj, patch, kind)
    assert obj == before_obj, "the object was changed"
    assert patch == before_patch, "the patch was changed"
    return out


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(obj)["containers"] if c["name"] == name)


# -- content types and decoding ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "application/strategic-merge-patch+json",
    "application/strategic-merge-patch+json; charset=utf-8",
    "Application/Strategic-Merge-Patch+JSON",
])
def test_content_type_parameters_and_case_are_ignored(content_type: str) -> None:
    out = apply_patch(content_type, deployment(), b'{"spec":{"replicas":5}}', DEPLOYMENT)
    assert out["spec"]["replicas"] == 5


def test_each_flavour_is_dispatched_by_content_type() -> None:
    body = b'{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.26"}]}}}}'
    merged = apply_patch("application/merge-patch+json", deployment(), body, DEPLOYMENT)
    strategic = apply_patch("application/strategic-merge-patch+json", deployment(), body, DEPLOYMENT)
    assert pod_spec(merged)["containers"] == [{"name": "web", "image": "nginx:1.26"}]  # merge patch replaces lists
    assert [c["name"] for c in pod_spec(strategic)["containers"]] == ["web", "sidecar"]
    assert container(strategic, "web")["ports"][0]["containerPort"] == 80
    json_patch = b'[{"op":"replace","path":"/spec/replicas","value":9}]'
    assert apply_patch("application/json-patch+json", deployment(), json_patch, DEPLOYMENT)["spec"]["replicas"] == 9


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml", "", "text/plain"])
def test_unknown_content_type_lists_the_supported_ones(content_type: str) -> None:
    with pytest.raises(errors.UnsupportedMediaType) as err:
        apply_patch(content_type, deployment(), b"{}", DEPLOYMENT)
    assert err.value.code == 415
    for supported in ("application/json-patch+json", "application/merge-patch+json",
                      "application/strategic-merge-patch+json"):
        assert supported in err.value.message


def test_server_side_apply_is_refused_with_an_explanation() -> None:
    assert "application/apply-patch+yaml" in PATCH_CONTENT_TYPES
    with pytest.raises(errors.UnsupportedMediaType) as err:
        apply_patch("application/apply-patch+yaml", deployment(), b"kind: Deployment\n", DEPLOYMENT)
    assert "server-side apply" in err.value.message


@pytest.mark.parametrize("content_type", ["application/json-patch+json", "application/merge-patch+json",
                                          "application/strategic-merge-patch+json"])
@pytest.mark.parametrize("body", [b"{not json", b"", b'{"a": 1', b"\xff"])
def test_body_that_is_not_json_is_a_bad_request(content_type: str, body: bytes) -> None:
    with pytest.raises(errors.BadRequest) as err:
        apply_patch(content_type, deployment(), body, DEPLOYMENT)
    assert "not valid JSON" in err.value.message


# -- JSON patch -------------------------------------------------------------------------------


def test_json_patch_operations() -> None:
    obj = deployment()
    out = apply_json_patch(obj, [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/new", "value": "x"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "D", "value": "4"}},
        {"op": "move", "from": "/metadata/finalizers/0", "path": "/metadata/finalizers/-"},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copied"},
    ])
    assert out["spec"]["replicas"] == 3
    assert out["metadata"]["labels"] == {"app": "web", "new": "x", "copied": "web"}
    assert [e["name"] for e in container(out, "web")["env"]] == ["A", "B", "C", "D"]
    assert out["metadata"]["finalizers"] == ["a.io/two", "a.io/one"]
    assert obj == deployment()


def test_json_patch_result_shares_nothing_with_the_patch() -> None:
    value = {"name": "D", "value": "4"}
    out = apply_json_patch(deployment(), [{"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                                           "value": value}])
    container(out, "web")["env"][-1]["value"] = "changed"
    assert value == {"name": "D", "value": "4"}


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/spec/replicas", "value": 5}],
    [{"op": "remove", "path": "/metadata/labels/missing"}],
    [{"op": "replace", "path": "/spec/missing", "value": 1}],
    [{"op": "add", "path": "/no/such/parent", "value": 1}],
    [{"op": "add", "path": "/spec/template/spec/containers/9", "value": {}}],
    [{"op": "frobnicate", "path": "/spec"}],
    [{"path": "/spec"}],
    [{"op": "add", "path": "spec/replicas", "value": 1}],
])
def test_json_patch_that_does_not_apply_is_invalid(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(errors.Invalid) as err:
        apply_json_patch(deployment(), ops)
    assert err.value.code == 422


@pytest.mark.parametrize("patch", [{"op": "add"}, "add", [1, 2], [["op"]], None])
def test_json_patch_that_is_not_a_list_of_operations_is_a_bad_request(patch: Any) -> None:
    with pytest.raises(errors.BadRequest):
        apply_json_patch(deployment(), patch)


def test_json_patch_operation_limit() -> None:
    ops = [{"op": "test", "path": "/kind", "value": "Deployment"}] * (MAX_JSON_PATCH_OPERATIONS + 1)
    with pytest.raises(errors.RequestEntityTooLarge):
        apply_json_patch(deployment(), ops)


def test_json_patch_replacing_the_root_with_a_non_object_is_refused() -> None:
    with pytest.raises(errors.BadRequest):
        apply_json_patch(deployment(), [{"op": "replace", "path": "", "value": [1]}])


# -- JSON merge patch -------------------------------------------------------------------------


def test_merge_patch_merges_objects_deletes_nulls_and_replaces_lists() -> None:
    obj = deployment()
    out = apply_merge_patch(obj, {
        "metadata": {"labels": {"tier": None, "new": "x"}, "finalizers": ["only"]},
        "spec": {"strategy": {"rollingUpdate": None, "type": "Recreate"}, "paused": True},
    })
    assert out["metadata"]["labels"] == {"app": "web", "new": "x"}
    assert out["metadata"]["finalizers"] == ["only"]
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert out["spec"]["paused"] is True
    assert out["spec"]["template"] == obj["spec"]["template"]
    assert obj == deployment()


def test_merge_patch_new_objects_drop_nulls() -> None:
    out = apply_merge_patch({"a": 1}, {"b": {"c": None, "d": {"e": None, "f": 1}}})
    assert out == {"a": 1, "b": {"d": {"f": 1}}}


def test_merge_patch_non_object_values_replace() -> None:
    assert apply_merge_patch({"a": {"b": 1}}, {"a": "flat"}) == {"a": "flat"}
    assert apply_merge_patch({"a": "flat"}, {"a": {"b": 1}}) == {"a": {"b": 1}}


@pytest.mark.parametrize("patch", [[1], "x", 3, None])
def test_merge_patch_that_replaces_the_whole_object_with_a_non_object_is_refused(patch: Any) -> None:
    with pytest.raises(errors.BadRequest):
        apply_merge_patch(deployment(), patch)


def test_merge_patch_result_shares_nothing_with_its_inputs() -> None:
    obj, patch = deployment(), {"metadata": {"annotations": {"x": "y"}}}
    out = apply_merge_patch(obj, patch)
    out["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    out["metadata"]["annotations"]["x"] = "changed"
    assert obj == deployment()
    assert patch == {"metadata": {"annotations": {"x": "y"}}}


# -- strategic merge patch: what `kubectl apply` sends ----------------------------------------


def test_label_removed_by_null() -> None:
    out = smp(deployment(), {"metadata": {"labels": {"tier": None}}})
    assert out["metadata"]["labels"] == {"app": "web"}


def test_null_for_a_missing_key_is_ignored() -> None:
    out = smp(deployment(), {"metadata": {"annotations": {"gone": None}, "labels": {"nope": None}}})
    assert "annotations" not in out["metadata"] or out["metadata"]["annotations"] == {}
    assert out["metadata"]["labels"] == {"app": "web", "tier": "fe"}


def test_image_change_merges_into_the_named_container() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"name": "web", "image": "nginx:1.26"}]}}}})
    web = container(out, "web")
    assert web["image"] == "nginx:1.26"
    assert [p["containerPort"] for p in web["ports"]] == [80, 443]
    assert [c["name"] for c in pod_spec(out)["containers"]] == ["web", "sidecar"]
    assert container(out, "sidecar") == container(deployment(), "sidecar")


def test_apply_deletes_a_container_port() -> None:
    # last-applied had ports 80 and 443; the new manifest keeps only 80.
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"$setElementOrder/ports": [{"containerPort": 80}], "name": "web",
                        "ports": [{"$patch": "delete", "containerPort": 443}]}]}}}})
    assert container(out, "web")["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_apply_deletes_and_changes_env_vars() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"$setElementOrder/env": [{"name": "A"}, {"name": "C"}], "name": "web",
                        "env": [{"name": "C", "value": "30"}, {"$patch": "delete", "name": "B"}]}]}}}})
    assert container(out, "web")["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "30"}]


def test_apply_adds_env_var_in_manifest_order() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{
        "$setElementOrder/env": [{"name": "A"}, {"name": "NEW"}, {"name": "B"}, {"name": "C"}], "name": "web",
        "env": [{"name": "NEW", "value": "n"}]}]}}}})
    assert [e["name"] for e in container(out, "web")["env"]] == ["A", "NEW", "B", "C"]


def test_env_var_field_removed_by_null() -> None:
    obj = deployment()
    container(obj, "web")["env"][0] = {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    out = smp(obj, {"spec": {"template": {"spec": {"containers": [{
        "name": "web", "env": [{"name": "A", "value": "plain", "valueFrom": None}]}]}}}})
    assert container(out, "web")["env"][0] == {"name": "A", "value": "plain"}


def test_apply_removes_a_container() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [{"$patch": "delete", "name": "sidecar"}]}}}})
    assert [c["name"] for c in pod_spec(out)["containers"]] == ["web"]


def test_set_element_order_reorders_containers() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}})
    assert [c["name"] for c in pod_spec(out)["containers"]] == ["sidecar", "web"]
    assert container(out, "web") == container(deployment(), "web")


def test_set_element_order_keeps_server_only_items_in_their_place() -> None:
    # The live object has an injected container the manifest does not know about.
    obj = deployment()
    pod_spec(obj)["containers"].insert(1, {"name": "injected", "image": "proxy"})
    out = smp(obj, {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"name": "sidecar", "image": "busybox:2"}]}}}})
    assert [c["name"] for c in pod_spec(out)["containers"]] == ["web", "injected", "sidecar"]


def test_new_item_without_an_order_goes_first_as_upstream() -> None:
    # `kubectl patch` (no $setElementOrder) adding an env var: upstream puts new items before
    # the server's, since nothing says where they go.
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{
        "name": "web", "env": [{"name": "NEW", "value": "n"}]}]}}}})
    assert [e["name"] for e in container(out, "web")["env"]] == ["NEW", "A", "B", "C"]


def test_new_container_is_added_without_nulls_or_directives() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}, {"name": "extra"}],
        "containers": [{"name": "extra", "image": "redis", "command": None,
                        "env": [{"name": "X", "value": "1"}, {"$patch": "delete", "name": "Y"}]}]}}}})
    assert [c["name"] for c in pod_spec(out)["containers"]] == ["web", "sidecar", "extra"]
    assert container(out, "extra") == {"name": "extra", "image": "redis", "env": [{"name": "X", "value": "1"}]}


def test_retain_keys_switches_rolling_update_to_recreate() -> None:
    # What kubectl apply sends when the manifest changes strategy.type and never set rollingUpdate.
    out = smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_with_explicit_null_for_the_old_member() -> None:
    out = smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": None,
                                                   "type": "Recreate"}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_keeps_listed_members_and_merges_them() -> None:
    out = smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["rollingUpdate", "type"],
                                                   "rollingUpdate": {"maxSurge": 1}}}})
    assert out["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}


def test_retain_keys_must_list_every_patched_key() -> None:
    with pytest.raises(errors.BadRequest) as err:
        smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}})
    assert "retainKeys" in err.value.message


def test_retain_keys_must_be_a_list() -> None:
    with pytest.raises(errors.BadRequest):
        smp(deployment(), {"spec": {"strategy": {"$retainKeys": "type"}}})


def test_volume_source_switch_uses_retain_keys_inside_a_merged_list() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/volumes": [{"name": "data"}],
        "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "name": "data"}]}}}})
    assert pod_spec(out)["volumes"] == [{"name": "data", "configMap": {"name": "cfg"}}]


def test_finalizers_merge_as_a_set() -> None:
    out = smp(deployment(), {"metadata": {"finalizers": ["a.io/two", "a.io/three"]}})
    assert out["metadata"]["finalizers"] == ["a.io/one", "a.io/two", "a.io/three"]


def test_finalizer_removed_with_delete_from_primitive_list() -> None:
    out = smp(deployment(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/one"],
                                          "$setElementOrder/finalizers": ["a.io/two"]}})
    assert out["metadata"]["finalizers"] == ["a.io/two"]


def test_delete_from_a_missing_primitive_list_adds_nothing() -> None:
    out = smp({"metadata": {"name": "x"}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert out == {"metadata": {"name": "x"}}


def test_delete_from_primitive_list_works_on_lists_without_a_strategy() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{
        "name": "sidecar", "$deleteFromPrimitiveList/args": ["3600"]}]}}}})
    assert container(out, "sidecar")["args"] == ["sleep"]


def test_set_element_order_of_primitives() -> None:
    out = smp(deployment(), {"metadata": {"$setElementOrder/finalizers": ["a.io/two", "a.io/new", "a.io/one"],
                                          "finalizers": ["a.io/new"]}})
    assert out["metadata"]["finalizers"] == ["a.io/two", "a.io/new", "a.io/one"]


def test_lists_without_a_strategy_are_replaced_whole() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "tolerations": [{"key": "c", "operator": "Exists"}],
        "containers": [{"name": "sidecar", "args": ["sleep", "60"]}]}}}})
    assert pod_spec(out)["tolerations"] == [{"key": "c", "operator": "Exists"}]
    assert container(out, "sidecar")["args"] == ["sleep", "60"]


def test_rbac_rules_are_replaced_whole() -> None:
    role = {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    out = smp(role, {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]}, ROLE)
    assert out["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]


def test_endpoints_subsets_are_replaced_whole() -> None:
    ep = {"metadata": {"name": "s"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}
    out = smp(ep, {"subsets": [{"addresses": [{"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]}, ENDPOINTS)
    assert out["subsets"] == [{"addresses": [{"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]


def test_service_ports_merge_by_port() -> None:
    svc = {"metadata": {"name": "s"}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                                          {"name": "https", "port": 443}]}}
    out = smp(svc, {"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}, SERVICE)
    assert out["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                                    {"name": "https", "port": 443}]


def test_node_status_conditions_merge_by_type() -> None:
    node = {"metadata": {"name": "w1"}, "status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
        {"type": "MemoryPressure", "status": "False"}]}}
    out = smp(node, {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}, NODE)
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True", "reason": "KubeletReady"},
                                           {"type": "MemoryPressure", "status": "False"}]


def test_owner_references_merge_by_uid() -> None:
    obj = {"metadata": {"name": "p", "ownerReferences": [{"uid": "1", "name": "rs-a", "kind": "ReplicaSet"}]}}
    out = smp(obj, {"metadata": {"ownerReferences": [{"uid": "1", "controller": True}, {"uid": "2", "name": "b"}]}},
              POD)
    assert out["metadata"]["ownerReferences"] == [
        {"uid": "1", "name": "rs-a", "kind": "ReplicaSet", "controller": True}, {"uid": "2", "name": "b"}]


def test_pod_status_patch_from_the_kubelet() -> None:
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"}]}}
    out = smp(pod, {"status": {"phase": "Running", "podIP": "10.244.1.2", "podIPs": [{"ip": "10.244.1.2"}],
                               "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}],
                               "conditions": [{"type": "Ready", "status": "True"}]}}, POD)
    assert out["status"]["phase"] == "Running"
    assert [c["type"] for c in out["status"]["conditions"]] == ["PodScheduled", "Ready"]
    assert out["status"]["podIPs"] == [{"ip": "10.244.1.2"}]


def test_scale_patch_through_the_deployment_schema() -> None:
    scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web"},
             "spec": {"replicas": 2}, "status": {"replicas": 2, "selector": "app=web"}}
    out = smp(scale, {"spec": {"replicas": 4}})
    assert out["spec"] == {"replicas": 4}
    assert out["status"]["selector"] == "app=web"


# -- strategic merge patch: directives ---------------------------------------------------------


def test_replace_directive_in_a_list_replaces_it() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "only", "image": "x", "args": None}, {"$patch": "replace"}]}}}})
    assert pod_spec(out)["containers"] == [{"name": "only", "image": "x"}]


def test_replace_directive_on_a_map_replaces_it() -> None:
    out = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "only": "this"}}})
    assert out["metadata"]["labels"] == {"only": "this"}


def test_delete_directive_on_a_map_empties_it() -> None:
    out = smp(deployment(), {"spec": {"strategy": {"$patch": "delete"}}})
    assert out["spec"]["strategy"] == {}


def test_delete_directive_on_a_missing_map_leaves_it_absent() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"securityContext": {"$patch": "delete"}}}}})
    assert "securityContext" not in pod_spec(out)


def test_delete_directive_for_a_missing_item_is_a_no_op() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "name": "nope"}]}}}})
    assert pod_spec(out)["containers"] == pod_spec(deployment())["containers"]


@pytest.mark.parametrize(("patch", "fragment"), [
    ({"metadata": {"labels": {"$patch": "explode"}}}, "unknown patch type: explode"),
    ({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}},
     "merging lists cannot yet be specified in the patch"),
    ({"spec": {"template": {"spec": {"containers": [{"$patch": "bogus", "name": "web"}]}}}}, "unknown patch type"),
    ({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}},
     "does not contain declared merge key: name"),
    ({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}},
     "does not contain declared merge key: name"),
    ({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}],
                                     "containers": [{"name": "web", "image": "x"}]}}}}, "doesn't match"),
    ({"spec": {"template": {"spec": {"$setElementOrder/containers": "web"}}}}, "setElementOrder"),
    ({"metadata": {"$setElementOrder/": []}}, "setElementOrder"),
    ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a.io/one"}}, "primitive list"),
    ({"metadata": {"$deleteFromPrimitiveList/": ["x"]}}, "primitive list"),
    ({"metadata": {"finalizers": [{"name": "x"}]}}, "list element types are not identical"),
])
def test_malformed_strategic_patches_are_bad_requests(patch: dict[str, Any], fragment: str) -> None:
    with pytest.raises(errors.BadRequest) as err:
        smp(deployment(), patch)
    assert fragment in err.value.message


def test_lists_of_lists_cannot_be_merged() -> None:
    with pytest.raises(errors.Invalid):
        smp(deployment(), {"metadata": {"finalizers": [["nested"]]}})


@pytest.mark.parametrize("patch", [[], "x", None, 1])
def test_strategic_patch_must_be_an_object(patch: Any) -> None:
    with pytest.raises(errors.BadRequest):
        apply_strategic_merge_patch(deployment(), patch, DEPLOYMENT)


def test_strategic_result_shares_nothing_with_its_inputs() -> None:
    obj = deployment()
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "x", "env": [{"name": "E"}]}]}}}}
    out = apply_strategic_merge_patch(obj, patch, DEPLOYMENT)
    for c in pod_spec(out)["containers"]:
        c["image"] = "changed"
        c.setdefault("env", []).append({"name": "changed"})
    assert obj == deployment()
    assert patch["spec"]["template"]["spec"]["containers"][0] == {"name": "new", "image": "x", "env": [{"name": "E"}]}


# -- strategic merge patch: what the schema does not know ---------------------------------------


def test_unknown_kind_falls_back_to_merge_patch_semantics() -> None:
    obj = {"metadata": {"name": "w", "labels": {"a": "1"}}, "spec": {"items": [{"name": "x"}, {"name": "y"}],
                                                                    "size": {"cpu": 1, "mem": 2}}}
    patch = {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {"items": [{"name": "z"}], "size": {"mem": 3}}}
    assert smp(obj, patch, WIDGET) == apply_merge_patch(obj, patch)


def test_unknown_field_of_a_known_kind_merges_untyped() -> None:
    obj = {"metadata": {"name": "d"}, "spec": {"extra": {"a": [1, 2], "b": {"c": 1}}}}
    out = smp(obj, {"spec": {"extra": {"a": [3], "b": {"d": 2}}}})
    assert out["spec"]["extra"] == {"a": [3], "b": {"c": 1, "d": 2}}


def test_a_value_of_a_new_type_replaces_the_old() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"volumes": {"not": "a list"}}}}})
    assert pod_spec(out)["volumes"] == {"not": "a list"}


def test_every_patch_strategy_names_a_real_field() -> None:
    for (model_name, field), strategy in schema.PATCH_STRATEGIES.items():
        model = schema.model_named(model_name)
        assert model is not None, model_name
        assert field in schema.fields_of(model), f"{model_name}.{field}"
        assert set(strategy.strategy.split(",")) <= {"merge", "retainKeys", "replace"}
        if strategy.merge_key:
            assert schema.fields_of(model)[field].container == "list"


def test_body_round_trip_through_apply_patch_keeps_large_integers() -> None:
    obj = {"metadata": {"name": "x"}, "spec": {"n": 1}}
    out = apply_patch("application/merge-patch+json", obj, orjson.dumps({"spec": {"n": 2**62}}), WIDGET)
    assert out["spec"]["n"] == 2**62
