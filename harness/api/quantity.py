"""Kubernetes resource quantities ("100m", "1.5Gi", "2e3") as exact decimals.

Validation, the scheduler, the kubelet and quota all compare quantities; they parse them here,
once, the way `k8s.io/apimachinery/pkg/api/resource` reads them: an optionally signed decimal
number followed by at most one suffix, which is binary (Ki Mi Gi Ti Pi Ei), decimal SI
(n u m k M G T P E) or a decimal exponent (e3, E-2). The result is a `Decimal`, so "0.1" and
"100m" compare equal and nothing is lost to floating point.
"""

from __future__ import annotations

import decimal
import re
from decimal import ROUND_UP, Decimal

#: What upstream says when a quantity does not parse.
QUANTITY_FORMAT_ERROR = ("quantities must match the regular expression "
                         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")

_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Enough digits that no quantity a user can write is rounded.
_CONTEXT = decimal.Context(prec=80, Emax=10**6, Emin=-(10**6), traps=[decimal.Overflow,
                                                                      decimal.InvalidOperation])

Quantity = str | int | float


def parse_quantity(value: Quantity) -> Decimal:
    """The exact value of a quantity; ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return _from_float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a quantity")
    return _from_string(value)


def is_quantity(value: object) -> bool:
    try:
        parse_quantity(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def milli_value(value: Quantity) -> int:
    """Thousandths of the quantity, rounded away from zero (upstream `MilliValue`): cpu in millicores."""
    return int((parse_quantity(value) * 1000).to_integral_value(rounding=ROUND_UP))


def int_value(value: Quantity) -> int:
    """The quantity rounded away from zero (upstream `Value`): memory in bytes, pod counts."""
    return int(parse_quantity(value).to_integral_value(rounding=ROUND_UP))


def _from_float(value: float) -> Decimal:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a quantity")
    return Decimal(repr(value))


def _from_string(text: str) -> Decimal:
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise ValueError(QUANTITY_FORMAT_ERROR)
    sign, whole, fraction, suffix = match.groups()
    if not whole and not fraction:
        raise ValueError(QUANTITY_FORMAT_ERROR)
    number = Decimal(f"{sign}{whole or '0'}.{fraction or '0'}")
    try:
        return _scale(number, suffix)
    except (decimal.Overflow, decimal.InvalidOperation):
        raise ValueError(f"quantity {text!r} is out of range") from None


def _scale(number: Decimal, suffix: str) -> Decimal:
    if suffix in _BINARY:
        return _CONTEXT.multiply(number, Decimal(2 ** _BINARY[suffix]))
    if suffix in _DECIMAL:
        return _CONTEXT.scaleb(number, _DECIMAL[suffix])
    exponent = _EXPONENT.fullmatch(suffix)
    if exponent is None:
        raise ValueError("unable to parse quantity's suffix")
    return _CONTEXT.scaleb(number, int(exponent.group(1)))


__all__ = ["QUANTITY_FORMAT_ERROR", "Quantity", "int_value", "is_quantity", "milli_value", "parse_quantity"]
