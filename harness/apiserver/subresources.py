"""Subresources with semantics of their own: scale, binding, eviction, log.

(`status` and `namespaces/finalize` are the object seen through a narrower window and are
handled by the generic verbs with `subresource` set.) Each subresource is one entry of
`SUBRESOURCES`: a function per verb it supports.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from harness.api import conditions, errors, meta, patch, selectors
from harness.api.nodes import address_of
from harness.api.pods import is_terminal, phase_of
from harness.apiserver import codec, tokenrequest
from harness.apiserver.genericregistry import DeleteOptions, Store
from harness.apiserver.state import STATE, ApiServer
from harness.auth.user import UserInfo
from harness.util import certreload

Handler = Callable[[web.Request, ApiServer, Store, str, str, UserInfo], Awaitable[web.StreamResponse]]

SCALE_KIND = ("autoscaling/v1", "Scale")


# -- scale ---------------------------------------------------------------------------------


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale view of a Deployment, ReplicaSet or ReplicationController."""
    md = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    sel = spec.get("selector") or {}
    if obj.get("kind") == "ReplicationController":
        selector = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    else:
        selector = str(selectors.label_selector_from_spec(sel))
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in md},
        "spec": {"replicas": int(spec.get("replicas", 0))},
        "status": {"replicas": int(status.get("replicas", 0)), "selector": selector},
    }


def _replicas_from(scale: Any) -> int:
    if not isinstance(scale, dict):
        raise errors.BadRequest("the body must be an autoscaling/v1 Scale object")
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid("Scale", meta.name_of(scale), [errors.Cause("FieldValueInvalid",
                      f"Invalid value: {replicas!r}: must be greater than or equal to 0", "spec.replicas")],
                      group="autoscaling")
    return replicas


async def _scale_get(request: web.Request, server: ApiServer, store: Store, ns: str, name: str,
                     user: UserInfo) -> web.StreamResponse:
    return codec.respond(scale_of(await store.get(ns, name)))


async def _scale_write(request: web.Request, server: ApiServer, store: Store, ns: str, name: str,
                       user: UserInfo) -> web.StreamResponse:
    body = await codec.read_body(request)
    content_type = request.headers.get("Content-Type", "")
    is_patch = request.method == "PATCH"
    replicas, precondition = 0, ""
    if not is_patch:
        sent = codec.decode_object(body, content_type, store.kind, expect_kind="Scale",
                                   expect_api_version="autoscaling/v1")
        replicas = _replicas_from(sent)
        precondition = meta.resource_version_of(sent)

    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        wanted = replicas
        if is_patch:
            scaled = patch.apply_patch(content_type, scale_of(obj), body, store.kind)
            wanted = _replicas_from(scaled)
            rv = meta.resource_version_of(scaled)
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise store.conflict(name)
        obj.setdefault("spec", {})["replicas"] = wanted
        return obj

    updated = await store.guaranteed_update(ns, name, mutate, user=user,
                                            precondition_rv="" if is_patch else precondition)
    return codec.respond(scale_of(updated))


# -- binding -------------------------------------------------------------------------------


async def _bind(request: web.Request, server: ApiServer, store: Store, ns: str, name: str,
                user: UserInfo) -> web.StreamResponse:
    body = await codec.read_body(request)
    binding = codec.decode_document(body, request.headers.get("Content-Type", ""), what="Binding")
    if not isinstance(binding, dict) or binding.get("kind", "Binding") != "Binding":
        raise errors.BadRequest("the body must be a v1 Binding object")
    target = binding.get("target") or {}
    node = target.get("name")
    if not node:
        raise errors.invalid("Binding", name, [errors.Cause("FieldValueRequired", "Required value",
                                                             "target.name")])
    if target.get("kind", "Node") not in ("Node", ""):
        raise errors.invalid("Binding", name, [errors.Cause("FieldValueNotSupported",
                             f'Unsupported value: "{target.get("kind")}": supported values: "Node"',
                             "target.kind")])
    annotations = (binding.get("metadata") or {}).get("annotations") or {}
    uid = (binding.get("metadata") or {}).get("uid")

    def mutate(pod: dict[str, Any]) -> dict[str, Any]:
        md = pod["metadata"]
        if uid and uid != md.get("uid"):
            raise store.conflict(name, f"Precondition failed: UID in precondition: {uid}, UID in object "
                                       f"meta: {md.get('uid')}")
        if meta.is_terminating(pod):
            raise store.conflict(name, "pod is being deleted, cannot be assigned to a host")
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise store.conflict(name, f'pod {name} is already assigned to node "{current}"')
        pod.setdefault("spec", {})["nodeName"] = node
        if annotations:
            md.setdefault("annotations", {}).update(annotations)
        conditions.replace(pod.setdefault("status", {}), {"type": "PodScheduled", "status": "True",
                                                          "lastProbeTime": None,
                                                          "lastTransitionTime": meta.now_rfc3339()})
        return pod

    await store.guaranteed_update(ns, name, mutate, user=user, subresource="binding")
    return codec.respond(_success(201), status=201)


def _success(code: int = 200) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code}


# -- eviction ------------------------------------------------------------------------------


async def _evict(request: web.Request, server: ApiServer, store: Store, ns: str, name: str,
                 user: UserInfo) -> web.StreamResponse:
    body = await codec.read_body(request)
    eviction = codec.decode_document(body, request.headers.get("Content-Type", ""), what="Eviction") \
        if body.strip() else {}
    if not isinstance(eviction, dict):
        raise errors.BadRequest("the body must be a policy/v1 Eviction object")
    body_name = (eviction.get("metadata") or {}).get("name")
    if body_name and body_name != name:
        raise errors.BadRequest(f"name in URL does not match name in Eviction object ({body_name} != {name})")
    opts = DeleteOptions.from_body(eviction.get("deleteOptions"), {})
    await store.delete(ns, name, opts, user=user)
    return codec.respond(_success(201), status=201)


# -- log -----------------------------------------------------------------------------------


LOG_PARAMS = ("follow", "previous", "timestamps", "tailLines", "limitBytes", "sinceSeconds", "sinceTime",
              "insecureSkipTLSVerifyBackend")


def _log_container(pod: dict[str, Any], requested: str) -> str:
    """The container whose log is asked for: the one named, or the only one (upstream's rules and messages)."""
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    containers = [c["name"] for c in spec.get("containers") or []]
    init = [c["name"] for c in spec.get("initContainers") or []]
    if not requested:
        if len(containers) == 1:
            return containers[0]
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise errors.BadRequest(message)
    if requested not in containers + init:
        raise errors.BadRequest(f"container {requested} is not valid for pod {name}")
    return requested


def _log_query(request: web.Request) -> dict[str, str]:
    query = {k: v for k, v in request.query.items() if k in LOG_PARAMS}
    causes = []
    for field_name in ("tailLines", "limitBytes", "sinceSeconds"):
        if field_name in query:
            try:
                value = int(query[field_name])
            except ValueError:
                value = -1
            least = 1 if field_name != "tailLines" else 0
            if value < least:
                causes.append(errors.Cause("FieldValueInvalid", f"Invalid value: {query[field_name]!r}: must be "
                                           f"greater than or equal to {least}", field_name))
    if "sinceSeconds" in query and "sinceTime" in query:
        causes.append(errors.Cause("FieldValueForbidden", "Forbidden: at most one of `sinceTime` or `sinceSeconds` "
                                   "may be specified", "sinceSeconds"))
    if causes:
        raise errors.invalid("PodLogOptions", "", causes)
    return query


async def _log(request: web.Request, server: ApiServer, store: Store, ns: str, name: str,
               user: UserInfo) -> web.StreamResponse:
    """GET pods/log: find the pod's node and stream the kubelet's /containerLogs back (as upstream's proxy does)."""
    pod = await store.get(ns, name)
    container = _log_container(pod, request.query.get("container", ""))
    query = _log_query(request)
    url = f"{await _kubelet_url(server, pod, name)}/containerLogs/{ns}/{name}/{container}"
    session = await kubelet_session(request.app)
    try:
        # kubelet serving certificates are not verified yet (upstream's default without --kubelet-certificate-authority)
        upstream = await session.get(url, params=query)
    except (aiohttp.ClientError, OSError) as exc:
        raise errors.InternalError(f'Get "{url}": {exc}') from None
    try:
        if upstream.status != 200:
            body = await upstream.read()
            return web.Response(status=upstream.status, body=body,
                                content_type=upstream.content_type or "application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/plain", "Cache-Control": "no-cache"})
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        upstream.release()


EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


async def _exec(request: web.Request, server: ApiServer, store: Store, ns: str, name: str,
                user: UserInfo) -> web.StreamResponse:
    """pods/exec: a WebSocket from the client, spliced onto one to the kubelet's /exec (upstream's proxy)."""
    pod = await store.get(ns, name)
    container = _log_container(pod, request.query.get("container", ""))
    if not request.query.getall("command", []):
        raise errors.BadRequest("you must specify at least 1 command")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise errors.BadRequest("pods/exec is served over WebSocket (v5.channel.k8s.io, as kubectl 1.30 and later "
                                "speak it); SPDY is not supported")
    if is_terminal(pod):
        raise errors.BadRequest(f"cannot exec into a container in a completed pod; current phase is {phase_of(pod)}")
    base = await _kubelet_url(server, pod, name)
    session = await kubelet_session(request.app)
    try:
        upstream = await session.ws_connect(f"{base}/exec/{ns}/{name}/{container}", params=request.query,
                                            protocols=EXEC_PROTOCOLS)
    except (aiohttp.ClientError, OSError) as exc:
        raise errors.InternalError(f"error dialing the kubelet for exec: {exc}") from None
    ws = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else EXEC_PROTOCOLS)
    await ws.prepare(request)

    async def down() -> None:
        async for msg in upstream:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        await ws.close()

    async def up() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)

    to_client = asyncio.create_task(down())
    to_kubelet = asyncio.create_task(up())
    try:
        await to_client
    finally:
        to_kubelet.cancel()
        await upstream.close()
    return ws


async def _kubelet_url(server: ApiServer, pod: dict[str, Any], name: str) -> str:
    """http(s)://<InternalIP>:<kubelet port> of the pod's node."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise errors.BadRequest(f'pod {name} does not have a host assigned')
    nodes = next(s for k, s in server.stores.items() if k.plural == "nodes")
    try:
        node = await nodes.get("", node_name)
    except errors.NotFound:
        raise errors.NotFound(f'nodes "{node_name}" not found', kind="nodes", name=node_name) from None
    status = node.get("status") or {}
    ip = address_of(node, "InternalIP")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 10250
    if not ip:
        raise errors.ServiceUnavailable(f'node "{node_name}" has no InternalIP to reach its kubelet at')
    return f"{server.config.kubelet_scheme}://{ip}:{port}"


KUBELET_SESSION = web.AppKey("kubelet_session", aiohttp.ClientSession)


async def kubelet_session(app: web.Application) -> aiohttp.ClientSession:
    session = app.get(KUBELET_SESSION)
    if session is None:
        raise errors.ServiceUnavailable("the apiserver is shutting down")
    return session


def kubelet_tls(config: Any) -> ssl.SSLContext | bool:
    """The TLS of requests to kubelets: the apiserver's client certificate, and the kubelets' CA when given."""
    if config.kubelet_scheme != "https":
        return True
    if config.kubelet_certificate_authority:
        context = ssl.create_default_context(cafile=config.kubelet_certificate_authority)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # upstream without --kubelet-certificate-authority
    if config.kubelet_client_certificate:
        context.load_cert_chain(config.kubelet_client_certificate, config.kubelet_client_key or None)
        certreload.follow(context, config.kubelet_client_certificate, config.kubelet_client_key)
    return context


async def kubelet_client(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: one client session for talking to kubelets, for the app's lifetime."""
    connector = aiohttp.TCPConnector(ssl=kubelet_tls(app[STATE].config))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                                     connector=connector) as session:
        app[KUBELET_SESSION] = session
        yield


SUBRESOURCES: dict[tuple[str, str], Handler] = {
    ("scale", "get"): _scale_get,
    ("scale", "update"): _scale_write,
    ("scale", "patch"): _scale_write,
    ("binding", "create"): _bind,
    ("eviction", "create"): _evict,
    ("log", "get"): _log,
    ("exec", "get"): _exec,
    ("exec", "create"): _exec,
    ("token", "create"): tokenrequest.create_token,
}


async def handle(request: web.Request, server: ApiServer, store: Store, namespace: str, name: str,
                 subresource: str, verb: str, user: UserInfo) -> web.StreamResponse:
    handler = SUBRESOURCES.get((subresource, verb))
    if handler is None:
        raise errors.MethodNotAllowed(f"{verb} is not supported on {store.kind.plural}/{subresource}")
    return await handler(request, server, store, namespace, name, user)

