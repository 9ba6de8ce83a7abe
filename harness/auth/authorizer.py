"""What an authorizer is asked and how it answers; the modes of `--authorization-mode` and their union.

A request is described by `RequestInfo` (the verb RBAC names and the resource, or the path of a non-resource
request) and the `UserInfo` it is made as. Each authorizer answers allow, deny or no opinion with a reason; the union
asks them in order and the first allow or deny wins, as upstream's union authorizer does. Members of
`system:masters` are allowed before any mode is asked (upstream's privileged-groups authorizer).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from harness.api import errors
from harness.auth.user import MASTERS, UserInfo


@dataclass(frozen=True)
class RequestInfo:
    """What a request asks for, parsed from its path, method and query."""

    verb: str  # get list watch create update patch delete deletecollection, or an HTTP verb's lower case for paths
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    #: False for requests to a path that is not a resource (/api, /healthz, /metrics, /openapi/v2, ...).
    resource_request: bool = True
    path: str = ""


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    NO_OPINION = "no-opinion"


@dataclass(frozen=True)
class Answer:
    decision: Decision
    reason: str = ""
    #: Set when rules could not all be evaluated (a binding to a missing role); SubjectAccessReview reports it.
    evaluation_error: str = ""

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


NO_OPINION = Answer(Decision.NO_OPINION)


class Authorizer(Protocol):
    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer: ...


class AlwaysAllow:
    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        return Answer(Decision.ALLOW)


class AlwaysDeny:
    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        return Answer(Decision.NO_OPINION, "Everything is forbidden.")


class PrivilegedGroups:
    """Members of these groups may do anything, whatever the other authorizers say."""

    def __init__(self, groups: Sequence[str] = (MASTERS,)) -> None:
        self.groups = frozenset(groups)

    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        if self.groups.intersection(user.groups):
            return Answer(Decision.ALLOW)
        return NO_OPINION


class Union:
    """Authorizers asked in order: the first allow or deny is the answer; otherwise no opinion, with every reason."""

    def __init__(self, authorizers: Sequence[Authorizer]) -> None:
        self.authorizers = list(authorizers)

    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        reasons, failures = [], []
        for authorizer in self.authorizers:
            answer = authorizer.authorize(user, info)
            if answer.decision is not Decision.NO_OPINION:
                return answer
            if answer.reason:
                reasons.append(answer.reason)
            if answer.evaluation_error:
                failures.append(answer.evaluation_error)
        return Answer(Decision.NO_OPINION, "\n".join(reasons), "; ".join(failures))


def forbidden_message(user: UserInfo, info: RequestInfo) -> str:
    """Upstream's words for what was refused (before the reason)."""
    if not info.resource_request:
        return f'User "{user.name}" cannot {info.verb} path "{info.path}"'
    resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    where = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
    return f'User "{user.name}" cannot {info.verb} resource "{resource}" in API group "{info.group}" {where}'


def forbidden(user: UserInfo, info: RequestInfo, reason: str = "") -> errors.Forbidden:
    """The 403 Status of a refused request, worded as upstream's (`pods "x" is forbidden: User ...`)."""
    why = forbidden_message(user, info) + (f": {reason}" if reason else "")
    if not info.resource_request or not info.resource:
        return errors.Forbidden(f"forbidden: {why}")
    qualified = f"{info.resource}.{info.group}" if info.group else info.resource
    head = f'{qualified} "{info.name}"' if info.name else qualified
    return errors.Forbidden(f"{head} is forbidden: {why}", kind=info.resource, name=info.name, group=info.group)


def check(authorizer: Authorizer, user: UserInfo, info: RequestInfo) -> None:
    """Raise the 403 unless the authorizer allows the request."""
    answer = authorizer.authorize(user, info)
    if not answer.allowed:
        raise forbidden(user, info, answer.reason)
