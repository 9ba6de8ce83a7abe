"""What a Pod update, or a Pod status update, may change.

A pod's spec is fixed once created, except for images, activeDeadlineSeconds (only lowered),
added tolerations and removed scheduling gates. As upstream's `ValidatePodUpdate` does, the new
spec has those set back to their old values and is then compared with the old spec; any
difference left is one `spec: Forbidden: pod updates may not change fields other than ...`
cause, followed here by the changed fields, one per line.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.api.errors import Cause
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.api.validation import meta as vmeta

MAX_INT32 = 2**31 - 1
UPDATABLE_POD_FIELDS = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)
SYSTEM_POD_CONDITIONS = ("PodScheduled", "Ready", "Initialized")

def validate_pod_update(new: dict[str, Any], old: dict[str, Any], *, binding: bool = False) -> list[Cause]:
    """What a Pod update may change. `binding`: the server setting spec.nodeName for the scheduler."""
    spec, old_spec = f.as_dict(new.get("spec")), f.as_dict(old.get("spec"))
    causes: list[Cause] = []
    for group in ("containers", "initContainers"):
        found, stop = _container_updates(f.as_dicts(spec.get(group)), f.as_dicts(old_spec.get(group)),
                                         f"spec.{group}")
        causes += found
        if stop:
            return causes
    found, stop = _deadline_update(spec.get("activeDeadlineSeconds"), old_spec.get("activeDeadlineSeconds"))
    causes += found
    if stop:
        return causes
    causes += _only_added_tolerations(spec.get("tolerations"), old_spec.get("tolerations"))
    causes += _only_removed_gates(spec.get("schedulingGates"), old_spec.get("schedulingGates"))
    munged = _munge(spec, old_spec, binding=binding)
    if _normal(munged) != _normal(old_spec):
        detail = f"pod updates may not change fields other than {','.join(UPDATABLE_POD_FIELDS)}"
        changes = "\n".join(f"  {line}" for line in _diff(old_spec, munged, "spec")[:20])
        causes.append(f.forbidden("spec", f"{detail}\n{changes}" if changes else detail))
    return causes


def _container_updates(new: list[dict[str, Any]], old: list[dict[str, Any]], path: str) -> tuple[list[Cause], bool]:
    if len(new) != len(old):
        return [f.forbidden(path, "pod updates may not add or remove containers")], True
    causes: list[Cause] = []
    for i, ctr in enumerate(new):
        image = ctr.get("image")
        if not image:
            causes.append(f.required(f"{path}[{i}].image"))
        elif isinstance(image, str) and image != image.strip():
            causes.append(f.invalid(f"{path}[{i}].image", image, "must not have leading or trailing whitespace"))
    return causes, False


def _deadline_update(new: Any, old: Any) -> tuple[list[Cause], bool]:
    """activeDeadlineSeconds may be set, or lowered; a bad value ends the update's validation."""
    path = "spec.activeDeadlineSeconds"
    if new is None:
        if old is None:
            return [], False
        return [f.invalid(path, None, "must not update from a positive integer to nil value")], False
    if not f.is_int(new) or not 0 <= new <= MAX_INT32:
        return [f.invalid(path, new, formats.inclusive_range_error(0, MAX_INT32))], True
    if f.is_int(old) and old < new:
        return [f.invalid(path, new, "must be less than or equal to previous value")], True
    return [], False


def _only_added_tolerations(new: Any, old: Any) -> list[Cause]:
    def without_seconds(tol: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in tol.items() if k != "tolerationSeconds" and v not in (None, "")}

    current = [without_seconds(t) for t in f.as_dicts(new)]
    for tol in f.as_dicts(old):
        if without_seconds(tol) not in current:
            return [f.forbidden("spec.tolerations", "existing toleration can not be modified except its "
                                                    "tolerationSeconds")]
    return []


def _only_removed_gates(new: Any, old: Any) -> list[Cause]:
    old_names = {g.get("name") for g in f.as_dicts(old)}
    return [f.forbidden(f"spec.schedulingGates[{i}].name",
                        f"only deletion is allowed, but found new scheduling gate '{gate.get('name')}'")
            for i, gate in enumerate(f.as_dicts(new)) if gate.get("name") not in old_names]


def _munge(spec: dict[str, Any], old: dict[str, Any], *, binding: bool) -> dict[str, Any]:
    """The new spec with every field an update may change set back to its old value."""
    munged = copy.deepcopy(spec)
    for group in ("containers", "initContainers"):
        for ctr, before in zip(f.as_dicts(munged.get(group)), f.as_dicts(old.get(group)), strict=False):
            _set_or_drop(ctr, "image", before.get("image"))
    for name in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        _set_or_drop(munged, name, old.get(name))
    grace, old_grace = munged.get("terminationGracePeriodSeconds"), old.get("terminationGracePeriodSeconds")
    if f.is_int(old_grace) and old_grace < 0 and grace == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if binding and not old.get("nodeName"):
        _set_or_drop(munged, "nodeName", None)
    return munged


def _set_or_drop(obj: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        obj.pop(key, None)
    else:
        obj[key] = copy.deepcopy(value)


def _normal(value: Any) -> Any:
    """Upstream compares specs semantically: an empty list or map equals an absent one."""
    if isinstance(value, dict):
        out = {k: _normal(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _diff(old: Any, new: Any, path: str) -> list[str]:
    """Where two specs differ, one line per changed leaf: `path: old -> new`."""
    old, new = _normal(old), _normal(new)
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for k in sorted(set(old) | set(new), key=str)
                for line in _diff(old.get(k), new.get(k), f"{path}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new, strict=True)) for line in _diff(a, b, f"{path}[{i}]")]
    if old == new:
        return []
    return [f"{path}: {f.fmt_value(old)} -> {f.fmt_value(new)}"]


# -- Pod status -----------------------------------------------------------------------------


def validate_pod_status_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    status, old_status = f.as_dict(new.get("status")), f.as_dict(old.get("status"))
    causes: list[Cause] = []
    for i, cond in enumerate(f.as_dicts(status.get("conditions"))):
        ctype = cond.get("type")
        if ctype not in SYSTEM_POD_CONDITIONS:
            causes += vmeta.validate_label_name(ctype, f"status.conditions[{i}].type")
    qos, old_qos = status.get("qosClass"), old_status.get("qosClass")
    if qos and old_qos and qos != old_qos:
        causes.append(f.invalid("status.qosClass", qos, f.IMMUTABLE))
    policy = f.as_dict(old.get("spec")).get("restartPolicy")
    for group in ("containerStatuses", "initContainerStatuses"):
        causes += _state_transitions(status.get(group), old_status.get(group), policy, f"status.{group}")
    for name in ("podIP", "hostIP"):
        if status.get(name):
            causes += f.invalid_each(f"status.{name}", status[name], formats.ip_address(f.as_str(status[name])))
    for plural in ("podIPs", "hostIPs"):
        for i, entry in enumerate(f.as_dicts(status.get(plural))):
            ip = f.as_str(entry.get("ip"))
            causes += f.invalid_each(f"status.{plural}[{i}]", ip, formats.ip_address(ip))
    return causes


def _state_transitions(new: Any, old: Any, policy: Any, path: str) -> list[Cause]:
    """Without restartPolicy Always, a terminated container stays terminated (a failed one may restart on OnFailure)."""
    if policy == "Always":
        return []
    current = {s.get("name"): s for s in f.as_dicts(new)}
    causes = []
    for i, before in enumerate(f.as_dicts(old)):
        terminated = f.as_dict(before.get("state")).get("terminated")
        if not isinstance(terminated, dict):
            continue
        if terminated.get("exitCode") not in (0, None) and policy == "OnFailure":
            continue
        after = current.get(before.get("name"))
        if after is not None and f.as_dict(after.get("state")).get("terminated") is None:
            causes.append(f.forbidden(f"{path}[{i}].state", "may not be transitioned to non-terminated state"))
    return causes
