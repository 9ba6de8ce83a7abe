"""Leader election's lease arithmetic: when a lease is free, and what each write puts in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harness.client.rest import Client
from harness.machinery.leaderelection import LeaderElector, claimed, format_micro_time, is_free, released

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def held(by: str, renewed: datetime, duration: int = 15) -> dict[str, object]:
    return {"holderIdentity": by, "leaseDurationSeconds": duration, "acquireTime": format_micro_time(renewed),
            "renewTime": format_micro_time(renewed), "leaseTransitions": 2}


def test_micro_time_has_microseconds_and_z() -> None:
    assert format_micro_time(NOW) == "2026-01-02T03:04:05.123456Z"


def test_a_lease_is_free_when_released_unrenewed_or_expired() -> None:
    assert is_free({}, now=NOW)
    assert is_free({"holderIdentity": ""}, now=NOW)
    assert is_free({"holderIdentity": "a"}, now=NOW), "never renewed"
    assert is_free(held("a", NOW - timedelta(seconds=16)), now=NOW)
    assert not is_free(held("a", NOW - timedelta(seconds=14)), now=NOW)


def test_claiming_a_new_lease_starts_with_no_transitions() -> None:
    spec = claimed(None, identity="me", duration=15, now=NOW)
    assert spec == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-01-02T03:04:05.123456Z",
                    "renewTime": "2026-01-02T03:04:05.123456Z", "leaseTransitions": 0}


def test_renewing_keeps_acquire_time_and_transitions() -> None:
    before = held("me", NOW - timedelta(seconds=5))
    spec = claimed(before, identity="me", duration=15, now=NOW)
    assert spec["acquireTime"] == before["acquireTime"]
    assert spec["renewTime"] == format_micro_time(NOW)
    assert spec["leaseTransitions"] == 2


def test_taking_over_counts_a_transition() -> None:
    spec = claimed(held("other", NOW - timedelta(seconds=60)), identity="me", duration=15, now=NOW)
    assert spec["holderIdentity"] == "me"
    assert spec["acquireTime"] == spec["renewTime"] == format_micro_time(NOW)
    assert spec["leaseTransitions"] == 3


def test_release_clears_the_holder_and_shortens_the_lease() -> None:
    spec = released(held("me", NOW), now=NOW)
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2
    assert is_free(spec, now=NOW)


def test_durations_must_nest_as_upstream_requires() -> None:
    client = Client.for_url("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        LeaderElector(client, name="x", identity="a", lease_duration=5, renew_deadline=5, retry_period=1)
    LeaderElector(client, name="x", identity="a", lease_duration=2, renew_deadline=1.5, retry_period=0.2)
