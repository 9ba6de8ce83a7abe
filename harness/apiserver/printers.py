"""Per-kind columns and row cells for server-side printing, as upstream's printers.go.

Each printer is a column list plus a function from (object, now) to that row's cells, in
column order, wide (priority 1) columns included — kubectl hides those without `-o wide`.
Objects are plain dicts, so every field read tolerates absence the way Go's zero values do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness.api import certificates
from harness.api.meta import Obj
from harness.api.schema import fields_of, model_named
from harness.util import rfc3339

RowFn = Callable[[Obj, datetime], list[Any]]


@dataclass(frozen=True)
class Printer:
    columns: tuple[dict[str, Any], ...]
    cells: RowFn


# -- formatting helpers (apimachinery's duration, labels and selectors) --------------------


def human_duration(seconds: float) -> str:
    """kubectl's approximate age: 5s, 3m20s, 15m, 4h, 2d3h, 12d, 2y30d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours = s // 60, s // 3600
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (Time or MicroTime) as an aware datetime; None if unset."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value or not isinstance(value, str):
        return None
    try:
        return rfc3339.parse_time(value)
    except ValueError:
        return None


def since(value: Any, now: datetime) -> str:
    """translateTimestampSince: the age of a timestamp, "<unknown>" when unset."""
    t = parse_time(value)
    return "<unknown>" if t is None else human_duration((now - t).total_seconds())


def age(obj: Obj, now: datetime) -> str:
    return since(dig(obj, "metadata", "creationTimestamp"), now)


def format_labels(labels: dict[str, str] | None) -> str:
    """labels.FormatLabels: sorted `k=v` pairs, "<none>" for none."""
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "<none>"


def selector_string(selector: Obj | None) -> str:
    """A LabelSelector the way `labels.Selector.String()` writes it (requirements by key)."""
    parts: list[tuple[str, str]] = [(k, f"{k}={v}") for k, v in (selector or {}).get("matchLabels", {}).items()]
    for expr in (selector or {}).get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), sorted(expr.get("values") or [])
        text = {"In": f"{key} in ({','.join(values)})", "NotIn": f"{key} notin ({','.join(values)})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(op, f"{key} {op}")
        parts.append((key, text))
    return ",".join(text for _, text in sorted(parts))


def format_label_selector(selector: Obj | None) -> str:
    """metav1.FormatLabelSelector: the selector string, "<none>" when it selects nothing."""
    return selector_string(selector) or "<none>"


def dig(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


# -- columns --------------------------------------------------------------------------------


@functools.cache
def doc(model: str, field: str) -> str:
    """A field's description from the client's models (the SwaggerDoc upstream uses)."""
    cls: Any = model_named(model)
    if cls is None:
        return ""
    f = fields_of(cls).get(field)
    return f.description if f else ""


def col(name: str, description: str = "", *, type_: str = "string", priority: int = 0,
        fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


def name_col(priority: int = 0) -> dict[str, Any]:
    return col("Name", doc("V1ObjectMeta", "name"), fmt="name", priority=priority)


def age_col() -> dict[str, Any]:
    return col("Age", doc("V1ObjectMeta", "creationTimestamp"))


_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."


def template_cols(selector_doc: str) -> tuple[dict[str, Any], ...]:
    return (col("Containers", _CONTAINERS_DOC, priority=1), col("Images", _IMAGES_DOC, priority=1),
            col("Selector", selector_doc, priority=1))


def container_cells(template_spec: Obj | None) -> list[str]:
    """layoutContainerCells: comma-joined container names and images."""
    containers = (template_spec or {}).get("containers") or []
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


def _name(obj: Obj) -> str:
    return str(dig(obj, "metadata", "name", default=""))


def count(values: Iterable[Any] | None) -> int:
    return len(list(values or ()))


# -- workloads ------------------------------------------------------------------------------


def _deployment(obj: Obj, now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    template = dig(spec, "template", "spec")
    return [_name(obj), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(obj, now),
            *container_cells(template), selector_string(spec.get("selector"))]


def _replica_set(obj: Obj, now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [_name(obj), spec.get("replicas", 0), status.get("replicas", 0), status.get("readyReplicas", 0),
            age(obj, now), *container_cells(dig(spec, "template", "spec")),
            format_label_selector(spec.get("selector"))]


def _replication_controller(obj: Obj, now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [_name(obj), spec.get("replicas", 0), status.get("replicas", 0), status.get("readyReplicas", 0),
            age(obj, now), *container_cells(dig(spec, "template", "spec")), format_labels(spec.get("selector"))]


def _daemon_set(obj: Obj, now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    template = dig(spec, "template", "spec", default={})
    return [_name(obj), status.get("desiredNumberScheduled", 0), status.get("currentNumberScheduled", 0),
            status.get("numberReady", 0), status.get("updatedNumberScheduled", 0),
            status.get("numberAvailable", 0), format_labels(template.get("nodeSelector")), age(obj, now),
            *container_cells(template), format_label_selector(spec.get("selector"))]


def _controller_revision(obj: Obj, now: datetime) -> list[Any]:
    controller = "<none>"
    for ref in dig(obj, "metadata", "ownerReferences", default=[]):
        if ref.get("controller"):
            group = ref.get("apiVersion", "").rpartition("/")[0]
            kind = f"{ref.get('kind', '')}.{group}" if group else ref.get("kind", "")
            controller = f"{kind.lower()}/{ref.get('name', '')}"
            break
    return [_name(obj), controller, obj.get("revision", 0), age(obj, now)]


WORKLOADS: dict[str, Printer] = {
    "Deployment": Printer((
        name_col(), col("Ready", "Number of the pod with ready state"),
        col("Up-to-date", doc("V1DeploymentStatus", "updatedReplicas"), type_="integer"),
        col("Available", doc("V1DeploymentStatus", "availableReplicas"), type_="integer"), age_col(),
        *template_cols(doc("V1DeploymentSpec", "selector"))), _deployment),
    "ReplicaSet": Printer((
        name_col(), col("Desired", doc("V1ReplicaSetSpec", "replicas"), type_="integer"),
        col("Current", doc("V1ReplicaSetStatus", "replicas"), type_="integer"),
        col("Ready", doc("V1ReplicaSetStatus", "readyReplicas"), type_="integer"), age_col(),
        *template_cols(doc("V1ReplicaSetSpec", "selector"))), _replica_set),
    "ReplicationController": Printer((
        name_col(), col("Desired", doc("V1ReplicationControllerSpec", "replicas"), type_="integer"),
        col("Current", doc("V1ReplicationControllerStatus", "replicas"), type_="integer"),
        col("Ready", doc("V1ReplicationControllerStatus", "readyReplicas"), type_="integer"), age_col(),
        *template_cols(doc("V1ReplicationControllerSpec", "selector"))), _replication_controller),
    "DaemonSet": Printer((
        name_col(), col("Desired", doc("V1DaemonSetStatus", "desiredNumberScheduled"), type_="integer"),
        col("Current", doc("V1DaemonSetStatus", "currentNumberScheduled"), type_="integer"),
        col("Ready", doc("V1DaemonSetStatus", "numberReady"), type_="integer"),
        col("Up-to-date", doc("V1DaemonSetStatus", "updatedNumberScheduled"), type_="integer"),
        col("Available", doc("V1DaemonSetStatus", "numberAvailable"), type_="integer"),
        col("Node Selector", doc("V1PodSpec", "nodeSelector")), age_col(),
        *template_cols(doc("V1DaemonSetSpec", "selector"))), _daemon_set),
    "ControllerRevision": Printer((
        name_col(), col("Controller", "Controller of the object"),
        col("Revision", doc("V1ControllerRevision", "revision")), age_col()), _controller_revision),
}


# -- configuration, access control, coordination -------------------------------------------


def _subjects(obj: Obj) -> list[str]:
    users, groups, sas = [], [], []
    for s in obj.get("subjects") or []:
        if s.get("kind") == "User":
            users.append(s.get("name", ""))
        elif s.get("kind") == "Group":
            groups.append(s.get("name", ""))
        elif s.get("kind") == "ServiceAccount":
            sas.append(f"{s.get('namespace', '')}/{s.get('name', '')}")
    return [", ".join(users), ", ".join(groups), ", ".join(sas)]


def _binding(obj: Obj, now: datetime) -> list[Any]:
    ref = obj.get("roleRef") or {}
    return [_name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", age(obj, now), *_subjects(obj)]


def _created_at(obj: Obj, now: datetime) -> list[Any]:
    t = parse_time(dig(obj, "metadata", "creationTimestamp"))
    return [_name(obj), rfc3339.format_time(t) if t else "<unknown>"]


def _binding_printer(kind: str) -> Printer:
    return Printer((
        name_col(), col("Role", doc(f"V1{kind}", "roleRef")), age_col(),
        col("Users", f"Users in the {kind[0].lower()}{kind[1:]}", priority=1),
        col("Groups", f"Groups in the {kind[0].lower()}{kind[1:]}", priority=1),
        col("ServiceAccounts", f"ServiceAccounts in the {kind[0].lower()}{kind[1:]}", priority=1)), _binding)


def _quota(obj: Obj, now: datetime) -> list[Any]:
    status = obj.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        text = f"{resource}: {used.get(resource, '0')}/{hard[resource]}"
        (limits if resource.startswith("limits.") else requests).append(text)
    return [_name(obj), age(obj, now), ", ".join(requests), ", ".join(limits)]


def _csr(obj: Obj, now: datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    seconds = spec.get("expirationSeconds")
    return [_name(obj), age(obj, now), spec.get("signerName", ""), spec.get("username", ""),
            human_duration(seconds) if isinstance(seconds, int) else "<none>", certificates.state(obj)]


_CREATED_AT = (name_col(), col("Created At", doc("V1ObjectMeta", "creationTimestamp"), type_="date"))

CONFIG: dict[str, Printer] = {
    "ConfigMap": Printer((name_col(), col("Data", doc("V1ConfigMap", "data"), type_="integer"), age_col()),
                         lambda o, now: [_name(o), count(o.get("data")) + count(o.get("binaryData")), age(o, now)]),
    "Secret": Printer((name_col(), col("Type", doc("V1Secret", "type")),
                       col("Data", doc("V1Secret", "data"), type_="integer"), age_col()),
                      lambda o, now: [_name(o), o.get("type", ""), count(o.get("data")), age(o, now)]),
    "ServiceAccount": Printer((name_col(), col("Secrets", doc("V1ServiceAccount", "secrets"), type_="integer"),
                               age_col()),
                              lambda o, now: [_name(o), count(o.get("secrets")), age(o, now)]),
    "Namespace": Printer((name_col(), col("Status", "The status of the namespace"), age_col()),
                         lambda o, now: [_name(o), dig(o, "status", "phase", default=""), age(o, now)]),
    "Lease": Printer((name_col(), col("Holder", doc("V1LeaseSpec", "holderIdentity")), age_col()),
                     lambda o, now: [_name(o), dig(o, "spec", "holderIdentity", default=""), age(o, now)]),
    "ResourceQuota": Printer((
        name_col(), age_col(),
        col("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
        col("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent "
                     "of contention on the node.")), _quota),
    "LimitRange": Printer(_CREATED_AT, _created_at),
    "Role": Printer(_CREATED_AT, _created_at),
    "ClusterRole": Printer(_CREATED_AT, _created_at),
    "RoleBinding": _binding_printer("RoleBinding"),
    "ClusterRoleBinding": _binding_printer("ClusterRoleBinding"),
    "CertificateSigningRequest": Printer((
        name_col(), age_col(), col("SignerName", doc("V1CertificateSigningRequestSpec", "signerName")),
        col("Requestor", doc("V1CertificateSigningRequestSpec", "request")),
        col("RequestedDuration", doc("V1CertificateSigningRequestSpec", "expirationSeconds")),
        col("Condition", doc("V1CertificateSigningRequestStatus", "conditions"))), _csr),
}


def default_printer() -> Printer:
    """Any kind without its own printer: NAME and AGE."""
    return Printer((name_col(), age_col()), lambda o, now: [_name(o), age(o, now)])
