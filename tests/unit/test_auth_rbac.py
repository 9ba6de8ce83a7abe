"""Users, the authorizer contract (union, privileged groups, 403 wording) and RBAC as upstream evaluates it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.api import errors
from harness.auth import rbac
from harness.auth.authorizer import (
    NO_OPINION,
    AlwaysAllow,
    AlwaysDeny,
    Answer,
    Decision,
    PrivilegedGroups,
    RequestInfo,
    Union,
    check,
    forbidden,
    forbidden_message,
)
from harness.auth.user import UserInfo, node_name, service_account_username, split_service_account

RBAC_GROUP = "rbac.authorization.k8s.io"

ALICE = UserInfo("alice", ("system:authenticated",))
BOB = UserInfo("bob", ("devs", "system:authenticated"))
SA = UserInfo("system:serviceaccount:ns1:builder",
              ("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated"))


# -- an in-memory policy ----------------------------------------------------------------------


@dataclass
class MemoryPolicy:
    cluster_roles: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    cluster_bindings: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)

    def cluster_role(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.cluster_roles if r["metadata"]["name"] == name), None)

    def role(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((r for r in self.roles
                     if r["metadata"]["namespace"] == namespace and r["metadata"]["name"] == name), None)

    def cluster_role_bindings(self) -> Iterable[dict[str, Any]]:
        return list(self.cluster_bindings)

    def role_bindings(self, namespace: str) -> Iterable[dict[str, Any]]:
        return [b for b in self.bindings if b["metadata"]["namespace"] == namespace]


def rule(verbs: list[str], resources: list[str], groups: list[str] | None = None, **rest: Any) -> dict[str, Any]:
    return {"apiGroups": [""] if groups is None else groups, "resources": resources, "verbs": verbs, **rest}


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)}


def role(namespace: str, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Role", "metadata": {"name": name, "namespace": namespace}, "rules": list(rules)}


def crb(name: str, role_name: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role_name},
            "subjects": list(subjects)}


def rb(namespace: str, name: str, ref_kind: str, role_name: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": ref_kind, "name": role_name},
            "subjects": list(subjects)}


def user(name: str) -> dict[str, Any]:
    return {"kind": "User", "apiGroup": RBAC_GROUP, "name": name}


def group(name: str) -> dict[str, Any]:
    return {"kind": "Group", "apiGroup": RBAC_GROUP, "name": name}


def service_account(name: str, namespace: str = "") -> dict[str, Any]:
    subject = {"kind": "ServiceAccount", "name": name}
    if namespace:
        subject["namespace"] = namespace
    return subject


def get(resource: str, namespace: str = "", name: str = "", group: str = "", sub: str = "") -> RequestInfo:
    return RequestInfo("get", group, "v1", resource, sub, namespace, name)


def path(verb: str, url: str) -> RequestInfo:
    return RequestInfo(verb, resource_request=False, path=url)


# -- user.py ------------------------------------------------------------------------------------


def test_service_account_username() -> None:
    assert service_account_username("kube-system", "coredns") == "system:serviceaccount:kube-system:coredns"


@pytest.mark.parametrize(("username", "split"), [
    ("system:serviceaccount:ns1:builder", ("ns1", "builder")),
    ("system:serviceaccount:kube-system:default", ("kube-system", "default")),
    ("system:serviceaccount:ns1", None),
    ("system:serviceaccount::builder", None),
    ("system:serviceaccount:ns1:", None),
    ("system:serviceaccount:ns1:a:b", None),
    ("system:serviceaccounts:ns1", None),
    ("alice", None),
    ("", None),
])
def test_split_service_account(username: str, split: tuple[str, str] | None) -> None:
    assert split_service_account(username) == split


@pytest.mark.parametrize(("who", "node"), [
    (UserInfo("system:node:w1", ("system:nodes", "system:authenticated")), "w1"),
    (UserInfo("system:node:w1", ("system:authenticated",)), None),
    (UserInfo("system:node:", ("system:nodes",)), None),
    (UserInfo("alice", ("system:nodes",)), None),
    (UserInfo("system:nodes:w1", ("system:nodes",)), None),
])
def test_node_name(who: UserInfo, node: str | None) -> None:
    assert node_name(who) == node


def test_user_info_extra_dict() -> None:
    who = UserInfo("alice", extra=(("scopes", ("a", "b")), ("reason", ("x",))))
    assert who.extra_dict() == {"scopes": ["a", "b"], "reason": ["x"]}
    assert UserInfo("alice").extra_dict() == {}


# -- authorizer.py ----------------------------------------------------------------------------


@dataclass
class Fixed:
    """An authorizer with a fixed answer that records how often it was asked."""

    answer: Answer
    calls: int = 0

    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        self.calls += 1
        return self.answer


def test_answer_allowed_only_for_allow() -> None:
    assert Answer(Decision.ALLOW).allowed
    assert not Answer(Decision.DENY).allowed
    assert not NO_OPINION.allowed
    assert Answer(Decision.NO_OPINION, "", "") == NO_OPINION


def test_always_allow_and_always_deny() -> None:
    assert AlwaysAllow().authorize(ALICE, get("pods")) == Answer(Decision.ALLOW)
    # upstream's AlwaysDeny has no opinion (so a later authorizer could still allow), with this reason
    assert AlwaysDeny().authorize(ALICE, get("pods")) == Answer(Decision.NO_OPINION, "Everything is forbidden.")


@pytest.mark.parametrize(("who", "decision"), [
    (UserInfo("admin", ("system:masters", "system:authenticated")), Decision.ALLOW),
    (UserInfo("system:masters", ("system:authenticated",)), Decision.NO_OPINION),
    (BOB, Decision.NO_OPINION),
])
def test_privileged_groups_allow_system_masters(who: UserInfo, decision: Decision) -> None:
    assert PrivilegedGroups().authorize(who, get("secrets", "kube-system", "x")).decision is decision


def test_privileged_groups_are_configurable() -> None:
    assert PrivilegedGroups(["devs"]).authorize(BOB, get("pods")).allowed
    assert not PrivilegedGroups(["ops"]).authorize(BOB, get("pods")).allowed


@pytest.mark.parametrize("decision", [Decision.ALLOW, Decision.DENY])
def test_union_first_allow_or_deny_wins(decision: Decision) -> None:
    first = Fixed(Answer(Decision.NO_OPINION, "first has no rule"))
    deciding = Fixed(Answer(decision, "the decider"))
    last = Fixed(Answer(Decision.ALLOW, "never asked"))
    answer = Union([first, deciding, last]).authorize(ALICE, get("pods"))
    assert answer == Answer(decision, "the decider")
    assert (first.calls, deciding.calls, last.calls) == (1, 1, 0)


def test_union_deny_before_allow_denies() -> None:
    answer = Union([Fixed(Answer(Decision.DENY, "no")), Fixed(Answer(Decision.ALLOW))]).authorize(ALICE, get("pods"))
    assert answer.decision is Decision.DENY
    assert answer.reason == "no"


def test_union_of_no_opinions_joins_reasons_with_newlines() -> None:
    answer = Union([
        Fixed(Answer(Decision.NO_OPINION, "node says no", "")),
        Fixed(NO_OPINION),
        Fixed(Answer(Decision.NO_OPINION, 'RBAC: clusterrole.rbac.authorization.k8s.io "x" not found', "e1")),
        Fixed(Answer(Decision.NO_OPINION, "", "e2")),
    ]).authorize(ALICE, get("pods"))
    assert answer == Answer(Decision.NO_OPINION,
                            'node says no\nRBAC: clusterrole.rbac.authorization.k8s.io "x" not found', "e1; e2")


def test_empty_union_has_no_opinion() -> None:
    assert Union([]).authorize(ALICE, get("pods")) == NO_OPINION


@pytest.mark.parametrize(("who", "info", "message"), [
    (UserInfo("bob"), get("pods", "default", "web"),
     'User "bob" cannot get resource "pods" in API group "" in the namespace "default"'),
    (UserInfo("bob"), RequestInfo("list", "apps", "v1", "deployments"),
     'User "bob" cannot list resource "deployments" in API group "apps" at the cluster scope'),
    (UserInfo("bob"), get("pods", "default", "web", sub="log"),
     'User "bob" cannot get resource "pods/log" in API group "" in the namespace "default"'),
    (UserInfo("system:anonymous"), path("get", "/metrics"), 'User "system:anonymous" cannot get path "/metrics"'),
])
def test_forbidden_message(who: UserInfo, info: RequestInfo, message: str) -> None:
    assert forbidden_message(who, info) == message


@pytest.mark.parametrize(("info", "reason", "message"), [
    (get("pods", "default", "web"), "",
     'pods "web" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default"'),
    (RequestInfo("list", "apps", "v1", "deployments"), "",
     'deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" '
     "at the cluster scope"),
    (get("pods", "default", "web", sub="log"), "",
     'pods "web" is forbidden: User "bob" cannot get resource "pods/log" in API group "" in the namespace '
     '"default"'),
    (get("nodes", name="w1"), "no way",
     'nodes "w1" is forbidden: User "bob" cannot get resource "nodes" in API group "" at the cluster scope: no way'),
    (path("get", "/metrics"), "", 'forbidden: User "bob" cannot get path "/metrics"'),
    (path("post", "/logs"), "because", 'forbidden: User "bob" cannot post path "/logs": because'),
])
def test_forbidden_error(info: RequestInfo, reason: str, message: str) -> None:
    err = forbidden(UserInfo("bob"), info, reason)
    assert isinstance(err, errors.Forbidden)
    assert err.code == 403
    assert str(err) == message


def test_forbidden_status_details_name_the_resource() -> None:
    status = forbidden(UserInfo("bob"), RequestInfo("get", "apps", "v1", "deployments", "", "ns", "web")).to_status()
    assert status["code"] == 403
    assert status["reason"] == "Forbidden"
    assert status["details"] == {"name": "web", "group": "apps", "kind": "deployments"}


def test_forbidden_anonymous_metrics() -> None:
    err = forbidden(UserInfo("system:anonymous", ("system:unauthenticated",)), path("get", "/metrics"))
    assert err.message == 'forbidden: User "system:anonymous" cannot get path "/metrics"'
    assert "details" not in err.to_status()


def test_check_raises_with_the_reason_unless_allowed() -> None:
    check(AlwaysAllow(), BOB, get("pods", "default", "web"))
    with pytest.raises(errors.Forbidden) as caught:
        check(AlwaysDeny(), BOB, get("pods", "default", "web"))
    assert caught.value.message == ('pods "web" is forbidden: User "bob" cannot get resource "pods" in API group "" '
                                    'in the namespace "default": Everything is forbidden.')
    with pytest.raises(errors.Forbidden):
        check(Fixed(Answer(Decision.DENY)), BOB, get("pods"))


# -- rbac: one rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "info", "allowed"), [
    # verbs
    (rule(["*"], ["pods"]), RequestInfo("deletecollection", "", "v1", "pods", namespace="ns"), True),
    (rule(["get"], ["pods"]), get("pods", "ns", "web"), True),
    (rule(["get"], ["pods"]), RequestInfo("list", "", "v1", "pods", namespace="ns"), False),
    (rule([], ["pods"]), get("pods", "ns", "web"), False),
    # groups
    (rule(["get"], ["deployments"], ["*"]), get("deployments", "ns", "d", group="apps"), True),
    (rule(["get"], ["deployments"], ["apps"]), get("deployments", "ns", "d", group="apps"), True),
    (rule(["get"], ["deployments"], [""]), get("deployments", "ns", "d", group="apps"), False),
    (rule(["get"], ["pods"], ["apps"]), get("pods", "ns", "web"), False),
    # resources and subresources
    (rule(["get"], ["*"]), get("pods", "ns", "web"), True),
    (rule(["get"], ["*"]), get("pods", "ns", "web", sub="log"), True),
    (rule(["get"], ["pods"]), get("pods", "ns", "web", sub="log"), False),
    (rule(["get"], ["pods/log"]), get("pods", "ns", "web", sub="log"), True),
    (rule(["get"], ["pods/log"]), get("pods", "ns", "web"), False),
    (rule(["get"], ["*/scale"], ["*"]), get("deployments", "ns", "d", group="apps", sub="scale"), True),
    (rule(["get"], ["*/scale"], ["*"]), get("deployments", "ns", "d", group="apps"), False),
    (rule(["get"], ["*/scale"], ["*"]), get("deployments", "ns", "d", group="apps", sub="status"), False),
    (rule(["get"], ["services"]), get("pods", "ns", "web"), False),
    # resourceNames
    (rule(["get"], ["pods"], resourceNames=["web"]), get("pods", "ns", "web"), True),
    (rule(["get"], ["pods"], resourceNames=["web"]), get("pods", "ns", "db"), False),
    (rule(["list"], ["pods"], resourceNames=["web"]), RequestInfo("list", "", "v1", "pods", namespace="ns"), False),
    (rule(["create"], ["pods"], resourceNames=["web"]), RequestInfo("create", "", "v1", "pods", namespace="ns"),
     False),
    (rule(["get"], ["pods"], resourceNames=[]), get("pods", "ns", "web"), True),
    # non-resource URLs
    ({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}, path("get", "/healthz"), True),
    ({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}, path("get", "/healthz/etcd"), False),
    ({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}, path("post", "/healthz"), False),
    ({"nonResourceURLs": ["/metrics/*"], "verbs": ["get"]}, path("get", "/metrics/cadvisor"), True),
    ({"nonResourceURLs": ["/metrics/*"], "verbs": ["get"]}, path("get", "/metricsx"), False),
    ({"nonResourceURLs": ["/metrics/*"], "verbs": ["get"]}, path("get", "/metrics"), False),
    ({"nonResourceURLs": ["*"], "verbs": ["*"]}, path("put", "/anything"), True),
    # the two kinds never mix
    ({"nonResourceURLs": ["*"], "verbs": ["*"]}, get("pods", "ns", "web"), False),
    (rule(["*"], ["*"], ["*"]), path("get", "/healthz"), False),
])
def test_rule_allows(given: dict[str, Any], info: RequestInfo, allowed: bool) -> None:
    assert rbac.rule_allows(given, info) is allowed


@pytest.mark.parametrize(("resources", "resource", "sub", "matches"), [
    (["*"], "pods", "", True),
    (["*"], "pods", "log", True),
    (["pods"], "pods", "", True),
    (["pods"], "pods", "log", False),
    (["pods/log"], "pods", "log", True),
    (["*/scale"], "deployments", "scale", True),
    (["*/scale"], "deployments", "", False),
    (["*/scale"], "replicasets", "status", False),
    (["deployments/scale"], "replicasets", "scale", False),
    ([], "pods", "", False),
])
def test_resource_matches(resources: list[str], resource: str, sub: str, matches: bool) -> None:
    assert rbac.resource_matches({"resources": resources}, resource, sub) is matches


@pytest.mark.parametrize(("urls", "url", "matches"), [
    (["/healthz"], "/healthz", True),
    (["/healthz"], "/healthz/ping", False),
    (["/metrics/*"], "/metrics/cadvisor", True),
    (["/metrics/*"], "/metrics/", True),
    (["/metrics/*"], "/metricsx", False),
    (["/api*"], "/apis/apps", True),
    (["*"], "/version", True),
    ([], "/version", False),
])
def test_non_resource_url_matches(urls: list[str], url: str, matches: bool) -> None:
    assert rbac.non_resource_url_matches({"nonResourceURLs": urls}, url) is matches


# -- rbac: subjects -------------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "who", "namespace", "matches"), [
    (user("alice"), ALICE, "", True),
    (user("alice"), UserInfo("alice2"), "", False),
    (user("devs"), BOB, "", False),
    (group("devs"), BOB, "", True),
    (group("devs"), ALICE, "", False),
    (group("bob"), BOB, "", False),
    (service_account("builder", "ns1"), SA, "", True),
    (service_account("builder", "ns1"), SA, "ns2", True),
    (service_account("builder", "ns2"), SA, "ns1", False),
    (service_account("builder"), SA, "ns1", True),
    (service_account("builder"), SA, "ns2", False),
    (service_account("builder"), SA, "", False),
    (service_account("other", "ns1"), SA, "", False),
    (user("system:serviceaccount:ns1:builder"), SA, "", True),
    (group("system:serviceaccounts:ns1"), SA, "", True),
    ({"kind": "Robot", "name": "alice"}, ALICE, "", False),
])
def test_subject_matches(subject: dict[str, Any], who: UserInfo, namespace: str, matches: bool) -> None:
    assert rbac.subject_matches(subject, who, namespace) is matches


@pytest.mark.parametrize(("subject", "namespace", "described"), [
    (user("alice"), "", 'User "alice"'),
    (group("devs"), "ns1", 'Group "devs"'),
    (service_account("builder", "ns1"), "", 'ServiceAccount "builder/ns1"'),
    (service_account("builder", "ns1"), "ns2", 'ServiceAccount "builder/ns1"'),
    (service_account("builder"), "ns2", 'ServiceAccount "builder/ns2"'),
])
def test_describe_subject(subject: dict[str, Any], namespace: str, described: str) -> None:
    assert rbac.describe_subject(subject, namespace) == described


# -- rbac: the authorizer ---------------------------------------------------------------------


READ_PODS = rule(["get", "list", "watch"], ["pods"])


def test_allowed_by_cluster_role_binding_to_user() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("cr", READ_PODS)],
                          cluster_bindings=[crb("crb", "cr", user("alice"))])
    authorizer = rbac.RBACAuthorizer(policy)
    assert authorizer.authorize(ALICE, get("pods", "default", "web")) == Answer(
        Decision.ALLOW, 'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "cr" to User "alice"')
    # cluster-wide: any namespace, and the cluster scope
    assert authorizer.authorize(ALICE, get("pods", "other", "web")).allowed
    assert authorizer.authorize(ALICE, RequestInfo("list", "", "v1", "pods")).allowed
    assert authorizer.authorize(ALICE, RequestInfo("delete", "", "v1", "pods", namespace="default")) == NO_OPINION
    assert authorizer.authorize(BOB, get("pods", "default", "web")) == NO_OPINION


def test_allowed_by_role_binding_to_group() -> None:
    policy = MemoryPolicy(roles=[role("ns1", "r", READ_PODS)], bindings=[rb("ns1", "rb", "Role", "r", group("devs"))])
    authorizer = rbac.RBACAuthorizer(policy)
    assert authorizer.authorize(BOB, get("pods", "ns1", "web")) == Answer(
        Decision.ALLOW, 'RBAC: allowed by RoleBinding "rb/ns1" of Role "r" to Group "devs"')
    assert authorizer.authorize(BOB, get("pods", "ns2", "web")) == NO_OPINION
    assert authorizer.authorize(BOB, RequestInfo("list", "", "v1", "pods")) == NO_OPINION
    assert authorizer.authorize(ALICE, get("pods", "ns1", "web")) == NO_OPINION


def test_allowed_by_role_binding_to_service_account_in_the_binding_namespace() -> None:
    policy = MemoryPolicy(roles=[role("ns1", "r", READ_PODS)],
                          bindings=[rb("ns1", "rb", "Role", "r", user("nobody"), service_account("builder"))])
    assert rbac.RBACAuthorizer(policy).authorize(SA, get("pods", "ns1", "web")) == Answer(
        Decision.ALLOW, 'RBAC: allowed by RoleBinding "rb/ns1" of Role "r" to ServiceAccount "builder/ns1"')


def test_service_account_in_a_cluster_role_binding_needs_its_namespace() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("cr", READ_PODS)],
                          cluster_bindings=[crb("without", "cr", service_account("builder")),
                                            crb("with", "cr", service_account("builder", "ns1"))])
    assert rbac.RBACAuthorizer(policy).authorize(SA, get("pods", "ns9", "web")) == Answer(
        Decision.ALLOW,
        'RBAC: allowed by ClusterRoleBinding "with" of ClusterRole "cr" to ServiceAccount "builder/ns1"')


def test_role_binding_to_cluster_role_grants_only_in_its_namespace() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("pod-reader", READ_PODS)],
                          bindings=[rb("ns1", "readers", "ClusterRole", "pod-reader", user("alice"))])
    authorizer = rbac.RBACAuthorizer(policy)
    assert authorizer.authorize(ALICE, get("pods", "ns1", "web")) == Answer(
        Decision.ALLOW, 'RBAC: allowed by RoleBinding "readers/ns1" of ClusterRole "pod-reader" to User "alice"')
    assert authorizer.authorize(ALICE, get("pods", "ns2", "web")) == NO_OPINION
    assert authorizer.authorize(ALICE, RequestInfo("list", "", "v1", "pods")) == NO_OPINION


def test_a_role_of_another_namespace_is_not_used() -> None:
    # a RoleBinding names a Role of its own namespace: ns2's "r" is not ns1's
    policy = MemoryPolicy(roles=[role("ns2", "r", READ_PODS)], bindings=[rb("ns1", "rb", "Role", "r", user("alice"))])
    answer = rbac.RBACAuthorizer(policy).authorize(ALICE, get("pods", "ns1", "web"))
    assert answer == Answer(Decision.NO_OPINION, 'RBAC: role.rbac.authorization.k8s.io "r" not found')


def test_cluster_role_bindings_are_asked_before_role_bindings() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("cr", READ_PODS)], roles=[role("ns1", "r", READ_PODS)],
                          cluster_bindings=[crb("crb", "cr", group("devs"))],
                          bindings=[rb("ns1", "rb", "Role", "r", user("bob"))])
    assert rbac.RBACAuthorizer(policy).authorize(BOB, get("pods", "ns1", "web")).reason == (
        'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "cr" to Group "devs"')


def test_the_first_matching_subject_is_named() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("cr", READ_PODS)],
                          cluster_bindings=[crb("crb", "cr", user("carol"), group("devs"), user("bob"))])
    assert rbac.RBACAuthorizer(policy).authorize(BOB, get("pods", "ns1", "web")).reason == (
        'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "cr" to Group "devs"')


def test_binding_to_missing_cluster_role_is_no_opinion_with_reason() -> None:
    policy = MemoryPolicy(cluster_bindings=[crb("crb", "missing", user("alice"))])
    answer = rbac.RBACAuthorizer(policy).authorize(ALICE, get("pods", "default", "web"))
    assert answer.decision is Decision.NO_OPINION
    assert answer.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found'
    assert answer.evaluation_error == ""


def test_two_missing_roles_are_aggregated() -> None:
    policy = MemoryPolicy(cluster_bindings=[crb("a", "missing", user("alice"))],
                          bindings=[rb("ns1", "b", "Role", "gone", user("alice"))])
    answer = rbac.RBACAuthorizer(policy).authorize(ALICE, get("pods", "ns1", "web"))
    assert answer.decision is Decision.NO_OPINION
    assert answer.reason == ('RBAC: [clusterrole.rbac.authorization.k8s.io "missing" not found, '
                             'role.rbac.authorization.k8s.io "gone" not found]')


def test_the_same_missing_role_twice_is_named_once() -> None:
    # upstream's utilerrors.NewAggregate(...).Error() drops repeated messages, and a single message has no brackets
    policy = MemoryPolicy(cluster_bindings=[crb("a", "missing", user("alice")), crb("b", "missing", group("devs"))])
    answer = rbac.RBACAuthorizer(policy).authorize(UserInfo("alice", ("devs",)), get("pods", "ns1", "web"))
    assert answer.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found'


def test_missing_roles_of_bindings_for_others_are_not_reported() -> None:
    policy = MemoryPolicy(cluster_bindings=[crb("crb", "missing", user("carol"))])
    assert rbac.RBACAuthorizer(policy).authorize(ALICE, get("pods", "default", "web")) == NO_OPINION


def test_an_allow_wins_over_missing_roles() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("cr", READ_PODS)],
                          cluster_bindings=[crb("broken", "missing", user("alice")), crb("crb", "cr", user("alice"))])
    assert rbac.RBACAuthorizer(policy).authorize(ALICE, get("pods", "default", "web")) == Answer(
        Decision.ALLOW, 'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "cr" to User "alice"')


def test_non_resource_urls_through_a_cluster_role_binding() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("metrics", {"nonResourceURLs": ["/metrics", "/metrics/*"],
                                                                   "verbs": ["get"]})],
                          cluster_bindings=[crb("metrics", "metrics", user("system:prometheus"))])
    authorizer = rbac.RBACAuthorizer(policy)
    prometheus = UserInfo("system:prometheus")
    assert authorizer.authorize(prometheus, path("get", "/metrics/cadvisor")).reason == (
        'RBAC: allowed by ClusterRoleBinding "metrics" of ClusterRole "metrics" to User "system:prometheus"')
    assert authorizer.authorize(prometheus, path("get", "/metricsx")) == NO_OPINION
    assert authorizer.authorize(prometheus, get("pods", "default")) == NO_OPINION


def test_rules_for_lists_cluster_and_namespace_rules_and_errors() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("cr", READ_PODS)],
                          roles=[role("ns1", "r", rule(["create"], ["secrets"]))],
                          cluster_bindings=[crb("crb", "cr", user("alice"))],
                          bindings=[rb("ns1", "rb", "Role", "r", user("alice")),
                                    rb("ns1", "broken", "Role", "gone", user("alice"))])
    authorizer = rbac.RBACAuthorizer(policy)
    assert authorizer.rules_for(ALICE, "ns1") == (
        [READ_PODS, rule(["create"], ["secrets"])], ['role.rbac.authorization.k8s.io "gone" not found'])
    assert authorizer.rules_for(ALICE, "") == ([READ_PODS], [])
    assert authorizer.rules_for(BOB, "ns1") == ([], [])


def test_resolver_visits_with_sources() -> None:
    policy = MemoryPolicy(cluster_roles=[cluster_role("cr", READ_PODS, rule(["get"], ["nodes"]))],
                          bindings=[rb("ns1", "rb", "ClusterRole", "cr", service_account("builder", "ns1"))])
    visits = list(rbac.Resolver(policy).visit(SA, "ns1"))
    source = 'RoleBinding "rb/ns1" of ClusterRole "cr" to ServiceAccount "builder/ns1"'
    assert visits == [rbac.Visit(READ_PODS, source), rbac.Visit(rule(["get"], ["nodes"]), source)]


# -- escalation: uncovered and format_rule -------------------------------------------------------


CLUSTER_ADMIN = [rule(["*"], ["*"], ["*"]), {"nonResourceURLs": ["*"], "verbs": ["*"]}]


@pytest.mark.parametrize("wanted", [
    rule(["get", "list"], ["pods", "pods/log"]),
    rule(["delete"], ["deployments/scale"], ["apps"], resourceNames=["web"]),
    {"nonResourceURLs": ["/healthz", "/metrics"], "verbs": ["get"]},
])
def test_star_covers_everything(wanted: dict[str, Any]) -> None:
    assert rbac.uncovered(CLUSTER_ADMIN, [wanted]) == []


@pytest.mark.parametrize(("owned", "wanted", "missing"), [
    ([rule(["get"], ["pods"])], rule(["get"], ["pods"]), []),
    ([rule(["get"], ["pods"])], rule(["list"], ["pods"]), [rule(["list"], ["pods"])]),
    ([rule(["get"], ["pods"])], rule(["get", "list"], ["pods"]), [rule(["list"], ["pods"])]),
    ([rule(["get"], ["pods"])], rule(["get"], ["pods/log"]), [rule(["get"], ["pods/log"])]),
    ([rule(["get"], ["*/scale"], ["apps"])], rule(["get"], ["deployments/scale"], ["apps"]), []),
    ([rule(["get"], ["*/scale"], ["apps"])], rule(["get"], ["deployments"], ["apps"]),
     [rule(["get"], ["deployments"], ["apps"])]),
    ([rule(["get"], ["pods"], resourceNames=["a"])], rule(["get"], ["pods"], resourceNames=["a"]), []),
    ([rule(["get"], ["pods"], resourceNames=["a"])], rule(["get"], ["pods"]), [rule(["get"], ["pods"])]),
    ([rule(["get"], ["pods"], resourceNames=["a"])], rule(["get"], ["pods"], resourceNames=["a", "b"]),
     [rule(["get"], ["pods"], resourceNames=["b"])]),
    ([rule(["get"], ["pods"])], rule(["get"], ["pods"], resourceNames=["a"]), []),
    ([rule(["get"], ["pods"], [""])], rule(["get"], ["pods"], ["apps"]), [rule(["get"], ["pods"], ["apps"])]),
    ([rule(["*"], ["*"], ["*"])], {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
     [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]),
    ([{"nonResourceURLs": ["/metrics/*"], "verbs": ["get"]}], {"nonResourceURLs": ["/metrics/cadvisor"],
                                                               "verbs": ["get"]}, []),
    ([{"nonResourceURLs": ["/metrics/*"], "verbs": ["get"]}], {"nonResourceURLs": ["/metricsx"], "verbs": ["get"]},
     [{"nonResourceURLs": ["/metricsx"], "verbs": ["get"]}]),
    ([], rule(["get"], ["pods", "services"]), [rule(["get"], ["pods"]), rule(["get"], ["services"])]),
])
def test_uncovered(owned: list[dict[str, Any]], wanted: dict[str, Any], missing: list[dict[str, Any]]) -> None:
    assert rbac.uncovered(owned, [wanted]) == missing


def test_uncovered_pieces_can_come_from_several_owned_rules() -> None:
    owned = [rule(["get"], ["pods"]), rule(["list"], ["pods"])]
    assert rbac.uncovered(owned, [rule(["get", "list"], ["pods"])]) == []


@pytest.mark.parametrize(("given", "text"), [
    (rule(["get"], ["pods"]), '{APIGroups:[""], Resources:["pods"], Verbs:["get"]}'),
    (rule(["get", "list"], ["deployments", "deployments/scale"], ["apps"]),
     '{APIGroups:["apps"], Resources:["deployments" "deployments/scale"], Verbs:["get" "list"]}'),
    (rule(["get"], ["pods"], resourceNames=["a"]),
     '{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["get"]}'),
    ({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}, '{NonResourceURLs:["/healthz"], Verbs:["get"]}'),
])
def test_format_rule(given: dict[str, Any], text: str) -> None:
    assert rbac.format_rule(given) == text
