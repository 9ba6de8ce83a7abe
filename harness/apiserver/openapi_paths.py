"""OpenAPI `paths`: one operation per route of every kind, in v2 or v3 form.

Each route is first described once as an `Operation` (method, verb, parameters, bodies),
then rendered as Swagger 2.0 or OpenAPI 3.0. The detail clients depend on: every create,
update and patch names the `fieldValidation` query parameter on the operation itself —
kubectl reads the PATCH operation of a kind to decide it may validate on the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.api.registry import Kind, kinds_in
from harness.apiserver.discovery import subresource
from harness.apiserver.openapi_schemas import DELETE_OPTIONS, PATCH, STATUS, Style, definition_of, package_of

JSON = "application/json"
YAML = "application/yaml"
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")
_TEXT = ("text/plain", JSON, YAML)


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    description: str
    location: str = "query"


def _params(*rows: tuple[str, str, str]) -> dict[str, Param]:
    return {name: Param(name, typ, doc) for name, typ, doc in rows}


PARAMS: dict[str, Param] = {
    "name": Param("name", "string", "name of the resource", "path"),
    "namespace": Param("namespace", "string", "object name and auth scope, such as for teams and projects", "path"),
    **_params(
        ("pretty", "string", "If 'true', then the output is pretty printed."),
        ("dryRun", "string", "When present, indicates that modifications should not be persisted. Valid "
                             "values are: - All: all dry run stages will be processed"),
        ("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is "
                                   "making these changes."),
        ("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the "
                                      "request containing unknown or duplicate fields. Valid values are: - "
                                      "Ignore - Warn - Strict (the default)."),
        ("force", "boolean", "Force is going to \"force\" Apply requests. It must be unset for non-apply "
                             "patch requests."),
        ("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. "
                                    "Defaults to everything."),
        ("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. "
                                    "Defaults to everything."),
        ("watch", "boolean", "Watch for changes to the described resources and return them as a stream of "
                             "add, update, and remove notifications. Specify resourceVersion."),
        ("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
        ("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request "
                                      "may be served from."),
        ("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied "
                                           "to list calls."),
        ("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`."),
        ("timeoutSeconds", "integer", "Timeout for the list/watch call."),
        ("limit", "integer", "limit is a maximum number of responses to return for a list call."),
        ("continue", "string", "The continue option should be set when retrieving more results from the "
                               "server."),
        ("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
        ("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy."),
        ("propagationPolicy", "string", "Whether and how garbage collection will be performed: 'Orphan', "
                                        "'Background' or 'Foreground'."),
        ("container", "string", "The container for which to stream logs, or to exec or attach to."),
        ("follow", "boolean", "Follow the log stream of the pod."),
        ("previous", "boolean", "Return previous terminated container logs."),
        ("sinceSeconds", "integer", "A relative time in seconds before the current time from which to show "
                                    "logs."),
        ("tailLines", "integer", "If set, the number of lines from the end of the logs to show."),
        ("timestamps", "boolean", "If true, add an RFC3339 timestamp at the beginning of every line."),
        ("limitBytes", "integer", "If set, the number of bytes to read from the server before terminating "
                                  "the log output."),
        ("command", "string", "Command is the remote command to execute. argv array."),
        ("stdin", "boolean", "Redirect the standard input stream of the pod for this call."),
        ("stdout", "boolean", "Redirect the standard output stream of the pod for this call."),
        ("stderr", "boolean", "Redirect the standard error stream of the pod for this call."),
        ("tty", "boolean", "TTY if true indicates that a tty will be allocated for the exec call."),
        ("ports", "integer", "List of ports to forward."),
        ("path", "string", "Path is the URL path to use for the current proxy request."),
    ),
}

_LIST = ("pretty", "labelSelector", "fieldSelector", "watch", "allowWatchBookmarks", "resourceVersion",
         "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "limit", "continue")
_SELECT = _LIST[1:]  # a list's query without `pretty`, which deletecollection also takes
_WRITE = ("pretty", "dryRun", "fieldManager", "fieldValidation")
_DELETE = ("pretty", "dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
_SUB_PARAMS = {
    "log": ("container", "follow", "previous", "sinceSeconds", "tailLines", "timestamps", "limitBytes"),
    "exec": ("command", "container", "stdin", "stdout", "stderr", "tty"),
    "attach": ("container", "stdin", "stdout", "stderr", "tty"),
    "portforward": ("ports",),
    "proxy": ("path",),
}


@dataclass(frozen=True)
class Operation:
    """One route and method, independent of the OpenAPI version it is rendered in."""

    method: str
    op_id: str
    description: str
    action: str
    tag: str
    params: tuple[str, ...]
    gvk: dict[str, str] | None = None
    body: str = ""  # definition name of the request body ("" for none)
    response: str = ""  # definition name of the response ("" for plain text)
    codes: tuple[str, ...] = ("200",)
    consumes: tuple[str, ...] = ("*/*",)
    produces: tuple[str, ...] = (JSON, YAML)


# -- naming ---------------------------------------------------------------------------------


def _group_words(group: str) -> list[str]:
    return group.removesuffix(".k8s.io").split(".") if group else ["core"]


def _op_prefix(kind: Kind) -> str:
    return "".join(w.capitalize() for w in _group_words(kind.group)) + kind.version.capitalize()


def tag_of(group: str, version: str) -> str:
    words = _group_words(group)
    return words[0] + "".join(w.capitalize() for w in words[1:]) + "_" + version


def _root(kind: Kind) -> str:
    return f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"


def _collection(kind: Kind) -> str:
    if kind.namespaced:
        return f"{_root(kind)}/namespaces/{{namespace}}/{kind.plural}"
    return f"{_root(kind)}/{kind.plural}"


def _gvk(group: str | None, version: str, kind: str) -> dict[str, str]:
    return {"group": group or "", "kind": kind, "version": version}


# -- operations per kind --------------------------------------------------------------------


def _resource_ops(kind: Kind) -> Iterator[tuple[str, Operation]]:
    """Collection and item operations on the kind itself."""
    ns = ("namespace",) if kind.namespaced else ()
    scope = "Namespaced" if kind.namespaced else ""
    base = _collection(kind)
    obj, name = definition_of(kind.model_name), kind.kind
    lst = definition_of(kind.model_name + "List") if kind.stored else ""
    common: dict[str, Any] = {"tag": tag_of(kind.group, kind.version), "gvk": _gvk(kind.group, kind.version, kind.kind)}
    pre = _op_prefix(kind)
    yield base, Operation("get", f"list{pre}{scope}{name}", f"list or watch objects of kind {name}", "list",
                          params=(*ns, *_LIST), response=lst,
                          produces=(JSON, YAML, f"{JSON};stream=watch"), **common)
    yield base, Operation("post", f"create{pre}{scope}{name}", f"create a {name}", "post",
                          params=(*ns, *_WRITE), body=obj, response=obj, codes=("200", "201", "202"), **common)
    yield base, Operation("delete", f"delete{pre}Collection{scope}{name}", f"delete collection of {name}",
                          "deletecollection", params=(*ns, *_DELETE, *_SELECT), body=DELETE_OPTIONS,
                          response=STATUS, **common)
    item = f"{base}/{{name}}"
    yield item, Operation("get", f"read{pre}{scope}{name}", f"read the specified {name}", "get",
                          params=("name", *ns, "pretty"), response=obj, **common)
    yield item, Operation("put", f"replace{pre}{scope}{name}", f"replace the specified {name}", "put",
                          params=("name", *ns, *_WRITE), body=obj, response=obj, codes=("200", "201"), **common)
    yield item, Operation("patch", f"patch{pre}{scope}{name}", f"partially update the specified {name}", "patch",
                          params=("name", *ns, *_WRITE, "force"), body=PATCH, response=obj,
                          codes=("200", "201"), consumes=PATCH_TYPES, **common)
    yield item, Operation("delete", f"delete{pre}{scope}{name}", f"delete a {name}", "delete",
                          params=("name", *ns, *_DELETE), body=DELETE_OPTIONS, response=STATUS,
                          codes=("200", "202"), **common)
    if kind.namespaced:
        yield f"{_root(kind)}/{kind.plural}", Operation(
            "get", f"list{pre}{name}ForAllNamespaces", f"list or watch objects of kind {name}", "list",
            params=_LIST, response=lst, produces=(JSON, YAML, f"{JSON};stream=watch"), **common)


#: The RBAC verb of each collection or item operation's action.
_ACTION_VERB = {"list": "list", "post": "create", "deletecollection": "deletecollection", "get": "get",
                "put": "update", "patch": "patch", "delete": "delete"}

_VERB_METHOD = {"get": "get", "update": "put", "patch": "patch", "create": "post", "delete": "delete"}
_VERB_WORD = {"get": "read", "update": "replace", "patch": "patch", "create": "create", "delete": "delete"}
_VERB_DOC = {"get": "read {sub} of the specified {kind}", "update": "replace {sub} of the specified {kind}",
             "patch": "partially update {sub} of the specified {kind}", "create": "create {sub} of a {kind}",
             "delete": "delete {sub} of a {kind}"}
_CONNECT = frozenset({"exec", "attach", "portforward", "proxy"})


def _sub_body(kind: Kind, sub_name: str) -> str:
    """Definition name of what a (non-connect) subresource reads and writes; "" for text."""
    if sub_name == "log":
        return ""
    sub = subresource(kind, sub_name)
    if (sub.group, sub.version, sub.kind) == (kind.group, kind.version, kind.kind):
        return definition_of(kind.model_name)
    return f"{package_of(sub.group or '', sub.version)}.{sub.kind}"


def _sub_op(kind: Kind, sub_name: str, verb: str, params: tuple[str, ...], **common: Any) -> Operation:
    body = _sub_body(kind, sub_name)
    method = _VERB_METHOD[verb]
    scope = "Namespaced" if kind.namespaced else ""
    op_id = f"{_VERB_WORD[verb]}{_op_prefix(kind)}{scope}{kind.kind}{sub_name.capitalize()}"
    description = _VERB_DOC[verb].format(sub=sub_name, kind=kind.kind)
    if verb == "get":
        return Operation(method, op_id, description, method, params=(*params, "pretty"), response=body,
                         produces=_TEXT if sub_name == "log" else (JSON, YAML), **common)
    force = ("force",) if verb == "patch" else ()
    return Operation(method, op_id, description, method, params=(*params, *_WRITE, *force),
                     body=PATCH if verb == "patch" else body, response=body,
                     codes=("200", "201", "202") if verb == "create" else ("200", "201"),
                     consumes=PATCH_TYPES if verb == "patch" else ("*/*",), **common)


def _subresource_ops(kind: Kind, sub_name: str) -> Iterator[tuple[str, Operation]]:
    sub = subresource(kind, sub_name)
    ns = ("namespace",) if kind.namespaced else ()
    path = f"{_collection(kind)}/{{name}}/{sub_name}"
    common: dict[str, Any] = {"tag": tag_of(kind.group, kind.version),
                              "gvk": _gvk(sub.group, sub.version, sub.kind)}
    params = ("name", *ns, *_SUB_PARAMS.get(sub_name, ()))
    for verb in sub.verbs:
        if sub_name in _CONNECT:
            method = _VERB_METHOD[verb]
            scope = "Namespaced" if kind.namespaced else ""
            yield path, Operation(method, f"connect{method.capitalize()}{scope}{kind.kind}{sub_name.capitalize()}",
                                  f"connect {method.upper()} requests to {sub_name} of {kind.kind}", "connect",
                                  params=params, produces=("*/*",), **common)
        else:
            yield path, _sub_op(kind, sub_name, verb, params, **common)


def operations(group: str, version: str) -> Iterator[tuple[str, Operation]]:
    """(path, operation) for the discovery route and every route of every kind in a group-version."""
    kinds = kinds_in(group, version)
    if not kinds:
        return
    root = _root(kinds[0])
    yield f"{root}/", Operation("get", f"get{_op_prefix(kinds[0])}APIResources", "get available resources",
                                "", tag_of(group, version), (), response=definition_of("V1APIResourceList"))
    for kind in kinds:
        yield from ((path, op) for path, op in _resource_ops(kind) if _ACTION_VERB[op.action] in kind.verbs)
        for sub_name in kind.subresources:
            yield from _subresource_ops(kind, sub_name)


# -- rendering ------------------------------------------------------------------------------


def _param_v2(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.location, "description": p.description,
                           "type": p.type, "uniqueItems": True}
    if p.location == "path":
        out["required"] = True
    return out


def _param_v3(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.location, "description": p.description,
                           "schema": {"type": p.type, "uniqueItems": True}}
    if p.location == "path":
        out["required"] = True
    return out


_CODE_WORDS = {"200": "OK", "201": "Created", "202": "Accepted"}


def _schema(name: str, style: Style) -> dict[str, Any]:
    return style.ref(name) if name else {"type": "string"}


def _extensions(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if op.action:
        out["x-kubernetes-action"] = op.action
    if op.gvk is not None:
        out["x-kubernetes-group-version-kind"] = op.gvk
    return out


def render_v2(op: Operation, style: Style) -> dict[str, Any]:
    params = [_param_v2(PARAMS[p]) for p in op.params]
    if op.body:
        params.append({"name": "body", "in": "body", "required": True, "schema": style.ref(op.body)})
    responses: dict[str, Any] = {c: {"description": _CODE_WORDS[c], "schema": _schema(op.response, style)}
                                 for c in op.codes}
    responses["401"] = {"description": "Unauthorized"}
    return {"description": op.description, "consumes": list(op.consumes), "produces": list(op.produces),
            "schemes": ["https"], "tags": [op.tag], "operationId": op.op_id, "parameters": params,
            "responses": responses, **_extensions(op)}


def render_v3(op: Operation, style: Style) -> dict[str, Any]:
    out: dict[str, Any] = {"description": op.description, "operationId": op.op_id, "tags": [op.tag],
                           "parameters": [_param_v3(PARAMS[p]) for p in op.params]}
    if op.body:
        out["requestBody"] = {"content": {c: {"schema": style.ref(op.body)} for c in op.consumes},
                              "required": True}
    schema = _schema(op.response, style)
    responses: dict[str, Any] = {c: {"description": _CODE_WORDS[c], "content": {m: {"schema": schema}
                                                                                 for m in op.produces}}
                                 for c in op.codes}
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    out.update(_extensions(op))
    return out


def paths(group: str, version: str, style: Style) -> dict[str, dict[str, Any]]:
    """The `paths` object of one group-version, rendered for `style` (v2 or v3)."""
    render = render_v3 if style.v3 else render_v2
    out: dict[str, dict[str, Any]] = {}
    for path, op in operations(group, version):
        out.setdefault(path, {})[op.method] = render(op, style)
    return out
