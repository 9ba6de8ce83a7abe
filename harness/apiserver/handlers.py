"""HTTP handlers for resource paths: parse the request, run the chain, call the store.

A resource request is `/api/v1/...` or `/apis/<group>/<version>/...`; `parse_target`
turns the rest of the path into (kind, namespace, name, subresource) using the resource
table, `verb_of` names the verb the way RBAC does, and one function per verb does the work.
Subresources with their own semantics (scale, binding, eviction, ...) live in
`harness.apiserver.subresources`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from harness.api import errors, fields, patch, registry, selectors
from harness.api.registry import Kind
from harness.apiserver import authn, codec, reviews, subresources, tables
from harness.apiserver.genericregistry import DeleteOptions, Store
from harness.apiserver.listing import ListOptions
from harness.apiserver.request_warnings import header_value
from harness.apiserver.state import STATE, ApiServer
from harness.apiserver.watch import serve_watch
from harness.auth.authorizer import RequestInfo
from harness.auth.user import UserInfo

_INFO = "harness.request_info"
#: What authorization said of the request ("allow" or "forbid"), for the audit log's annotation.
AUTHZ_DECISION = web.RequestKey("harness_authz_decision", str)

#: Subresources whose verbs are handled by the generic object path (status-like).
_GENERIC_SUBRESOURCES = frozenset({"status", "finalize", "approval"})


@dataclass(frozen=True)
class Target:
    kind: Kind
    namespace: str = ""
    name: str = ""
    subresource: str = ""


def parse_target(group: str, version: str, parts: list[str]) -> Target:
    """The resource a path names. `parts` is the path after `/api/v1` or `/apis/<g>/<v>`."""
    if not parts:
        raise errors.NotFound("the server could not find the requested resource")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) >= 3 and parts[2] not in ("status", "finalize"):
        namespace, parts = parts[1], parts[2:]
        kind = registry.by_path(group, version, parts[0])
        if not kind.namespaced:
            raise errors.NotFound(f"the server could not find the requested resource ({parts[0]} is not "
                                  "namespaced)")
    else:
        kind = registry.by_path(group, version, parts[0])
    if len(parts) > 3:
        raise errors.NotFound("the server could not find the requested resource")
    name = parts[1] if len(parts) > 1 else ""
    sub = parts[2] if len(parts) > 2 else ""
    if sub and sub not in kind.subresources:
        raise errors.NotFound(f"the server could not find the requested resource ({kind.plural}/{sub})")
    return Target(kind, namespace, name, sub)


def verb_of(method: str, target: Target, query: Any) -> str:
    watching = query.get("watch") in ("1", "true", "True")
    if method == "GET":
        if target.name:
            return "get"
        return "watch" if watching else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    raise errors.MethodNotAllowed(f"method {method} is not supported")


def _selected_name(verb: str, query: Any) -> str:
    """A list or watch of one object by `fieldSelector=metadata.name=x` is authorized as that object, as
    upstream's request info does (so a kubelet may watch the one secret its pod uses)."""
    if verb not in ("list", "watch"):
        return ""
    selector = query.get("fieldSelector") or ""
    for term in selector.split(","):
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if key.strip() == "metadata.name" and op and not key.endswith("!"):
            return value.strip()
    return ""


def path_info(request: web.Request) -> RequestInfo | None:
    """What a request for a path that is not a resource asks (its verb and path); None for a resource request,
    whose path `handle_resource` parses once."""
    if getattr(request.match_info.route, "handler", None) is handle_resource:
        return None
    verb = "get" if request.method == "HEAD" else request.method.lower()
    return RequestInfo(verb, resource_request=False, path=request.path)


def describe(request: web.Request) -> RequestInfo | None:
    """What a request asks for, parsed before it is served (the audit policy needs it); None if the path names
    nothing the server has."""
    info = path_info(request)
    if info is not None:
        return info
    try:
        return _parse(request)[1]
    except errors.ApiError:
        return None


def request_info(request: web.Request) -> RequestInfo | None:
    info = request.get(_INFO)
    return info if isinstance(info, RequestInfo) else None


def _parse(request: web.Request) -> tuple[Target, RequestInfo, Any]:
    """The target of a resource request, what it asks (as authorization names it) and its query; NotFound for a
    path that names nothing served."""
    group = request.match_info.get("group", "")
    version = request.match_info["version"]
    parts = [p for p in request.match_info.get("tail", "").split("/") if p]
    if parts and parts[0] == "watch":  # the legacy /api/v1/watch/... form
        parts = parts[1:]
        query: Any = {**request.query, "watch": "true"}
    else:
        query = request.query
    target = parse_target(group, version, parts)
    verb = verb_of(request.method, target, query)
    info = RequestInfo(verb, group, version, target.kind.plural, target.subresource, target.namespace,
                       target.name or _selected_name(verb, query), path=request.path)
    return target, info, query


async def handle_resource(request: web.Request) -> web.StreamResponse:
    server = request.app[STATE]
    target, info, query = _parse(request)
    verb = info.verb
    request[_INFO] = info
    user = request[authn.USER]
    request[AUTHZ_DECISION] = "forbid"
    server.chain.authorize(user, info)
    request[AUTHZ_DECISION] = "allow"
    if not target.kind.stored:
        return await reviews.handle(request, server, target.kind, target.namespace, target.name, verb, user)
    store = server.stores[target.kind]
    if target.subresource and target.subresource not in _GENERIC_SUBRESOURCES:
        return await subresources.handle(request, server, store, target.namespace, target.name,
                                         target.subresource, verb, user)
    if target.kind.namespaced and target.namespace == "" and verb not in ("list", "watch", "deletecollection"):
        raise errors.NotFound("the server could not find the requested resource: a namespace is required")
    handler = _VERBS.get(verb)
    if handler is None:
        raise errors.MethodNotAllowed(f"{verb} is not supported on {target.kind.plural}")
    return await handler(request, server, store, target, user, query)


# -- query parsing -------------------------------------------------------------------------


def _int_param(query: Any, name: str, default: int = 0) -> int:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.BadRequest(f'{name}: Invalid value: "{raw}": must be an integer') from None
    if value < 0:
        raise errors.BadRequest(f'{name}: Invalid value: "{raw}": must be greater than or equal to 0')
    return value


def list_options(kind: Kind, query: Any) -> ListOptions:
    ls = query.get("labelSelector")
    fs = query.get("fieldSelector")
    return ListOptions(
        label_selector=selectors.parse_label_selector(ls) if ls else None,
        field_selector=selectors.parse_field_selector(fs, kind) if fs else None,
        limit=_int_param(query, "limit"),
        continue_token=query.get("continue", ""),
        resource_version=query.get("resourceVersion", ""),
        resource_version_match=query.get("resourceVersionMatch", ""),
    )


def dry_run(query: Any) -> bool:
    values = query.getall("dryRun", []) if hasattr(query, "getall") else [query.get("dryRun", "")]
    for v in values:
        if v and v != "All":
            raise errors.BadRequest(f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return "All" in values


def check_fields(kind: Kind, obj: dict[str, Any], query: Any) -> list[str]:
    """Apply `fieldValidation`: returns warnings (Warn), raises 400 (Strict)."""
    mode = query.get("fieldValidation") or "Warn"
    if mode not in ("Ignore", "Warn", "Strict"):
        raise errors.BadRequest(f'fieldValidation: Unsupported value: "{mode}": supported values: '
                                '"Ignore", "Strict", "Warn"')
    unknown = fields.prune_unknown(kind, obj)
    if not unknown or mode == "Ignore":
        return []
    messages = [f'unknown field "{path}"' for path in unknown]
    if mode == "Strict":
        raise errors.BadRequest("strict decoding error: " + ", ".join(messages))
    return messages


def warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": header_value(warnings)}


# -- output --------------------------------------------------------------------------------


def render(request: web.Request, kind: Kind, obj: dict[str, Any], *, status: int = 200,
           headers: dict[str, str] | None = None) -> web.Response:
    out = codec.negotiate(request.headers.get("Accept", ""), request.query)
    if out.view == "Table":
        body: dict[str, Any] = tables.to_table(kind, [obj], include_object=out.include_object)
    elif out.view == "PartialObjectMetadata":
        body = codec.partial_metadata(obj)
    else:
        body = obj
    return codec.respond(body, status=status, media_type=out.media_type, headers=headers)


def render_list(request: web.Request, kind: Kind, lst: dict[str, Any]) -> web.Response:
    out = codec.negotiate(request.headers.get("Accept", ""), request.query)
    if out.view == "Table":
        body = tables.to_table(kind, lst["items"], include_object=out.include_object, list_meta=lst["metadata"])
    elif out.view == "PartialObjectMetadata":
        body = codec.partial_metadata_list(lst)
    else:
        body = lst
    return codec.respond(body, media_type=out.media_type)


async def read_object(request: web.Request, kind: Kind, query: Any) -> tuple[dict[str, Any], list[str]]:
    body = await codec.read_body(request)
    obj = codec.decode_object(body, request.headers.get("Content-Type", ""), kind)
    return obj, check_fields(kind, obj, query)


# -- verbs ---------------------------------------------------------------------------------


async def do_get(request: web.Request, server: ApiServer, store: Store, t: Target, user: UserInfo,
                 query: Any) -> web.StreamResponse:
    return render(request, t.kind, await store.get(t.namespace, t.name))


async def do_list(request: web.Request, server: ApiServer, store: Store, t: Target, user: UserInfo,
                  query: Any) -> web.StreamResponse:
    return render_list(request, t.kind, await store.list(t.namespace, list_options(t.kind, query)))


async def do_watch(request: web.Request, server: ApiServer, store: Store, t: Target, user: UserInfo,
                   query: Any) -> web.StreamResponse:
    return await serve_watch(request, server, store, t.namespace, list_options(t.kind, query), query)


async def do_create(request: web.Request, server: ApiServer, store: Store, t: Target, user: UserInfo,
                    query: Any) -> web.StreamResponse:
    if t.name and not t.subresource:
        raise errors.MethodNotAllowed(f"POST is not supported on a single {t.kind.singular}; use PUT or PATCH")
    obj, warnings = await read_object(request, t.kind, query)
    created = await store.create(t.namespace, obj, user=user, dry_run=dry_run(query))
    return render(request, t.kind, created, status=201, headers=warning_headers(warnings))


async def do_update(request: web.Request, server: ApiServer, store: Store, t: Target, user: UserInfo,
                    query: Any) -> web.StreamResponse:
    obj, warnings = await read_object(request, t.kind, query)
    updated = await store.update(t.namespace, t.name, obj, user=user, subresource=t.subresource,
                                 dry_run=dry_run(query))
    return render(request, t.kind, updated, headers=warning_headers(warnings))


async def do_patch(request: web.Request, server: ApiServer, store: Store, t: Target, user: UserInfo,
                   query: Any) -> web.StreamResponse:
    body = await codec.read_body(request)
    content_type = request.headers.get("Content-Type", "")
    warnings: list[str] = []

    def mutate(current: dict[str, Any]) -> dict[str, Any]:
        patched = patch.apply_patch(content_type, current, body, t.kind)
        if not isinstance(patched, dict):
            raise errors.BadRequest("the patch did not produce an object")
        wanted = (patched.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise store.conflict(t.name)
        warnings[:] = check_fields(t.kind, patched, query)
        return patched

    updated = await store.guaranteed_update(t.namespace, t.name, mutate, user=user, subresource=t.subresource,
                                            dry_run=dry_run(query))
    return render(request, t.kind, updated, headers=warning_headers(warnings))


async def _delete_options(request: web.Request, query: Any) -> DeleteOptions:
    body = await codec.read_body(request)
    doc = codec.decode_document(body, request.headers.get("Content-Type", ""), what="DeleteOptions") \
        if body.strip() else None
    if doc is not None and not isinstance(doc, dict):
        raise errors.BadRequest("DeleteOptions must be a JSON object")
    opts = DeleteOptions.from_body(doc, dict(query))
    opts.dry_run = opts.dry_run or dry_run(query)
    return opts


async def do_delete(request: web.Request, server: ApiServer, store: Store, t: Target, user: UserInfo,
                    query: Any) -> web.StreamResponse:
    opts = await _delete_options(request, query)
    obj, deleted_now = await store.delete(t.namespace, t.name, opts, user=user)
    if not deleted_now:
        return render(request, t.kind, obj, status=202)
    if store.strategy.return_deleted_object:
        return render(request, t.kind, obj)
    return codec.respond(store.deleted_status(obj))


async def do_delete_collection(request: web.Request, server: ApiServer, store: Store, t: Target,
                               user: UserInfo, query: Any) -> web.StreamResponse:
    opts = await _delete_options(request, query)
    result = await store.delete_collection(t.namespace, list_options(t.kind, query), opts, user=user)
    return codec.respond(result)


_VERBS = {
    "get": do_get,
    "list": do_list,
    "watch": do_watch,
    "create": do_create,
    "update": do_update,
    "patch": do_patch,
    "delete": do_delete,
    "deletecollection": do_delete_collection,
}
