"""Discovery documents are derived from KINDS and shaped the way kubectl parses them."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api import errors
from harness.api.registry import KINDS, Kind
from harness.apiserver import discovery

KUBECTL_ACCEPT = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")


def _entries(kind: Kind) -> dict[str, dict[str, Any]]:
    body = discovery.api_resource_list(kind.group, kind.version)
    return {r["name"]: r for r in body["resources"]}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.resource)
def test_every_kind_is_in_its_resource_list(kind: Kind) -> None:
    entry = _entries(kind)[kind.plural]
    assert entry["kind"] == kind.kind
    assert entry["namespaced"] is kind.namespaced
    assert entry["singularName"] == kind.singular
    assert entry["verbs"] == list(kind.verbs)
    assert entry.get("shortNames", []) == list(kind.short_names)
    assert entry.get("categories", []) == list(kind.categories)
    # as upstream: only what is stored has a storage version
    assert bool(entry.get("storageVersionHash")) is kind.stored


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.resource)
def test_every_subresource_has_its_own_entry(kind: Kind) -> None:
    entries = _entries(kind)
    for sub in kind.subresources:
        entry = entries[f"{kind.plural}/{sub}"]
        assert entry["namespaced"] is kind.namespaced
        assert entry["verbs"]


def test_resource_list_envelope() -> None:
    core = discovery.api_resource_list("", "v1")
    apps = discovery.api_resource_list("apps", "v1")
    assert (core["kind"], core["apiVersion"], core["groupVersion"]) == ("APIResourceList", "v1", "v1")
    assert apps["groupVersion"] == "apps/v1"


@pytest.mark.parametrize(("group", "plural", "expected"), [
    ("", "pods/status", {"kind": "Pod", "verbs": ["get", "patch", "update"]}),
    ("", "pods/binding", {"kind": "Binding", "verbs": ["create"]}),
    ("", "pods/eviction", {"group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}),
    ("", "pods/log", {"kind": "Pod", "verbs": ["get"]}),
    ("", "pods/exec", {"kind": "PodExecOptions", "verbs": ["create", "get"]}),
    ("", "nodes/proxy", {"kind": "NodeProxyOptions"}),
    ("", "serviceaccounts/token", {"group": "authentication.k8s.io", "kind": "TokenRequest"}),
    ("apps", "deployments/scale", {"group": "autoscaling", "version": "v1", "kind": "Scale",
                                   "verbs": ["get", "patch", "update"]}),
    ("apps", "replicasets/status", {"kind": "ReplicaSet", "verbs": ["get", "patch", "update"]}),
])
def test_subresource_kinds_and_verbs_are_upstreams(group: str, plural: str, expected: dict[str, Any]) -> None:
    entry = {r["name"]: r for r in discovery.api_resource_list(group, "v1")["resources"]}[plural]
    assert {k: entry.get(k) for k in expected} == expected
    if "group" not in expected:
        assert "group" not in entry  # same group-version as the parent: left out, as upstream


def test_storage_version_hash_matches_upstream() -> None:
    # The value a real apiserver advertises for configmaps.
    assert discovery.storage_version_hash("", "v1", "ConfigMap") == "qFsyl6wFWjQ="


def test_api_versions_names_the_server_address() -> None:
    body = discovery.api_versions("10.0.0.1:6443")
    assert body["kind"] == "APIVersions"
    assert body["versions"] == ["v1"]
    assert body["serverAddressByClientCIDRs"] == [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}]


def test_group_list_has_every_named_group_with_preferred_version() -> None:
    body = discovery.api_group_list()
    assert (body["kind"], body["apiVersion"]) == ("APIGroupList", "v1")
    groups = {g["name"]: g for g in body["groups"]}
    assert set(groups) == {k.group for k in KINDS if k.group}
    for name, group in groups.items():
        assert group["preferredVersion"] == {"groupVersion": f"{name}/v1", "version": "v1"}
        assert group["preferredVersion"] in group["versions"]


def test_api_group() -> None:
    body = discovery.api_group("apps")
    assert (body["kind"], body["name"]) == ("APIGroup", "apps")
    with pytest.raises(errors.NotFound):
        discovery.api_group("batch")


def test_unknown_group_version_is_not_found() -> None:
    with pytest.raises(errors.NotFound):
        discovery.api_resource_list("apps", "v2")


def test_version_info() -> None:
    info = discovery.version_info()
    assert (info["major"], info["minor"], info["gitVersion"]) == ("1", "37", "v1.37.0-harness")
    assert info["compiler"] == "harness"
    assert "/" in info["platform"]
    assert all(isinstance(v, str) and v for v in info.values())


# -- aggregated -----------------------------------------------------------------------------


def _aggregated_resources(legacy: bool) -> dict[tuple[str, str], dict[str, Any]]:
    body = discovery.aggregated_discovery(legacy)
    assert (body["kind"], body["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
    out = {}
    for item in body["items"]:
        for version in item["versions"]:
            assert version["freshness"] == "Current"
            for r in version["resources"]:
                out[(item["metadata"].get("name", ""), r["resource"])] = r
    return out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.resource)
def test_every_kind_is_in_aggregated_discovery(kind: Kind) -> None:
    r = _aggregated_resources(kind.group == "")[(kind.group, kind.plural)]
    assert r["responseKind"] == {"group": kind.group, "version": kind.version, "kind": kind.kind}
    assert r["scope"] == ("Namespaced" if kind.namespaced else "Cluster")
    assert r["singularResource"] == kind.singular
    assert r["verbs"] == list(kind.verbs)
    assert r.get("shortNames", []) == list(kind.short_names)
    assert [s["subresource"] for s in r.get("subresources", [])] == sorted(kind.subresources)


def test_legacy_aggregated_document_holds_only_the_core_group() -> None:
    body = discovery.aggregated_discovery(True)
    assert len(body["items"]) == 1
    assert body["items"][0]["metadata"].get("name", "") == ""
    named = discovery.aggregated_discovery(False)
    assert "" not in {i["metadata"].get("name", "") for i in named["items"]}


def test_aggregated_scale_subresource_answers_in_autoscaling() -> None:
    r = _aggregated_resources(False)[("apps", "deployments")]
    scale = {s["subresource"]: s for s in r["subresources"]}["scale"]
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert scale["verbs"] == ["get", "patch", "update"]


@pytest.mark.parametrize(("accept", "expected"), [
    (KUBECTL_ACCEPT, True),
    ("application/json", False),
    ("application/json, */*", False),
    ("", False),
    ("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", False),
])
def test_wants_aggregated(accept: str, expected: bool) -> None:
    assert discovery.wants_aggregated(accept) is expected
