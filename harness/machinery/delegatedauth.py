"""Authentication and authorization delegated to the apiserver, for servers beside it: the kubelet API
(`--authentication-token-webhook`, `--authorization-mode=Webhook`) and the scheduler's and controller-manager's secure
ports (upstream's delegated authentication and authorization).

A caller is its client certificate (verified by the TLS layer against a client CA: CN the user, O the groups) or a
bearer token, which the apiserver's TokenReview vouches for; without either it is anonymous if that is allowed,
else 401. What it asks (a `Question`: the attributes of a SubjectAccessReview, from its method and path) is put to
the apiserver's SubjectAccessReview; paths that are always allowed skip it. Answers are cached as upstream caches
them: authenticated tokens 2 minutes, allowed 5 minutes, denied 30 seconds. The server says how a refusal reads
(the kubelet and the generic servers word them differently upstream).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from harness.api import errors
from harness.auth.user import (
    ANONYMOUS_NAME,
    AUTHENTICATED,
    UNAUTHENTICATED,
    UserInfo,
    certificate_validity_error,
    from_peer_certificate,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

METHOD_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}


@dataclass(frozen=True)
class Question:
    """What a request is authorized as: a verb on a resource (`attributes` are SubjectAccessReview's
    resourceAttributes) or on a path (nonResourceAttributes)."""

    verb: str
    resource: tuple[tuple[str, str], ...] = ()
    path: str = ""

    def spec(self) -> dict[str, Any]:
        if self.resource:
            return {"resourceAttributes": {"verb": self.verb, **dict(self.resource)}}
        return {"nonResourceAttributes": {"verb": self.verb, "path": self.path}}


def path_question(method: str, path: str) -> Question:
    """A non-resource request, as the generic apiserver names it: the method's lower case, the path."""
    return Question("get" if method.upper() == "HEAD" else method.lower(), path=path)


def status_refusal(user: UserInfo, question: Question) -> web.Response:
    """The generic apiserver's 403 for a path: a Status saying `forbidden: User "x" cannot get path "/metrics"`."""
    message = f'forbidden: User "{user.name}" cannot {question.verb} path "{question.path}"'
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": {}, "code": 403}
    return web.json_response(body, status=403)


class Reviewer(Protocol):
    async def request(self, method: str, path: str, *, body: Any = None) -> Any: ...


@dataclass
class _Cache:
    entries: dict[Any, tuple[float, Any]] = field(default_factory=dict)

    def get(self, key: Any, now: float) -> Any:
        hit = self.entries.get(key)
        if hit is None or hit[0] < now:
            self.entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: Any, value: Any, expires: float) -> None:
        if len(self.entries) > 10_000:
            self.entries.clear()
        self.entries[key] = (expires, value)


class DelegatedAuth:
    def __init__(self, reviewer: Reviewer, *, question: Callable[[str, str], Question] = path_question,
                 refusal: Callable[[UserInfo, Question], web.StreamResponse] = status_refusal,
                 always_allow_paths: tuple[str, ...] = (), anonymous: bool = False, tokens: bool = True,
                 webhook_authorization: bool = True, authn_ttl: float = 120.0, allowed_ttl: float = 300.0,
                 denied_ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.reviewer = reviewer
        self.question = question
        self.refusal = refusal
        self.always_allow_paths = always_allow_paths
        self.anonymous = anonymous
        self.accept_tokens = tokens
        self.webhook_authorization = webhook_authorization
        self.authn_ttl, self.allowed_ttl, self.denied_ttl = authn_ttl, allowed_ttl, denied_ttl
        self.clock = clock
        self.tokens = _Cache()
        self.decisions = _Cache()

    async def authenticate(self, headers: Mapping[str, str], peer_cert: Mapping[str, Any] | None) -> UserInfo | None:
        if peer_cert and certificate_validity_error(peer_cert, time.time()):
            raise errors.Unauthorized("Unauthorized")
        user = from_peer_certificate(peer_cert)
        if user is not None:
            return UserInfo(user.name, (*user.groups, AUTHENTICATED))
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if self.accept_tokens and scheme.lower() == "bearer" and token.strip():
            return await self._token(token.strip())
        return UserInfo(ANONYMOUS_NAME, (UNAUTHENTICATED,)) if self.anonymous else None

    async def _token(self, token: str) -> UserInfo | None:
        now = self.clock()
        cached = self.tokens.get(token, now)
        if cached is not None:
            return cached or None
        answer = await self.reviewer.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        status = answer.get("status") or {}
        user = None
        if status.get("authenticated"):
            info = status.get("user") or {}
            extra = tuple((k, tuple(v)) for k, v in sorted((info.get("extra") or {}).items()))
            user = UserInfo(info.get("username", ""), tuple(info.get("groups") or ()), info.get("uid", ""), extra)
        self.tokens.put(token, user or False, now + self.authn_ttl)
        return user

    async def authorize(self, user: UserInfo, question: Question) -> bool:
        if not self.webhook_authorization:
            return True  # AlwaysAllow
        key = (user, question)
        now = self.clock()
        cached = self.decisions.get(key, now)
        if cached is not None:
            return bool(cached)
        spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups), **question.spec()}
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = user.extra_dict()
        answer = await self.reviewer.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
        allowed = bool((answer.get("status") or {}).get("allowed"))
        self.decisions.put(key, allowed, now + (self.allowed_ttl if allowed else self.denied_ttl))
        return allowed

    def _always_allowed(self, path: str) -> bool:
        return any(path == p or (p.endswith("*") and path.startswith(p[:-1])) for p in self.always_allow_paths)

    def middleware(self) -> Middleware:
        @web.middleware
        async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self._always_allowed(request.path):
                return await handler(request)
            transport = request.transport
            peer = transport.get_extra_info("peercert") if transport is not None else None
            try:
                user = await self.authenticate(request.headers, peer)
            except (errors.ApiError, OSError):
                user = None
            if user is None:
                return web.Response(status=401, text="Unauthorized")
            question = self.question(request.method, request.path)
            try:
                allowed = await self.authorize(user, question)
            except (errors.ApiError, OSError):
                return web.Response(status=500, text=f"Authorization error (user={user.name}, verb={question.verb})")
            if not allowed:
                return self.refusal(user, question)
            return await handler(request)

        return check
