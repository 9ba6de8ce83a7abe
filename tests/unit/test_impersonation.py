"""Impersonation headers: who the request is served as, and the checks and refusals on the way."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from harness.api import errors
from harness.apiserver.impersonation import impersonate, requested
from harness.auth.authorizer import Answer, Decision, RequestInfo
from harness.auth.rbac import RBACAuthorizer
from harness.auth.user import UserInfo

RBAC_GROUP = "rbac.authorization.k8s.io"
ALICE = UserInfo("alice", ("admins", "system:authenticated"))
BOB = UserInfo("bob", ("system:authenticated",))


@dataclass
class MemoryPolicy:
    cluster_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings: list[dict[str, Any]] = field(default_factory=list)

    def cluster_role(self, name: str) -> dict[str, Any] | None:
        return self.cluster_roles.get(name)

    def role(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def cluster_role_bindings(self) -> Iterable[dict[str, Any]]:
        return self.bindings

    def role_bindings(self, namespace: str) -> Iterable[dict[str, Any]]:
        return []


@dataclass
class Recording:
    """Allows everything and remembers what it was asked."""

    asked: list[RequestInfo] = field(default_factory=list)

    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        self.asked.append(info)
        return Answer(Decision.ALLOW)


@dataclass
class Refusing:
    reason: str

    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        return Answer(Decision.NO_OPINION, self.reason)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def impersonators(rules: list[dict[str, Any]]) -> RBACAuthorizer:
    """RBAC where group `admins` holds `rules`."""
    policy = MemoryPolicy({"impersonator": {"metadata": {"name": "impersonator"}, "rules": rules}}, [{
        "metadata": {"name": "impersonators"},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "impersonator"},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": "admins"}],
    }])
    return RBACAuthorizer(policy)


IMPERSONATE_ALL = impersonators([
    {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]},
    {"apiGroups": ["authentication.k8s.io"], "verbs": ["impersonate"],
     "resources": ["userextras/scopes", "userextras/example.com/reason", "uids"]},
])


def test_user_and_groups() -> None:
    who = impersonate(ALICE, headers(("Impersonate-User", "bob"), ("Impersonate-Group", "devs"),
                                     ("Impersonate-Group", "ops")), IMPERSONATE_ALL)
    assert who == UserInfo("bob", ("devs", "ops", "system:authenticated"))


def test_user_without_groups_is_authenticated() -> None:
    assert impersonate(ALICE, headers(("impersonate-user", "bob")), IMPERSONATE_ALL) == UserInfo(
        "bob", ("system:authenticated",))


def test_system_authenticated_is_not_repeated() -> None:
    who = impersonate(ALICE, headers(("Impersonate-User", "bob"), ("Impersonate-Group", "system:authenticated")),
                      IMPERSONATE_ALL)
    assert who.groups == ("system:authenticated",)


def test_impersonating_unauthenticated_group_does_not_add_authenticated() -> None:
    # upstream: a non-anonymous user is given system:authenticated unless system:authenticated or
    # system:unauthenticated was among the impersonated groups
    who = impersonate(ALICE, headers(("Impersonate-User", "bob"), ("Impersonate-Group", "system:unauthenticated")),
                      IMPERSONATE_ALL)
    assert who.groups == ("system:unauthenticated",)


def test_uid_and_extras() -> None:
    who = impersonate(ALICE, headers(("Impersonate-User", "bob"), ("Impersonate-Uid", "1234"),
                                     ("Impersonate-Extra-Scopes", "view"), ("Impersonate-Extra-scopes", "edit"),
                                     ("Impersonate-Extra-example.com%2freason", "audit")), IMPERSONATE_ALL)
    assert who == UserInfo("bob", ("system:authenticated",), "1234",
                           (("example.com/reason", ("audit",)), ("scopes", ("view", "edit"))))


def test_what_is_checked() -> None:
    recording = Recording()
    impersonate(ALICE, headers(("Impersonate-User", "bob"), ("Impersonate-Group", "devs"),
                               ("Impersonate-Extra-Scopes", "view"), ("Impersonate-Uid", "1234")), recording)
    assert recording.asked == [
        RequestInfo("impersonate", "", "v1", "users", name="bob"),
        RequestInfo("impersonate", "", "v1", "groups", name="devs"),
        RequestInfo("impersonate", "authentication.k8s.io", "v1", "userextras", "scopes", name="view"),
        RequestInfo("impersonate", "authentication.k8s.io", "v1", "uids", name="1234"),
    ]


def test_service_account_gets_its_groups_and_is_checked_in_its_namespace() -> None:
    recording = Recording()
    who = impersonate(ALICE, headers(("Impersonate-User", "system:serviceaccount:ns1:builder")), recording)
    assert who == UserInfo("system:serviceaccount:ns1:builder",
                           ("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated"))
    assert recording.asked == [RequestInfo("impersonate", "", "v1", "serviceaccounts", namespace="ns1",
                                           name="builder")]


def test_service_account_with_groups_keeps_only_those() -> None:
    who = impersonate(ALICE, headers(("Impersonate-User", "system:serviceaccount:ns1:builder"),
                                     ("Impersonate-Group", "devs")), IMPERSONATE_ALL)
    assert who == UserInfo("system:serviceaccount:ns1:builder", ("devs", "system:authenticated"))


def test_service_account_through_rbac() -> None:
    builder_only = impersonators([])
    assert isinstance(builder_only.policy, MemoryPolicy)
    builder_only.policy.cluster_roles["impersonator"]["rules"] = [
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"], "resourceNames": ["builder"]}]
    assert impersonate(ALICE, headers(("Impersonate-User", "system:serviceaccount:ns1:builder")),
                       builder_only).name == "system:serviceaccount:ns1:builder"
    with pytest.raises(errors.Forbidden) as caught:
        impersonate(ALICE, headers(("Impersonate-User", "bob")), builder_only)
    assert caught.value.message == ('users "bob" is forbidden: User "alice" cannot impersonate resource "users" '
                                    'in API group "" at the cluster scope')


def test_denied_user() -> None:
    with pytest.raises(errors.Forbidden) as caught:
        impersonate(ALICE, headers(("Impersonate-User", "bob")), impersonators([]))
    assert caught.value.code == 403
    assert caught.value.message == ('users "bob" is forbidden: User "alice" cannot impersonate resource "users" '
                                    'in API group "" at the cluster scope')


def test_denied_requester_without_any_binding() -> None:
    with pytest.raises(errors.Forbidden) as caught:
        impersonate(BOB, headers(("Impersonate-User", "alice")), IMPERSONATE_ALL)
    assert caught.value.message == ('users "alice" is forbidden: User "bob" cannot impersonate resource "users" '
                                    'in API group "" at the cluster scope')


def test_denied_group_names_the_group() -> None:
    users_only = impersonators([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}])
    with pytest.raises(errors.Forbidden) as caught:
        impersonate(ALICE, headers(("Impersonate-User", "bob"), ("Impersonate-Group", "system:masters")), users_only)
    assert caught.value.message == ('groups "system:masters" is forbidden: User "alice" cannot impersonate resource '
                                    '"groups" in API group "" at the cluster scope')


def test_denied_service_account_names_its_namespace() -> None:
    with pytest.raises(errors.Forbidden) as caught:
        impersonate(ALICE, headers(("Impersonate-User", "system:serviceaccount:ns1:builder")), impersonators([]))
    assert caught.value.message == ('serviceaccounts "builder" is forbidden: User "alice" cannot impersonate resource '
                                    '"serviceaccounts" in API group "" in the namespace "ns1"')


def test_denied_extra_names_the_subresource() -> None:
    users_only = impersonators([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}])
    with pytest.raises(errors.Forbidden) as caught:
        impersonate(ALICE, headers(("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "view")), users_only)
    assert caught.value.message == ('userextras.authentication.k8s.io "view" is forbidden: User "alice" cannot '
                                    'impersonate resource "userextras/scopes" in API group "authentication.k8s.io" '
                                    "at the cluster scope")


def test_refusal_reason_is_appended() -> None:
    with pytest.raises(errors.Forbidden) as caught:
        impersonate(ALICE, headers(("Impersonate-User", "bob")), Refusing("not today"))
    assert caught.value.message == ('users "bob" is forbidden: User "alice" cannot impersonate resource "users" '
                                    'in API group "" at the cluster scope: not today')


@pytest.mark.parametrize("pairs", [
    [("Impersonate-Group", "devs")],
    [("Impersonate-Uid", "1234")],
    [("Impersonate-Extra-Scopes", "view")],
    [("Impersonate-User", ""), ("Impersonate-Group", "devs")],
])
def test_groups_uid_or_extra_without_a_user_is_a_bad_request(pairs: list[tuple[str, str]]) -> None:
    recording = Recording()
    with pytest.raises(errors.BadRequest) as caught:
        impersonate(ALICE, headers(*pairs), recording)
    assert caught.value.code == 400
    assert caught.value.message.endswith(" without impersonating a user")
    assert recording.asked == []


def test_anonymous_is_unauthenticated() -> None:
    assert impersonate(ALICE, headers(("Impersonate-User", "system:anonymous")), IMPERSONATE_ALL) == UserInfo(
        "system:anonymous", ("system:unauthenticated",))
    who = impersonate(ALICE, headers(("Impersonate-User", "system:anonymous"), ("Impersonate-Group", "devs")),
                      IMPERSONATE_ALL)
    assert who.groups == ("devs", "system:unauthenticated")


@pytest.mark.parametrize(("pairs", "wanted"), [
    ([("Impersonate-User", "bob")], True),
    ([("impersonate-group", "devs")], True),
    ([("Impersonate-Extra-Scopes", "x")], True),
    ([("Authorization", "Bearer x"), ("Accept", "application/json")], False),
    ([], False),
])
def test_requested(pairs: list[tuple[str, str]], wanted: bool) -> None:
    assert requested(headers(*pairs)) is wanted
