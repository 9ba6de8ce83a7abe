"""Validation of `metadata` and of what hangs off it: labels, annotations, selectors, owners.

Create checks the name (per the kind's name rule), the namespace, and the common fields;
update checks that identity fields did not change and then the common fields again, as
upstream's `ValidateObjectMeta` / `ValidateObjectMetaUpdate` do. Label selectors live here
too, with the matcher that workloads use to check that a selector selects its template.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from harness.api.errors import Cause
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.api.validation.formats import NameFn

#: Most bytes that keys plus values of all annotations may take.
TOTAL_ANNOTATION_SIZE = 256 * 1024
#: Finalizer names without a '/' that Kubernetes itself uses.
STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")
#: Events may not own anything (upstream `BannedOwners`).
BANNED_OWNERS = (("v1", "Event"),)
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_object_meta(obj: dict[str, Any], *, namespaced: bool, name_fn: NameFn,
                         path: str = "metadata") -> list[Cause]:
    """Metadata of an object being created (after name generation)."""
    md = f.as_dict(obj.get("metadata"))
    causes: list[Cause] = []
    generate_name = f.as_str(md.get("generateName"))
    if generate_name:
        causes += f.invalid_each(f"{path}.generateName", generate_name, name_fn(generate_name, True))
    name = md.get("name")
    if not name:
        causes.append(f.required(f"{path}.name", "name or generateName is required"))
    elif not isinstance(name, str):
        causes.append(f.invalid(f"{path}.name", name, "must be a string"))
    else:
        causes += f.invalid_each(f"{path}.name", name, name_fn(name, False))
    causes += _namespace(md, namespaced, path)
    return causes + validate_common(md, path)


def _namespace(md: dict[str, Any], namespaced: bool, path: str) -> list[Cause]:
    namespace = md.get("namespace")
    if not namespaced:
        return [f.forbidden(f"{path}.namespace", "not allowed on this type")] if namespace else []
    if not namespace:
        return [f.required(f"{path}.namespace")]
    return f.invalid_each(f"{path}.namespace", namespace, formats.name_is_dns_label(f.as_str(namespace), False))


def validate_object_meta_update(new: dict[str, Any], old: dict[str, Any], path: str = "metadata") -> list[Cause]:
    """Metadata of an update: identity and timestamps unchanged, then the common fields."""
    md, old_md = f.as_dict(new.get("metadata")), f.as_dict(old.get("metadata"))
    causes: list[Cause] = []
    if old_md.get("deletionTimestamp"):
        causes += _no_new_finalizers(md, old_md, path)
    generation, old_generation = md.get("generation"), old_md.get("generation")
    if f.is_int(generation) and f.is_int(old_generation) and generation < old_generation:
        causes.append(f.invalid(f"{path}.generation", generation, "must not be decremented"))
    for name in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                 "deletionGracePeriodSeconds"):
        causes += f.immutable(f"{path}.{name}", _blank(md.get(name)), _blank(old_md.get(name)))
    return causes + validate_common(md, path)


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _no_new_finalizers(md: dict[str, Any], old_md: dict[str, Any], path: str) -> list[Cause]:
    extra = sorted(set(map(str, f.as_list(md.get("finalizers")))) - set(map(str, f.as_list(old_md.get("finalizers")))))
    if not extra:
        return []
    shown = "[]string{" + ", ".join(f'"{x}"' for x in extra) + "}"
    return [f.forbidden(f"{path}.finalizers",
                        f"no new finalizers can be added if the object is being deleted, found new finalizers {shown}")]


def validate_common(md: dict[str, Any], path: str = "metadata") -> list[Cause]:
    """What create and update both check: generation, labels, annotations, owners, finalizers."""
    causes = f.nonnegative(f"{path}.generation", md.get("generation"))
    causes += validate_labels(md.get("labels"), f"{path}.labels")
    causes += validate_annotations(md.get("annotations"), f"{path}.annotations")
    causes += validate_owner_references(md.get("ownerReferences"), f"{path}.ownerReferences")
    return causes + validate_finalizers(md.get("finalizers"), f"{path}.finalizers")


# -- labels and annotations -----------------------------------------------------------------


def validate_label_name(name: Any, path: str) -> list[Cause]:
    if not isinstance(name, str):
        return [f.invalid(path, name, "must be a string")]
    return f.invalid_each(path, name, formats.qualified_name(name))


def validate_labels(labels: Any, path: str) -> list[Cause]:
    """Label keys and values; upstream reports both on the map's own path."""
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f.invalid(path, labels, "must be a map of string keys to string values")]
    causes: list[Cause] = []
    for key, value in labels.items():
        causes += validate_label_name(key, path)
        if not isinstance(value, str):
            causes.append(f.invalid(path, value, "must be a string"))
        else:
            causes += f.invalid_each(path, value, formats.label_value(value))
    return causes


def validate_annotations(annotations: Any, path: str) -> list[Cause]:
    if annotations is None:
        return []
    if not isinstance(annotations, dict):
        return [f.invalid(path, annotations, "must be a map of string keys to string values")]
    causes: list[Cause] = []
    size = 0
    for key, value in annotations.items():
        # Annotation keys are qualified names, except that case does not matter.
        causes += f.invalid_each(path, key, formats.qualified_name(key.lower()))
        if not isinstance(value, str):
            causes.append(f.invalid(f"{path}[{key}]", value, "must be a string"))
        size += len(key.encode()) + len(str(value).encode())
    if size > TOTAL_ANNOTATION_SIZE:
        causes.append(f.too_long(path, TOTAL_ANNOTATION_SIZE))
    return causes


# -- owners and finalizers ------------------------------------------------------------------


def validate_owner_references(refs: Any, path: str) -> list[Cause]:
    """Each reference names its owner completely; at most one is the controller.

    Upstream reports the fields of every reference on `ownerReferences.<field>`, unindexed.
    """
    causes: list[Cause] = []
    controller = ""
    for ref in f.as_dicts(refs):
        causes += _owner_reference(ref, path)
        if ref.get("controller") is True:
            current = f"{ref.get('kind', '')}/{ref.get('name', '')}"
            if controller:
                causes.append(f.invalid(path, refs, "Only one reference can have Controller set to true. "
                                                    f'Found "true" in references for {controller} and {current}'))
            else:
                controller = current
    return causes


def _owner_reference(ref: dict[str, Any], path: str) -> list[Cause]:
    api_version, kind = f.as_str(ref.get("apiVersion")), f.as_str(ref.get("kind"))
    causes = []
    if not api_version.rpartition("/")[2]:
        causes.append(f.invalid(f"{path}.apiVersion", api_version, "version must not be empty"))
    for name in ("kind", "name", "uid"):
        if not ref.get(name):
            causes.append(f.invalid(f"{path}.{name}", _blank(ref.get(name)), "must not be empty"))
    if (api_version, kind) in BANNED_OWNERS:
        causes.append(f.invalid(path, ref, f"/{api_version}, Kind={kind} is disallowed from being an owner"))
    return causes


def validate_finalizers(finalizers: Any, path: str) -> list[Cause]:
    names = f.as_list(finalizers)
    causes: list[Cause] = []
    for i, name in enumerate(names):
        causes += validate_finalizer_name(name, path, f"{path}[{i}]")
    if "orphan" in names and "foregroundDeletion" in names:
        causes.append(f.invalid(path, names, "finalizer orphan and foregroundDeletion cannot be both set"))
    return causes


def validate_finalizer_name(name: Any, path: str, indexed_path: str) -> list[Cause]:
    """A qualified name (reported on the list) and, without a '/', a standard one (on the entry)."""
    if not isinstance(name, str):
        return [f.invalid(indexed_path, name, "must be a string")]
    causes = f.invalid_each(path, name, formats.qualified_name(name))
    if "/" not in name and name not in STANDARD_FINALIZERS:
        causes.append(f.invalid(indexed_path, name, "name is neither a standard finalizer name nor is it fully "
                                                    "qualified"))
    return causes


# -- label selectors ------------------------------------------------------------------------


def validate_label_selector(selector: Any, path: str) -> list[Cause]:
    """A `LabelSelector` (matchLabels and matchExpressions), strictly as apps/v1 checks it."""
    if selector is None:
        return []
    if not isinstance(selector, dict):
        return [f.invalid(path, selector, "must be a label selector")]
    causes = validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    for i, req in enumerate(f.as_dicts(selector.get("matchExpressions"))):
        causes += _selector_requirement(req, f"{path}.matchExpressions[{i}]")
    return causes


def _selector_requirement(req: dict[str, Any], path: str) -> list[Cause]:
    operator, values = req.get("operator"), f.as_list(req.get("values"))
    causes: list[Cause] = []
    if operator in ("In", "NotIn"):
        if not values:
            causes.append(f.required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
    elif operator in ("Exists", "DoesNotExist"):
        if values:
            causes.append(f.forbidden(f"{path}.values",
                                      "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
    else:
        causes.append(f.invalid(f"{path}.operator", operator, "not a valid selector operator"))
    causes += validate_label_name(req.get("key"), f"{path}.key")
    for j, value in enumerate(values):
        if not isinstance(value, str):
            causes.append(f.invalid(f"{path}.values[{j}]", value, "must be a string"))
        else:
            causes += f.invalid_each(f"{path}.values[{j}]", value, formats.label_value(value))
    return causes


def selector_is_empty(selector: dict[str, Any]) -> bool:
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def selector_matches(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    """Whether a `LabelSelector` selects an object with these labels (an empty one selects all)."""
    match_labels = f.as_dict(selector.get("matchLabels"))
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    return all(_requirement_matches(req, labels) for req in f.as_dicts(selector.get("matchExpressions")))


def _requirement_matches(req: dict[str, Any], labels: dict[str, Any]) -> bool:
    key: Any = req.get("key")
    operator, values = req.get("operator"), f.as_list(req.get("values"))
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    return False


def selector_is_valid(selector: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(selector, dict) and not validate_label_selector(selector, "")
