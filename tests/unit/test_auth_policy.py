"""The bootstrap policy's reconciliation (roles and bindings) and the aggregation of ClusterRoles."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from harness.auth import bootstrappolicy
from harness.auth.aggregation import aggregated_rules
from harness.auth.bootstrappolicy import AUTOUPDATE, reconcile_binding, reconcile_role

RBAC_GROUP = "rbac.authorization.k8s.io"
BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE_TRUE = {AUTOUPDATE: "true"}

GET_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
LIST_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
GET_NODES = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}


def cluster_role(name: str, *rules: dict[str, Any], labels: dict[str, str] | None = None,
                 annotations: dict[str, str] | None = None, selectors: list[dict[str, Any]] | None = None,
                 ) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if labels is not None:
        md["labels"] = labels
    if annotations is not None:
        md["annotations"] = annotations
    out: dict[str, Any] = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": md,
                           "rules": list(rules)}
    if selectors is not None:
        out["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return out


def desired_role(*rules: dict[str, Any]) -> dict[str, Any]:
    return cluster_role("system:thing", *rules, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE))


def subject(kind: str, name: str, namespace: str = "") -> dict[str, Any]:
    out = {"kind": kind, "name": name}
    if kind != "ServiceAccount":
        out["apiGroup"] = RBAC_GROUP
    if namespace:
        out["namespace"] = namespace
    return out


def binding(role_name: str, *subjects: dict[str, Any], labels: dict[str, str] | None = None,
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": "system:thing"}
    if labels is not None:
        md["labels"] = labels
    if annotations is not None:
        md["annotations"] = annotations
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": md,
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role_name},
            "subjects": list(subjects)}


def desired_binding(role_name: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return binding(role_name, *subjects, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE))


# -- reconcile_role -------------------------------------------------------------------------------


def test_missing_role_is_a_deep_copy_of_the_desired_one() -> None:
    desired = desired_role(GET_PODS)
    out = reconcile_role(None, desired)
    assert out == desired
    assert out is not desired
    assert out is not None
    out["rules"][0]["verbs"].append("delete")
    out["metadata"]["labels"]["x"] = "y"
    assert desired == desired_role(GET_PODS)


def test_autoupdate_false_protects_the_role() -> None:
    existing = cluster_role("system:thing", labels={}, annotations={AUTOUPDATE: "false"})
    assert reconcile_role(existing, desired_role(GET_PODS, GET_NODES)) is None


def test_missing_rules_are_appended() -> None:
    existing = cluster_role("system:thing", GET_NODES, labels=dict(BOOTSTRAP_LABELS),
                            annotations=dict(AUTOUPDATE_TRUE))
    before = copy.deepcopy(existing)
    out = reconcile_role(existing, desired_role(GET_PODS, GET_NODES))
    assert out == cluster_role("system:thing", GET_NODES, GET_PODS, labels=dict(BOOTSTRAP_LABELS),
                               annotations=dict(AUTOUPDATE_TRUE))
    assert existing == before


@pytest.mark.parametrize("have", [
    [GET_PODS, GET_NODES],
    [GET_NODES, GET_PODS, LIST_PODS],
    [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list"]}],
    [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
])
def test_a_superset_needs_nothing(have: list[dict[str, Any]]) -> None:
    existing = cluster_role("system:thing", *have, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE))
    assert reconcile_role(existing, desired_role(GET_PODS, GET_NODES)) is None


def test_labels_and_annotations_are_merged_without_overwriting() -> None:
    existing = cluster_role("system:thing", GET_PODS, labels={"kubernetes.io/bootstrapping": "mine", "team": "a"},
                            annotations={"note": "kept"})
    out = reconcile_role(existing, desired_role(GET_PODS))
    assert out == cluster_role("system:thing", GET_PODS,
                               labels={"kubernetes.io/bootstrapping": "mine", "team": "a"},
                               annotations={"note": "kept", AUTOUPDATE: "true"})


def test_role_without_metadata_maps_gets_them() -> None:
    out = reconcile_role(cluster_role("system:thing", GET_PODS), desired_role(GET_PODS))
    assert out == desired_role(GET_PODS)


def test_aggregated_role_unions_selectors_and_leaves_rules() -> None:
    edit = {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}
    admin = {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}}
    desired = cluster_role("admin", labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE),
                           selectors=[admin])
    existing = cluster_role("admin", GET_PODS, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE),
                            selectors=[edit])
    out = reconcile_role(existing, desired)
    assert out == cluster_role("admin", GET_PODS, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE),
                               selectors=[edit, admin])
    # rules the desired role does not hold are not a reason to write, and rules it holds are not compared
    assert reconcile_role(out, desired) is None
    desired_with_rules = copy.deepcopy(desired)
    desired_with_rules["rules"] = [GET_NODES]
    assert reconcile_role(out, desired_with_rules) is None


def test_aggregated_role_gets_its_selectors_when_it_had_none() -> None:
    admin = {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}}
    desired = cluster_role("admin", labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE),
                           selectors=[admin])
    existing = cluster_role("admin", GET_PODS, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE))
    out = reconcile_role(existing, desired)
    assert out is not None
    assert out["aggregationRule"] == {"clusterRoleSelectors": [admin]}
    assert out["rules"] == [GET_PODS]


# -- reconcile_binding ----------------------------------------------------------------------------


ALICE = subject("User", "alice")
NODES = subject("Group", "system:nodes")
DNS = subject("ServiceAccount", "kube-dns", "kube-system")


def test_missing_binding_is_created() -> None:
    desired = desired_binding("system:node", NODES)
    result = reconcile_binding(None, desired)
    assert result == ("create", desired)
    assert result is not None
    assert result[1] is not desired


def test_missing_subject_is_added_after_the_existing_ones() -> None:
    existing = binding("system:node", ALICE, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE))
    before = copy.deepcopy(existing)
    result = reconcile_binding(existing, desired_binding("system:node", NODES, ALICE))
    assert result == ("update", binding("system:node", ALICE, NODES, labels=dict(BOOTSTRAP_LABELS),
                                        annotations=dict(AUTOUPDATE_TRUE)))
    assert existing == before


def test_different_role_ref_is_recreated_as_the_policy_has_it() -> None:
    existing = binding("old-role", ALICE, DNS, labels={"team": "a"})
    result = reconcile_binding(existing, desired_binding("system:node", NODES, ALICE))
    # as upstream's computeReconciledRoleBinding: the expected binding, the stored subjects dropped
    assert result == ("recreate", desired_binding("system:node", NODES, ALICE))


@pytest.mark.parametrize("subjects", [[NODES], [NODES, ALICE], [ALICE, DNS, NODES]])
def test_all_subjects_present_needs_nothing(subjects: list[dict[str, Any]]) -> None:
    existing = binding("system:node", *subjects, labels=dict(BOOTSTRAP_LABELS), annotations=dict(AUTOUPDATE_TRUE))
    assert reconcile_binding(existing, desired_binding("system:node", NODES)) is None


def test_missing_labels_on_a_binding_are_an_update() -> None:
    existing = binding("system:node", NODES, labels={"team": "a"}, annotations={AUTOUPDATE: "true"})
    assert reconcile_binding(existing, desired_binding("system:node", NODES)) == (
        "update", binding("system:node", NODES, labels={"team": "a", **BOOTSTRAP_LABELS},
                          annotations={AUTOUPDATE: "true"}))


@pytest.mark.parametrize("role_name", ["system:node", "something-else"])
def test_autoupdate_false_protects_the_binding(role_name: str) -> None:
    existing = binding(role_name, ALICE, annotations={AUTOUPDATE: "false"})
    assert reconcile_binding(existing, desired_binding("system:node", NODES)) is None


# -- aggregation ------------------------------------------------------------------------------------


def test_aggregated_rules_in_name_order_deduplicated_without_the_role_itself() -> None:
    to_view = {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
    to_edit = {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}
    edit = cluster_role("edit", {"apiGroups": ["stale"], "resources": ["x"], "verbs": ["get"]}, labels=to_view,
                        selectors=[{"matchLabels": to_edit}, {"matchLabels": to_view}])
    roles = [
        cluster_role("zz-view-extra", GET_NODES, GET_PODS, labels=to_view),
        edit,
        cluster_role("aa-edit", LIST_PODS, GET_PODS, labels=to_edit),
        cluster_role("mm-unrelated", {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, labels={"x": "y"}),
        cluster_role("bb-unlabelled", GET_NODES),
    ]
    assert aggregated_rules(edit, roles) == [LIST_PODS, GET_PODS, GET_NODES]
    assert aggregated_rules(edit, list(reversed(roles))) == [LIST_PODS, GET_PODS, GET_NODES]


def test_aggregated_rules_with_match_expressions() -> None:
    role = cluster_role("monitoring", selectors=[{"matchExpressions": [
        {"key": "rbac.example.com/aggregate-to-monitoring", "operator": "Exists"}]}])
    roles = [role, cluster_role("a", GET_PODS, labels={"rbac.example.com/aggregate-to-monitoring": "anything"}),
             cluster_role("b", GET_NODES, labels={"other": "true"})]
    assert aggregated_rules(role, roles) == [GET_PODS]


def test_aggregated_rules_are_copies() -> None:
    role = cluster_role("view", selectors=[{"matchLabels": {"agg": "true"}}])
    source = cluster_role("a", copy.deepcopy(GET_PODS), labels={"agg": "true"})
    rules = aggregated_rules(role, [source])
    rules[0]["verbs"].append("delete")
    assert source["rules"] == [GET_PODS]


def test_no_selectors_aggregate_nothing() -> None:
    assert aggregated_rules(cluster_role("plain", GET_PODS), [cluster_role("a", GET_NODES, labels={"a": "b"})]) == []


# -- loading -----------------------------------------------------------------------------------------


def test_load_adds_harness_policy_kinds_and_api_versions(tmp_path: Path) -> None:
    data = tmp_path / "policy.json"
    data.write_text(json.dumps({
        "upstream": "v1.99.0",
        "clusterRoles": [{"metadata": {"name": "system:node"}, "rules": [GET_NODES]}],
        "clusterRoleBindings": [],
        "roles": [{"metadata": {"name": "r", "namespace": "kube-system"}, "rules": []}],
        "roleBindings": [],
    }))
    policy = bootstrappolicy.load(data)
    assert policy.upstream == "v1.99.0"
    names = [r["metadata"]["name"] for r in policy.cluster_roles]
    assert names == ["system:node", "harness:pod-routes", "harness:prometheus"]
    assert policy.cluster_role("system:node") == {"metadata": {"name": "system:node"}, "rules": [GET_NODES],
                                                  "apiVersion": "rbac.authorization.k8s.io/v1",
                                                  "kind": "ClusterRole"}
    assert policy.cluster_role("nope") is None
    assert policy.roles[0]["kind"] == "Role"
    assert [b["metadata"]["name"] for b in policy.cluster_role_bindings] == [
        "harness:pod-routes", "harness:prometheus", "harness:kube-dns"]
    kinds = [o["kind"] for o in policy.objects()]
    # with harness's own: DNS's registration Role and RoleBinding in kube-system
    assert kinds == ["ClusterRole"] * 3 + ["ClusterRoleBinding"] * 3 + ["Role"] * 2 + ["RoleBinding"]


@pytest.mark.skipif(not bootstrappolicy.DATA.exists(), reason="harness/auth/data/bootstrap-policy.json is missing")
def test_shipped_policy_has_upstream_roles() -> None:
    policy = bootstrappolicy.load()
    assert policy.upstream
    admin = policy.cluster_role("cluster-admin")
    assert admin is not None
    assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} in admin["rules"]
    assert policy.cluster_role("system:node") is not None
    assert bootstrappolicy.node_rules()
    for obj in policy.objects():
        assert obj["apiVersion"] == "rbac.authorization.k8s.io/v1"
    for role in policy.cluster_roles:
        assert reconcile_role(role, role) is None
    for crb in policy.cluster_role_bindings:
        assert reconcile_binding(crb, crb) is None
