"""The roles and bindings every cluster starts with, and how an existing cluster is brought up to them.

Upstream's bootstrap policy (cluster-admin, admin/edit/view, system:kube-scheduler, system:node, ...) is data in
`data/bootstrap-policy.json`, generated from upstream's definitions by `scripts/gen_bootstrap_policy.py` and naming
the upstream version it came from. `HARNESS_POLICY` adds what harness's own programs need: upstream runs cluster
DNS, Prometheus and the pod-network routes as pods with service accounts, harness runs them on the machines with
client certificates.

`reconcile_role` and `reconcile_binding` are the pure half of upstream's `rbac/bootstrap-roles` start hook: given
what is stored, what to write so that it holds at least the bootstrap rules and subjects, unless an administrator
set `rbac.authorization.kubernetes.io/autoupdate: "false"`.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.auth.rbac import uncovered

DATA = Path(__file__).parent / "data" / "bootstrap-policy.json"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
BOOTSTRAPPING = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_API_VERSION = "rbac.authorization.k8s.io/v1"


def _object(kind: str, name: str, namespace: str = "", **rest: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "labels": dict(BOOTSTRAPPING), "annotations": {AUTOUPDATE: "true"}}
    if namespace:
        md["namespace"] = namespace
    return {"apiVersion": _API_VERSION, "kind": kind, "metadata": md, **rest}


def _user_binding(name: str, role: str, user: str) -> dict[str, Any]:
    return _object("ClusterRoleBinding", name, roleRef={"apiGroup": "rbac.authorization.k8s.io",
                                                         "kind": "ClusterRole", "name": role},
                   subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}])


#: harness's own programs, which run on the machines with certificates instead of as pods with service accounts.
HARNESS_POLICY: dict[str, list[dict[str, Any]]] = {
    "clusterRoles": [
        _object("ClusterRole", "harness:pod-routes", rules=[
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]),
        _object("ClusterRole", "harness:prometheus", rules=[
            {"apiGroups": [""], "resources": ["nodes", "services", "endpoints", "pods"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/metrics", "nodes/proxy"], "verbs": ["get"]},
            {"nonResourceURLs": ["/metrics", "/metrics/*"], "verbs": ["get"]}]),
    ],
    "clusterRoleBindings": [
        _user_binding("harness:pod-routes", "harness:pod-routes", "system:harness-pod-routes"),
        _user_binding("harness:prometheus", "harness:prometheus", "system:prometheus"),
        # upstream binds system:kube-dns to the kube-dns service account; harness's DNS has a certificate
        _user_binding("harness:kube-dns", "system:kube-dns", "system:kube-dns"),
    ],
    # harness's DNS servers keep kube-system/kube-dns pointing at themselves (harness.machinery.selfservice): the
    # Service, its Endpoints from each server's identity Lease
    "roles": [
        _object("Role", "harness:kube-dns-registration", "kube-system", rules=[
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create"]},
            {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "create", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "list", "create", "update", "delete"]}]),
    ],
    "roleBindings": [
        _object("RoleBinding", "harness:kube-dns-registration", "kube-system",
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "harness:kube-dns-registration"},
                subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-dns"}]),
    ],
}


@dataclass(frozen=True)
class BootstrapPolicy:
    upstream: str
    cluster_roles: tuple[dict[str, Any], ...]
    cluster_role_bindings: tuple[dict[str, Any], ...]
    roles: tuple[dict[str, Any], ...]
    role_bindings: tuple[dict[str, Any], ...]

    def cluster_role(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.cluster_roles if r["metadata"]["name"] == name), None)

    def objects(self) -> list[dict[str, Any]]:
        """Everything, in the order it is reconciled: roles before the bindings that name them."""
        return [*self.cluster_roles, *self.cluster_role_bindings, *self.roles, *self.role_bindings]


@functools.cache
def load(path: Path = DATA) -> BootstrapPolicy:
    data = json.loads(path.read_text())
    parts = {key: [*data.get(key, []), *HARNESS_POLICY[key]] for key in HARNESS_POLICY}
    for key, kind in (("clusterRoles", "ClusterRole"), ("clusterRoleBindings", "ClusterRoleBinding"),
                      ("roles", "Role"), ("roleBindings", "RoleBinding")):
        for obj in parts[key]:
            obj.setdefault("apiVersion", _API_VERSION)
            obj.setdefault("kind", kind)
    return BootstrapPolicy(str(data.get("upstream", "")), tuple(parts["clusterRoles"]),
                           tuple(parts["clusterRoleBindings"]), tuple(parts["roles"]), tuple(parts["roleBindings"]))


def node_rules() -> list[dict[str, Any]]:
    """What the Node authorizer allows a kubelet beyond the graph: the rules of `system:node`."""
    role = load().cluster_role("system:node")
    return list(role.get("rules") or []) if role else []


# -- reconciliation --------------------------------------------------------------------------


def _autoupdate(existing: dict[str, Any]) -> bool:
    return ((existing.get("metadata") or {}).get("annotations") or {}).get(AUTOUPDATE, "true") != "false"


def _merge_meta(out: dict[str, Any], desired: dict[str, Any]) -> bool:
    changed = False
    md = out.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        want = desired["metadata"].get(key) or {}
        have = md.get(key) or {}
        missing = {k: v for k, v in want.items() if k not in have}
        if missing:
            md[key] = {**have, **missing}
            changed = True
    return changed


def reconcile_role(existing: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any] | None:
    """The object to write for a bootstrap (Cluster)Role, or None when what is stored already holds it."""
    if existing is None:
        return copy.deepcopy(desired)
    if not _autoupdate(existing):
        return None
    out = copy.deepcopy(existing)
    changed = _merge_meta(out, desired)
    if desired.get("aggregationRule"):
        have = (out.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
        extra = [s for s in desired["aggregationRule"].get("clusterRoleSelectors") or [] if s not in have]
        if extra:
            out["aggregationRule"] = {"clusterRoleSelectors": [*have, *extra]}
            changed = True
    else:
        rules = list(out.get("rules") or [])
        missing = uncovered(rules, desired.get("rules") or [])
        if missing:
            out["rules"] = rules + missing  # the single grants that are missing, as upstream adds them
            changed = True
    return out if changed else None


def reconcile_binding(existing: dict[str, Any] | None,
                      desired: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """("create" | "update" | "recreate", object) for a bootstrap binding, or None when nothing is to be done.

    A binding whose roleRef differs cannot be updated (roleRef is immutable): it is deleted and made again as the
    bootstrap policy has it, as upstream does."""
    if existing is None:
        return "create", copy.deepcopy(desired)
    if not _autoupdate(existing):
        return None
    if existing.get("roleRef") != desired.get("roleRef"):
        return "recreate", copy.deepcopy(desired)
    out = copy.deepcopy(existing)
    changed = _merge_meta(out, desired)
    subjects = _union(out.get("subjects") or [], desired.get("subjects") or [])
    if subjects != (out.get("subjects") or []):
        out["subjects"] = subjects
        changed = True
    return ("update", out) if changed else None


def _union(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(s: dict[str, Any]) -> tuple[str, str, str]:
        return s.get("kind", ""), s.get("namespace", ""), s.get("name", "")

    seen = {key(s) for s in have}
    return [*have, *(copy.deepcopy(s) for s in want if key(s) not in seen)]
