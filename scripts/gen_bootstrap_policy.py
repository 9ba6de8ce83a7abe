#!/usr/bin/env python3
"""Generate harness/auth/data/bootstrap-policy.json: upstream Kubernetes' RBAC bootstrap policy as data.

When RBAC is on, kube-apiserver creates a fixed set of default ClusterRoles, ClusterRoleBindings, and
namespaced Roles and RoleBindings at start (cluster-admin, admin/edit/view, system:node,
system:kube-scheduler, the system:controller:* roles of kube-controller-manager, the leader-locking
Roles in kube-system, ...). Upstream defines them in Go
(plugin/pkg/auth/authorizer/rbac/bootstrappolicy) and checks that definition against YAML fixtures that
list the whole policy as produced with the default feature gates:

    plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata/
        cluster-roles.yaml              cluster-role-bindings.yaml
        controller-roles.yaml           controller-role-bindings.yaml
        namespace-roles.yaml            namespace-role-bindings.yaml

(the *-featuregates.yaml fixtures, which turn every alpha/beta gate on, are deliberately not used).
This script reads those six files and writes ONE JSON document of our own:

    {"upstream": "<ref>", "source": "<upstream testdata path>",
     "clusterRoles": [...], "clusterRoleBindings": [...], "roles": [...], "roleBindings": [...]}

Each object is normalised to rbac.authorization.k8s.io/v1 and keeps only apiVersion, kind,
metadata {name, namespace (namespaced kinds only), labels, annotations} and rules / aggregationRule
(roles) or roleRef / subjects (bindings). Noise such as ``creationTimestamp: null`` is dropped; an
absent or null ``rules`` / ``subjects`` becomes ``[]`` (the aggregated roles admin/edit/view carry
no rules of their own: the aggregation controller fills them from the roles their aggregationRule
selects). The controller roles and bindings (system:controller:*) go into clusterRoles /
clusterRoleBindings after the others. Rule order and list order are upstream's; keys are sorted,
so the output is deterministic. The script refuses to write data where a binding names a role that
is not in the data, or where a name repeats.

To regenerate (e.g. for a newer Kubernetes release):

 1. Download the six files above from the upstream tag or commit into an empty directory outside
    this repository, e.g. for a tag vX.Y.Z:
        base=https://raw.githubusercontent.com/kubernetes/kubernetes/vX.Y.Z/plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata
        mkdir -p /tmp/bootstrap-upstream && cd /tmp/bootstrap-upstream
        for f in cluster-roles cluster-role-bindings controller-roles controller-role-bindings \\
                 namespace-roles namespace-role-bindings; do curl -fsSLO "$base/$f.yaml"; done
 2. From the repository root run:
        .venv/bin/python scripts/gen_bootstrap_policy.py --upstream-dir /tmp/bootstrap-upstream \\
            --upstream-ref 'kubernetes/kubernetes@<commit> (vX.Y.Z)' --out harness/auth/data/bootstrap-policy.json
 3. Run tests/unit/test_bootstrap_policy_data.py and commit the JSON. Do not commit the YAML files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

SOURCE = "plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata"
RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_V1 = f"{RBAC_GROUP}/v1"
# Older fixtures used v1beta1, whose objects have the same shape as v1 ones.
ACCEPTED_API_VERSIONS = frozenset({RBAC_V1, f"{RBAC_GROUP}/v1beta1"})
RULE_KEYS = ("apiGroups", "resources", "resourceNames", "nonResourceURLs", "verbs")
SUBJECT_KEYS = ("kind", "apiGroup", "name", "namespace")
ROLE_REF_KEYS = ("apiGroup", "kind", "name")

Obj = dict[str, Any]

# Output list -> the upstream files it is made of, in order, and the kind their items must have.
LAYOUT: dict[str, tuple[tuple[str, ...], str]] = {
    "clusterRoles": (("cluster-roles.yaml", "controller-roles.yaml"), "ClusterRole"),
    "clusterRoleBindings": (("cluster-role-bindings.yaml", "controller-role-bindings.yaml"), "ClusterRoleBinding"),
    "roles": (("namespace-roles.yaml",), "Role"),
    "roleBindings": (("namespace-role-bindings.yaml",), "RoleBinding"),
}
NAMESPACED = frozenset({"Role", "RoleBinding"})


class PolicyError(Exception):
    """The upstream files are not what this script understands, or describe an inconsistent policy."""


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: expected a list of strings, got {value!r}")
    return list(value)


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PolicyError(f"{where}: expected a map of strings, got {value!r}")
    return dict(value)


def _pick(src: Obj, keys: Iterable[str], where: str) -> Obj:
    unknown = set(src) - set(keys)
    if unknown:
        raise PolicyError(f"{where}: unexpected fields {sorted(unknown)}")
    return {k: src[k] for k in keys if k in src}


def normalise_rule(rule: Any, where: str) -> Obj:
    if not isinstance(rule, dict):
        raise PolicyError(f"{where}: a rule must be a map, got {rule!r}")
    picked = _pick(rule, RULE_KEYS, where)
    return {k: _str_list(v, f"{where}.{k}") for k, v in picked.items() if v is not None}


def normalise_metadata(meta: Any, kind: str, where: str) -> Obj:
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise PolicyError(f"{where}: metadata without a name")
    out: Obj = {
        "name": meta["name"],
        "labels": _str_map(meta.get("labels"), f"{where}.labels"),
        "annotations": _str_map(meta.get("annotations"), f"{where}.annotations"),
    }
    namespace = meta.get("namespace")
    if kind in NAMESPACED:
        if not isinstance(namespace, str) or not namespace:
            raise PolicyError(f"{where}: a {kind} needs a namespace")
        out["namespace"] = namespace
    elif namespace:
        raise PolicyError(f"{where}: a {kind} is cluster-scoped but has namespace {namespace!r}")
    return out


def normalise_object(item: Any, kind: str, where: str) -> Obj:
    if not isinstance(item, dict):
        raise PolicyError(f"{where}: an item must be a map")
    if item.get("kind") != kind:
        raise PolicyError(f"{where}: expected kind {kind}, got {item.get('kind')!r}")
    if item.get("apiVersion") not in ACCEPTED_API_VERSIONS:
        raise PolicyError(f"{where}: unsupported apiVersion {item.get('apiVersion')!r}")
    meta = normalise_metadata(item.get("metadata"), kind, where)
    where = f"{where} {meta['name']}"
    out: Obj = {"apiVersion": RBAC_V1, "kind": kind, "metadata": meta}
    if kind.endswith("Binding"):
        ref = item.get("roleRef")
        if not isinstance(ref, dict):
            raise PolicyError(f"{where}: a binding needs a roleRef")
        out["roleRef"] = _pick(ref, ROLE_REF_KEYS, f"{where}.roleRef")
        subjects = item.get("subjects") or []
        if not isinstance(subjects, list):
            raise PolicyError(f"{where}: subjects must be a list")
        out["subjects"] = [_pick(s, SUBJECT_KEYS, f"{where}.subjects[{i}]") for i, s in enumerate(subjects)]
    else:
        rules = item.get("rules") or []
        if not isinstance(rules, list):
            raise PolicyError(f"{where}: rules must be a list")
        out["rules"] = [normalise_rule(r, f"{where}.rules[{i}]") for i, r in enumerate(rules)]
        if item.get("aggregationRule") is not None:
            agg = item["aggregationRule"]
            if not isinstance(agg, dict):
                raise PolicyError(f"{where}: aggregationRule must be a map")
            out["aggregationRule"] = _pick(agg, ("clusterRoleSelectors",), f"{where}.aggregationRule")
    return out


def load_list(path: Path) -> list[Any]:
    """The items of one upstream fixture (a v1 List)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{path}: missing (download it from upstream first)") from None
    if not isinstance(doc, dict) or doc.get("kind") != "List" or not isinstance(doc.get("items"), list):
        raise PolicyError(f"{path}: not a List of items")
    return list(doc["items"])


def _check(policy: Obj) -> None:
    """Names are unique and every binding's roleRef names a role that is in the data."""
    cluster_roles: set[str] = set()
    for obj in policy["clusterRoles"]:
        name = obj["metadata"]["name"]
        if name in cluster_roles:
            raise PolicyError(f"ClusterRole {name} appears twice")
        cluster_roles.add(name)
    roles: set[tuple[str, str]] = set()
    for obj in policy["roles"]:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in roles:
            raise PolicyError(f"Role {key[0]}/{key[1]} appears twice")
        roles.add(key)
    for list_name in ("clusterRoleBindings", "roleBindings"):
        seen: set[tuple[str, str]] = set()
        for obj in policy[list_name]:
            meta, ref = obj["metadata"], obj["roleRef"]
            key = (meta.get("namespace", ""), meta["name"])
            if key in seen:
                raise PolicyError(f"{obj['kind']} {'/'.join(filter(None, key))} appears twice")
            seen.add(key)
            if ref.get("apiGroup") != RBAC_GROUP:
                raise PolicyError(f"{obj['kind']} {meta['name']}: roleRef apiGroup {ref.get('apiGroup')!r}")
            if ref.get("kind") == "ClusterRole":
                found = ref.get("name") in cluster_roles
            elif ref.get("kind") == "Role" and obj["kind"] == "RoleBinding":
                found = (meta["namespace"], ref.get("name")) in roles
            else:
                found = False
            if not found:
                raise PolicyError(f"{obj['kind']} {meta['name']}: roleRef {ref} names no role in the data")


def build_policy(upstream_dir: Path, upstream_ref: str) -> Obj:
    policy: Obj = {"upstream": upstream_ref, "source": SOURCE}
    for list_name, (files, kind) in LAYOUT.items():
        objs: list[Obj] = []
        for fname in files:
            for i, item in enumerate(load_list(upstream_dir / fname)):
                objs.append(normalise_object(item, kind, f"{fname} items[{i}]"))
        policy[list_name] = objs
    _check(policy)
    return policy


def render(policy: Obj) -> str:
    return json.dumps(policy, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream-dir", type=Path, required=True, help="directory holding the six upstream files")
    parser.add_argument(
        "--upstream-ref",
        required=True,
        help="where the files came from, e.g. 'kubernetes/kubernetes@<commit> (vX.Y.Z)'",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if not args.upstream_ref.strip():
        parser.error("--upstream-ref must not be empty")
    try:
        policy = build_policy(args.upstream_dir, args.upstream_ref.strip())
    except PolicyError as e:
        print(f"gen_bootstrap_policy: {e}", file=sys.stderr)
        return 1
    write_file(args.out, render(policy))
    counts = ", ".join(f"{len(policy[k])} {k}" for k in LAYOUT)
    print(f"wrote {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
