"""Validation of the smaller kinds: Namespace, Node, ConfigMap, Secret, Lease, Event, RBAC,
ResourceQuota and ControllerRevision.

Each function returns the causes for one rule set of one kind; the table in
`harness.api.validation` says which kind uses which.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from harness.api.errors import Cause
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.api.validation import meta as vmeta
from harness.api.validation.pods import TAINT_EFFECTS
from harness.api.validation.resources import validate_capacity, validate_quota_list

#: Most bytes the data of one ConfigMap or Secret may hold.
MAX_DATA_SIZE = 1024 * 1024
RBAC_GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")
QUOTA_SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
                "CrossNamespacePodAffinity")
IMMUTABLE_WHEN_SET = "field is immutable when `immutable` is set"


# -- Namespace ------------------------------------------------------------------------------


def validate_namespace(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for name in f.as_list(f.as_dict(obj.get("spec")).get("finalizers")):
        causes += vmeta.validate_finalizer_name(name, "spec.finalizers", "spec.finalizers")
    return causes


def validate_namespace_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    phase = f.as_dict(new.get("status")).get("phase")
    if not f.as_dict(new.get("metadata")).get("deletionTimestamp"):
        if phase != "Active":
            return [f.invalid("status.phase", phase or "", "may only be 'Active' if `deletionTimestamp` is empty")]
    elif phase != "Terminating":
        return [f.invalid("status.phase", phase or "", "may only be 'Terminating' if `deletionTimestamp` is not empty")]
    return []


# -- Node -----------------------------------------------------------------------------------


def pod_cidrs(spec: dict[str, Any]) -> list[Any]:
    """spec.podCIDRs, or [spec.podCIDR] as the v1 API fills it in."""
    cidrs = f.as_list(spec.get("podCIDRs"))
    return cidrs or ([spec["podCIDR"]] if spec.get("podCIDR") else [])


def validate_node(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    causes = _taints(spec.get("taints"), "spec.taints")
    cidrs = pod_cidrs(spec)
    for i, cidr in enumerate(cidrs):
        causes += f.invalid_each(f"spec.podCIDRs[{i}]", cidr, formats.cidr(f.as_str(cidr)))
    if len(cidrs) != len(set(map(str, cidrs))):
        causes.append(f.invalid("spec.podCIDRs", cidrs, "may specify no more than one CIDR for each IP family"))
    return causes + _node_status(new_status=f.as_dict(obj.get("status")))


def _taints(taints: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[tuple[Any, Any]] = set()
    for i, taint in enumerate(f.as_dicts(taints)):
        here = f"{path}[{i}]"
        causes += vmeta.validate_label_name(taint.get("key") or "", f"{here}.key")
        value = taint.get("value") or ""
        msgs = formats.label_value(value) if isinstance(value, str) else ["must be a string"]
        if msgs:
            causes.append(f.invalid(f"{here}.value", value, ";".join(msgs)))
        causes += f.one_of(f"{here}.effect", taint.get("effect"), TAINT_EFFECTS)
        key = (taint.get("key"), taint.get("effect"))
        if key in seen:
            causes.append(f.duplicate(here, taint, "taints must be unique by key and effect pair"))
        seen.add(key)
    return causes


def _node_status(new_status: dict[str, Any]) -> list[Cause]:
    causes = validate_capacity(new_status.get("capacity"), "status.capacity")
    causes += validate_capacity(new_status.get("allocatable"), "status.allocatable")
    seen: list[dict[str, Any]] = []
    for i, address in enumerate(f.as_dicts(new_status.get("addresses"))):
        if address in seen:
            causes.append(f.duplicate(f"status.addresses[{i}]", address))
        seen.append(address)
    return causes


def validate_node_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """podCIDR and providerID may be set once (by the controller-manager), never changed."""
    spec, old_spec = f.as_dict(new.get("spec")), f.as_dict(old.get("spec"))
    causes: list[Cause] = []
    old_cidrs = pod_cidrs(old_spec)
    if old_cidrs and pod_cidrs(spec) != old_cidrs:
        causes.append(f.forbidden("spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid'))
    provider = old_spec.get("providerID")
    if provider and spec.get("providerID") != provider:
        causes.append(f.forbidden("spec.providerID", 'node updates may not change providerID except from "" to valid'))
    return causes


def validate_node_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _node_status(f.as_dict(new.get("status"))) + validate_node_update(new, old)


# -- ConfigMap and Secret -------------------------------------------------------------------


def _data_keys(data: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for key in f.as_dict(data):
        causes += f.invalid_each(f"{path}[{key}]", key, formats.config_map_key(key))
    return causes


def validate_config_map(obj: dict[str, Any]) -> list[Cause]:
    data, binary = f.as_dict(obj.get("data")), f.as_dict(obj.get("binaryData"))
    causes = _data_keys(data, "data") + _data_keys(binary, "binaryData")
    size = 0
    for key, value in data.items():
        if key in binary:
            causes.append(f.invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
        if not isinstance(value, str):
            causes.append(f.invalid(f"data[{key}]", value, "must be a string"))
        size += len(str(value).encode())
    for key, value in binary.items():
        decoded = _base64(value)
        if decoded is None:
            causes.append(f.invalid(f"binaryData[{key}]", "<binary data>", "must be base64-encoded"))
        size += len(decoded or b"")
    if size > MAX_DATA_SIZE:
        causes.append(f.too_long("", MAX_DATA_SIZE))
    return causes


def _base64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _immutable_data(new: dict[str, Any], old: dict[str, Any], fields: tuple[str, ...]) -> list[Cause]:
    if old.get("immutable") is not True:
        return []
    causes = [] if new.get("immutable") is True else [f.forbidden("immutable", IMMUTABLE_WHEN_SET)]
    return causes + [f.forbidden(name, IMMUTABLE_WHEN_SET) for name in fields
                     if (new.get(name) or {}) != (old.get(name) or {})]


def validate_config_map_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _immutable_data(new, old, ("data", "binaryData"))


_SECRET_KEYS: dict[str, tuple[str, ...]] = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def validate_secret(obj: dict[str, Any]) -> list[Cause]:
    data = f.as_dict(obj.get("data"))
    causes = _data_keys(data, "data") + _data_keys(obj.get("stringData"), "stringData")
    size = 0
    for key, value in data.items():
        decoded = _base64(value)
        if decoded is None:
            causes.append(f.invalid(f"data[{key}]", "<secret contents redacted>", "must be base64-encoded"))
        size += len(decoded or b"")
    if size > MAX_DATA_SIZE:
        causes.append(f.too_long("data", MAX_DATA_SIZE))
    return causes + _secret_type(obj, data)


def _secret_type(obj: dict[str, Any], data: dict[str, Any]) -> list[Cause]:
    kind = obj.get("type") or "Opaque"
    if kind == "kubernetes.io/service-account-token":
        annotations = f.as_dict(f.as_dict(obj.get("metadata")).get("annotations"))
        if not annotations.get("kubernetes.io/service-account.name"):
            return [f.required("metadata.annotations[kubernetes.io/service-account.name]")]
    if kind == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        return [f.required("data[username]"), f.required("data[password]")]
    return [f.required(f"data[{key}]") for key in _SECRET_KEYS.get(kind, ()) if key not in data]


def validate_secret_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    causes = f.immutable("type", new.get("type") or "Opaque", old.get("type") or "Opaque")
    return causes + _immutable_data(new, old, ("data",))


# -- Lease and Event ------------------------------------------------------------------------


def validate_lease(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    causes: list[Cause] = []
    holder = spec.get("holderIdentity")
    if holder is not None and not isinstance(holder, str):
        causes.append(f.invalid("spec.holderIdentity", holder, "must be a string"))
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not f.is_int(duration) or duration <= 0):
        causes.append(f.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    return causes + f.nonnegative("spec.leaseTransitions", spec.get("leaseTransitions"))


def validate_event(obj: dict[str, Any]) -> list[Cause]:
    """A core/v1 Event names the object it is about, in its own namespace."""
    involved = obj.get("involvedObject")
    if not isinstance(involved, dict) or not involved:
        return [f.required("involvedObject")]
    namespace = f.as_str(f.as_dict(obj.get("metadata")).get("namespace"))
    involved_ns = f.as_str(involved.get("namespace"))
    if involved_ns != namespace and (involved_ns or namespace not in ("", "default")):
        return [f.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")]
    return []


# -- RBAC -----------------------------------------------------------------------------------


def _rules(obj: dict[str, Any], *, namespaced: bool) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(f.as_dicts(obj.get("rules"))):
        path = f"rules[{i}]"
        if not f.as_list(rule.get("verbs")):
            causes.append(f.required(f"{path}.verbs", "verbs must contain at least one value"))
        urls = f.as_list(rule.get("nonResourceURLs"))
        if urls:
            if namespaced:
                causes.append(f.invalid(f"{path}.nonResourceURLs", urls,
                                        "namespaced rules cannot apply to non-resource URLs"))
            if any(f.as_list(rule.get(k)) for k in ("apiGroups", "resources", "resourceNames")):
                causes.append(f.invalid(f"{path}.nonResourceURLs", urls,
                                        "rules cannot apply to both regular resources and non-resource URLs"))
            continue
        if not f.as_list(rule.get("apiGroups")):
            causes.append(f.required(f"{path}.apiGroups", "resource rules must supply at least one api group"))
        if not f.as_list(rule.get("resources")):
            causes.append(f.required(f"{path}.resources", "resource rules must supply at least one resource"))
    return causes


def validate_role(obj: dict[str, Any]) -> list[Cause]:
    return _rules(obj, namespaced=True)


def validate_cluster_role(obj: dict[str, Any]) -> list[Cause]:
    aggregation = obj.get("aggregationRule")
    if not isinstance(aggregation, dict):
        return _rules(obj, namespaced=False)
    causes: list[Cause] = []
    for i, selector in enumerate(f.as_list(aggregation.get("clusterRoleSelectors"))):
        causes += vmeta.validate_label_selector(selector, f"aggregationRule.clusterRoleSelectors[{i}]")
    return causes


def _binding(obj: dict[str, Any], *, namespaced: bool) -> list[Cause]:
    ref = f.as_dict(obj.get("roleRef"))
    causes: list[Cause] = []
    if ref.get("apiGroup") != RBAC_GROUP:
        causes.append(f.not_supported("roleRef.apiGroup", ref.get("apiGroup") or "", (RBAC_GROUP,)))
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("kind") not in kinds:
        causes.append(f.not_supported("roleRef.kind", ref.get("kind") or "", kinds))
    name = ref.get("name")
    if not name:
        causes.append(f.required("roleRef.name"))
    else:
        causes += f.invalid_each("roleRef.name", name, formats.name_is_path_segment(f.as_str(name), False))
    for i, subject in enumerate(f.as_dicts(obj.get("subjects"))):
        causes += _subject(subject, f"subjects[{i}]", namespaced=namespaced)
    return causes


def _subject(subject: dict[str, Any], path: str, *, namespaced: bool) -> list[Cause]:
    name, kind, group = subject.get("name"), subject.get("kind"), subject.get("apiGroup") or ""
    causes = [] if name else [f.required(f"{path}.name")]
    if kind == "ServiceAccount":
        if name:
            causes += f.invalid_each(f"{path}.name", name, formats.name_is_dns_subdomain(f.as_str(name), False))
        if group:
            causes.append(f.not_supported(f"{path}.apiGroup", group, ("",)))
        if not namespaced and not subject.get("namespace"):
            causes.append(f.required(f"{path}.namespace"))
    elif kind in ("User", "Group"):
        if group != RBAC_GROUP:
            causes.append(f.not_supported(f"{path}.apiGroup", group, (RBAC_GROUP,)))
    else:
        causes.append(f.not_supported(f"{path}.kind", kind or "", SUBJECT_KINDS))
    return causes


def validate_role_binding(obj: dict[str, Any]) -> list[Cause]:
    return _binding(obj, namespaced=True)


def validate_cluster_role_binding(obj: dict[str, Any]) -> list[Cause]:
    return _binding(obj, namespaced=False)


def validate_binding_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    ref, old_ref = new.get("roleRef"), old.get("roleRef")
    return [] if ref == old_ref else [f.invalid("roleRef", ref, "cannot change roleRef")]


# -- ResourceQuota and ControllerRevision ---------------------------------------------------


def validate_resource_quota(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    causes = validate_quota_list(spec.get("hard"), "spec.hard")
    scopes = f.as_list(spec.get("scopes"))
    if any(scope not in QUOTA_SCOPES for scope in scopes):
        causes.append(f.invalid("spec.scopes", scopes, "unsupported scope"))
    return causes + validate_resource_quota_status(obj, obj)


def validate_resource_quota_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    scopes = f.as_list(f.as_dict(new.get("spec")).get("scopes"))
    old_scopes = f.as_list(f.as_dict(old.get("spec")).get("scopes"))
    return [] if set(map(str, scopes)) == set(map(str, old_scopes)) else [f.invalid("spec.scopes", scopes,
                                                                                     f.IMMUTABLE)]


def validate_resource_quota_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    status = f.as_dict(new.get("status"))
    return (validate_quota_list(status.get("hard"), "status.hard")
            + validate_quota_list(status.get("used"), "status.used"))


def validate_controller_revision(obj: dict[str, Any]) -> list[Cause]:
    return f.nonnegative("revision", obj.get("revision"))


def validate_controller_revision_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return f.immutable("data", new.get("data"), old.get("data"))
