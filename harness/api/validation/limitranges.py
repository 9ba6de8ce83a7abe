"""Validation of LimitRanges, as upstream's ValidateLimitRange.

Each item of `spec.limits` names a type (Pod, Container, PersistentVolumeClaim or a qualified name) at most
once, and per resource its bounds must nest: min <= defaultRequest <= default <= max, and a
maxLimitRequestRatio of at least 1 that max/min can reach. Upstream quotes the bad quantity as a Go struct
dump; here it is quoted the way the rest of our causes quote quantities, in its canonical form.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from harness.api.errors import Cause
from harness.api.quantity import QUANTITY_FORMAT_ERROR, canonical, int_value, milli_value, parse_quantity
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.api.validation.resources import _overcommit_allowed, container_resource_name, resource_name

LIMIT_TYPES = ("Pod", "Container", "PersistentVolumeClaim")
#: Upstream's resource.MaxMilliValue: above it, comparisons fall back to whole units.
MAX_MILLI_VALUE = (2**63 - 1) // 1000
NOT_FOR_POD = "may not be specified when `type` is 'Pod'"
_BOUNDS = ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")


def validate_limit_range(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, item in enumerate(f.as_dicts(f.as_dict(obj.get("spec")).get("limits"))):
        path = f"spec.limits[{i}]"
        kind = f.as_str(item.get("type"))
        causes += _type_name(kind, f"{path}.type")
        if kind in seen:
            causes.append(f.duplicate(f"{path}.type", kind))
        seen.add(kind)
        causes += _item(item, kind, path)
    return causes


def _type_name(value: str, path: str) -> list[Cause]:
    causes = f.invalid_each(path, value, formats.qualified_name(value))
    if not causes and "/" not in value and value not in LIMIT_TYPES:
        causes.append(f.invalid(path, value, "must be a standard limit type or fully qualified"))
    return causes


def _item(item: dict[str, Any], kind: str, path: str) -> list[Cause]:
    causes: list[Cause] = []
    bounds: dict[str, dict[str, Decimal]] = {}
    for bound in _BOUNDS:
        given = f.as_dict(item.get(bound))
        if bound == "maxLimitRequestRatio" and kind == "PersistentVolumeClaim" and not _bounds_storage(item):
            causes.append(f.required(f"{path}.limits", "either minimum or maximum storage value is required, "
                                                       "but neither was provided"))
        if kind == "Pod" and bound in ("default", "defaultRequest"):
            if given:
                causes.append(f.forbidden(f"{path}.{bound}", NOT_FOR_POD))
            continue
        bounds[bound] = {}
        for name, value in given.items():
            here = f"{path}.{bound}[{name}]"
            causes += container_resource_name(name, here) if kind in ("Pod", "Container") \
                else resource_name(name, here)
            amount, found = _quantity(value, here)
            causes += found
            if amount is not None:
                bounds[bound][name] = amount
    for name in sorted({name for bound in bounds.values() for name in bound}):
        causes += _nesting(item, bounds, name, path)
    return causes


def _quantity(value: Any, path: str) -> tuple[Decimal | None, list[Cause]]:
    """A quantity that parses and is not negative (whole numbers are not asked for, as upstream)."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return None, [f.invalid(path, value, QUANTITY_FORMAT_ERROR)]
    return (None, [f.invalid(path, value, f.NEGATIVE)]) if amount < 0 else (amount, [])


def _bounds_storage(item: dict[str, Any]) -> bool:
    return "storage" in f.as_dict(item.get("min")) or "storage" in f.as_dict(item.get("max"))


def _nesting(item: dict[str, Any], bounds: dict[str, dict[str, Decimal]], name: str, path: str) -> list[Cause]:
    """min <= defaultRequest <= default <= max for one resource, and a reachable ratio."""
    def amount(bound: str) -> Decimal | None:
        return bounds.get(bound, {}).get(name)

    def shown(bound: str) -> str:
        return canonical(f.as_dict(item.get(bound))[name])

    low, high, default, request, ratio = (amount(b) for b in ("min", "max", "default", "defaultRequest",
                                                              "maxLimitRequestRatio"))
    causes: list[Cause] = []

    def bad(bound: str, value_of: str, detail: str) -> None:
        causes.append(f.invalid(f"{path}.{bound}[{name}]", shown(value_of), detail))

    if low is not None and high is not None and low > high:
        bad("min", "min", f"min value {shown('min')} is greater than max value {shown('max')}")
    if request is not None and low is not None and low > request:
        bad("defaultRequest", "defaultRequest",
            f"min value {shown('min')} is greater than default request value {shown('defaultRequest')}")
    if request is not None and high is not None and request > high:
        bad("defaultRequest", "defaultRequest",
            f"default request value {shown('defaultRequest')} is greater than max value {shown('max')}")
    if request is not None and default is not None and request > default:
        bad("defaultRequest", "defaultRequest",
            f"default request value {shown('defaultRequest')} is greater than default limit value "
            f"{shown('default')}")
    # Upstream quotes min and max (not the default) as the bad values of these two.
    if default is not None and low is not None and low > default:
        bad("default", "min", f"min value {shown('min')} is greater than default value {shown('default')}")
    if default is not None and high is not None and default > high:
        bad("default", "max", f"default value {shown('default')} is greater than max value {shown('max')}")
    if ratio is not None and ratio < 1:
        bad("maxLimitRequestRatio", "maxLimitRequestRatio", f"ratio {shown('maxLimitRequestRatio')} is less than 1")
    if ratio is not None and low is not None and high is not None:
        reachable = _max_over_min(ratio, low, high)
        if reachable is not None and reachable[0] > reachable[1]:
            bad("maxLimitRequestRatio", "maxLimitRequestRatio",
                f"ratio {shown('maxLimitRequestRatio')} is greater than max/min = {reachable[1]:f}")
    if not _overcommit_allowed(name) and default is not None and request is not None and default != request:
        bad("defaultRequest", "defaultRequest", f"default value {shown('default')} must equal to defaultRequest "
                                                f"value {shown('defaultRequest')} in {name}")
    return causes


def _max_over_min(ratio: Decimal, low: Decimal, high: Decimal) -> tuple[float, float] | None:
    """(the ratio, max/min) as upstream compares them: in thousandths unless that would overflow, as floats.
    None when min is 0 (upstream's division gives +Inf or NaN, which no ratio exceeds)."""
    if all(int_value(q) < MAX_MILLI_VALUE for q in (ratio, low, high)):
        ratio_value, low_value, high_value = milli_value(ratio) / 1000, milli_value(low), milli_value(high)
    else:
        ratio_value, low_value, high_value = float(int_value(ratio)), int_value(low), int_value(high)
    if low_value == 0:
        return None
    return ratio_value, float(high_value) / float(low_value)
