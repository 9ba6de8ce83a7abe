"""Validation of resource lists: container requests and limits, quota hard/used, node capacity.

Names must be standard (`cpu`, `memory`, ...) or fully qualified (`example.com/gpu`);
quantities must parse (`harness.api.quantity`), be non-negative, and be whole numbers for
countable resources. A container's request may not exceed its limit, and resources that cannot
be overcommitted (hugepages, extended resources) need request == limit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from harness.api.errors import Cause
from harness.api.quantity import QUANTITY_FORMAT_ERROR, parse_quantity
from harness.api.validation import field_errors as f
from harness.api.validation import formats

STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
STANDARD_QUOTA_RESOURCES = (
    "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory", "requests.storage",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage", "pods", "services",
    "replicationcontrollers", "resourcequotas", "secrets", "configmaps", "persistentvolumeclaims",
    "services.nodeports", "services.loadbalancers",
)
STANDARD_RESOURCES = (*STANDARD_QUOTA_RESOURCES, "storage")
INTEGER_RESOURCES = ("pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
                     "persistentvolumeclaims", "services.nodeports", "services.loadbalancers")
_HUGEPAGES = ("hugepages-", "requests.hugepages-", "limits.hugepages-")


def _is_native(name: str) -> bool:
    return "/" not in name or name.startswith("kubernetes.io/") or ".kubernetes.io/" in name.split("/")[0]


def _overcommit_allowed(name: str) -> bool:
    return _is_native(name) and not name.startswith("hugepages-")


def _is_integer_resource(name: str) -> bool:
    return name in INTEGER_RESOURCES or name.startswith("count/") or not _is_native(name)


def resource_name(name: str, path: str) -> list[Cause]:
    """A qualified name that, without a '/', is a standard resource."""
    causes = f.invalid_each(path, name, formats.qualified_name(name))
    if causes:
        return causes
    if "/" not in name and name not in STANDARD_RESOURCES and not name.startswith(_HUGEPAGES):
        causes.append(f.invalid(path, name, "must be a standard resource type or fully qualified"))
    return causes


def container_resource_name(name: str, path: str) -> list[Cause]:
    causes = resource_name(name, path)
    if "/" not in name and name not in STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
        causes.append(f.invalid(path, name, "must be a standard resource for containers"))
    return causes


def quota_resource_name(name: str, path: str) -> list[Cause]:
    causes = resource_name(name, path)
    if "/" not in name and name not in STANDARD_QUOTA_RESOURCES and not name.startswith(_HUGEPAGES):
        causes.append(f.invalid(path, name, "must be a standard resource for quota"))
    return causes


def quantity(name: str, value: Any, path: str) -> tuple[Decimal | None, list[Cause]]:
    """The parsed quantity (None if it does not parse), and what is wrong with it."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return None, [f.invalid(path, value, QUANTITY_FORMAT_ERROR)]
    if amount < 0:
        return amount, [f.invalid(path, value, f.NEGATIVE)]
    if _is_integer_resource(name) and amount != amount.to_integral_value():
        return amount, [f.invalid(path, value, f.NOT_AN_INTEGER)]
    return amount, []


def validate_quota_list(resources: Any, path: str) -> list[Cause]:
    """A quota's map of resource name to quantity (`spec.hard`, `status.used`)."""
    causes: list[Cause] = []
    for name, value in f.as_dict(resources).items():
        causes += quota_resource_name(name, f"{path}[{name}]")
        causes += quantity(name, value, f"{path}[{name}]")[1]
    return causes


def validate_capacity(resources: Any, path: str) -> list[Cause]:
    """A node's capacity or allocatable: only the quantities (upstream's path is `status.capacity.cpu`)."""
    causes: list[Cause] = []
    for name, value in f.as_dict(resources).items():
        causes += quantity(name, value, f"{path}.{name}")[1]
    return causes


def validate_container_resources(resources: Any, path: str) -> list[Cause]:
    """`resources` of a container: names, quantities, and requests within limits."""
    resources = f.as_dict(resources)
    limits, causes = _amounts(resources.get("limits"), f"{path}.limits")
    requests, found = _amounts(resources.get("requests"), f"{path}.requests")
    causes += found
    for name, amount in requests.items():
        limit = limits.get(name)
        if amount is None:
            continue
        shown = f.as_dict(resources.get("requests"))[name]
        limit_shown = f.as_dict(resources.get("limits")).get(name)
        if name in limits and limit is not None:
            if amount != limit and not _overcommit_allowed(name):
                causes.append(f.invalid(f"{path}.requests", shown, f"must be equal to {name} limit of {limit_shown}"))
            elif amount > limit:
                causes.append(f.invalid(f"{path}.requests", shown,
                                        f"must be less than or equal to {name} limit of {limit_shown}"))
        elif name not in limits and not _overcommit_allowed(name):
            causes.append(f.required(f"{path}.limits", "Limit must be set for non overcommitable resources"))
    return causes


def _amounts(resources: Any, path: str) -> tuple[dict[str, Decimal | None], list[Cause]]:
    amounts: dict[str, Decimal | None] = {}
    causes: list[Cause] = []
    for name, value in f.as_dict(resources).items():
        here = f"{path}[{name}]"
        causes += container_resource_name(name, here)
        amounts[name], found = quantity(name, value, here)
        causes += found
    return amounts, causes
