"""Defaulting: the values the apiserver fills in before validating, as upstream's v1 defaulters do.

`apply_defaults(kind, obj)` mutates `obj` in place, so a stored object reads back the way
Kubernetes would store it (`kubectl get -o yaml` shows `imagePullPolicy`, `restartPolicy`,
`strategy`, ...) and controllers can rely on those fields being set. One defaulter per kind in
`DEFAULTERS`; pod specs are defaulted alike wherever they occur (Pods and every template).
A field counts as unset when it is absent, null or (for strings) empty; what a client set is
never changed. Server-side allocation (names, cluster IPs, node ports) is not defaulting.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from harness.api.registry import Kind
from harness.api.validation.pods import VOLUME_SOURCES

Defaulter = Callable[[dict[str, Any]], None]

RBAC_GROUP = "rbac.authorization.k8s.io"
#: File mode of secret, configMap, downwardAPI and projected volumes (0644).
DEFAULT_VOLUME_MODE = 0o644
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}


def apply_defaults(kind: Kind, obj: dict[str, Any]) -> None:
    """Fill in upstream's defaults for an object of `kind` (in place)."""
    defaulter = DEFAULTERS.get(kind.kind)
    if defaulter is not None:
        defaulter(obj)


# -- helpers --------------------------------------------------------------------------------


def _unset(value: Any) -> bool:
    return value is None or value == ""


def _default(obj: dict[str, Any], key: str, value: Any) -> None:
    if _unset(obj.get(key)):
        obj[key] = value


def _child(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """obj[key] as a dict, created if unset; a value of another type is left for validation."""
    value = obj.get(key)
    if value is None:
        value = obj[key] = {}
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# -- pod specs ------------------------------------------------------------------------------


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, IfNotPresent for a tag or digest."""
    if not image:
        return "IfNotPresent"
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if not tag and not digest:
        tag = "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def default_pod_spec(spec: dict[str, Any]) -> None:
    """SetDefaults_PodSpec plus the defaults of everything a pod spec holds."""
    _default(spec, "dnsPolicy", "ClusterFirst")
    _default(spec, "restartPolicy", "Always")
    _default(spec, "terminationGracePeriodSeconds", 30)
    _default(spec, "schedulerName", "default-scheduler")
    _child(spec, "securityContext")
    for ctr in (*_dicts(spec.get("containers")), *_dicts(spec.get("initContainers"))):
        _default_container(ctr)
    for volume in _dicts(spec.get("volumes")):
        _default_volume(volume)


def _default_container(ctr: dict[str, Any]) -> None:
    image = ctr.get("image")
    _default(ctr, "imagePullPolicy", image_pull_policy(image if isinstance(image, str) else ""))
    _default(ctr, "terminationMessagePath", "/dev/termination-log")
    _default(ctr, "terminationMessagePolicy", "File")
    _child(ctr, "resources")
    for port in _dicts(ctr.get("ports")):
        _default(port, "protocol", "TCP")
    for name in _PROBES:
        probe = ctr.get(name)
        if isinstance(probe, dict):
            for key, value in _PROBE_DEFAULTS.items():
                if not probe.get(key):
                    probe[key] = value
            _default_handler(probe)
    lifecycle = ctr.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(lifecycle.get(hook), dict):
                _default_handler(lifecycle[hook])
    for var in _dicts(ctr.get("env")):
        value_from = var.get("valueFrom")
        field_ref = value_from.get("fieldRef") if isinstance(value_from, dict) else None
        if isinstance(field_ref, dict):
            _default(field_ref, "apiVersion", "v1")


def _default_handler(handler: dict[str, Any]) -> None:
    http_get = handler.get("httpGet")
    if isinstance(http_get, dict):
        _default(http_get, "path", "/")
        _default(http_get, "scheme", "HTTP")


def _default_volume(volume: dict[str, Any]) -> None:
    """A volume without a source is an emptyDir; file-projecting sources get mode 0644."""
    if all(volume.get(source) is None for source in VOLUME_SOURCES):
        volume["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(volume.get(source), dict):
            _default(volume[source], "defaultMode", DEFAULT_VOLUME_MODE)


def default_pod_template(template: Any) -> None:
    if isinstance(template, dict):
        default_pod_spec(_child(template, "spec"))


def _pod(obj: dict[str, Any]) -> None:
    spec = _child(obj, "spec")
    default_pod_spec(spec)
    _default(spec, "enableServiceLinks", True)
    for ctr in (*_dicts(spec.get("containers")), *_dicts(spec.get("initContainers"))):
        _requests_from_limits(ctr)
        if spec.get("hostNetwork") is True:
            for port in _dicts(ctr.get("ports")):
                if not port.get("hostPort"):
                    port["hostPort"] = port.get("containerPort")


def _requests_from_limits(ctr: dict[str, Any]) -> None:
    """Only limits given: the requests are the limits (Pods only, not templates)."""
    resources = _child(ctr, "resources")
    limits = resources.get("limits")
    if not isinstance(limits, dict) or not limits:
        return
    requests = _child(resources, "requests")
    for name, value in limits.items():
        requests.setdefault(name, value)


# -- workloads ------------------------------------------------------------------------------


def _deployment(obj: dict[str, Any]) -> None:
    spec = _child(obj, "spec")
    _default(spec, "replicas", 1)
    strategy = _child(spec, "strategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy.get("type") == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", "25%")
        _default(rolling, "maxSurge", "25%")
    _default(spec, "revisionHistoryLimit", 10)
    _default(spec, "progressDeadlineSeconds", 600)
    default_pod_template(spec.get("template"))


def _replica_set(obj: dict[str, Any]) -> None:
    spec = _child(obj, "spec")
    _default(spec, "replicas", 1)
    default_pod_template(spec.get("template"))


def _daemon_set(obj: dict[str, Any]) -> None:
    spec = _child(obj, "spec")
    strategy = _child(spec, "updateStrategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy.get("type") == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", 1)
        _default(rolling, "maxSurge", 0)
    _default(spec, "revisionHistoryLimit", 10)
    default_pod_template(spec.get("template"))


def _replication_controller(obj: dict[str, Any]) -> None:
    """core/v1: the selector, and the controller's own labels, default to the template's labels."""
    spec = _child(obj, "spec")
    _default(spec, "replicas", 1)
    template = spec.get("template")
    if not isinstance(template, dict):
        return
    metadata = template.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if isinstance(labels, dict) and labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        own = _child(obj, "metadata")
        if not own.get("labels"):
            own["labels"] = dict(labels)
    default_pod_template(template)


# -- services -------------------------------------------------------------------------------


def _service(obj: dict[str, Any]) -> None:
    spec = _child(obj, "spec")
    _default(spec, "type", "ClusterIP")
    _default(spec, "sessionAffinity", "None")
    kind = spec.get("type")
    for port in _dicts(spec.get("ports")):
        _default(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if spec.get("sessionAffinity") == "ClientIP":
        client_ip = _child(_child(spec, "sessionAffinityConfig"), "clientIP")
        _default(client_ip, "timeoutSeconds", 10800)
    accessible = kind in ("NodePort", "LoadBalancer") or (kind == "ClusterIP" and bool(spec.get("externalIPs")))
    if accessible:
        _default(spec, "externalTrafficPolicy", "Cluster")
    if kind in ("ClusterIP", "NodePort", "LoadBalancer"):
        _default(spec, "internalTrafficPolicy", "Cluster")
    if kind == "LoadBalancer":
        _default(spec, "allocateLoadBalancerNodePorts", True)
    if kind != "ExternalName":
        _default(spec, "ipFamilyPolicy", "SingleStack")
        if not spec.get("ipFamilies"):
            spec["ipFamilies"] = ["IPv4"]


def _endpoints(obj: dict[str, Any]) -> None:
    for subset in _dicts(obj.get("subsets")):
        for port in _dicts(subset.get("ports")):
            _default(port, "protocol", "TCP")


# -- the rest -------------------------------------------------------------------------------


def _namespace(obj: dict[str, Any]) -> None:
    """The `kubernetes` finalizer on a new namespace (an emptied list stays empty), phase Active."""
    spec = _child(obj, "spec")
    if "finalizers" not in spec:
        spec["finalizers"] = ["kubernetes"]
    _default(_child(obj, "status"), "phase", "Active")


def _secret(obj: dict[str, Any]) -> None:
    """Type Opaque; `stringData` is merged into `data` (base64) as the v1 conversion does."""
    _default(obj, "type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _child(obj, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _node(obj: dict[str, Any]) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and isinstance(status.get("capacity"), dict) and status.get("allocatable") is None:
        status["allocatable"] = dict(status["capacity"])


def default_limit_range_item(item: dict[str, Any]) -> None:
    """SetDefaults_LimitRangeItem: a Container item's default limit is its max, its default request the default
    limit, else its min, resource by resource."""
    if item.get("type") != "Container":
        return
    for bound, into in (("max", "default"), ("default", "defaultRequest"), ("min", "defaultRequest")):
        source = item.get(bound)
        if isinstance(source, dict) and source and isinstance(item.get(into) or {}, dict):
            target = item[into] = item.get(into) or {}
            for name, value in source.items():
                target.setdefault(name, value)


def _limit_range(obj: dict[str, Any]) -> None:
    for item in _dicts(_child(obj, "spec").get("limits")):
        default_limit_range_item(item)


def _binding(obj: dict[str, Any]) -> None:
    _default(_child(obj, "roleRef"), "apiGroup", RBAC_GROUP)
    for subject in _dicts(obj.get("subjects")):
        if subject.get("kind") in ("User", "Group"):
            _default(subject, "apiGroup", RBAC_GROUP)


DEFAULTERS: dict[str, Defaulter] = {
    "Pod": _pod,
    "Service": _service,
    "Endpoints": _endpoints,
    "Deployment": _deployment,
    "ReplicaSet": _replica_set,
    "DaemonSet": _daemon_set,
    "ReplicationController": _replication_controller,
    "Namespace": _namespace,
    "Secret": _secret,
    "Node": _node,
    "LimitRange": _limit_range,
    "RoleBinding": _binding,
    "ClusterRoleBinding": _binding,
}


__all__ = ["DEFAULTERS", "apply_defaults", "default_limit_range_item", "default_pod_spec", "default_pod_template",
           "image_pull_policy"]
