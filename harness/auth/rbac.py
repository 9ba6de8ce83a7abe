"""Role-based access control: Roles, ClusterRoles and their bindings, evaluated as upstream's RBAC authorizer does.

A request is allowed when some rule of some role bound to the user (or one of its groups, or its service account)
matches it: ClusterRoleBindings first, then the RoleBindings of the request's namespace. RBAC never denies, it only
has no opinion, so the next authorizer may still allow. The objects come from a `Policy` (the apiserver's watch
caches, or a dict in tests); this module reads them and decides, nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.auth.authorizer import NO_OPINION, Answer, Decision, RequestInfo
from harness.auth.user import UserInfo, service_account_username

GROUP = "rbac.authorization.k8s.io"


class Policy(Protocol):
    def cluster_role(self, name: str) -> dict[str, Any] | None: ...

    def role(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def cluster_role_bindings(self) -> Iterable[dict[str, Any]]: ...

    def role_bindings(self, namespace: str) -> Iterable[dict[str, Any]]: ...


# -- one rule --------------------------------------------------------------------------------


def _has(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and ("*" in values or wanted in values)


def resource_matches(rule: dict[str, Any], resource: str, subresource: str) -> bool:
    """`pods`, `pods/log`, `*` and `*/scale` as upstream's ResourceMatches."""
    combined = f"{resource}/{subresource}" if subresource else resource
    for have in rule.get("resources") or []:
        if have in ("*", combined) or (subresource and have == f"*/{subresource}"):
            return True
    return False


def non_resource_url_matches(rule: dict[str, Any], path: str) -> bool:
    for have in rule.get("nonResourceURLs") or []:
        if have in ("*", path) or (have.endswith("*") and path.startswith(have[:-1])):
            return True
    return False


def rule_allows(rule: dict[str, Any], info: RequestInfo) -> bool:
    if not _has(rule.get("verbs"), info.verb):
        return False
    if not info.resource_request:
        return non_resource_url_matches(rule, info.path)
    names = rule.get("resourceNames") or []
    return (_has(rule.get("apiGroups"), info.group) and resource_matches(rule, info.resource, info.subresource)
            and (not names or info.name in names))


# -- who a binding is for --------------------------------------------------------------------


def subject_matches(subject: dict[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return bool(name) and name == user.name
    if kind == "Group":
        return bool(name) and name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(name and namespace) and service_account_username(namespace, name) == user.name
    return False


def describe_subject(subject: dict[str, Any], binding_namespace: str) -> str:
    """How upstream names a subject in a reason: `User "alice"`, `ServiceAccount "default/ns"`."""
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or binding_namespace}"'
    return f'{kind} "{name}"'


# -- the rules a user holds ------------------------------------------------------------------


@dataclass
class Visit:
    """One rule a user holds, with where it comes from (for reasons)."""

    rule: dict[str, Any]
    source: str


@dataclass
class Resolver:
    """The rules of the roles bound to a user, in upstream's order, and the bindings that could not be followed."""

    policy: Policy
    errors: list[str] = field(default_factory=list)

    def _role_rules(self, ref: dict[str, Any], binding_namespace: str) -> list[dict[str, Any]] | None:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            role = self.policy.cluster_role(name)
            if role is None:
                self.errors.append(f'clusterrole.{GROUP} "{name}" not found')
                return None
        elif kind == "Role" and binding_namespace:
            role = self.policy.role(binding_namespace, name)
            if role is None:
                self.errors.append(f'role.{GROUP} "{name}" not found')
                return None
        else:
            self.errors.append(f"unsupported role reference kind: {kind!r}")
            return None
        return [r for r in role.get("rules") or [] if isinstance(r, dict)]

    def visit(self, user: UserInfo, namespace: str) -> Iterator[Visit]:
        for binding in self.policy.cluster_role_bindings():
            subject = _first_match(binding, user, "")
            if subject is None:
                continue
            ref = binding.get("roleRef") or {}
            rules = self._role_rules(ref, "")
            source = (f'ClusterRoleBinding "{binding["metadata"]["name"]}" of {ref.get("kind")} '
                      f'"{ref.get("name")}" to {describe_subject(subject, "")}')
            for rule in rules or ():
                yield Visit(rule, source)
        if not namespace:
            return
        for binding in self.policy.role_bindings(namespace):
            subject = _first_match(binding, user, namespace)
            if subject is None:
                continue
            ref = binding.get("roleRef") or {}
            rules = self._role_rules(ref, namespace)
            source = (f'RoleBinding "{binding["metadata"]["name"]}/{namespace}" of {ref.get("kind")} '
                      f'"{ref.get("name")}" to {describe_subject(subject, namespace)}')
            for rule in rules or ():
                yield Visit(rule, source)


def _first_match(binding: dict[str, Any], user: UserInfo, namespace: str) -> dict[str, Any] | None:
    for subject in binding.get("subjects") or []:
        if isinstance(subject, dict) and subject_matches(subject, user, namespace):
            return subject
    return None


def _aggregate(errs: list[str]) -> str:
    """As upstream's error aggregate: each message once, in brackets only when there are several."""
    unique = list(dict.fromkeys(errs))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


class RBACAuthorizer:
    """`--authorization-mode=RBAC`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        resolver = Resolver(self.policy)
        for visit in resolver.visit(user, info.namespace):
            if rule_allows(visit.rule, info):
                return Answer(Decision.ALLOW, f"RBAC: allowed by {visit.source}")
        if resolver.errors:
            return Answer(Decision.NO_OPINION, f"RBAC: {_aggregate(resolver.errors)}")
        return NO_OPINION

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Every rule the user holds in the namespace (cluster-wide ones included), and what could not be read."""
        resolver = Resolver(self.policy)
        rules = [v.rule for v in resolver.visit(user, namespace)]
        return rules, resolver.errors


# -- escalation ------------------------------------------------------------------------------


def _atoms(rule: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    """A rule broken into single (verb, group, resource, name) or (verb, url) grants, as upstream's Covers does."""
    verbs = rule.get("verbs") or []
    if rule.get("nonResourceURLs"):
        for verb in verbs:
            for url in rule["nonResourceURLs"]:
                yield ("url", verb, url)
        return
    for verb in verbs:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for name in rule.get("resourceNames") or [""]:
                    yield ("res", verb, group, resource, name)


def _atom_covered(atom: tuple[str, ...], rule: dict[str, Any]) -> bool:
    verbs = rule.get("verbs") or []
    if atom[1] not in verbs and "*" not in verbs:
        return False
    if atom[0] == "url":
        url = atom[2]
        return any(have in ("*", url) or (have.endswith("*") and url.startswith(have[:-1]))
                   for have in rule.get("nonResourceURLs") or [])
    _, _, group, resource, name = atom
    groups = rule.get("apiGroups") or []
    if group not in groups and "*" not in groups:
        return False
    resources = rule.get("resources") or []
    _, _, sub = resource.partition("/")
    if not (resource in resources or "*" in resources or (sub and f"*/{sub}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(name) and name in names)


def uncovered(owned: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of `wanted` that `owned` does not fully grant (each as the single grant that is missing)."""
    missing: list[dict[str, Any]] = []
    for rule in wanted:
        for atom in _atoms(rule):
            if any(_atom_covered(atom, have) for have in owned):
                continue
            if atom[0] == "url":
                missing.append({"verbs": [atom[1]], "nonResourceURLs": [atom[2]]})
            else:
                entry: dict[str, Any] = {"verbs": [atom[1]], "apiGroups": [atom[2]], "resources": [atom[3]]}
                if atom[4]:
                    entry["resourceNames"] = [atom[4]]
                missing.append(entry)
    return missing


def format_rule(rule: dict[str, Any]) -> str:
    """A rule as upstream prints it in escalation errors: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`."""
    def quoted(values: list[str]) -> str:
        return "[" + " ".join(f'"{v}"' for v in values) + "]"

    parts = []
    if rule.get("apiGroups") is not None:
        parts.append(f"APIGroups:{quoted(rule['apiGroups'])}")
    if rule.get("resources"):
        parts.append(f"Resources:{quoted(rule['resources'])}")
    if rule.get("resourceNames"):
        parts.append(f"ResourceNames:{quoted(rule['resourceNames'])}")
    if rule.get("nonResourceURLs"):
        parts.append(f"NonResourceURLs:{quoted(rule['nonResourceURLs'])}")
    parts.append(f"Verbs:{quoted(rule.get('verbs') or [])}")
    return "{" + ", ".join(parts) + "}"
