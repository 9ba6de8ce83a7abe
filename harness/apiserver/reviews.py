"""The questions the apiserver answers instead of storing: TokenReview, SelfSubjectReview and the access reviews.

Each is a create-only kind (`Kind.stored` is False): the request body is the question, the response is the same
object with `status` filled in, 201 Created, as upstream's registries answer. `kubectl auth whoami` asks a
SelfSubjectReview, `kubectl auth can-i` a SelfSubjectAccessReview (or, with `--list`, a SelfSubjectRulesReview),
and a kubelet or an aggregated server asks TokenReview and SubjectAccessReview to check its own callers.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from harness.api import errors
from harness.api.registry import Kind
from harness.apiserver import codec
from harness.apiserver.state import ApiServer
from harness.auth.authorizer import RequestInfo
from harness.auth.user import UserInfo

Answerer = Callable[[ApiServer, dict[str, Any], UserInfo, str], Awaitable[dict[str, Any]]]


def _user_info(user: UserInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"username": user.name}
    if user.uid:
        out["uid"] = user.uid
    if user.groups:
        out["groups"] = list(user.groups)
    if user.extra:
        out["extra"] = user.extra_dict()
    return out


def _invalid(kind: str, field_path: str, message: str, group: str) -> errors.ApiError:
    return errors.invalid(kind, "", [errors.Cause("FieldValueInvalid", message, field_path)], group=group)


# -- authentication.k8s.io -------------------------------------------------------------------


async def token_review(server: ApiServer, obj: dict[str, Any], user: UserInfo, namespace: str) -> dict[str, Any]:
    token = (obj.get("spec") or {}).get("token") or ""
    if not token:
        raise errors.BadRequest("token is required for TokenReview in authentication")
    found, error = server.authentication.authenticate_token(token) if server.authentication else (None, "")
    status: dict[str, Any] = {"authenticated": found is not None, "user": _user_info(found) if found else {}}
    if error:
        status["error"] = error
    audiences = (obj.get("spec") or {}).get("audiences")
    if found is not None and audiences:
        status["audiences"] = list(audiences)
    return {**obj, "status": status}


async def self_subject_review(server: ApiServer, obj: dict[str, Any], user: UserInfo,
                              namespace: str) -> dict[str, Any]:
    return {**obj, "status": {"userInfo": _user_info(user)}}


# -- authorization.k8s.io --------------------------------------------------------------------


def _attributes(kind: str, spec: dict[str, Any], namespace: str = "") -> RequestInfo:
    resource, path = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if resource is None and path is None:
        raise _invalid(kind, "spec.resourceAttributes", "Required value: exactly one of nonResourceAttributes or "
                       "resourceAttributes must be specified", "authorization.k8s.io")
    if resource is not None and path is not None:
        raise _invalid(kind, "spec.nonResourceAttributes", "Invalid value: \"\": cannot be specified in "
                       "combination with resourceAttributes", "authorization.k8s.io")
    if path is not None:
        if not isinstance(path, dict):
            raise errors.BadRequest("spec.nonResourceAttributes must be an object")
        return RequestInfo(str(path.get("verb", "")), resource_request=False, path=str(path.get("path", "")))
    if not isinstance(resource, dict):
        raise errors.BadRequest("spec.resourceAttributes must be an object")
    if namespace and resource.get("namespace", "") not in ("", namespace):
        raise errors.BadRequest(f"spec.resourceAttributes.namespace must match namespace: "
                                f"{resource.get('namespace')}")
    return RequestInfo(str(resource.get("verb", "")), str(resource.get("group", "")),
                       str(resource.get("version", "")), str(resource.get("resource", "")),
                       str(resource.get("subresource", "")), namespace or str(resource.get("namespace", "")),
                       str(resource.get("name", "")))


def _decide(server: ApiServer, subject: UserInfo, info: RequestInfo, obj: dict[str, Any]) -> dict[str, Any]:
    answer = server.authorization.authorizer.authorize(subject, info)
    status: dict[str, Any] = {"allowed": answer.allowed}
    if answer.decision.value == "deny":
        status["denied"] = True
    if answer.reason:
        status["reason"] = answer.reason
    if answer.evaluation_error:
        status["evaluationError"] = answer.evaluation_error
    return {**obj, "status": status}


def _subject(spec: dict[str, Any]) -> UserInfo:
    extra = tuple((str(k), tuple(str(x) for x in v)) for k, v in sorted((spec.get("extra") or {}).items()))
    return UserInfo(str(spec.get("user") or ""), tuple(str(g) for g in spec.get("groups") or []),
                    str(spec.get("uid") or ""), extra)


async def subject_access_review(server: ApiServer, obj: dict[str, Any], user: UserInfo,
                                namespace: str) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    kind = obj.get("kind") or "SubjectAccessReview"
    if not spec.get("user") and not spec.get("groups"):
        raise _invalid(kind, "spec.user", 'Invalid value: "": at least one of user or group must be specified',
                       "authorization.k8s.io")
    return _decide(server, _subject(spec), _attributes(kind, spec, namespace), obj)


async def self_subject_access_review(server: ApiServer, obj: dict[str, Any], user: UserInfo,
                                     namespace: str) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    return _decide(server, user, _attributes("SelfSubjectAccessReview", spec), obj)


async def self_subject_rules_review(server: ApiServer, obj: dict[str, Any], user: UserInfo,
                                    namespace: str) -> dict[str, Any]:
    wanted = (obj.get("spec") or {}).get("namespace") or ""
    rules, incomplete, error = server.authorization.rules_for(user, wanted)
    resource_rules, url_rules = [], []
    for rule in rules:
        if rule.get("nonResourceURLs"):
            url_rules.append({"verbs": list(rule.get("verbs") or []),
                              "nonResourceURLs": list(rule["nonResourceURLs"])})
        else:
            entry = {"verbs": list(rule.get("verbs") or []), "apiGroups": list(rule.get("apiGroups") or []),
                     "resources": list(rule.get("resources") or [])}
            if rule.get("resourceNames"):
                entry["resourceNames"] = list(rule["resourceNames"])
            resource_rules.append(entry)
    status: dict[str, Any] = {"resourceRules": resource_rules, "nonResourceRules": url_rules,
                              "incomplete": incomplete}
    if error:
        status["evaluationError"] = error
    return {**obj, "status": status}


ANSWERS: dict[str, Answerer] = {
    "TokenReview": token_review,
    "SelfSubjectReview": self_subject_review,
    "SubjectAccessReview": subject_access_review,
    "LocalSubjectAccessReview": subject_access_review,
    "SelfSubjectAccessReview": self_subject_access_review,
    "SelfSubjectRulesReview": self_subject_rules_review,
}


async def handle(request: web.Request, server: ApiServer, kind: Kind, namespace: str, name: str, verb: str,
                 user: UserInfo) -> web.StreamResponse:
    if verb != "create" or name:
        raise errors.MethodNotAllowed(f"{kind.plural} only take create (POST to the collection)")
    body = await codec.read_body(request)
    obj = codec.decode_object(body, request.headers.get("Content-Type", ""), kind)
    question = copy.deepcopy(obj)
    question.setdefault("metadata", {})
    question["metadata"].setdefault("creationTimestamp", None)
    answer = await ANSWERS[kind.kind](server, question, user, namespace)
    return codec.respond(answer, status=201)
