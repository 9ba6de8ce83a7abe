"""Acting as another user (`kubectl --as bob --as-group devs`), as upstream's impersonation filter allows.

A request with `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` or `Impersonate-Extra-<key>` headers is
served as the user they name, if the requester may `impersonate` each of them: `users`, `groups` and
`serviceaccounts` in the core group, `uids` and `userextras/<key>` in authentication.k8s.io. A refusal is upstream's
403, naming what could not be impersonated.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from multidict import CIMultiDictProxy

from harness.api import errors
from harness.auth.authorizer import Authorizer, RequestInfo, forbidden
from harness.auth.user import (
    ANONYMOUS_NAME,
    AUTHENTICATED,
    UNAUTHENTICATED,
    UserInfo,
    service_account_groups,
    split_service_account,
)

USER, GROUP, UID, EXTRA = "Impersonate-User", "Impersonate-Group", "Impersonate-Uid", "Impersonate-Extra-"


def requested(headers: Mapping[str, str]) -> bool:
    return any(k.lower().startswith("impersonate-") for k in headers)


def impersonate(requester: UserInfo, headers: CIMultiDictProxy[str], authorizer: Authorizer) -> UserInfo:
    """The user the request is served as, after checking the requester may act as every part of it."""
    username = headers.get(USER, "")
    groups = list(headers.getall(GROUP, []))
    uid = headers.get(UID, "")
    extra: dict[str, list[str]] = {}
    for key, value in headers.items():
        if key.lower().startswith(EXTRA.lower()):
            extra.setdefault(unquote(key[len(EXTRA):]).lower(), []).append(value)
    if not username:
        raise errors.BadRequest(f"requested {_describe(groups, uid, extra)} without impersonating a user")
    checks: list[RequestInfo] = []
    sa = split_service_account(username)
    if sa is not None:
        checks.append(RequestInfo("impersonate", "", "v1", "serviceaccounts", namespace=sa[0], name=sa[1]))
        if not groups:
            groups = list(service_account_groups(sa[0]))
    else:
        checks.append(RequestInfo("impersonate", "", "v1", "users", name=username))
    checks += [RequestInfo("impersonate", "", "v1", "groups", name=g) for g in headers.getall(GROUP, [])]
    checks += [RequestInfo("impersonate", "authentication.k8s.io", "v1", "userextras", key, name=v)
               for key, values in extra.items() for v in values]
    if uid:
        checks.append(RequestInfo("impersonate", "authentication.k8s.io", "v1", "uids", name=uid))
    for info in checks:
        answer = authorizer.authorize(requester, info)
        if not answer.allowed:
            raise forbidden(requester, info, answer.reason)
    if username == ANONYMOUS_NAME:
        if UNAUTHENTICATED not in groups:
            groups.append(UNAUTHENTICATED)
    elif AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return UserInfo(username, tuple(groups), uid, tuple((k, tuple(v)) for k, v in sorted(extra.items())))


def _describe(groups: list[str], uid: str, extra: dict[str, list[str]]) -> str:
    parts = [f"groups={groups}"] if groups else []
    if uid:
        parts.append(f"uid={uid}")
    if extra:
        parts.append(f"extra={extra}")
    return ", ".join(parts) or "impersonation"
