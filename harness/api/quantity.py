"""Kubernetes resource quantities ("100m", "1.5Gi", "2e3") as exact decimals.

Validation, the scheduler, the kubelet and quota all compare quantities; they parse them here,
once, the way `k8s.io/apimachinery/pkg/api/resource` reads them: an optionally signed decimal
number followed by at most one suffix, which is binary (Ki Mi Gi Ti Pi Ei), decimal SI
(n u m k M G T P E) or a decimal exponent (e3, E-2). The result is a `Decimal`, so "0.1" and
"100m" compare equal and nothing is lost to floating point. `canonical` writes a quantity back the way
upstream's `Quantity.String()` does ("0.5" is "500m", "2048Mi" is "2Gi"), for messages that quote one.
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
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_SUFFIX = {power // 10: suffix for suffix, power in _BINARY.items()}
_NANO = Decimal("1e-9")

#: How a quantity is written back (apimachinery's `Format`), taken from the suffix it was written with.
BINARY_SI = "BinarySI"
DECIMAL_SI = "DecimalSI"
DECIMAL_EXPONENT = "DecimalExponent"
# Enough digits that no quantity a user can write is rounded.
_CONTEXT = decimal.Context(prec=80, Emax=10**6, Emin=-(10**6), traps=[decimal.Overflow,
                                                                      decimal.InvalidOperation])

Quantity = str | int | float | Decimal


def parse_quantity(value: Quantity) -> Decimal:
    """The exact value of a quantity; ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, Decimal):
        return value
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


def quantity_format(value: Quantity) -> str:
    """BinarySI for a Ki..Ei suffix, DecimalExponent for an exponent, DecimalSI otherwise (and for numbers)."""
    if not isinstance(value, str):
        return DECIMAL_SI
    match = _NUMBER.fullmatch(value)
    suffix = match.group(4) if match else ""
    if suffix in _BINARY:
        return BINARY_SI
    return DECIMAL_EXPONENT if _EXPONENT.fullmatch(suffix) else DECIMAL_SI


def canonical(value: Quantity) -> str:
    """The quantity as upstream prints it (`Quantity.String()`); ValueError if it is not one."""
    return format_quantity(parse_quantity(value), quantity_format(value))


def format_quantity(amount: Decimal, fmt: str = DECIMAL_SI) -> str:
    """`amount` in upstream's canonical form for `fmt`: the largest suffix that keeps the number whole.

    As upstream, an amount finer than a nano-unit is first rounded away from zero to one, and BinarySI is
    only used for whole amounts of at least 1Ki (1536 is "1536", 1.5Gi is "1536Mi", 0.5Ki is "512").
    """
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -9:
        amount = amount.quantize(_NANO, rounding=ROUND_UP, context=_CONTEXT)
    amount = amount.normalize(_CONTEXT)
    if amount == 0:
        return "0"
    sign, magnitude = ("-" if amount < 0 else ""), abs(amount)
    if fmt == BINARY_SI and magnitude >= 1024 and magnitude == magnitude.to_integral_value():
        whole, power = int(magnitude), 0
        while power < max(_BINARY_SUFFIX) and whole % 1024 == 0:
            whole, power = whole // 1024, power + 1
        return f"{sign}{whole}{_BINARY_SUFFIX[power]}"
    _, digits, exponent = magnitude.as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    # Down to a multiple of three, so that the suffix is one upstream writes (1500 not 1.5k).
    shift = exponent % 3
    mantissa, exponent = mantissa * 10 ** shift, exponent - shift
    if exponent == 0:
        return f"{sign}{mantissa}"
    if fmt != DECIMAL_EXPONENT and exponent in _DECIMAL_SUFFIX:
        return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exponent]}"
    return f"{sign}{mantissa}e{exponent}"


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


__all__ = ["BINARY_SI", "DECIMAL_EXPONENT", "DECIMAL_SI", "QUANTITY_FORMAT_ERROR", "Quantity", "canonical",
           "format_quantity", "int_value", "is_quantity", "milli_value", "parse_quantity", "quantity_format"]
