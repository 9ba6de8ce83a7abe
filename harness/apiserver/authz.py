"""Authorization in the apiserver: `--authorization-mode` built into one authorizer over the watch caches, the
RBAC escalation check on role and binding writes, and the bootstrap policy reconciled at start.

The decisions are harness.auth's; this module feeds them the cached Roles, bindings and pods, and acts on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.api import errors, registry
from harness.api.registry import Kind
from harness.apiserver.admission import Attributes
from harness.apiserver.genericregistry import DeleteOptions
from harness.apiserver.watchcache import WatchCache
from harness.auth import bootstrappolicy, rbac
from harness.auth.authorizer import (
    AlwaysAllow,
    AlwaysDeny,
    Authorizer,
    PrivilegedGroups,
    RequestInfo,
    Union,
)
from harness.auth.node import NodeAuthorizer
from harness.auth.user import MASTERS, UserInfo, node_name
from harness.storage.backend import StorageError

log = logging.getLogger(__name__)

MODES = ("AlwaysAllow", "AlwaysDeny", "Node", "RBAC")

ROLES = registry.by_path("rbac.authorization.k8s.io", "v1", "roles")
CLUSTER_ROLES = registry.by_path("rbac.authorization.k8s.io", "v1", "clusterroles")
ROLE_BINDINGS = registry.by_path("rbac.authorization.k8s.io", "v1", "rolebindings")
CLUSTER_ROLE_BINDINGS = registry.by_path("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
PODS = registry.by_path("", "v1", "pods")
PVCS_PATH = ("", "v1", "persistentvolumeclaims")


class AuthzConfigError(Exception):
    """`--authorization-mode` names something that is not a mode."""


def parse_modes(text: str | Iterable[str]) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise AuthzConfigError(f"--authorization-mode: unknown mode {', '.join(unknown)}; known: {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise AuthzConfigError("--authorization-mode: a mode is given twice")
    return modes or ("AlwaysAllow",)


class CachePolicy:
    """RBAC's objects, read from the apiserver's watch caches."""

    def __init__(self, caches: dict[Kind, WatchCache]) -> None:
        self.caches = caches

    def cluster_role(self, name: str) -> dict[str, Any] | None:
        return self.caches[CLUSTER_ROLES].objects.get(CLUSTER_ROLES.key(None, name))

    def role(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.caches[ROLES].objects.get(ROLES.key(namespace, name))

    def cluster_role_bindings(self) -> Iterable[dict[str, Any]]:
        return list(self.caches[CLUSTER_ROLE_BINDINGS].objects.values())

    def role_bindings(self, namespace: str) -> Iterable[dict[str, Any]]:
        prefix = ROLE_BINDINGS.key_prefix(namespace)
        return [obj for key, obj in self.caches[ROLE_BINDINGS].objects.items() if key.startswith(prefix)]


class CacheGraph:
    """The pods bound to each node, indexed from the pod cache and rebuilt when the cache moves on."""

    def __init__(self, caches: dict[Kind, WatchCache]) -> None:
        self.caches = caches
        self._revision = -1
        self._by_node: dict[str, list[dict[str, Any]]] = {}

    def pods_on(self, node: str) -> Iterable[dict[str, Any]]:
        cache = self.caches[PODS]
        if cache.revision != self._revision:
            by_node: dict[str, list[dict[str, Any]]] = {}
            for pod in cache.objects.values():
                bound = (pod.get("spec") or {}).get("nodeName")
                if bound:
                    by_node.setdefault(bound, []).append(pod)
            self._by_node, self._revision = by_node, cache.revision
        return self._by_node.get(node, ())

    def persistent_volume_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        kind = next((k for k in self.caches if (k.group, k.version, k.plural) == PVCS_PATH), None)
        return self.caches[kind].objects.get(kind.key(namespace, name)) if kind else None


@dataclass
class Authorization:
    """The apiserver's authorizer and what it can say about a user's rules (SelfSubjectRulesReview)."""

    modes: tuple[str, ...]
    authorizer: Authorizer
    rbac: rbac.RBACAuthorizer | None = None
    node_rules: list[dict[str, Any]] = field(default_factory=list)

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict[str, Any]], bool, str]:
        """(rules, incomplete, evaluation error) of the user in the namespace, as SelfSubjectRulesReview reports."""
        all_rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                     {"verbs": ["*"], "nonResourceURLs": ["*"]}]
        if MASTERS in user.groups or "AlwaysAllow" in self.modes:
            return all_rules, False, ""
        rules: list[dict[str, Any]] = []
        incomplete, error = False, ""
        if "Node" in self.modes and node_name(user) is not None:
            rules += self.node_rules
            incomplete = True  # what the graph allows is not expressed as rules
        if self.rbac is not None:
            held, failures = self.rbac.rules_for(user, namespace)
            rules += held
            if failures:
                incomplete, error = True, "; ".join(failures)
        return rules, incomplete, error


def build(modes: tuple[str, ...], caches: dict[Kind, WatchCache]) -> Authorization:
    """The union of `system:masters` and the modes, in the order given."""
    members: list[Authorizer] = [PrivilegedGroups()]
    rbac_authorizer = None
    node_rules = bootstrappolicy.node_rules() if "Node" in modes else []
    for mode in modes:
        if mode == "AlwaysAllow":
            members.append(AlwaysAllow())
        elif mode == "AlwaysDeny":
            members.append(AlwaysDeny())
        elif mode == "Node":
            members.append(NodeAuthorizer(CacheGraph(caches), node_rules))
        elif mode == "RBAC":
            rbac_authorizer = rbac.RBACAuthorizer(CachePolicy(caches))
            members.append(rbac_authorizer)
    return Authorization(modes, Union(members), rbac_authorizer, node_rules)


# -- escalation ------------------------------------------------------------------------------


class EscalationCheck:
    """RBAC's rule against privilege escalation, on every write of a role or binding.

    A user may write a role only with rules it holds itself, unless it may `escalate` roles; it may bind a role only
    if it holds the role's rules, unless it may `bind` that role. As upstream's RBAC storage does.
    """

    def __init__(self, authorization: Authorization, policy: rbac.Policy) -> None:
        self.authorization = authorization
        self.policy = policy

    def __call__(self, attrs: Attributes) -> None:
        if attrs.operation not in ("CREATE", "UPDATE") or attrs.obj is None or attrs.subresource:
            return
        if attrs.kind in ("Role", "ClusterRole"):
            self._role(attrs)
        elif attrs.kind in ("RoleBinding", "ClusterRoleBinding"):
            self._binding(attrs)

    def _allowed(self, user: UserInfo, verb: str, resource: str, namespace: str, name: str) -> bool:
        info = RequestInfo(verb, rbac.GROUP, "v1", resource, "", namespace, name)
        return self.authorization.authorizer.authorize(user, info).allowed

    def _refuse_unless_covered(self, attrs: Attributes, rules: list[dict[str, Any]]) -> None:
        held, _, _ = self.authorization.rules_for(attrs.user, attrs.namespace)
        missing = rbac.uncovered(held, rules)
        if missing:
            groups = ",".join(f'"{g}"' for g in attrs.user.groups)
            raise errors.Forbidden(
                f'{attrs.resource}.{rbac.GROUP} "{attrs.name}" is forbidden: user "{attrs.user.name}" '
                f"(groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n"
                + "\n".join(rbac.format_rule(r) for r in missing),
                kind=attrs.resource, name=attrs.name, group=rbac.GROUP)

    def _role(self, attrs: Attributes) -> None:
        assert attrs.obj is not None
        if self._allowed(attrs.user, "escalate", attrs.resource, attrs.namespace, attrs.name):
            return
        self._refuse_unless_covered(attrs, [r for r in attrs.obj.get("rules") or [] if isinstance(r, dict)])

    def _binding(self, attrs: Attributes) -> None:
        assert attrs.obj is not None
        ref = attrs.obj.get("roleRef") or {}
        resource = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
        if self._allowed(attrs.user, "bind", resource, attrs.namespace if resource == "roles" else "",
                         ref.get("name", "")):
            return
        if ref.get("kind") == "ClusterRole":
            role = self.policy.cluster_role(ref.get("name", ""))
        else:
            role = self.policy.role(attrs.namespace, ref.get("name", ""))
        if role is None:
            return  # validation or the binding's uselessness speak for themselves; nothing is granted
        self._refuse_unless_covered(attrs, [r for r in role.get("rules") or [] if isinstance(r, dict)])


# -- the bootstrap policy, reconciled at start ----------------------------------------------


_KINDS = {"ClusterRole": CLUSTER_ROLES, "ClusterRoleBinding": CLUSTER_ROLE_BINDINGS, "Role": ROLES,
          "RoleBinding": ROLE_BINDINGS}


def _plan(policy: bootstrappolicy.BootstrapPolicy,
          caches: dict[Kind, WatchCache]) -> Iterator[tuple[str, Kind, dict[str, Any]]]:
    for desired in policy.objects():
        kind = _KINDS[desired["kind"]]
        md = desired["metadata"]
        namespace = md.get("namespace", "")
        existing = caches[kind].objects.get(kind.key(namespace, md["name"]))
        if kind in (CLUSTER_ROLES, ROLES):
            out = bootstrappolicy.reconcile_role(existing, desired)
            if out is not None:
                yield ("create" if existing is None else "update"), kind, out
        else:
            step = bootstrappolicy.reconcile_binding(existing, desired)
            if step is not None:
                yield step[0], kind, step[1]


async def reconcile_bootstrap_policy(stores: dict[Kind, Any], caches: dict[Kind, WatchCache],
                                     user: UserInfo, *, attempts: int = 5) -> int:
    """Bring the stored roles and bindings up to the bootstrap policy; the number of writes made.

    Several apiservers start at once: a write that loses a race is planned again from the cache, as upstream's
    post-start hook retries."""
    policy = bootstrappolicy.load()
    written = 0
    retry: set[tuple[str, str, str]] | None = None  # None: every object; then only those that lost a race
    for attempt in range(attempts):
        failed: set[tuple[str, str, str]] = set()
        for action, kind, obj in list(_plan(policy, caches)):
            store, md = stores[kind], obj["metadata"]
            namespace = md.get("namespace", "")
            key = (kind.plural, namespace, md["name"])
            if retry is not None and key not in retry:
                continue
            try:
                if action == "recreate":
                    await store.delete(namespace, md["name"], DeleteOptions(), user=user)
                    action = "create"
                if action == "create":
                    md.pop("resourceVersion", None)
                    await store.create(namespace, obj, user=user)
                else:
                    await store.update(namespace, md["name"], obj, user=user)
                written += 1
            except (errors.AlreadyExists, errors.Conflict, errors.NotFound):
                failed.add(key)
            except (errors.ApiError, StorageError) as exc:
                log.warning("bootstrap policy: %s %s %s: %s", action, kind.kind, md["name"], exc)
                failed.add(key)
        if not failed:
            return written
        retry = failed
        await asyncio.sleep(0.2 * (attempt + 1))  # let the caches see the other writer's objects
    log.warning("bootstrap policy: %d objects could not be reconciled", len(retry or ()))
    return written
