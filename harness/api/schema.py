"""Object schemas, read from the official `kubernetes` client's models.

The client's pydantic models carry every field's JSON name, type and description for every
built-in kind; we walk them instead of writing schemas by hand. What the models lack — the
strategic-merge-patch strategy of list fields — is the `PATCH_STRATEGIES` table here, used
both by strategic merge patch and by OpenAPI (`x-kubernetes-patch-*`).
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from harness.api.registry import Kind


@dataclass(frozen=True)
class PatchStrategy:
    strategy: str  # "merge", "retainKeys", "merge,retainKeys" or "replace"
    merge_key: str = ""


_M = PatchStrategy

#: (model class name, JSON field) -> strategic merge patch strategy, as upstream's struct tags.
PATCH_STRATEGIES: dict[tuple[str, str], PatchStrategy] = {
    ("V1ObjectMeta", "finalizers"): _M("merge"),
    ("V1ObjectMeta", "ownerReferences"): _M("merge", "uid"),
    ("V1PodSpec", "containers"): _M("merge", "name"),
    ("V1PodSpec", "initContainers"): _M("merge", "name"),
    ("V1PodSpec", "ephemeralContainers"): _M("merge", "name"),
    ("V1PodSpec", "volumes"): _M("merge,retainKeys", "name"),
    ("V1PodSpec", "imagePullSecrets"): _M("merge", "name"),
    ("V1PodSpec", "hostAliases"): _M("merge", "ip"),
    ("V1PodSpec", "topologySpreadConstraints"): _M("merge", "topologyKey"),
    ("V1PodSpec", "resourceClaims"): _M("merge,retainKeys", "name"),
    ("V1PodSpec", "schedulingGates"): _M("merge", "name"),
    ("V1PodSpec", "evictionResponders"): _M("merge", "name"),
    ("V1Container", "ports"): _M("merge", "containerPort"),
    ("V1Container", "env"): _M("merge", "name"),
    ("V1Container", "volumeMounts"): _M("merge", "mountPath"),
    ("V1Container", "volumeDevices"): _M("merge", "devicePath"),
    ("V1EphemeralContainer", "ports"): _M("merge", "containerPort"),
    ("V1EphemeralContainer", "env"): _M("merge", "name"),
    ("V1EphemeralContainer", "volumeMounts"): _M("merge", "mountPath"),
    ("V1EphemeralContainer", "volumeDevices"): _M("merge", "devicePath"),
    ("V1ContainerStatus", "volumeMounts"): _M("merge", "mountPath"),
    ("V1ContainerStatus", "allocatedResourcesStatus"): _M("merge", "name"),
    ("V1PodStatus", "conditions"): _M("merge", "type"),
    ("V1PodStatus", "podIPs"): _M("merge", "ip"),
    ("V1PodStatus", "hostIPs"): _M("merge", "ip"),
    ("V1PodStatus", "resourceClaimStatuses"): _M("merge,retainKeys", "name"),
    ("V1PodStatus", "nodeAllocatableResourceClaimStatuses"): _M("merge", "resourceClaimName"),
    ("V1NodeAllocatableResourceClaimStatus", "mapping"): _M("merge", "name"),
    ("V1NodeAllocatableResourceClaimStatus", "overhead"): _M("merge", "name"),
    ("V1PodVolumeHealth", "healthConditions"): _M("merge", "status"),
    ("V1NodeStatus", "conditions"): _M("merge", "type"),
    ("V1NodeStatus", "addresses"): _M("merge", "type"),
    ("V1NodeSpec", "podCIDRs"): _M("merge"),
    ("V1ServiceSpec", "ports"): _M("merge", "port"),
    ("V1ServiceStatus", "conditions"): _M("merge", "type"),
    ("V1DeploymentSpec", "strategy"): _M("retainKeys"),
    ("V1DeploymentStatus", "conditions"): _M("merge", "type"),
    ("V1ReplicaSetStatus", "conditions"): _M("merge", "type"),
    ("V1DaemonSetStatus", "conditions"): _M("merge", "type"),
    ("V1ReplicationControllerStatus", "conditions"): _M("merge", "type"),
    ("V1NamespaceStatus", "conditions"): _M("merge", "type"),
    ("V1ServiceAccount", "secrets"): _M("merge", "name"),
}


def model_for(kind: Kind) -> type[Any] | None:
    """The client's model class of `kind` (None if the client does not know it)."""
    return model_named(kind.model_name)


@functools.cache
def model_named(name: str) -> type[Any] | None:
    import kubernetes.client.models as models

    return getattr(models, name, None)


@dataclass(frozen=True)
class Field:
    """One field of a model, by its JSON name."""

    json_name: str
    container: str  # "" (scalar or object), "list" or "map"
    model: type[Any] | None  # the element model if the field (or its elements) is an object
    required: bool
    description: str


def unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and Annotated[...] down to the underlying type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


_FIELDS: dict[str, dict[str, Field]] = {}


def fields_of(model: type[Any]) -> dict[str, Field]:
    """The fields of a model class keyed by JSON name (computed once per model)."""
    cached = _FIELDS.get(model.__name__)
    if cached is not None:
        return cached
    out: dict[str, Field] = {}
    for attr, info in model.model_fields.items():
        json_name = info.serialization_alias or info.alias or attr
        ann = unwrap(info.annotation)
        container = ""
        elem = ann
        origin = typing.get_origin(ann)
        if origin is list:
            container, elem = "list", unwrap(typing.get_args(ann)[0])
        elif origin is dict:
            container, elem = "map", unwrap(typing.get_args(ann)[1])
        is_model = isinstance(elem, type) and hasattr(elem, "model_fields")
        out[json_name] = Field(json_name, container, elem if is_model else None,
                               bool(info.is_required()), info.description or "")
    _FIELDS[model.__name__] = out
    return out


def patch_strategy(model: type[Any] | None, json_name: str) -> PatchStrategy | None:
    if model is None:
        return None
    return PATCH_STRATEGIES.get((model.__name__, json_name))
