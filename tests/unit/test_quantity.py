"""Kubernetes quantities parse to exact decimals, the way apimachinery's resource.Quantity reads them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from harness.api.quantity import QUANTITY_FORMAT_ERROR, int_value, is_quantity, milli_value, parse_quantity


@pytest.mark.parametrize(("text", "expected"), [
    ("0", "0"),
    ("1", "1"),
    ("100m", "0.1"),
    ("0.1", "0.1"),
    ("1.5", "1.5"),
    ("250n", "0.00000025"),
    ("3u", "0.000003"),
    ("2k", "2000"),
    ("1M", "1000000"),
    ("1G", "1000000000"),
    ("1T", "1000000000000"),
    ("1P", "1000000000000000"),
    ("1E", "1000000000000000000"),
    ("1Ki", "1024"),
    ("128Mi", str(128 * 2**20)),
    ("1.5Gi", str(3 * 2**29)),
    ("2Ti", str(2 * 2**40)),
    ("1Pi", str(2**50)),
    ("1Ei", str(2**60)),
    ("1e3", "1000"),
    ("1E3", "1000"),
    ("5e-3", "0.005"),
    ("1.5e+2", "150"),
    ("+4", "4"),
    ("-4", "-4"),
    ("-1.5Gi", str(-3 * 2**29)),
    (".5", "0.5"),
    ("1.", "1"),
    ("007", "7"),
])
def test_parses_every_suffix_exactly(text: str, expected: str) -> None:
    assert parse_quantity(text) == Decimal(expected)


@pytest.mark.parametrize("text", [
    "", " ", "1 ", " 1", "abc", "1K", "1KiB", "1kb", "1e", "1Ei1", "1.2.3", "--1", "1m1", "Mi", ".", "+",
    "1e3.5", "0x10", "1,000", "½",
])
def test_rejects_what_upstream_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
    assert not is_quantity(text)


def test_numbers_from_json_are_quantities() -> None:
    assert parse_quantity(2) == 2
    assert parse_quantity(0.5) == Decimal("0.5")
    for bad in (True, None, [1], {"cpu": 1}, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            parse_quantity(bad)  # type: ignore[arg-type]


def test_equal_quantities_compare_equal_whatever_their_spelling() -> None:
    assert parse_quantity("1000m") == parse_quantity("1") == parse_quantity("1e0") == parse_quantity(1)
    assert parse_quantity("1Gi") > parse_quantity("1G")
    assert parse_quantity("500m") < parse_quantity("1")


def test_huge_exponents_are_a_value_error_not_a_crash() -> None:
    with pytest.raises(ValueError):
        parse_quantity("1e99999999999")


def test_milli_and_int_values_round_away_from_zero_like_upstream() -> None:
    assert milli_value("250m") == 250
    assert milli_value("1") == 1000
    assert milli_value("0.0001") == 1
    assert milli_value("1n") == 1
    assert int_value("1.2") == 2
    assert int_value("128Mi") == 128 * 2**20
    assert int_value("100m") == 1
    assert int_value("-1.5") == -2


def test_format_error_is_upstreams_message() -> None:
    with pytest.raises(ValueError, match="quantities must match the regular expression"):
        parse_quantity("lots")
    assert "[eEinumkKMGTP]" in QUANTITY_FORMAT_ERROR
