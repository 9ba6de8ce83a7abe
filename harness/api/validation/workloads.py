"""Validation of the controllers that keep pods running: Deployment, ReplicaSet, DaemonSet and
ReplicationController, with their status updates.

Each has a selector that must be non-empty and select its own template's labels, a template
validated like a Pod (with restartPolicy Always), and for Deployment and DaemonSet an update
strategy. In apps/v1 the selector is immutable once created.
"""

from __future__ import annotations

from typing import Any

from harness.api.errors import Cause
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.api.validation import meta as vmeta
from harness.api.validation.pods import validate_workload_template

DEPLOYMENT_STRATEGIES = ("Recreate", "RollingUpdate")
DAEMONSET_STRATEGIES = ("RollingUpdate", "OnDelete")
NOT_MATCHING = "`selector` does not match template `labels`"


# -- shared ---------------------------------------------------------------------------------


def _selector_and_template(spec: dict[str, Any], owner: str, empty_message: str) -> list[Cause]:
    """An apps/v1 LabelSelector that is set, not empty, and selects the template."""
    selector, template = spec.get("selector"), f.as_dict(spec.get("template"))
    causes: list[Cause] = []
    if selector is None:
        causes.append(f.required("spec.selector"))
    else:
        causes += vmeta.validate_label_selector(selector, "spec.selector")
        if isinstance(selector, dict) and vmeta.selector_is_empty(selector):
            causes.append(f.invalid("spec.selector", selector, empty_message))
    labels = f.as_dict(f.as_dict(template.get("metadata")).get("labels"))
    if vmeta.selector_is_valid(selector) and not vmeta.selector_matches(selector, labels):
        causes.append(f.invalid("spec.template.metadata.labels", labels, NOT_MATCHING))
    return causes + validate_workload_template(template, "spec.template", owner)


def _counts(spec: dict[str, Any]) -> list[Cause]:
    causes = f.nonnegative("spec.replicas", spec.get("replicas"))
    causes += f.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    return causes + f.nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))


def _selector_immutable(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    selector = f.as_dict(new.get("spec")).get("selector")
    return f.immutable("spec.selector", selector, f.as_dict(old.get("spec")).get("selector"))


def _int_or_percent(value: Any, path: str) -> tuple[int | None, list[Cause]]:
    """An IntOrString like maxSurge: its number (of percent, for "25%") and what is wrong with it."""
    if value is None:
        return 0, []
    if f.is_int(value):
        return value, f.nonnegative(path, value)
    if isinstance(value, str):
        msgs = formats.percent(value)
        return (None, f.invalid_each(path, value, msgs)) if msgs else (int(value[:-1]), [])
    return None, [f.invalid(path, value, "must be an integer or percentage (e.g '5%')")]


def _not_over_100_percent(value: Any, path: str) -> list[Cause]:
    if isinstance(value, str) and not formats.percent(value) and int(value[:-1]) > 100:
        return [f.invalid(path, value, "must not be greater than 100%")]
    return []


def _status_counts(status: dict[str, Any], counts: tuple[str, ...], bounded: tuple[str, ...]) -> list[Cause]:
    """Counts are non-negative; the `bounded` ones at most status.replicas; available at most ready."""
    causes: list[Cause] = []
    for name in ("replicas", *counts, "observedGeneration", "collisionCount"):
        causes += f.nonnegative(f"status.{name}", status.get(name))
    count = status.get("replicas")
    replicas = count if f.is_int(count) else 0
    for name in bounded:
        value = status.get(name)
        if f.is_int(value) and value > replicas:
            causes.append(f.invalid(f"status.{name}", value, "cannot be greater than status.replicas"))
    available, ready = status.get("availableReplicas"), status.get("readyReplicas")
    if f.is_int(available) and f.is_int(ready) and available > ready:
        causes.append(f.invalid("status.availableReplicas", available, "cannot be greater than readyReplicas"))
    return causes


# -- Deployment -----------------------------------------------------------------------------


def validate_deployment(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    causes = _counts(spec)
    causes += _selector_and_template(spec, "ReplicaSet", "empty selector is invalid for deployment")
    causes += _deployment_strategy(f.as_dict(spec.get("strategy")), "spec.strategy")
    progress = spec.get("progressDeadlineSeconds")
    causes += f.nonnegative("spec.progressDeadlineSeconds", progress)
    min_ready = spec.get("minReadySeconds") or 0
    if f.is_int(progress) and f.is_int(min_ready) and progress <= min_ready:
        causes.append(f.invalid("spec.progressDeadlineSeconds", progress, "must be greater than minReadySeconds"))
    return causes


def _deployment_strategy(strategy: dict[str, Any], path: str) -> list[Cause]:
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            return [f.forbidden(f"{path}.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if kind != "RollingUpdate":
        return [f.not_supported(path, strategy, DEPLOYMENT_STRATEGIES)]
    if not isinstance(rolling, dict):
        return [f.required(f"{path}.rollingUpdate", "this should be defaulted and never be nil")]
    here = f"{path}.rollingUpdate"
    unavailable, causes = _int_or_percent(rolling.get("maxUnavailable"), f"{here}.maxUnavailable")
    surge, found = _int_or_percent(rolling.get("maxSurge"), f"{here}.maxSurge")
    causes += found
    if unavailable == 0 and surge == 0:
        causes.append(f.invalid(f"{here}.maxUnavailable", rolling.get("maxUnavailable"),
                                "may not be 0 when `maxSurge` is 0"))
    return causes + _not_over_100_percent(rolling.get("maxUnavailable"), f"{here}.maxUnavailable")


def validate_deployment_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _selector_immutable(new, old)


def validate_deployment_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    bounded = ("updatedReplicas", "readyReplicas", "availableReplicas")
    return _status_counts(f.as_dict(new.get("status")), (*bounded, "unavailableReplicas"), bounded)


# -- ReplicaSet -----------------------------------------------------------------------------


def validate_replica_set(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    # Upstream words the empty-selector cause of a ReplicaSet as a deployment's.
    return _counts(spec) + _selector_and_template(spec, "ReplicaSet", "empty selector is invalid for deployment")


def validate_replica_set_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _selector_immutable(new, old)


def validate_replica_set_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    bounded = ("fullyLabeledReplicas", "readyReplicas", "availableReplicas")
    return _status_counts(f.as_dict(new.get("status")), bounded, bounded)


# -- DaemonSet ------------------------------------------------------------------------------


def validate_daemon_set(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    causes = f.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    causes += f.nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    causes += _selector_and_template(spec, "DaemonSet", "empty selector is invalid for daemonset")
    return causes + _daemon_set_strategy(f.as_dict(spec.get("updateStrategy")), "spec.updateStrategy")


def _daemon_set_strategy(strategy: dict[str, Any], path: str) -> list[Cause]:
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    if kind == "OnDelete":
        return []
    if kind != "RollingUpdate":
        return [f.not_supported(path, strategy, DAEMONSET_STRATEGIES)]
    if not isinstance(rolling, dict):
        return [f.required(f"{path}.rollingUpdate")]
    here = f"{path}.rollingUpdate"
    unavailable, causes = _int_or_percent(rolling.get("maxUnavailable"), f"{here}.maxUnavailable")
    surge, found = _int_or_percent(rolling.get("maxSurge"), f"{here}.maxSurge")
    causes += found
    causes += _not_over_100_percent(rolling.get("maxUnavailable"), f"{here}.maxUnavailable")
    causes += _not_over_100_percent(rolling.get("maxSurge"), f"{here}.maxSurge")
    if unavailable and surge:
        causes.append(f.invalid(f"{here}.maxSurge", rolling.get("maxSurge"),
                                "may not be set when maxUnavailable is non-zero"))
    elif unavailable == 0 and surge == 0:
        causes.append(f.required(f"{here}.maxUnavailable", "cannot be 0 when maxSurge is 0"))
    return causes


def validate_daemon_set_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _selector_immutable(new, old)


def validate_daemon_set_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    status = f.as_dict(new.get("status"))
    causes: list[Cause] = []
    for name in ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady",
                 "observedGeneration", "updatedNumberScheduled", "numberAvailable", "numberUnavailable",
                 "collisionCount"):
        causes += f.nonnegative(f"status.{name}", status.get(name))
    return causes


# -- ReplicationController (core/v1: a plain map selector, mutable) -------------------------


def validate_replication_controller(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    causes = f.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    selector = spec.get("selector")
    if not selector:
        causes.append(f.required("spec.selector"))
    else:
        causes += vmeta.validate_labels(selector, "spec.selector")
    causes += f.nonnegative("spec.replicas", spec.get("replicas"))
    template = spec.get("template")
    if not isinstance(template, dict):
        return [*causes, f.required("spec.template")]
    labels = f.as_dict(f.as_dict(template.get("metadata")).get("labels"))
    if isinstance(selector, dict) and selector and any(labels.get(k) != v for k, v in selector.items()):
        causes.append(f.invalid("spec.template.metadata.labels", labels, NOT_MATCHING))
    return causes + validate_workload_template(template, "spec.template", "ReplicationController")


def validate_replication_controller_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return validate_replica_set_status(new, old)
