"""Validation causes worded the way apimachinery's `field.Error` words them.

Every validator returns a list of `errors.Cause`; these constructors give each one upstream's
reason (`FieldValueRequired`, `FieldValueInvalid`, ...) and message body (`Required value`,
`Invalid value: "x": detail`, ...), with the bad value printed as Go prints it: strings
quoted, numbers and booleans bare, anything else as compact JSON.

Objects arrive as decoded JSON, so a field can hold any type; the `as_*` readers give the
validators a value of the expected type (or an empty one) so that a wrong type shows up as a
missing or invalid value instead of an exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeGuard

from harness.api.errors import Cause

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
DUPLICATE = "FieldValueDuplicate"
NOT_SUPPORTED = "FieldValueNotSupported"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
NOT_FOUND = "FieldValueNotFound"

#: Upstream's wording for a changed immutable field.
IMMUTABLE = "field is immutable"
NEGATIVE = "must be greater than or equal to 0"
NOT_AN_INTEGER = "must be an integer"


def fmt_value(value: Any) -> str:
    """A bad value as `field.Error` prints it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _body(head: str, detail: str) -> str:
    return f"{head}: {detail}" if detail else head


def required(path: str, detail: str = "") -> Cause:
    return Cause(REQUIRED, _body("Required value", detail), path)


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(INVALID, _body(f"Invalid value: {fmt_value(value)}", detail), path)


def duplicate(path: str, value: Any, detail: str = "") -> Cause:
    return Cause(DUPLICATE, _body(f"Duplicate value: {fmt_value(value)}", detail), path)


def not_supported(path: str, value: Any, supported: Iterable[str]) -> Cause:
    quoted = ", ".join(json.dumps(s) for s in supported)
    return Cause(NOT_SUPPORTED, _body(f"Unsupported value: {fmt_value(value)}",
                                      f"supported values: {quoted}" if quoted else ""), path)


def forbidden(path: str, detail: str) -> Cause:
    return Cause(FORBIDDEN, _body("Forbidden", detail), path)


def too_long(path: str, max_bytes: int) -> Cause:
    unit = "byte" if max_bytes == 1 else "bytes"
    return Cause(TOO_LONG, f"Too long: may not be more than {max_bytes} {unit}", path)


def not_found(path: str, value: Any) -> Cause:
    return Cause(NOT_FOUND, f"Not found: {fmt_value(value)}", path)


def invalid_each(path: str, value: Any, messages: Iterable[str]) -> list[Cause]:
    """One Invalid cause per message of a format check (the way upstream loops over them)."""
    return [invalid(path, value, msg) for msg in messages]


# -- reading decoded JSON ------------------------------------------------------------------


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dicts(value: Any) -> list[dict[str, Any]]:
    """A list of objects; entries that are not objects read as empty ones."""
    return [as_dict(v) for v in as_list(value)]


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(path: str, value: Any) -> list[Cause]:
    """A cause if a present value is not an integer (JSON decoding would have refused it)."""
    if value is None or is_int(value):
        return []
    return [invalid(path, value, NOT_AN_INTEGER)]


def nonnegative(path: str, value: Any) -> list[Cause]:
    """Upstream's ValidateNonnegativeField, for an optional integer."""
    if value is None:
        return []
    if not is_int(value):
        return [invalid(path, value, NOT_AN_INTEGER)]
    return [invalid(path, value, NEGATIVE)] if value < 0 else []


def immutable(path: str, new: Any, old: Any) -> list[Cause]:
    return [] if new == old else [invalid(path, new, IMMUTABLE)]


def one_of(path: str, value: Any, supported: tuple[str, ...]) -> list[Cause]:
    """Required when empty, NotSupported when not among `supported`."""
    if value in (None, ""):
        return [required(path)]
    if value not in supported:
        return [not_supported(path, value, supported)]
    return []
