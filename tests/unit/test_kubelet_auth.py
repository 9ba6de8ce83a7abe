"""The kubelet API's webhook authentication and authorization: what each path is authorized as, TokenReview and
SubjectAccessReview asked as upstream's kubelet asks them, their answers cached, and upstream's refusal texts."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from harness.kubelet.auth import attributes, kubelet_auth
from harness.machinery.delegatedauth import DelegatedAuth


@pytest.mark.parametrize(("method", "path", "want"), [
    ("GET", "/metrics", ("get", "metrics")),
    ("GET", "/metrics/cadvisor", ("get", "metrics")),
    ("GET", "/stats/summary", ("get", "stats")),
    ("GET", "/pods", ("get", "pods")),
    ("GET", "/healthz", ("get", "healthz")),
    ("GET", "/logs/", ("get", "log")),
    ("GET", "/containerLogs/default/web/c", ("get", "proxy")),
    ("POST", "/exec/default/web/c", ("create", "proxy")),
    ("GET", "/podsx", ("get", "proxy")),
])
def test_paths_are_node_subresources(method: str, path: str, want: tuple[str, str]) -> None:
    assert attributes(method, path) == want


class Reviewer:
    def __init__(self, *, tokens: dict[str, dict[str, Any]], allowed: set[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.allowed = allowed
        self.calls: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, *, body: Any = None) -> Any:
        self.calls.append(body)
        if body["kind"] == "TokenReview":
            user = self.tokens.get(body["spec"]["token"])
            return {"status": {"authenticated": user is not None, "user": user or {}}}
        spec = body["spec"]
        attrs = spec["resourceAttributes"]
        assert (attrs["resource"], attrs["name"], attrs["version"]) == ("nodes", "w1", "v1")
        return {"status": {"allowed": (spec["user"], attrs["subresource"]) in self.allowed}}


def auth(reviewer: Reviewer, *, anonymous: bool = False, clock: Any = None) -> DelegatedAuth:
    made = kubelet_auth(reviewer, "w1", anonymous=anonymous, tokens=True, webhook_authorization=True)
    if clock is not None:
        made.clock = clock
    return made


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def client_for(auth: DelegatedAuth) -> TestClient[web.Request, web.Application]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="served")

    app = web.Application(middlewares=[auth.middleware()])
    app.router.add_get("/pods", ok)
    app.router.add_get("/metrics", ok)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_a_token_is_reviewed_once_and_its_access_asked() -> None:
    reviewer = Reviewer(tokens={"t1": {"username": "prom", "groups": ["monitoring"]}}, allowed={("prom", "metrics")})
    clock = Clock()
    client = await client_for(auth(reviewer, clock=clock))
    try:
        for _ in range(2):
            resp = await client.get("/metrics", headers={"Authorization": "Bearer t1"})
            assert (resp.status, await resp.text()) == (200, "served")
        assert [c["kind"] for c in reviewer.calls] == ["TokenReview", "SubjectAccessReview"], "cached"
        sar = reviewer.calls[1]["spec"]
        assert (sar["user"], sar["groups"], sar["resourceAttributes"]["verb"]) == ("prom", ["monitoring"], "get")
        resp = await client.get("/pods", headers={"Authorization": "Bearer t1"})
        assert resp.status == 403
        assert await resp.text() == "Forbidden (user=prom, verb=get, resource=nodes, subresource=pods)"
        clock.now += 301
        await client.get("/metrics", headers={"Authorization": "Bearer t1"})
        assert [c["kind"] for c in reviewer.calls][-2:] == ["TokenReview", "SubjectAccessReview"], "expired"
    finally:
        await client.close()


async def test_no_credentials_or_an_unknown_token_is_401() -> None:
    reviewer = Reviewer(tokens={}, allowed={("system:anonymous", "pods")})
    client = await client_for(auth(reviewer))
    try:
        for headers in ({}, {"Authorization": "Bearer forged"}):
            resp = await client.get("/pods", headers=headers)
            assert (resp.status, await resp.text()) == (401, "Unauthorized")
    finally:
        await client.close()


async def test_anonymous_requests_when_allowed_are_asked_about_like_anyone() -> None:
    reviewer = Reviewer(tokens={}, allowed={("system:anonymous", "pods")})
    client = await client_for(auth(reviewer, anonymous=True))
    try:
        assert (await client.get("/pods")).status == 200
        resp = await client.get("/metrics")
        assert await resp.text() == ("Forbidden (user=system:anonymous, verb=get, resource=nodes, "
                                     "subresource=metrics)")
    finally:
        await client.close()
