"""The Node authorizer: a kubelet reads what its pods use, its own lease, and what the system:node rules allow."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.auth.authorizer import NO_OPINION, Answer, Decision, RequestInfo
from harness.auth.node import NodeAuthorizer, claims_of, config_maps_of, secrets_of, service_account_of
from harness.auth.user import UserInfo

W1 = UserInfo("system:node:w1", ("system:nodes", "system:authenticated"))
NO_RELATIONSHIP = "no relationship found between node 'w1' and this object"
ALLOW = Answer(Decision.ALLOW)


@dataclass
class MemoryGraph:
    pods: list[dict[str, Any]] = field(default_factory=list)
    claims: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def pods_on(self, node: str) -> Iterable[dict[str, Any]]:
        return [p for p in self.pods if p["spec"].get("nodeName") == node]

    def persistent_volume_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.claims.get((namespace, name))


def pod(name: str, namespace: str, node: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}], **spec}}


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "image": "busybox", **fields}


def req(verb: str, resource: str, namespace: str = "", name: str = "", group: str = "", sub: str = "") -> RequestInfo:
    return RequestInfo(verb, group, "v1", resource, sub, namespace, name)


NODE_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
]

SECRET_USES: list[dict[str, Any]] = [
    {"volumes": [{"name": "v", "secret": {"secretName": "s1"}}]},
    {"containers": [container(env=[{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}])]},
    {"containers": [container(envFrom=[{"secretRef": {"name": "s1"}}])]},
    {"initContainers": [container(envFrom=[{"secretRef": {"name": "s1"}}])]},
    {"imagePullSecrets": [{"name": "s1"}]},
    {"volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "other"}},
                                                         {"secret": {"name": "s1"}}]}}]},
]

CONFIG_MAP_USES: list[dict[str, Any]] = [
    {"volumes": [{"name": "v", "configMap": {"name": "s1"}}]},
    {"containers": [container(env=[{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "s1", "key": "k"}}}])]},
    {"containers": [container(envFrom=[{"configMapRef": {"name": "s1"}}])]},
    {"volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "s1"}}]}}]},
]


def authorizer(*pods: dict[str, Any], claims: dict[tuple[str, str], dict[str, Any]] | None = None) -> NodeAuthorizer:
    return NodeAuthorizer(MemoryGraph(list(pods), claims or {}), NODE_RULES)


# -- who it has an opinion on --------------------------------------------------------------------


@pytest.mark.parametrize("who", [
    UserInfo("alice", ("system:authenticated",)),
    UserInfo("system:node:w1", ("system:authenticated",)),
    UserInfo("bob", ("system:nodes",)),
    UserInfo("system:masters", ("system:masters",)),
])
def test_non_nodes_get_no_opinion_and_no_reason(who: UserInfo) -> None:
    assert authorizer().authorize(who, req("get", "nodes", name="w1")) == Answer(Decision.NO_OPINION, "")


def test_a_node_without_a_name() -> None:
    who = UserInfo("system:node:", ("system:nodes",))
    assert authorizer().authorize(who, req("get", "nodes", name="w1")) == Answer(
        Decision.NO_OPINION, 'unknown node for user "system:node:"')


# -- secrets and config maps -----------------------------------------------------------------


@pytest.mark.parametrize("spec", SECRET_USES)
def test_secret_used_by_a_pod_on_the_node(spec: dict[str, Any]) -> None:
    on_w1 = authorizer(pod("p", "a", "w1", **spec))
    assert on_w1.authorize(W1, req("get", "secrets", "a", "s1")) == ALLOW
    assert on_w1.authorize(W1, req("get", "secrets", "b", "s1")) == Answer(Decision.NO_OPINION, NO_RELATIONSHIP)
    assert on_w1.authorize(W1, req("get", "secrets", "a", "s2")) == Answer(Decision.NO_OPINION, NO_RELATIONSHIP)
    assert on_w1.authorize(W1, req("get", "configmaps", "a", "s1")) == Answer(Decision.NO_OPINION, NO_RELATIONSHIP)


@pytest.mark.parametrize("spec", SECRET_USES)
def test_secret_used_by_a_pod_on_another_node(spec: dict[str, Any]) -> None:
    on_w2 = authorizer(pod("p", "a", "w2", **spec))
    assert on_w2.authorize(W1, req("get", "secrets", "a", "s1")) == Answer(Decision.NO_OPINION, NO_RELATIONSHIP)


@pytest.mark.parametrize("spec", CONFIG_MAP_USES)
def test_config_map_used_by_a_pod_on_the_node(spec: dict[str, Any]) -> None:
    assert authorizer(pod("p", "a", "w1", **spec)).authorize(W1, req("get", "configmaps", "a", "s1")) == ALLOW
    assert authorizer(pod("p", "a", "w2", **spec)).authorize(W1, req("get", "configmaps", "a", "s1")) == Answer(
        Decision.NO_OPINION, NO_RELATIONSHIP)
    assert authorizer(pod("p", "a", "w1", **spec)).authorize(W1, req("get", "secrets", "a", "s1")) == Answer(
        Decision.NO_OPINION, NO_RELATIONSHIP)


@pytest.mark.parametrize("verb", ["list", "watch"])
def test_list_and_watch_of_a_named_secret(verb: str) -> None:
    on_w1 = authorizer(pod("p", "a", "w1", imagePullSecrets=[{"name": "s1"}]))
    assert on_w1.authorize(W1, req(verb, "secrets", "a", "s1")) == ALLOW
    assert on_w1.authorize(W1, req(verb, "secrets", "a")) == Answer(Decision.NO_OPINION, "No Object name found")


@pytest.mark.parametrize(("info", "reason"), [
    (req("create", "secrets", "a", "s1"), "can only read resources of this type"),
    (req("update", "configmaps", "a", "s1"), "can only read resources of this type"),
    (req("delete", "secrets", "a", "s1"), "can only read resources of this type"),
    (req("get", "secrets", "", "s1"), "can only read namespaced object of this type"),
    (req("get", "secrets", "a", "s1", sub="status"), "cannot read subresource"),
    (req("get", "secrets", "a"), "No Object name found"),
])
def test_secret_refusals(info: RequestInfo, reason: str) -> None:
    on_w1 = authorizer(pod("p", "a", "w1", imagePullSecrets=[{"name": "s1"}]))
    assert on_w1.authorize(W1, info) == Answer(Decision.NO_OPINION, reason)


def test_secrets_in_another_api_group_fall_back_to_node_rules() -> None:
    assert authorizer().authorize(W1, req("get", "secrets", "a", "s1", group="example.com")) == NO_OPINION


# -- what a pod uses ----------------------------------------------------------------------------


def test_what_a_pod_uses() -> None:
    spec = pod("p", "a", "w1",
               imagePullSecrets=[{"name": "pull"}],
               volumes=[{"name": "a", "secret": {"secretName": "vol"}},
                        {"name": "b", "configMap": {"name": "cm-vol"}},
                        {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "d", "projected": {"sources": [{"secret": {"name": "proj"}},
                                                                {"configMap": {"name": "cm-proj"}}]}}],
               initContainers=[container(envFrom=[{"secretRef": {"name": "init"}}])],
               containers=[container(env=[{"name": "A", "value": "x"},
                                          {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env"}}},
                                          {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm-env"}}}],
                                     envFrom=[{"configMapRef": {"name": "cm-from"}}])],
               ephemeralContainers=[container(envFrom=[{"secretRef": {"name": "debug"}}])],
               serviceAccountName="builder")
    assert secrets_of(spec) == {"pull", "vol", "proj", "init", "env", "debug"}
    assert config_maps_of(spec) == {"cm-vol", "cm-proj", "cm-env", "cm-from"}
    assert claims_of(spec) == {"data"}
    assert service_account_of(spec) == "builder"
    assert secrets_of(pod("p", "a", "w1")) == set()
    assert service_account_of(pod("p", "a", "w1", serviceAccount="legacy")) == "legacy"
    assert service_account_of(pod("p", "a", "w1")) == ""


# -- leases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("info", "answer"), [
    (req("get", "leases", "kube-node-lease", "w1", "coordination.k8s.io"), ALLOW),
    (req("update", "leases", "kube-node-lease", "w1", "coordination.k8s.io"), ALLOW),
    (req("patch", "leases", "kube-node-lease", "w1", "coordination.k8s.io"), ALLOW),
    (req("delete", "leases", "kube-node-lease", "w1", "coordination.k8s.io"), ALLOW),
    (req("create", "leases", "kube-node-lease", "", "coordination.k8s.io"), ALLOW),
    (req("create", "leases", "kube-node-lease", "w2", "coordination.k8s.io"), ALLOW),
    (req("get", "leases", "kube-node-lease", "w2", "coordination.k8s.io"),
     Answer(Decision.NO_OPINION, "can only access node lease with the same name as the requesting node")),
    (req("update", "leases", "kube-node-lease", "w2", "coordination.k8s.io"),
     Answer(Decision.NO_OPINION, "can only access node lease with the same name as the requesting node")),
    (req("get", "leases", "kube-system", "w1", "coordination.k8s.io"),
     Answer(Decision.NO_OPINION, 'can only access leases in the "kube-node-lease" system namespace')),
    (req("create", "leases", "default", "w1", "coordination.k8s.io"),
     Answer(Decision.NO_OPINION, 'can only access leases in the "kube-node-lease" system namespace')),
    (req("list", "leases", "kube-node-lease", "", "coordination.k8s.io"),
     Answer(Decision.NO_OPINION, "can only get, create, update, patch, or delete a node lease")),
    (req("watch", "leases", "kube-node-lease", "w1", "coordination.k8s.io"),
     Answer(Decision.NO_OPINION, "can only get, create, update, patch, or delete a node lease")),
])
def test_node_lease(info: RequestInfo, answer: Answer) -> None:
    assert authorizer().authorize(W1, info) == answer


# -- service account tokens --------------------------------------------------------------------


def test_token_for_the_service_account_of_a_pod_on_the_node() -> None:
    on_w1 = authorizer(pod("p", "a", "w1", serviceAccountName="builder"),
                       pod("q", "a", "w2", serviceAccountName="deployer"))
    assert on_w1.authorize(W1, req("create", "serviceaccounts", "a", "builder", sub="token")) == ALLOW
    assert on_w1.authorize(W1, req("create", "serviceaccounts", "a", "deployer", sub="token")) == Answer(
        Decision.NO_OPINION, NO_RELATIONSHIP)
    assert on_w1.authorize(W1, req("create", "serviceaccounts", "b", "builder", sub="token")) == Answer(
        Decision.NO_OPINION, NO_RELATIONSHIP)


@pytest.mark.parametrize(("info", "reason"), [
    (req("get", "serviceaccounts", "a", "builder"), "can only create tokens for individual service accounts"),
    (req("create", "serviceaccounts", "a", "", sub="token"), "can only create tokens for individual service accounts"),
    (req("create", "serviceaccounts", "a", "builder"), "can only create token subresource of serviceaccount"),
    (req("create", "serviceaccounts", "a", "builder", sub="status"),
     "can only create token subresource of serviceaccount"),
])
def test_token_refusals(info: RequestInfo, reason: str) -> None:
    on_w1 = authorizer(pod("p", "a", "w1", serviceAccountName="builder"))
    assert on_w1.authorize(W1, info) == Answer(Decision.NO_OPINION, reason)


# -- volumes -------------------------------------------------------------------------------------


def test_claims_and_volumes_of_pods_on_the_node() -> None:
    on_w1 = authorizer(pod("p", "a", "w1", volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]),
                       claims={("a", "data"): {"spec": {"volumeName": "pv-1"}}})
    assert on_w1.authorize(W1, req("get", "persistentvolumeclaims", "a", "data")) == ALLOW
    assert on_w1.authorize(W1, req("get", "persistentvolumeclaims", "a", "other")) == Answer(
        Decision.NO_OPINION, NO_RELATIONSHIP)
    assert on_w1.authorize(W1, req("update", "persistentvolumeclaims", "a", "data", sub="status")) == ALLOW
    assert on_w1.authorize(W1, req("get", "persistentvolumes", "", "pv-1")) == ALLOW
    assert on_w1.authorize(W1, req("get", "persistentvolumes", "", "pv-2")) == Answer(
        Decision.NO_OPINION, NO_RELATIONSHIP)
    assert on_w1.authorize(W1, req("list", "persistentvolumes")) == Answer(
        Decision.NO_OPINION, "can only get individual resources of this type")
    assert on_w1.authorize(W1, req("delete", "persistentvolumeclaims", "a", "data")) == Answer(
        Decision.NO_OPINION, "can only get individual resources of this type")


# -- everything else: the node rules -------------------------------------------------------------


@pytest.mark.parametrize(("info", "answer"), [
    (req("get", "nodes", name="w1"), ALLOW),
    (req("get", "nodes", name="w2"), ALLOW),
    (req("watch", "pods"), ALLOW),
    (req("delete", "nodes", name="w1"), NO_OPINION),
    (req("get", "services", "default", "kubernetes"), NO_OPINION),
    (RequestInfo("get", resource_request=False, path="/healthz"), NO_OPINION),
])
def test_other_requests_use_the_node_rules(info: RequestInfo, answer: Answer) -> None:
    assert authorizer().authorize(W1, info) == answer


def test_without_node_rules_nothing_else_is_allowed() -> None:
    assert NodeAuthorizer(MemoryGraph(), []).authorize(W1, req("get", "nodes", name="w1")) == NO_OPINION
