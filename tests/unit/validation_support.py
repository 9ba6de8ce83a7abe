"""Helpers for the validation tests: run defaulting + validation as the store does, find causes,
and build the objects users apply."""

from __future__ import annotations

import copy
from typing import Any

from harness.api import registry
from harness.api.defaults import apply_defaults
from harness.api.errors import Cause
from harness.api.validation import (
    check_create,
    check_status_update,
    check_update,
)

KINDS = {k.kind: k for k in registry.KINDS}
NS = "default"
UPDATABLE = ("pod updates may not change fields other than `spec.containers[*].image`,"
             "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
             "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
             "previously negative)")


# -- helpers --------------------------------------------------------------------------------


def prepared(kind: str, obj: dict[str, Any], *, default: bool = True) -> dict[str, Any]:
    """The object as the apiserver validates it: defaulted, with its namespace and identity stamped."""
    obj = copy.deepcopy(obj)
    if default:
        apply_defaults(KINDS[kind], obj)
    md = obj.setdefault("metadata", {})
    if KINDS[kind].namespaced:
        md.setdefault("namespace", NS)
    return obj


def created(kind: str, obj: dict[str, Any], *, default: bool = True, **kw: Any) -> list[Cause]:
    return check_create(KINDS[kind], prepared(kind, obj, default=default), **kw)


def stored(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    obj = prepared(kind, obj)
    assert check_create(KINDS[kind], obj) == [], check_create(KINDS[kind], obj)
    obj["metadata"].update(uid="1234", creationTimestamp="2024-01-01T00:00:00Z", resourceVersion="7")
    return obj


def updated(kind: str, old: dict[str, Any], change: Any, **kw: Any) -> list[Cause]:
    """Causes of updating stored `old` by `change(new)` (which edits a copy in place)."""
    new = copy.deepcopy(old)
    change(new)
    apply_defaults(KINDS[kind], new)
    return check_update(KINDS[kind], new, old, **kw)


def status_updated(kind: str, old: dict[str, Any], status: dict[str, Any]) -> list[Cause]:
    new = copy.deepcopy(old)
    new["status"] = status
    return check_status_update(KINDS[kind], new, old)


def find(causes: list[Cause], field: str, reason: str, text: str = "") -> Cause:
    for cause in causes:
        if cause.field == field and cause.reason == reason and text in cause.message:
            return cause
    raise AssertionError(f"no {reason} cause on {field!r} containing {text!r} in:\n" +
                         "\n".join(f"  {c.field}: {c.reason}: {c.message}" for c in causes))


def only(causes: list[Cause], field: str, reason: str, text: str = "") -> Cause:
    cause = find(causes, field, reason, text)
    assert len(causes) == 1, causes
    return cause


# -- objects users apply --------------------------------------------------------------------


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}], **spec}}


def container(pod_obj: dict[str, Any], i: int = 0) -> dict[str, Any]:
    ctr: dict[str, Any] = pod_obj["spec"]["containers"][i]
    return ctr


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "frontend"}},
                "spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.27",
                     "ports": [{"name": "http", "containerPort": 80}, {"name": "https", "containerPort": 443}],
                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                   "limits": {"cpu": "500m", "memory": "128Mi"}},
                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                     "livenessProbe": {"tcpSocket": {"port": 80}, "initialDelaySeconds": 5}},
                    {"name": "metrics", "image": "prom/nginx-exporter:1.1",
                     "args": ["--nginx.scrape-uri=http://localhost/status"],
                     "ports": [{"name": "metrics", "containerPort": 9113}],
                     "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "LOG_LEVEL", "value": "info"}]},
                ]},
            },
        },
    }


def tspec(dep: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


def service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}], **spec}}


