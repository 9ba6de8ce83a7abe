"""Unknown-field detection and pruning, for `fieldValidation` (Strict, Warn, Ignore).

Kubernetes decodes request bodies into typed structs, so a field the schema does not know
never reaches storage: with `Strict` it is an error, with `Warn` (the default) a warning,
with `Ignore` silently dropped. We walk the client's models (harness.api.schema) to do the
same to JSON objects.
"""

from __future__ import annotations

from typing import Any

from harness.api import schema
from harness.api.registry import Kind

_TOP_LEVEL = frozenset({"apiVersion", "kind"})


def prune_unknown(kind: Kind, obj: dict[str, Any]) -> list[str]:
    """Remove fields the kind's schema does not define; return their paths (e.g. `spec.foo`)."""
    model = schema.model_for(kind)
    if model is None:
        return []
    found: list[str] = []
    _walk(obj, model, "", found, top=True)
    return found


def _walk(obj: dict[str, Any], model: type[Any], path: str, found: list[str], *, top: bool = False) -> None:
    fields = schema.fields_of(model)
    for key in list(obj):
        here = f"{path}.{key}" if path else key
        f = fields.get(key)
        if f is None:
            if not (top and key in _TOP_LEVEL):
                found.append(here)
                del obj[key]
            continue
        value = obj[key]
        if f.model is None or value is None:
            continue
        if f.container == "list" and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _walk(item, f.model, f"{here}[{i}]", found)
        elif f.container == "map" and isinstance(value, dict):
            for k, item in value.items():
                if isinstance(item, dict):
                    _walk(item, f.model, f"{here}[{k}]", found)
        elif not f.container and isinstance(value, dict):
            _walk(value, f.model, here, found)
