"""LimitRange validation and defaulting, with upstream's field paths and wording (ValidateLimitRange)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api.quantity import canonical
from tests.unit.validation_support import created, find, only, stored, updated


def limits(*items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "bounds"}, "spec": {"limits": list(items)}}


@pytest.mark.parametrize("items", [
    [],
    [{"type": "Container", "min": {"cpu": "100m", "memory": "64Mi"}, "max": {"cpu": "2", "memory": "1Gi"},
      "defaultRequest": {"cpu": "250m"}, "default": {"cpu": "500m"}, "maxLimitRequestRatio": {"cpu": "4"}},
     {"type": "Pod", "max": {"cpu": "4", "memory": "2Gi"}, "maxLimitRequestRatio": {"memory": "1"}},
     {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}},
     {"type": "example.com/widget", "max": {"example.com/gadget": "3"}}],
    # Equal bounds nest.
    [{"type": "Container", "min": {"cpu": "1"}, "max": {"cpu": "1000m"}, "maxLimitRequestRatio": {"cpu": "1"}}],
])
def test_valid_limit_ranges(items: list[dict[str, Any]]) -> None:
    assert created("LimitRange", limits(*items)) == []


@pytest.mark.parametrize(("item", "field", "reason", "message"), [
    ({"type": "Node"}, "type", "FieldValueInvalid",
     'Invalid value: "Node": must be a standard limit type or fully qualified'),
    ({"type": ""}, "type", "FieldValueInvalid", "name part must be non-empty"),
    ({"type": "Pod", "max": {"widgets": "1"}}, "max[widgets]", "FieldValueInvalid",
     "must be a standard resource type or fully qualified"),
    ({"type": "Pod", "min": {"pods": "1"}}, "min[pods]", "FieldValueInvalid",
     "must be a standard resource for containers"),
    ({"type": "Pod", "max": {"cpu": "lots"}}, "max[cpu]", "FieldValueInvalid",
     "quantities must match the regular expression"),
    ({"type": "Pod", "min": {"memory": "-1Mi"}}, "min[memory]", "FieldValueInvalid",
     'Invalid value: "-1Mi": must be greater than or equal to 0'),
    ({"type": "Pod", "default": {"cpu": "1"}}, "default", "FieldValueForbidden",
     "Forbidden: may not be specified when `type` is 'Pod'"),
    ({"type": "Pod", "defaultRequest": {"cpu": "1"}}, "defaultRequest", "FieldValueForbidden",
     "Forbidden: may not be specified when `type` is 'Pod'"),
    ({"type": "PersistentVolumeClaim", "max": {"cpu": "1"}}, "limits", "FieldValueRequired",
     "Required value: either minimum or maximum storage value is required, but neither was provided"),
    ({"type": "Pod", "min": {"cpu": "2"}, "max": {"cpu": "1"}}, "min[cpu]", "FieldValueInvalid",
     'Invalid value: "2": min value 2 is greater than max value 1'),
    ({"type": "Container", "min": {"cpu": "200m"}, "defaultRequest": {"cpu": "100m"}, "default": {"cpu": "1"}},
     "defaultRequest[cpu]", "FieldValueInvalid",
     'Invalid value: "100m": min value 200m is greater than default request value 100m'),
    ({"type": "Container", "max": {"cpu": "1"}, "defaultRequest": {"cpu": "1.5"}, "default": {"cpu": "1"}},
     "defaultRequest[cpu]", "FieldValueInvalid", "default request value 1500m is greater than max value 1"),
    ({"type": "Container", "defaultRequest": {"memory": "1Gi"}, "default": {"memory": "512Mi"}},
     "defaultRequest[memory]", "FieldValueInvalid",
     "default request value 1Gi is greater than default limit value 512Mi"),
    # Upstream quotes min (not the default) here, and max below.
    ({"type": "Container", "min": {"cpu": "1"}, "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "1"}},
     "default[cpu]", "FieldValueInvalid", 'Invalid value: "1": min value 1 is greater than default value 500m'),
    ({"type": "Container", "max": {"memory": "1Gi"}, "default": {"memory": "2Gi"}, "defaultRequest": {"memory": "1Gi"}},
     "default[memory]", "FieldValueInvalid", 'Invalid value: "1Gi": default value 2Gi is greater than max value 1Gi'),
    ({"type": "Container", "maxLimitRequestRatio": {"cpu": "500m"}}, "maxLimitRequestRatio[cpu]",
     "FieldValueInvalid", 'Invalid value: "500m": ratio 500m is less than 1'),
    ({"type": "Pod", "min": {"cpu": "1"}, "max": {"cpu": "3"}, "maxLimitRequestRatio": {"cpu": "4"}},
     "maxLimitRequestRatio[cpu]", "FieldValueInvalid", "ratio 4 is greater than max/min = 3.000000"),
    ({"type": "Container", "default": {"hugepages-2Mi": "4Mi"}, "defaultRequest": {"hugepages-2Mi": "2Mi"}},
     "defaultRequest[hugepages-2Mi]", "FieldValueInvalid",
     "default value 4Mi must equal to defaultRequest value 2Mi in hugepages-2Mi"),
])
def test_invalid_items(item: dict[str, Any], field: str, reason: str, message: str) -> None:
    # Container items are defaulted first (as upstream), so a bad bound may also be found where it was copied.
    find(created("LimitRange", limits(item)), f"spec.limits[0].{field}", reason, message)


def test_a_bad_container_bound_is_also_reported_where_defaulting_copied_it() -> None:
    causes = created("LimitRange", limits({"type": "Container", "max": {"cpu": "-1"}}))
    assert [c.field for c in causes] == ["spec.limits[0].max[cpu]", "spec.limits[0].default[cpu]",
                                         "spec.limits[0].defaultRequest[cpu]"]


def test_a_type_may_appear_once_and_paths_name_the_item() -> None:
    causes = created("LimitRange", limits({"type": "Pod"}, {"type": "Container", "max": {"cpu": "1"}},
                                          {"type": "Pod", "max": {"cpu": "-1"}}))
    find(causes, "spec.limits[2].type", "FieldValueDuplicate", 'Duplicate value: "Pod"')
    find(causes, "spec.limits[2].max[cpu]", "FieldValueInvalid", "must be greater than or equal to 0")
    assert len(causes) == 2


def test_updates_are_validated_alike() -> None:
    old = stored("LimitRange", limits({"type": "Pod", "max": {"cpu": "2"}}))
    only(updated("LimitRange", old, lambda new: new["spec"]["limits"][0].update(min={"cpu": "3"})),
         "spec.limits[0].min[cpu]", "FieldValueInvalid", "min value 3 is greater than max value 2")


def test_container_items_are_defaulted_as_upstream() -> None:
    obj = stored("LimitRange", limits({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}},
                                      {"type": "Pod", "max": {"cpu": "4"}}))
    items = obj["spec"]["limits"]
    assert items[0]["default"] == {"cpu": "2"} and items[0]["defaultRequest"] == {"cpu": "2", "memory": "64Mi"}
    assert items[1] == {"type": "Pod", "max": {"cpu": "4"}}
    only_default = stored("LimitRange", limits({"type": "Container", "default": {"cpu": "1"}}))
    assert only_default["spec"]["limits"][0]["defaultRequest"] == {"cpu": "1"}
    assert "default" not in stored("LimitRange", limits({"type": "Container"}))["spec"]["limits"][0]


@pytest.mark.parametrize(("given", "shown"), [
    ("100m", "100m"), ("0.1", "100m"), ("1000m", "1"), ("1.5", "1500m"), ("1500", "1500"), ("2k", "2k"),
    ("2048Mi", "2Gi"), ("1.5Gi", "1536Mi"), ("0.5Ki", "512"), ("1e3", "1e3"), ("1.5e3", "1500"), ("0", "0"),
    ("0.0000000001", "1n"), ("-100m", "-100m"), (2, "2"), (0.25, "250m"),
])
def test_quantities_are_quoted_in_upstreams_canonical_form(given: Any, shown: str) -> None:
    assert canonical(given) == shown
