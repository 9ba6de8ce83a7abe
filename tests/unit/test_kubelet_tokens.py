"""The kubelet's token manager (harness.kubelet.tokens): asks the TokenRequest API for a pod's projected tokens,
caches them until 80 % of their lifetime (at most 24 h) has passed, and keeps serving a valid one while the
apiserver cannot be reached."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api import errors
from harness.kubelet.tokens import MAX_TTL, Cached, TokenManager, requires_refresh
from harness.util.rfc3339 import format_time

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TokenClient:
    """Records `request` calls; answers each with a new token expiring `expirationSeconds` after the clock's now."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: errors.ApiError | None = None
        self.answer: Any = None

    async def request(self, method: str, path: str, *, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            return self.answer
        seconds = body["spec"]["expirationSeconds"]
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "spec": body["spec"],
                "status": {"token": f"t{len(self.calls)}",
                           "expirationTimestamp": format_time(self.clock.now + seconds)}}


def pod(name: str = "web", uid: str = "pod-uid", account: str | None = "builder") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if account is not None:
        spec["serviceAccountName"] = account
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": spec}


def manager() -> tuple[TokenManager, TokenClient, Clock]:
    clock = Clock()
    client = TokenClient(clock)
    return TokenManager(client, clock=clock), client, clock


async def test_first_call_asks_for_a_pod_bound_token() -> None:
    tokens, client, _ = manager()
    token = await tokens.token_for(pod(), {"path": "token", "expirationSeconds": 3607})
    assert token == "t1"
    assert client.calls == [("POST", "/api/v1/namespaces/ns/serviceaccounts/builder/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 3607,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "pod-uid"}}})]


async def test_defaults_an_hour_and_the_default_account_and_passes_the_audience() -> None:
    tokens, client, _ = manager()
    await tokens.token_for(pod(account=None), {"path": "token", "audience": "vault"})
    ((_, path, body),) = client.calls
    assert path == "/api/v1/namespaces/ns/serviceaccounts/default/token"
    assert body["spec"]["expirationSeconds"] == 3600
    assert body["spec"]["audiences"] == ["vault"]


async def test_a_token_is_reused_until_80_percent_of_its_lifetime_then_refreshed() -> None:
    tokens, client, clock = manager()
    source = {"path": "token", "expirationSeconds": 3600}
    assert await tokens.token_for(pod(), source) == "t1"
    clock.now = T0 + 0.8 * 3600  # exactly 80 %: still fresh
    assert await tokens.token_for(pod(), source) == "t1"
    assert len(client.calls) == 1
    clock.now = T0 + 0.8 * 3600 + 1
    assert await tokens.token_for(pod(), source) == "t2"
    assert len(client.calls) == 2
    # The new token is cached from when it was fetched.
    clock.now += 60
    assert await tokens.token_for(pod(), source) == "t2"
    assert len(client.calls) == 2


async def test_different_sources_and_pods_get_their_own_tokens() -> None:
    tokens, client, _ = manager()
    assert await tokens.token_for(pod(), {"audience": "a"}) == "t1"
    assert await tokens.token_for(pod(), {"audience": "b"}) == "t2"
    assert await tokens.token_for(pod(), {"audience": "a", "expirationSeconds": 7200}) == "t3"
    assert await tokens.token_for(pod(name="other", uid="other-uid"), {"audience": "a"}) == "t4"
    assert await tokens.token_for(pod(), {"audience": "a"}) == "t1"
    assert len(client.calls) == 4


async def test_a_failed_refresh_keeps_serving_the_valid_token() -> None:
    tokens, client, clock = manager()
    assert await tokens.token_for(pod(), {}) == "t1"
    clock.now = T0 + 3000  # past 80 %, before expiry
    client.fail = errors.ServiceUnavailable("no apiserver answered")
    assert await tokens.token_for(pod(), {}) == "t1"
    assert len(client.calls) == 2
    # It keeps trying on every call, and takes the new token once the apiserver answers.
    client.fail = None
    assert await tokens.token_for(pod(), {}) == "t3"


async def test_a_failure_without_a_token_raises() -> None:
    tokens, client, _ = manager()
    client.fail = errors.Forbidden('serviceaccounts "builder" is forbidden')
    with pytest.raises(ValueError) as info:
        await tokens.token_for(pod(), {})
    assert str(info.value).startswith("failed to fetch token")
    assert "forbidden" in str(info.value)


async def test_a_failure_once_the_token_expired_raises() -> None:
    tokens, client, clock = manager()
    await tokens.token_for(pod(), {"expirationSeconds": 600})
    clock.now = T0 + 600
    client.fail = errors.ServiceUnavailable("down")
    with pytest.raises(ValueError, match=r"^failed to fetch token"):
        await tokens.token_for(pod(), {"expirationSeconds": 600})


@pytest.mark.parametrize("answer", [{}, {"status": {}}, {"status": {"token": "t", "expirationTimestamp": "soon"}},
                                    []])
async def test_a_malformed_answer_raises(answer: Any) -> None:
    tokens, client, _ = manager()
    client.answer = answer
    with pytest.raises(ValueError, match=r"^failed to fetch token"):
        await tokens.token_for(pod(), {})


async def test_forget_drops_only_that_pods_tokens() -> None:
    tokens, _, _ = manager()
    await tokens.token_for(pod(), {"audience": "a"})
    await tokens.token_for(pod(), {"audience": "b"})
    await tokens.token_for(pod(name="other", uid="other-uid"), {})
    tokens.forget("pod-uid")
    assert [k[4] for k in tokens.cache] == ["other-uid"]
    assert await tokens.token_for(pod(), {"audience": "a"}) == "t4"
    assert await tokens.token_for(pod(name="other", uid="other-uid"), {}) == "t3"
    tokens.forget("never-seen")
    assert len(tokens.cache) == 2


HOUR = 3600.0


@pytest.mark.parametrize("lifetime,age,refresh", [
    (HOUR, 0, False),
    (HOUR, 0.5 * HOUR, False),
    (HOUR, 0.8 * HOUR, False),  # exactly 80 %
    (HOUR, 0.8 * HOUR + 1, True),
    (HOUR, HOUR - 1, True),
    (HOUR, HOUR, True),  # expired
    (HOUR, 2 * HOUR, True),
    (600, 479, False),
    (600, 481, True),
    (48 * HOUR, 20 * HOUR, False),
    (48 * HOUR, 24 * HOUR, False),  # exactly the cap
    (48 * HOUR, 24 * HOUR + 1, True),  # 24 h cap, though only half the lifetime is gone
    (30 * HOUR, 24 * HOUR, False),  # 80 % and the cap coincide
    (30 * HOUR, 24 * HOUR + 1, True),
    (2**32, 25 * HOUR, True),
])
def test_requires_refresh(lifetime: float, age: float, refresh: bool) -> None:
    cached = Cached("t", T0, T0 + lifetime)
    assert requires_refresh(cached, T0 + age) is refresh


def test_the_cap_is_a_day() -> None:
    assert MAX_TTL == 24 * 3600
