"""Aggregated ClusterRoles: `admin`, `edit` and `view` gather the rules of every ClusterRole their selectors match.

The pure half of upstream's clusterrole-aggregation controller: roles are taken in name order and a rule is added
once, so the result does not depend on the order the cache lists them in.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from harness.api import selectors


def selectors_of(role: dict[str, Any]) -> list[selectors.LabelSelector]:
    rule = role.get("aggregationRule") or {}
    return [selectors.label_selector_from_spec(s) for s in rule.get("clusterRoleSelectors") or []
            if isinstance(s, dict)]


def aggregated_rules(role: dict[str, Any], cluster_roles: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules `role` should hold: those of every other ClusterRole one of its selectors matches."""
    wanted = selectors_of(role)
    name = role["metadata"]["name"]
    rules: list[dict[str, Any]] = []
    for other in sorted(cluster_roles, key=lambda r: r["metadata"]["name"]):
        if other["metadata"]["name"] == name:
            continue
        labels = other["metadata"].get("labels") or {}
        if not any(s.matches(labels) for s in wanted):
            continue
        for rule in other.get("rules") or []:
            if rule not in rules:
                rules.append(copy.deepcopy(rule))
    return rules
