"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever
columns the server returns, upper-casing their names and hiding priority-1 columns unless
`-o wide`. So the columns and cells here are exactly upstream's, from one table of
printers keyed by kind (`PRINTERS`); a kind without one gets NAME and AGE.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from harness.api.registry import Kind
from harness.apiserver.printers import CONFIG, WORKLOADS, Printer, default_printer, human_duration
from harness.apiserver.printers_core import CORE, pod_conditions

__all__ = ["PRINTERS", "human_duration", "printer_for", "table_row", "to_table"]

#: Kind name -> its printer.
PRINTERS: dict[str, Printer] = {**CORE, **WORKLOADS, **CONFIG}

_DEFAULT = default_printer()


def printer_for(kind: Kind) -> Printer:
    return PRINTERS.get(kind.kind, _DEFAULT)


def _partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def table_row(kind: Kind, obj: dict[str, Any], *, include_object: str = "Metadata",
              now: datetime | None = None) -> dict[str, Any]:
    """One row: its cells, upstream's row conditions, and the object as asked for."""
    row: dict[str, Any] = {"cells": printer_for(kind).cells(obj, now or datetime.now(UTC))}
    conditions = pod_conditions(obj) if kind.kind == "Pod" else []
    if conditions:
        row["conditions"] = conditions
    if include_object == "Object":
        row["object"] = obj
    elif include_object != "None":
        row["object"] = _partial_metadata(obj)
    return row


def to_table(kind: Kind, objects: list[dict[str, Any]], *, include_object: str = "Metadata",
             list_meta: dict[str, Any] | None = None, now: datetime | None = None,
             no_headers: bool = False) -> dict[str, Any]:
    """A `Table` of `objects`; `list_meta` from a list (else the single object's version).

    `no_headers` leaves out the column definitions, as upstream does for every watch event
    after the first.
    """
    now = now or datetime.now(UTC)
    if list_meta is not None:
        metadata = {k: v for k, v in list_meta.items() if k in ("resourceVersion", "continue", "remainingItemCount")}
    elif len(objects) == 1 and (objects[0].get("metadata") or {}).get("resourceVersion"):
        metadata = {"resourceVersion": objects[0]["metadata"]["resourceVersion"]}
    else:
        metadata = {}
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [] if no_headers else [dict(c) for c in printer_for(kind).columns],
        "rows": [table_row(kind, o, include_object=include_object, now=now) for o in objects],
    }
