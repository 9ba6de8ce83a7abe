"""OpenAPI v2 and v3 documents: complete, self-consistent, and carrying what kubectl reads."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api import errors
from harness.api.registry import KINDS, STORED_KINDS, Kind, group_versions
from harness.apiserver import openapi
from harness.apiserver.openapi_schemas import definition_names, refs_in

V2_PREFIX = "#/definitions/"
V3_PREFIX = "#/components/schemas/"


def _gvk(kind: Kind, name: str | None = None) -> dict[str, str]:
    return {"group": kind.group, "kind": name or kind.kind, "version": kind.version}


def _v3(kind: Kind) -> dict[str, Any]:
    return openapi.openapi_v3(kind.group, kind.version)


@pytest.fixture(scope="module")
def v2() -> dict[str, Any]:
    return openapi.openapi_v2()


# -- definitions ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORED_KINDS, ids=lambda k: k.resource)
def test_every_kind_and_list_kind_is_defined_with_its_gvk(v2: dict[str, Any], kind: Kind) -> None:
    defs = v2["definitions"]
    assert defs[kind.definition]["x-kubernetes-group-version-kind"] == [_gvk(kind)]
    assert defs[kind.definition + "List"]["x-kubernetes-group-version-kind"] == [_gvk(kind, kind.list_kind)]
    assert {"apiVersion", "kind", "metadata"} <= set(defs[kind.definition]["properties"])
    schemas = _v3(kind)["components"]["schemas"]
    assert schemas[kind.definition]["x-kubernetes-group-version-kind"] == [_gvk(kind)]


def test_every_v2_reference_resolves(v2: dict[str, Any]) -> None:
    refs = set(refs_in(v2))
    assert refs, "expected references"
    assert all(r.startswith(V2_PREFIX) for r in refs)
    missing = {r.removeprefix(V2_PREFIX) for r in refs} - set(v2["definitions"])
    assert not missing


@pytest.mark.parametrize(("group", "version"), list(group_versions()))
def test_every_v3_reference_resolves(group: str, version: str) -> None:
    doc = openapi.openapi_v3(group, version)
    refs = set(refs_in(doc))
    assert all(r.startswith(V3_PREFIX) for r in refs)
    missing = {r.removeprefix(V3_PREFIX) for r in refs} - set(doc["components"]["schemas"])
    assert not missing
    assert doc["openapi"].startswith("3.")


def test_upstream_definition_names(v2: dict[str, Any]) -> None:
    defs = v2["definitions"]
    meta = "io.k8s.apimachinery.pkg.apis.meta.v1"
    for name in ("io.k8s.api.core.v1.PodSpec", "io.k8s.api.core.v1.PodTemplateSpec",
                 "io.k8s.api.core.v1.Event", "io.k8s.api.rbac.v1.Subject", "io.k8s.api.autoscaling.v1.Scale",
                 f"{meta}.ObjectMeta", f"{meta}.LabelSelector", f"{meta}.Status", f"{meta}.DeleteOptions"):
        assert name in defs, name
    assert not [n for n in defs if ".V1" in n or "CoreV1" in n], "client class names leaked"


def test_no_two_client_models_share_a_definition_name() -> None:
    names = list(definition_names().values())
    assert len(names) == len(set(names))


def test_named_scalar_types(v2: dict[str, Any]) -> None:
    defs = v2["definitions"]
    assert defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert defs["io.k8s.apimachinery.pkg.apis.meta.v1.Time"] | {"description": ""} == {
        "type": "string", "format": "date-time", "description": ""}
    meta = defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert meta["creationTimestamp"]["$ref"] == V2_PREFIX + "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
    limits = defs["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
    assert limits["additionalProperties"] == {"$ref": V2_PREFIX + "io.k8s.apimachinery.pkg.api.resource.Quantity"}
    target_port = defs["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]
    assert target_port["$ref"] == V2_PREFIX + "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
    renew = defs["io.k8s.api.coordination.v1.LeaseSpec"]["properties"]["renewTime"]
    assert renew["$ref"] == V2_PREFIX + "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"


def test_descriptions_and_required_come_from_the_models(v2: dict[str, Any]) -> None:
    spec = v2["definitions"]["io.k8s.api.core.v1.PodSpec"]
    assert spec["description"] == "PodSpec is a description of a pod."
    assert "containers" in spec["required"]
    assert spec["properties"]["containers"]["description"].startswith("List of containers")
    container = v2["definitions"]["io.k8s.api.core.v1.Container"]
    assert container["required"] == ["name"]


def test_pod_spec_containers_carry_patch_merge_key(v2: dict[str, Any]) -> None:
    v2_containers = v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    v3_containers = openapi.openapi_v3("", "v1")["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"][
        "properties"]["containers"]
    for containers in (v2_containers, v3_containers):
        assert containers["x-kubernetes-patch-strategy"] == "merge"
        assert containers["x-kubernetes-patch-merge-key"] == "name"
        assert containers["x-kubernetes-list-type"] == "map"
        assert containers["x-kubernetes-list-map-keys"] == ["name"]
    volumes = v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"]
    assert volumes["x-kubernetes-patch-strategy"] == "merge,retainKeys"
    strategy = v2["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"


def test_v3_object_properties_wrap_refs_in_all_of() -> None:
    pod = openapi.openapi_v3("", "v1")["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"]["allOf"] == [{"$ref": V3_PREFIX + "io.k8s.api.core.v1.PodSpec"}]


# -- paths ----------------------------------------------------------------------------------


def _collection(kind: Kind) -> str:
    root = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    return f"{root}/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced else f"{root}/{kind.plural}"


def _param_names(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op["parameters"]}


@pytest.mark.parametrize("kind", STORED_KINDS, ids=lambda k: k.resource)
def test_every_route_has_its_operations(v2: dict[str, Any], kind: Kind) -> None:
    collection, item = v2["paths"][_collection(kind)], v2["paths"][_collection(kind) + "/{name}"]
    assert {m: op["x-kubernetes-action"] for m, op in collection.items()} == {
        "get": "list", "post": "post", "delete": "deletecollection"}
    assert {m: op["x-kubernetes-action"] for m, op in item.items()} == {
        "get": "get", "put": "put", "patch": "patch", "delete": "delete"}
    for op in (*collection.values(), *item.values()):
        assert op["x-kubernetes-group-version-kind"] == _gvk(kind)
    for op in (collection["post"], item["put"], item["patch"]):
        assert {"fieldValidation", "dryRun", "fieldManager"} <= _param_names(op)
    assert "watch" in _param_names(collection["get"])
    assert {"dryRun", "gracePeriodSeconds", "propagationPolicy"} <= _param_names(item["delete"])
    for sub in kind.subresources:
        assert _collection(kind) + "/{name}/" + sub in v2["paths"]


@pytest.mark.parametrize("kind", STORED_KINDS, ids=lambda k: k.resource)
def test_kubectl_finds_field_validation_on_every_patch_of_a_kind(kind: Kind) -> None:
    # kubectl's QueryParamVerifierV3 takes the first PATCH operation tagged with the GVK.
    paths = _v3(kind)["paths"]
    patches = [p["patch"] for p in paths.values()
               if "patch" in p and p["patch"].get("x-kubernetes-group-version-kind") == _gvk(kind)]
    assert patches
    assert all("fieldValidation" in _param_names(op) for op in patches)


@pytest.mark.parametrize("kind", [k for k in KINDS if not k.stored], ids=lambda k: k.resource)
def test_a_question_kind_has_only_create(v2: dict[str, Any], kind: Kind) -> None:
    assert set(v2["paths"][_collection(kind)]) == {"post"}
    assert _collection(kind) + "/{name}" not in v2["paths"]
    assert v2["definitions"][kind.definition]["x-kubernetes-group-version-kind"] == [_gvk(kind)]
    assert kind.definition + "List" not in v2["definitions"]


def test_scale_subresource_operations(v2: dict[str, Any]) -> None:
    scale = v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert set(scale) == {"get", "put", "patch"}
    assert scale["get"]["responses"]["200"]["schema"] == {"$ref": V2_PREFIX + "io.k8s.api.autoscaling.v1.Scale"}
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {
        "group": "autoscaling", "kind": "Scale", "version": "v1"}
    binding = v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]
    assert binding["post"]["parameters"][-1]["schema"] == {"$ref": V2_PREFIX + "io.k8s.api.core.v1.Binding"}
    assert v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/exec"]["get"]["x-kubernetes-action"] == "connect"


def test_patch_operations_accept_the_three_patch_types(v2: dict[str, Any]) -> None:
    patch = v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert set(patch["consumes"]) == {"application/json-patch+json", "application/merge-patch+json",
                                      "application/strategic-merge-patch+json"}


def test_operation_ids_are_unique(v2: dict[str, Any]) -> None:
    ids = [op["operationId"] for path in v2["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert "listCoreV1NamespacedPod" in ids
    assert "patchAppsV1NamespacedDeploymentScale" in ids
    assert "listRbacAuthorizationV1ClusterRole" in ids


# -- v3 index -------------------------------------------------------------------------------


def test_v3_index_names_every_group_version_with_its_hash() -> None:
    index = openapi.openapi_v3_index()["paths"]
    expected = {f"apis/{g}/{v}" if g else f"api/{v}" for g, v in group_versions()}
    assert set(index) == expected
    for key, entry in index.items():
        group, version = openapi.parse_v3_path(key)
        assert entry["serverRelativeURL"] == f"/openapi/v3/{key}?hash={openapi.openapi_v3_hash(group, version)}"


def test_v3_hash_is_stable_and_distinct() -> None:
    assert openapi.openapi_v3_hash("", "v1") == openapi.openapi_v3_hash("", "v1")
    assert openapi.openapi_v3_hash("", "v1") != openapi.openapi_v3_hash("apps", "v1")


def test_v3_document_holds_only_its_group_versions_paths() -> None:
    doc = openapi.openapi_v3("apps", "v1")
    assert all(p.startswith("/apis/apps/v1/") for p in doc["paths"])
    assert "io.k8s.api.core.v1.PodTemplateSpec" in doc["components"]["schemas"]
    assert "io.k8s.api.rbac.v1.Role" not in doc["components"]["schemas"]


@pytest.mark.parametrize("rest", ["apis/batch/v1", "api/v2", "nonsense"])
def test_unknown_v3_documents_are_not_found(rest: str) -> None:
    with pytest.raises(errors.NotFound):
        openapi.openapi_v3(*openapi.parse_v3_path(rest))


def test_encoded_documents_are_json_of_the_documents() -> None:
    import json

    assert json.loads(openapi.openapi_v2_json()) == json.loads(json.dumps(openapi.openapi_v2()))
    assert json.loads(openapi.openapi_v3_json("", "v1"))["paths"].keys() == openapi.openapi_v3("", "v1")["paths"].keys()
