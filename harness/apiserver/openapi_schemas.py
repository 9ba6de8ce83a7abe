"""OpenAPI schema definitions, derived from the official client's pydantic models.

The models carry JSON names, types, descriptions and required-ness, but not the upstream
definition names (`io.k8s.api.core.v1.PodSpec`): a model's package is the package of the
first root that reaches it, roots walked core group first, with the apimachinery `meta`
types and the client's group-prefixed names (`CoreV1Event`, `RbacV1Subject`) named
directly. What the models lose — Quantity, MicroTime, FieldsV1, RawExtension, and patch
strategies — comes from the small tables here and `harness.api.schema.PATCH_STRATEGIES`.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.api.registry import KINDS, Kind
from harness.api.schema import Field, PatchStrategy, fields_of, model_named, patch_strategy, unwrap

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
TIME = f"{META}.Time"
MICRO_TIME = f"{META}.MicroTime"
FIELDS_V1 = f"{META}.FieldsV1"
PATCH = f"{META}.Patch"
STATUS = f"{META}.Status"
DELETE_OPTIONS = f"{META}.DeleteOptions"
RAW_EXTENSION = "io.k8s.apimachinery.pkg.runtime.RawExtension"

#: Client models (without their `V1` prefix) that live in apimachinery's meta/v1.
_META_TYPES = frozenset({
    "APIGroup", "APIGroupList", "APIResource", "APIResourceList", "APIVersions", "Condition",
    "DeleteOptions", "GroupVersionForDiscovery", "LabelSelector", "LabelSelectorRequirement",
    "ListMeta", "ManagedFieldsEntry", "ObjectMeta", "OwnerReference", "Preconditions",
    "ServerAddressByClientCIDR", "Status", "StatusCause", "StatusDetails", "WatchEvent",
})

#: Field names whose string (or map-of-string) values are resource quantities.
_QUANTITY_FIELDS = frozenset({
    "allocatable", "allocatedResources", "capacity", "divisor", "hard", "limits", "overhead",
    "requests", "sizeLimit", "used",
    "default", "defaultRequest", "max", "maxLimitRequestRatio", "min",  # LimitRangeItem's bounds
})

#: (model, JSON field) -> named scalar definition the client flattened to datetime or dict.
_NAMED_FIELDS: dict[tuple[str, str], str] = {
    ("CoreV1Event", "eventTime"): MICRO_TIME,
    ("CoreV1EventSeries", "lastObservedTime"): MICRO_TIME,
    ("V1LeaseSpec", "acquireTime"): MICRO_TIME,
    ("V1LeaseSpec", "renewTime"): MICRO_TIME,
    ("V1ManagedFieldsEntry", "fieldsV1"): FIELDS_V1,
    ("V1ControllerRevision", "data"): RAW_EXTENSION,
    ("V1WatchEvent", "object"): RAW_EXTENSION,
}

#: Structs upstream marks `+structType=atomic` (replaced whole by server-side apply).
_ATOMIC_STRUCTS = frozenset({
    "V1LabelSelector", "V1LocalObjectReference", "V1ObjectReference", "V1ConfigMapKeySelector",
    "V1SecretKeySelector", "V1ObjectFieldSelector", "V1ResourceFieldSelector", "V1NodeSelector",
    "V1NodeSelectorTerm", "V1TypedLocalObjectReference",
})

#: The named non-object definitions, as upstream serves them in OpenAPI v2 and v3.
_SCALARS_V2: dict[str, dict[str, Any]] = {
    QUANTITY: {"type": "string"},
    INT_OR_STRING: {"type": "string", "format": "int-or-string"},
    TIME: {"type": "string", "format": "date-time"},
    MICRO_TIME: {"type": "string", "format": "date-time"},
    FIELDS_V1: {"type": "object"},
    RAW_EXTENSION: {"type": "object"},
    PATCH: {"type": "object"},
}
_SCALARS_V3: dict[str, dict[str, Any]] = {
    **_SCALARS_V2,
    QUANTITY: {"oneOf": [{"type": "string"}, {"type": "number"}]},
    INT_OR_STRING: {"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]},
}
_SCALAR_DOCS: dict[str, str] = {
    QUANTITY: "Quantity is a fixed-point representation of a number, serialized as a string such "
              "as \"100m\", \"1.5Gi\" or \"2\".",
    INT_OR_STRING: "IntOrString is a type that can hold an int32 or a string.",
    TIME: "Time is a wrapper around time.Time which supports correct marshaling to YAML and "
          "JSON, in RFC 3339 form.",
    MICRO_TIME: "MicroTime is version of Time with microsecond level precision.",
    FIELDS_V1: "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format.",
    RAW_EXTENSION: "RawExtension is used to hold extensions in external versions.",
    PATCH: "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
}

_NAME = re.compile(r"^(?P<group>[A-Z][a-z]+)?V(?P<version>\d+(?:(?:alpha|beta)\d+)?)(?P<name>[A-Z]\w*)$")


@dataclass(frozen=True)
class Style:
    """How references are written: OpenAPI v2 (`#/definitions/`) or v3 (`allOf` wrapped)."""

    prefix: str
    v3: bool

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": self.prefix + name}

    def property_ref(self, name: str, description: str) -> dict[str, Any]:
        out: dict[str, Any] = {"allOf": [self.ref(name)]} if self.v3 else self.ref(name)
        if description:
            out["description"] = description
        return out


V2 = Style("#/definitions/", v3=False)
V3 = Style("#/components/schemas/", v3=True)


# -- naming ---------------------------------------------------------------------------------


def package_of(group: str, version: str) -> str:
    """`io.k8s.api.<first label of group, or core>.<version>`, as upstream names packages."""
    return f"io.k8s.api.{group.split('.')[0] if group else 'core'}.{version}"


def _type_name(model_name: str) -> str:
    """The upstream type name in a client model name: `V1PodSpec` -> `PodSpec`."""
    m = _NAME.match(model_name)
    return m["name"] if m else model_name


def _definition_name(model_name: str, package: str) -> str:
    m = _NAME.match(model_name)
    if not m:
        return f"{package}.{model_name}"
    name, version = m["name"], f"v{m['version']}"
    if m["group"]:
        return f"io.k8s.api.{m['group'].lower()}.{version}.{name}"
    if name in _META_TYPES:
        return f"{META}.{name}"
    return f"{package.rsplit('.', 1)[0]}.{version}.{name}"


def _model(name: str) -> type[Any]:
    model = model_named(name)
    if model is None:
        raise LookupError(f"the kubernetes client has no model {name}")
    return model


def _fields(model: Any) -> dict[str, Field]:
    """`fields_of`, typed loosely: model classes are hashable, whatever mypy thinks of type[Any]."""
    return fields_of(model)


def _child_models(model: type[Any]) -> Iterator[type[Any]]:
    for f in _fields(model).values():
        if f.model is not None:
            yield f.model


#: Core models that are not served but anchor core types (PodTemplateSpec) in the core package,
#: whichever kinds the registry holds.
_CORE_ANCHORS = ("V1PodTemplate",)

#: Request and response bodies of subresources and of the API machinery itself.
EXTRA_ROOTS: tuple[tuple[str, str, str], ...] = (
    ("", "v1", "V1Binding"),
    ("autoscaling", "v1", "V1Scale"),
    ("policy", "v1", "V1Eviction"),
    ("authentication.k8s.io", "v1", "AuthenticationV1TokenRequest"),
    ("", "v1", "V1Status"),
    ("", "v1", "V1DeleteOptions"),
    ("", "v1", "V1WatchEvent"),
    ("", "v1", "V1APIResourceList"),
)


def list_model_name(kind: Kind) -> str:
    return f"{kind.model_name}List"


def _roots() -> list[tuple[str, str]]:
    """(model name, package) of every root, core group first so core types are named core."""
    kinds = sorted(KINDS, key=lambda k: k.group != "")
    roots = [(n, package_of("", "v1")) for n in _CORE_ANCHORS]
    for k in kinds:
        roots.append((k.model_name, package_of(k.group, k.version)))
        if k.stored:
            roots.append((list_model_name(k), package_of(k.group, k.version)))
    roots += [(n, package_of(g, v)) for g, v, n in EXTRA_ROOTS]
    return roots


@functools.cache
def definition_names() -> dict[str, str]:
    """Client model class name -> upstream definition name, for every model a root reaches."""
    names: dict[str, str] = {}

    def assign(model: type[Any], package: str) -> None:
        if model.__name__ in names:
            return
        names[model.__name__] = name = _definition_name(model.__name__, package)
        for child in _child_models(model):
            assign(child, name.rsplit(".", 1)[0])

    for model_name, package in _roots():
        assign(_model(model_name), package)
    return names


def definition_of(model_name: str) -> str:
    return definition_names()[model_name]


# -- field schemas --------------------------------------------------------------------------


def _union_schema(annotation: Any, style: Style) -> dict[str, Any]:
    members = {unwrap(a) for a in typing.get_args(annotation) if a is not type(None)}
    if members == {int, str}:
        return style.ref(INT_OR_STRING)
    if members == {bytes, str}:
        return {"type": "string", "format": "byte"}
    return {}


_SCALAR_TYPES: dict[Any, dict[str, str]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    bool: {"type": "boolean"},
    float: {"type": "number", "format": "double"},
    bytes: {"type": "string", "format": "byte"},
    datetime.date: {"type": "string", "format": "date"},
}


def type_schema(annotation: Any, style: Style) -> dict[str, Any]:
    """The schema of one (unwrapped) annotation: scalar, array, map, union or model ref."""
    ann = unwrap(annotation)
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return _union_schema(ann, style)
    if origin is list:
        return {"type": "array", "items": type_schema(typing.get_args(ann)[0], style)}
    if origin is dict:
        value = unwrap(typing.get_args(ann)[1])
        if value is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": type_schema(value, style)}
    if ann is datetime.datetime:
        return style.ref(TIME)
    if isinstance(ann, type) and hasattr(ann, "model_fields"):
        return style.ref(definition_of(ann.__name__))
    if ann in _SCALAR_TYPES:
        return dict(_SCALAR_TYPES[ann])
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _quantities(schema: dict[str, Any], style: Style) -> dict[str, Any]:
    """Turn a string, or a map of strings, into Quantity references."""
    if schema.get("type") == "string":
        return style.ref(QUANTITY)
    inner = schema.get("additionalProperties")
    if schema.get("type") == "object" and isinstance(inner, dict) and inner.get("type") == "string":
        return {**schema, "additionalProperties": style.ref(QUANTITY)}
    return schema


def _patch_extensions(strategy: PatchStrategy | None, schema: dict[str, Any]) -> dict[str, Any]:
    if strategy is None:
        return {}
    out: dict[str, Any] = {"x-kubernetes-patch-strategy": strategy.strategy}
    if strategy.merge_key:
        out["x-kubernetes-patch-merge-key"] = strategy.merge_key
    if schema.get("type") == "array" and "merge" in strategy.strategy.split(","):
        if strategy.merge_key:
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = [strategy.merge_key]
        else:
            out["x-kubernetes-list-type"] = "set"
    return out


def property_schema(model: type[Any], json_name: str, annotation: Any, description: str,
                    style: Style) -> dict[str, Any]:
    """The schema of one property of `model`, with its description and patch metadata."""
    named = _NAMED_FIELDS.get((model.__name__, json_name))
    if named is not None:
        return style.property_ref(named, description)
    schema = type_schema(annotation, style)
    if json_name in _QUANTITY_FIELDS:
        schema = _quantities(schema, style)
    if "$ref" in schema:
        schema = style.property_ref(schema["$ref"].removeprefix(style.prefix), description)
    elif description:
        schema = {"description": description, **schema}
    schema.update(_patch_extensions(patch_strategy(model, json_name), schema))
    return schema


# -- definitions ----------------------------------------------------------------------------


def _description(model: type[Any]) -> str:
    doc = inspect.cleandoc(model.__doc__ or "")
    return " ".join(doc.split("Attributes:", 1)[0].split())


def _gvk_of(kind: Kind, kind_name: str) -> dict[str, str]:
    return {"group": kind.group, "kind": kind_name, "version": kind.version}


@functools.cache
def _gvk_extensions() -> dict[str, list[dict[str, str]]]:
    """Definition name -> its `x-kubernetes-group-version-kind`."""
    out: dict[str, list[dict[str, str]]] = {}
    for kind in KINDS:
        out[definition_of(kind.model_name)] = [_gvk_of(kind, kind.kind)]
        if kind.stored:
            out[definition_of(list_model_name(kind))] = [_gvk_of(kind, kind.list_kind)]
    for group, version, model_name in EXTRA_ROOTS:
        kind_name = _type_name(model_name)
        if group == "" and kind_name in ("DeleteOptions", "WatchEvent"):
            gvs = dict.fromkeys((k.group, k.version) for k in KINDS)
            out[definition_of(model_name)] = [{"group": g, "kind": kind_name, "version": v} for g, v in gvs]
        else:
            out[definition_of(model_name)] = [{"group": group, "kind": kind_name, "version": version}]
    return out


def model_definition(model: type[Any], style: Style) -> dict[str, Any]:
    """The full definition of one model: description, properties, required, extensions."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    # fields_of iterates model_fields in order, so the two line up one to one.
    for info, field in zip(model.model_fields.values(), _fields(model).values(), strict=True):
        properties[field.json_name] = property_schema(
            model, field.json_name, info.annotation, field.description, style)
        if field.required:
            required.append(field.json_name)
    out: dict[str, Any] = {"description": _description(model), "type": "object",
                           "properties": dict(sorted(properties.items()))}
    if required:
        out["required"] = required
    gvk = _gvk_extensions().get(definition_of(model.__name__))
    if gvk:
        out["x-kubernetes-group-version-kind"] = gvk
    if model.__name__ in _ATOMIC_STRUCTS:
        out["x-kubernetes-map-type"] = "atomic"
    return out


def scalar_definitions(style: Style) -> dict[str, dict[str, Any]]:
    table = _SCALARS_V3 if style.v3 else _SCALARS_V2
    return {name: {"description": _SCALAR_DOCS[name], **schema} for name, schema in table.items()}


@functools.cache
def _every_definition(style: Style) -> dict[str, dict[str, Any]]:
    out = scalar_definitions(style)
    for model_name, definition in definition_names().items():
        out[definition] = model_definition(_model(model_name), style)
    return out


def served_roots() -> set[str]:
    """Definition names of every kind, list kind and extra request/response body."""
    names = {definition_of(k.model_name) for k in KINDS} | {definition_of(list_model_name(k)) for k in KINDS
                                                             if k.stored}
    return names | {definition_of(n) for _, _, n in EXTRA_ROOTS} | {PATCH}


@functools.cache
def all_definitions(style: Style) -> dict[str, dict[str, Any]]:
    """Every definition we serve (models and named scalars), sorted by name."""
    return closure(served_roots(), style)


def refs_in(node: Any) -> Iterator[str]:
    """Every `$ref` target anywhere inside a JSON-able structure."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def closure(roots: set[str], style: Style) -> dict[str, dict[str, Any]]:
    """The definitions named in `roots` and everything they reference, sorted by name."""
    defs = _every_definition(style)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(r.removeprefix(style.prefix) for r in refs_in(defs[name]))
    return {name: defs[name] for name in sorted(seen)}
