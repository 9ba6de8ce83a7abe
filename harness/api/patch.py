"""PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

`apply_patch` is what the apiserver calls: it picks the flavour from the Content-Type, decodes
the body and returns the patched object, raising our API errors with upstream's status codes
(400 for a body that is not a patch of that flavour, 422 for a well-formed patch that does not
apply, 415 for a flavour we don't serve).

Strategic merge patch is Kubernetes' merge patch with per-field knowledge: lists declared
`patchStrategy: merge` in the API types are merged element by element (by their merge key, or
as sets of primitives), every other list is replaced whole, and the patch can carry directives
(`$patch`, `$retainKeys`, `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>`). That
is what `kubectl apply` and `kubectl patch` send by default. The field knowledge comes from
`harness.api.schema`; where it has none (an unknown kind or field) maps still merge and lists
are replaced, which is merge-patch semantics. Semantics follow apimachinery's
`util/strategicpatch` (server side: parallel lists merged, unmatched nulls ignored); a patched
value never keeps a directive or a null, as upstream's typed decoding guarantees.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import orjson

from harness.api import errors, schema
from harness.api.registry import Kind

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

#: Upstream refuses JSON patches with more operations than this (413).
MAX_JSON_PATCH_OPERATIONS = 10000


# -- JSON patch ------------------------------------------------------------------------------


def apply_json_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 6902 operation list to a copy of `obj`."""
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        raise errors.BadRequest("a JSON patch must be a JSON array of operation objects")
    if len(patch) > MAX_JSON_PATCH_OPERATIONS:
        raise errors.RequestEntityTooLarge(f"The allowed maximum operations in a JSON patch is "
                                           f"{MAX_JSON_PATCH_OPERATIONS}, got {len(patch)}")
    try:
        result = jsonpatch.JsonPatch(copy.deepcopy(patch)).apply(obj, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, ValueError,
            IndexError) as exc:
        raise errors.Invalid(f"the JSON patch could not be applied: {exc}") from None
    return _object(result)


# -- JSON merge patch ------------------------------------------------------------------------


def apply_merge_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch to a copy of `obj`: objects merge, null deletes, anything else replaces."""
    return _object(_merge(obj, patch))


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    # Values of `target` that the patch did not touch are still shared; copy them so the
    # caller may change the result without changing `obj`.
    untouched = result.keys() - patch.keys()
    for key in untouched:
        result[key] = copy.deepcopy(result[key])
    return result


def _object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise errors.BadRequest("the patch did not produce an object")
    return result


# -- strategic merge patch -------------------------------------------------------------------

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ELEMENT_ORDER = "$setElementOrder/"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"

_BAD_RETAIN_KEYS = "invalid patch format of retainKeys"
_BAD_ELEMENT_ORDER = "invalid patch format of setElementOrder list"
_BAD_PRIMITIVE_LIST = "invalid patch format of primitive list"


def apply_strategic_merge_patch(obj: dict[str, Any], patch: Any, kind: Kind) -> dict[str, Any]:
    """Apply a strategic merge patch for `kind` to a copy of `obj`."""
    if not isinstance(patch, dict):
        raise errors.BadRequest(f"a strategic merge patch must be a JSON object, not {_json_type(patch)}")
    merged = _merge_map(copy.deepcopy(obj), copy.deepcopy(patch), _Type(schema.model_for(kind)))
    return _object(merged)


@dataclass(frozen=True)
class _Type:
    """Where a JSON value sits in the API types: an object of `model`, or a map whose values are."""

    model: type[Any] | None = None
    map_values: bool = False

    def field(self, key: str) -> tuple[_Type, _Strategy]:
        """The type of field `key` (the element type, for a list) and how to patch it."""
        if self.model is None:
            return _UNTYPED, _NONE
        if self.map_values:
            return _Type(self.model), _NONE
        f = schema.fields_of(self.model).get(key)
        if f is None:
            return _UNTYPED, _NONE
        return _Type(f.model, f.container == "map"), _strategy(self.model, key)


_UNTYPED = _Type()


@dataclass(frozen=True)
class _Strategy:
    merge: bool = False  # lists: merge element-wise instead of replacing
    replace: bool = False  # maps: replace instead of merging
    merge_key: str = ""


_NONE = _Strategy()


def _strategy(model: type[Any], key: str) -> _Strategy:
    found = schema.patch_strategy(model, key)
    if found is None:
        return _NONE
    parts = set(found.strategy.split(","))
    return _Strategy(merge="merge" in parts, replace="replace" in parts, merge_key=found.merge_key)


def _merge_map(original: dict[str, Any], patch: dict[str, Any], typ: _Type) -> dict[str, Any]:
    """Merge `patch` into `original` (both ours to change) and return the result."""
    if DIRECTIVE in patch:
        return _map_directive(patch, typ)
    _retain_keys(original, patch)
    _set_element_orders(original, patch, typ)
    for key, value in patch.items():
        if key.startswith(DELETE_FROM_PRIMITIVE_LIST):
            _delete_from_primitive_list(original, key, value)
        elif value is None:
            original.pop(key, None)
        else:
            _merge_field(original, key, value, typ)
    return original


def _merge_field(original: dict[str, Any], key: str, value: Any, typ: _Type) -> None:
    child, strategy = typ.field(key)
    current = original.get(key)
    if isinstance(current, dict) and isinstance(value, dict) and not strategy.replace:
        merged: Any = _merge_map(current, value, child)
    elif isinstance(current, list) and isinstance(value, list) and strategy.merge:
        merged = _merge_list(current, value, child, strategy.merge_key)
    else:
        merged = _fresh(value, child, strategy)
    if merged is _DROP:
        original.pop(key, None)
    else:
        original[key] = merged


# Marks a new value that is only a `$patch: delete`: the field stays absent.
_DROP: Any = object()


def _fresh(value: Any, typ: _Type, strategy: _Strategy) -> Any:
    """A patch value that replaces (or creates) a field: directives applied, nulls dropped."""
    if isinstance(value, dict):
        if value.get(DIRECTIVE) == "delete":
            return _DROP
        return _merge_map({}, value, typ)
    if isinstance(value, list):
        if strategy.merge:
            return _merge_list([], value, typ, strategy.merge_key)
        return [x for x in (_fresh(v, typ, _NONE) for v in value) if x is not _DROP]
    return value


def _map_directive(patch: dict[str, Any], typ: _Type) -> dict[str, Any]:
    directive = patch[DIRECTIVE]
    if directive == "replace":
        return _merge_map({}, {k: v for k, v in patch.items() if k != DIRECTIVE}, typ)
    if directive == "delete":
        return {}
    raise errors.BadRequest(f"unknown patch type: {directive} in map: {_show(patch)}")


def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """`$retainKeys`: drop every key of `original` not listed (how a union switches members)."""
    if RETAIN_KEYS not in patch:
        return
    keep = patch.pop(RETAIN_KEYS)
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise errors.BadRequest(_BAD_RETAIN_KEYS)
    for key, value in patch.items():
        if value is None or key.startswith((DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER)):
            continue
        if key not in keep:
            raise errors.BadRequest(f"{_BAD_RETAIN_KEYS}: {key!r} is patched but not in {RETAIN_KEYS}")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _set_element_orders(original: dict[str, Any], patch: dict[str, Any], typ: _Type) -> None:
    """`$setElementOrder/<list>`: merge that list now and put it in the order the client has it."""
    for directive in [k for k in patch if k.startswith(SET_ELEMENT_ORDER)]:
        order = patch.pop(directive)
        key = _directive_field(directive, SET_ELEMENT_ORDER, _BAD_ELEMENT_ORDER)
        if not isinstance(order, list):
            raise errors.BadRequest(_BAD_ELEMENT_ORDER)
        child, strategy = typ.field(key)
        current, wanted = original.get(key), patch.get(key)
        if not strategy.merge or (wanted is None and key in patch):
            continue  # a replaced list comes whole, and "key: null" deletes it: the main loop does both
        if not isinstance(current, list | None) or not isinstance(wanted, list | None):
            raise errors.BadRequest(f"{_BAD_ELEMENT_ORDER}: {key} is not a list")
        _check_order(wanted or [], order, strategy.merge_key)
        if current is None and wanted is None:
            continue
        merged, server_order = _merge_for_order(current, wanted, child, strategy.merge_key)
        original[key] = _normalize(merged, order, server_order, strategy.merge_key)
        patch.pop(key, None)


def _merge_for_order(current: list[Any] | None, wanted: list[Any] | None, elem: _Type,
                     merge_key: str) -> tuple[list[Any], list[Any]]:
    """The merged list for `$setElementOrder`, and the server order upstream ends up using for it.

    Upstream deletes and appends inside the live list's own storage and afterwards reads that
    storage, as long as the live list was, as the server's order: deleted items are gone and
    new items take their places at the end. That decides where server-only items land, so we
    reproduce it.
    """
    if wanted is None:
        return current or [], current or []
    if current is None:
        return _fresh(wanted, elem, _NONE), []
    parts = _merge_parts(current, wanted, elem, merge_key)
    if parts.replaced or not merge_key:
        return _order(parts, merge_key), current
    return _order(parts, merge_key), (parts.survivors + parts.added)[:len(current)]


def _directive_field(directive: str, prefix: str, problem: str) -> str:
    key = directive[len(prefix):]
    if not key:
        raise errors.BadRequest(problem)
    return key


def _check_order(items: list[Any], order: list[Any], merge_key: str) -> None:
    """The patch list's items must appear in `$setElementOrder` and in the same relative order."""
    kept = [x for x in items if not (isinstance(x, dict) and DIRECTIVE in x)]
    if not kept or not order:
        return
    i = 0
    for wanted in order:
        if i < len(kept) and _same(_identity(kept[i], merge_key), _identity(wanted, merge_key)):
            i += 1
    if i < len(kept):
        raise errors.BadRequest(f"the order in patch list {_show(items)} doesn't match "
                                f"$setElementOrder list {_show(order)}")


def _delete_from_primitive_list(original: dict[str, Any], directive: str, values: Any) -> None:
    key = _directive_field(directive, DELETE_FROM_PRIMITIVE_LIST, _BAD_PRIMITIVE_LIST)
    if not isinstance(values, list):
        raise errors.BadRequest(_BAD_PRIMITIVE_LIST)
    current = original.get(key)
    if isinstance(current, list):
        original[key] = [x for x in current if not any(_same(x, v) for v in values)]


def _merge_list(original: list[Any], patch: list[Any], elem: _Type, merge_key: str) -> list[Any]:
    """Merge a `patchStrategy: merge` list: by merge key for objects, as a set for primitives."""
    return _order(_merge_parts(original, patch, elem, merge_key), merge_key)


@dataclass
class _Parts:
    """A list merge before ordering."""

    survivors: list[Any]  # the original items still there (merged with their patches), in original order
    added: list[Any]  # items only the patch has
    named: list[Any]  # the patch's items, whose order wins
    replaced: bool = False  # a `$patch: replace` element made `survivors` the patch's list


def _order(parts: _Parts, merge_key: str) -> list[Any]:
    return _normalize(parts.survivors + parts.added, parts.named, parts.survivors, merge_key)


def _merge_parts(original: list[Any], patch: list[Any], elem: _Type, merge_key: str) -> _Parts:
    if not original and not patch:
        return _Parts([], [], [])
    if _element_kind(original + patch) != "map":
        added = [x for x in _distinct(patch) if _index(original, x, "") < 0]
        return _Parts(_distinct(original), added, patch)
    if not merge_key:
        raise errors.BadRequest("cannot merge lists of objects without a merge key")
    survivors, rest, replaced = _list_directives(original, patch, merge_key, elem)
    if replaced:
        return _Parts(survivors, [], [], replaced=True)
    added = _merge_by_key(survivors, rest, elem, merge_key)
    return _Parts(survivors, added, rest)


def _element_kind(items: list[Any]) -> str:
    kinds = {"map" if isinstance(x, dict) else "list" if isinstance(x, list) else "scalar" for x in items}
    if "list" in kinds:
        raise errors.Invalid("lists of lists are not supported")
    if len(kinds) > 1:
        raise errors.BadRequest(f"list element types are not identical: {_show(items)}")
    return kinds.pop()


def _list_directives(original: list[Any], patch: list[Any], merge_key: str,
                     elem: _Type) -> tuple[list[Any], list[Any], bool]:
    """Apply `$patch: delete` / `$patch: replace` elements; return what is left to merge."""
    rest: list[dict[str, Any]] = []
    replace = False
    for item in patch:
        directive = item.get(DIRECTIVE)
        if DIRECTIVE not in item:
            rest.append(item)
        elif directive == "delete":
            value = _merge_key_of(item, merge_key)
            original = [x for x in original if not (isinstance(x, dict) and _same(x.get(merge_key), value))]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise errors.BadRequest("merging lists cannot yet be specified in the patch")
        else:
            raise errors.BadRequest(f"unknown patch type: {directive} in map: {_show(item)}")
    if replace:
        return [_merge_map({}, x, elem) for x in rest], [], True
    return original, rest, False


def _merge_by_key(survivors: list[Any], patch: list[Any], elem: _Type, merge_key: str) -> list[Any]:
    """Merge each patch item into the survivor with its key (in place); return the items that had none."""
    added: list[Any] = []
    for item in patch:
        value = _merge_key_of(item, merge_key)
        at = _find(survivors, merge_key, value)
        if at >= 0:
            survivors[at] = _merge_map(survivors[at], item, elem)
            continue
        at = _find(added, merge_key, value)
        if at >= 0:
            added[at] = _merge_map(added[at], item, elem)
        else:
            added.append(_merge_map({}, item, elem))
    return added


def _merge_key_of(item: dict[str, Any], merge_key: str) -> Any:
    if merge_key not in item:
        raise errors.BadRequest(f"map: {_show(item)} does not contain declared merge key: {merge_key}")
    return item[merge_key]


def _find(items: list[dict[str, Any]], merge_key: str, value: Any) -> int:
    for i, x in enumerate(items):
        if merge_key in x and _same(x[merge_key], value):
            return i
    return -1


def _distinct(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in items:
        if not any(_same(x, y) for y in out):
            out.append(x)
    return out


# Ordering, as upstream's normalizeElementOrder: items named by the patch (or by
# $setElementOrder) keep the patch's order; the server's other items keep theirs and are
# slotted in before the first patch item that comes after them on the server.


def _normalize(merged: list[Any], patch_order: list[Any], server_order: list[Any], merge_key: str) -> list[Any]:
    patched = [x for x in merged if _index(patch_order, x, merge_key) >= 0]
    server_only = [x for x in merged if _index(patch_order, x, merge_key) < 0]
    patched = _sort_by(patched, patch_order, merge_key)
    server_only = _sort_by(server_only, server_order, merge_key)
    return _interleave(server_only, patched, server_order, merge_key)


def _sort_by(items: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    def position(item: Any) -> int:
        at = _index(order, item, merge_key)
        return at if at >= 0 else len(order)
    return sorted(items, key=position)


def _interleave(server_only: list[Any], patched: list[Any], server_order: list[Any], merge_key: str) -> list[Any]:
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patched):
        if j >= len(patched):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only) or not _before(server_only[i], patched[j], server_order, merge_key):
            out.append(patched[j])
            j += 1
        else:
            out.append(server_only[i])
            i += 1
    return out


def _before(left: Any, right: Any, server_order: list[Any], merge_key: str) -> bool:
    li, ri = _index(server_order, left, merge_key), _index(server_order, right, merge_key)
    return 0 <= li < ri


def _index(items: list[Any], item: Any, merge_key: str) -> int:
    wanted = _identity(item, merge_key)
    for i, x in enumerate(items):
        if _same(_identity(x, merge_key), wanted):
            return i
    return -1


_ABSENT: Any = object()


def _identity(item: Any, merge_key: str) -> Any:
    """What names a list element: its merge key's value for objects, itself for primitives."""
    if not merge_key:
        return item
    if not isinstance(item, dict) or merge_key not in item:
        raise errors.BadRequest(f"map: {_show(item)} does not contain declared merge key: {merge_key}")
    return item[merge_key]


def _same(a: Any, b: Any) -> bool:
    """JSON equality with types kept apart (1, 1.0 and true are three values, as in Go)."""
    return type(a) is type(b) and a == b


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _show(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


# -- content types -------------------------------------------------------------------------

PatchFunction = Callable[[dict[str, Any], Any, Kind], dict[str, Any]]


def _server_side_apply(obj: dict[str, Any], patch: Any, kind: Kind) -> dict[str, Any]:
    raise errors.UnsupportedMediaType("server-side apply (application/apply-patch+yaml) is not supported by this "
                                      "server; use client-side `kubectl apply` (without --server-side)")


#: Content-Type -> how a body of that type patches an object.
PATCH_CONTENT_TYPES: dict[str, PatchFunction] = {
    JSON_PATCH: lambda obj, patch, _kind: apply_json_patch(obj, patch),
    MERGE_PATCH: lambda obj, patch, _kind: apply_merge_patch(obj, patch),
    STRATEGIC_MERGE_PATCH: apply_strategic_merge_patch,
    APPLY_PATCH: _server_side_apply,
}

_SERVED = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)


def apply_patch(content_type: str, obj: dict[str, Any], patch_body: bytes, kind: Kind) -> dict[str, Any]:
    """Patch `obj` (left unchanged) with a PATCH request's body; the patched copy is returned."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    apply = PATCH_CONTENT_TYPES.get(media_type)
    if apply is None:
        raise errors.UnsupportedMediaType("the body of the request was in an unknown format - accepted media "
                                          f"types include: {', '.join(_SERVED)}")
    if media_type == APPLY_PATCH:
        return apply(obj, None, kind)
    return apply(obj, _decode(patch_body), kind)


def _decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"the body of the request is not valid JSON: {exc}") from None
