"""The audit log: who did what, when, and with what result, as upstream's apiserver writes it.

`--audit-policy-file` is an audit.k8s.io/v1 Policy: its first rule that matches a request (users, userGroups,
verbs, resources, namespaces, nonResourceURLs) sets the level: None, Metadata, Request (with the request's body) or
RequestResponse (and the response's). `--audit-log-path` gets one audit.k8s.io/v1 Event per stage per request, as a
JSON line: RequestReceived, ResponseStarted (watches and other long-running requests), ResponseComplete, unless the
policy omits the stage; `--audit-log-maxsize` (MB) and `--audit-log-maxbackup` rotate it as upstream names the
copies (`audit-2026-12-07T10-00-00.000.log`). The log agent ships the file like every other log under
/var/log/harness.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from harness.api import errors
from harness.apiserver import codec, handlers
from harness.auth.authorizer import RequestInfo
from harness.auth.user import UserInfo
from harness.util.files import UnreadableFile, read_yaml

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")

_ANNOTATIONS: ContextVar[dict[str, str] | None] = ContextVar("harness_audit_annotations", default=None)


def add_annotations(annotations: dict[str, str]) -> None:
    """Annotate the current request's audit event (upstream's `audit.AddAuditAnnotations`, e.g. from admission
    plugins); the first value given for a key stays. Ignored when the request is not audited."""
    recorded = _ANNOTATIONS.get()
    if recorded is not None:
        for key, value in annotations.items():
            recorded.setdefault(key, value)


class AuditConfigError(Exception):
    """The audit policy cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Rule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()  # (group, resources, names)
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()

    def matches(self, user: UserInfo, info: RequestInfo) -> bool:
        if self.users and user.name not in self.users:
            return False
        if self.user_groups and not set(self.user_groups) & set(user.groups):
            return False
        if self.verbs and info.verb not in self.verbs:
            return False
        if self.resources or self.namespaces:
            if not info.resource_request:
                return False
            if self.namespaces and info.namespace not in self.namespaces:
                return False
            if self.resources and not any(self._resource(r, info) for r in self.resources):
                return False
        if self.non_resource_urls:
            return not info.resource_request and any(
                u == info.path or (u.endswith("*") and info.path.startswith(u[:-1])) for u in self.non_resource_urls)
        return True

    @staticmethod
    def _resource(kinds: tuple[str, tuple[str, ...], tuple[str, ...]], info: RequestInfo) -> bool:
        """As upstream's policy checker: `pods` is not `pods/log`; `*`, `*/log` and `pods/*` are patterns."""
        group, resources, names = kinds
        if group != info.group:
            return False
        if not resources:
            return True
        if names and info.name not in names:
            return False
        combined = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        for pattern in resources:
            if pattern in ("*", combined):
                return True
            if info.subresource and pattern == f"*/{info.subresource}":
                return True
            if pattern.endswith("/*") and pattern[:-2] == info.resource:
                return True
        return False


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool = False

    def decide(self, user: UserInfo, info: RequestInfo) -> tuple[str, tuple[str, ...]]:
        """(level, stages to omit) for a request: the first matching rule's, None when no rule matches."""
        for rule in self.rules:
            if rule.matches(user, info):
                return rule.level, (*self.omit_stages, *rule.omit_stages)
        return "None", self.omit_stages


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuditConfigError(f"{where}: want a list of strings")
    return tuple(value)


def load_policy(path: Path) -> Policy:
    try:
        doc = read_yaml(path)
    except UnreadableFile as exc:
        raise AuditConfigError(f"--audit-policy-file {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Policy" or doc.get("apiVersion") != "audit.k8s.io/v1":
        raise AuditConfigError(f"--audit-policy-file {path}: want apiVersion audit.k8s.io/v1, kind Policy")
    rules = []
    for i, raw in enumerate(doc.get("rules") or []):
        where = f"--audit-policy-file {path}: rules[{i}]"
        if not isinstance(raw, dict) or raw.get("level") not in LEVELS:
            raise AuditConfigError(f"{where}.level: want one of {', '.join(LEVELS)}")
        stages = _strings(raw.get("omitStages"), f"{where}.omitStages")
        if set(stages) - set(STAGES):
            raise AuditConfigError(f"{where}.omitStages: want stages of {', '.join(STAGES)}")
        kinds = []
        for j, res in enumerate(raw.get("resources") or []):
            if not isinstance(res, dict):
                raise AuditConfigError(f"{where}.resources[{j}]: want a mapping")
            kinds.append((str(res.get("group") or ""), _strings(res.get("resources"), f"{where}.resources[{j}]"),
                          _strings(res.get("resourceNames"), f"{where}.resources[{j}].resourceNames")))
        rules.append(Rule(raw["level"], _strings(raw.get("users"), f"{where}.users"),
                          _strings(raw.get("userGroups"), f"{where}.userGroups"),
                          _strings(raw.get("verbs"), f"{where}.verbs"), tuple(kinds),
                          _strings(raw.get("namespaces"), f"{where}.namespaces"),
                          _strings(raw.get("nonResourceURLs"), f"{where}.nonResourceURLs"), stages))
    return Policy(tuple(rules), _strings(doc.get("omitStages"), f"--audit-policy-file {path}: omitStages"),
                  bool(doc.get("omitManagedFields")))


def _micro(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LogWriter:
    """JSON lines to `--audit-log-path`, rotated at `max_size` MB into at most `max_backups` copies, none older than
    `max_age_days`."""

    path: Path
    max_size: int = 0
    max_backups: int = 0
    max_age_days: int = 0
    _file: Any = field(default=None, repr=False)

    def write(self, event: dict[str, Any]) -> None:
        line = orjson.dumps(event) + b"\n"
        if str(self.path) == "-":  # upstream's "-": standard output
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - held open for the server's life
            os.chmod(self.path, 0o600)
        if self.max_size and self._file.tell() + len(line) > self.max_size * 1024 * 1024:
            self._rotate()
        self._file.write(line)

    def _rotate(self) -> None:
        self._file.close()
        when = dt.datetime.now(dt.UTC)
        while True:  # two rotations within a millisecond must not overwrite the first copy
            stamp = when.strftime("%Y-%m-%dT%H-%M-%S.%f")[:-3]
            target = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
            if not target.exists():
                break
            when += dt.timedelta(milliseconds=1)
        self.path.rename(target)
        copies = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))  # names sort by time
        doomed = copies[:-self.max_backups] if self.max_backups else []
        if self.max_age_days:
            oldest = dt.datetime.now(dt.UTC).timestamp() - self.max_age_days * 86400
            doomed += [c for c in copies if c.stat().st_mtime < oldest]
        for old in doomed:
            old.unlink(missing_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class Auditor:
    policy: Policy
    writer: LogWriter

    def event(self, *, audit_id: str, stage: str, level: str, request: web.Request, user: UserInfo | None,
              info: RequestInfo | None, received: dt.datetime, code: int | None = None,
              annotations: dict[str, str] | None = None, request_object: Any = None,
              response_object: Any = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level, "auditID": audit_id, "stage": stage,
            "requestURI": request.path_qs, "verb": info.verb if info else request.method.lower(),
            "user": {}, "sourceIPs": [request.remote or ""],
            "userAgent": request.headers.get("User-Agent", ""),
            "requestReceivedTimestamp": _micro(received), "stageTimestamp": _micro(dt.datetime.now(dt.UTC)),
        }
        if user is not None:
            event["user"] = {"username": user.name, **({"uid": user.uid} if user.uid else {}),
                             "groups": list(user.groups), **({"extra": user.extra_dict()} if user.extra else {})}
        if info is not None and info.resource_request:
            ref = {"resource": info.resource, "namespace": info.namespace, "name": info.name,
                   "apiGroup": info.group, "apiVersion": info.version, "subresource": info.subresource}
            event["objectRef"] = {k: v for k, v in ref.items() if v}
        if code is not None:
            event["responseStatus"] = {"metadata": {}, "code": code}
        if request_object is not None:
            event["requestObject"] = request_object
        if response_object is not None:
            event["responseObject"] = response_object
        if annotations:
            event["annotations"] = annotations
        return event


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LONG_RUNNING = frozenset({"exec", "attach", "portforward", "proxy"})


def _long_running(request: web.Request, info: RequestInfo | None) -> bool:
    if info is None or not info.resource_request:
        return False
    return info.verb == "watch" or info.subresource in _LONG_RUNNING or (
        info.subresource == "log" and request.query.get("follow") in ("true", "1"))


async def _request_object(request: web.Request) -> Any:
    try:
        body = await codec.read_body(request)  # kept on the request for the handler
    except errors.ApiError:
        return None  # the handler says why
    if not body.strip():
        return None
    try:  # JSON, YAML or protobuf, logged as JSON as upstream logs it
        return codec.decode_document(body, request.headers.get("Content-Type", "application/json"), what="")
    except errors.ApiError:
        return None


def _response_object(response: web.StreamResponse) -> Any:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    if "json" not in (response.content_type or ""):
        return None
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None


def middleware(auditor: Auditor, user_of: Callable[[web.Request], UserInfo | None],
               describe: Callable[[web.Request], RequestInfo | None]) -> Any:
    """The audit middleware: it runs after authentication (the user is known) and around everything else."""

    @web.middleware
    async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
        user, info = user_of(request), describe(request)
        if user is None or info is None:
            return await handler(request)
        level, omit = auditor.policy.decide(user, info)
        if level == "None":
            return await handler(request)
        audit_id = request.headers.get("Audit-ID") or str(uuid.uuid4())
        received = dt.datetime.now(dt.UTC)
        # a create's object is read at every level for its name (objectRef), and logged from Request on
        body = await _request_object(request) if level != "Metadata" or info.verb == "create" else None
        request_object = body if level in ("Request", "RequestResponse") else None
        named = (body.get("metadata") or {}).get("name", "") if isinstance(body, dict) else ""
        if named and not info.name:
            info = dataclasses.replace(info, name=named)

        added: dict[str, str] = {}

        def write(stage: str, code: int | None = None, response_object: Any = None) -> None:
            if stage in omit:
                return
            decision = request.get(handlers.AUTHZ_DECISION)
            annotations = {**({"authorization.k8s.io/decision": decision} if decision else {}), **added}
            auditor.writer.write(auditor.event(
                audit_id=audit_id, stage=stage, level=level, request=request, user=user,
                info=info, received=received, code=code, annotations=annotations or None,
                request_object=request_object, response_object=response_object))

        write("RequestReceived")
        if _long_running(request, info):
            write("ResponseStarted", 200)
        code = 500
        response: web.StreamResponse | None = None
        token = _ANNOTATIONS.set(added)
        try:
            response = await handler(request)
            code = response.status
            if not response.prepared:
                response.headers["Audit-Id"] = audit_id
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        except Exception as exc:
            code = int(getattr(exc, "code", 500) or 500)
            raise
        finally:
            _ANNOTATIONS.reset(token)
            body = _response_object(response) if response is not None and level == "RequestResponse" else None
            write("ResponseComplete", code, body)

    return audit
