"""The apiserver as an aiohttp application: routes, middleware, and background loops.

Routes are few because resource paths are parsed against the resource table
(harness.apiserver.handlers); discovery and OpenAPI are derived from the same table. State
lives in `app[STATE]`; the etcd connection, one watch cache per kind, watch bookmarks and
etcd compaction are run from `cleanup_ctx`, so SIGTERM shuts everything down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from harness.api import errors, registry, validation
from harness.api.registry import Kind
from harness.apiserver import (
    audit,
    authn,
    authz,
    codec,
    discovery,
    handlers,
    impersonation,
    openapi,
    request_warnings,
    subresources,
    tokenrequest,
)
from harness.apiserver.admission import Chain, PluginContext
from harness.apiserver.allocators import IPRange, PortRange, ServiceAllocations
from harness.apiserver.genericregistry import Store, StoreOptions
from harness.apiserver.kubernetes_service import ApiServerEndpoints
from harness.apiserver.metrics import Metrics
from harness.apiserver.state import STATE, ApiServer, Config
from harness.apiserver.watchcache import WatchCache
from harness.auth.authorizer import check
from harness.auth.user import UserInfo
from harness.storage.backend import Backend, StorageError, Unavailable

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_SYSTEM_USER = UserInfo("system:apiserver", ("system:masters",))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- middleware ----------------------------------------------------------------------------


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who the request is (authn.USER): authenticated on the secure port, the admin on the plain-HTTP one."""
    server = request.app[STATE]
    transport = request.transport
    if transport is not None and transport.get_extra_info("sslcontext") is not None:
        if server.authentication is None:
            raise errors.InternalError("no authentication is configured for the secure port")
        creds = authn.Credentials(request.headers, transport.get_extra_info("peercert"), request.path)
        user = server.authentication.authenticate(creds)
    else:
        user = authn.INSECURE_PORT_USER
    if impersonation.requested(request.headers):
        user = impersonation.impersonate(user, request.headers, server.authorization.authorizer)
    request[authn.USER] = user
    return await handler(request)


@web.middleware
async def authorize_paths(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests for paths that are not resources (/api, /healthz, /metrics, /openapi/v2) are authorized here by
    path and verb; resource requests are authorized by `handlers.handle_resource` once their path is parsed."""
    info = handlers.path_info(request)
    if info is not None:
        request[handlers.AUTHZ_DECISION] = "forbid"
        check(request.app[STATE].authorization.authorizer, request[authn.USER], info)
        request[handlers.AUTHZ_DECISION] = "allow"
    return await handler(request)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a Status; every resource request is counted and timed."""
    server = request.app[STATE]
    start = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except errors.ApiError as err:
        code = err.code
        return codec.error_response(err)
    except StorageError as exc:
        code = 503 if isinstance(exc, Unavailable) else 500
        cls = errors.ServiceUnavailable if code == 503 else errors.InternalError
        return codec.error_response(cls(f"storage error: {exc}"))
    except web.HTTPException as exc:
        code = exc.status
        if exc.status == 413:
            return codec.error_response(errors.RequestEntityTooLarge("the request body is too large"))
        if exc.status == 404:
            return codec.error_response(errors.NotFound("the server could not find the requested resource"))
        if exc.status == 405:
            return codec.error_response(errors.MethodNotAllowed(f"method {request.method} is not allowed"))
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        code = 499
        raise
    except Exception as exc:
        log.exception("internal error serving %s %s", request.method, request.path)
        return codec.error_response(errors.InternalError(f"an error on the server has prevented the request "
                                                         f"from succeeding: {type(exc).__name__}: {exc}"))
    finally:
        info = handlers.request_info(request)
        if info is not None:
            scope = "resource" if info.name else ("namespace" if info.namespace else "cluster")
            verb = info.verb.upper() if info.verb != "deletecollection" else "DELETE"
            verb = {"GET": "GET", "CREATE": "POST", "UPDATE": "PUT"}.get(verb, verb)
            labels = (verb, info.group, info.version, info.resource, info.subresource, scope, "apiserver")
            server.metrics.requests.labels(*labels, str(code)).inc()
            server.metrics.duration.labels(*labels).observe(time.perf_counter() - start)


# -- plain endpoints -----------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    server = request.app[STATE]
    if request.path.startswith("/readyz"):
        not_ready = [k.plural for k, c in server.caches.items() if not c.ready.is_set()]
        if not_ready:
            return web.Response(status=500, text=f"[-]informer-sync failed: {', '.join(not_ready)}\nreadyz check "
                                                 "failed\n")
        try:
            await asyncio.wait_for(server.backend.current_revision(), 2.0)
        except (StorageError, TimeoutError):
            return web.Response(status=500, text="[-]etcd failed: reason withheld\nreadyz check failed\n")
    return web.Response(text="ok")


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def version(request: web.Request) -> web.Response:
    return codec.respond(discovery.version_info())


def _aggregated(request: web.Request, *, legacy: bool) -> web.Response | None:
    """The aggregated discovery document, when the client asks for it first (kubectl does)."""
    if not discovery.wants_aggregated(request.headers.get("Accept", "")):
        return None
    return web.Response(body=codec.dumps(discovery.aggregated_discovery(legacy=legacy)),
                        headers={"Content-Type": discovery.AGGREGATED_MEDIA_TYPE, "Vary": "Accept"})


async def api_root(request: web.Request) -> web.Response:
    return _aggregated(request, legacy=True) or codec.respond(discovery.api_versions(request.host),
                                                              headers={"Vary": "Accept"})


async def apis_root(request: web.Request) -> web.Response:
    return _aggregated(request, legacy=False) or codec.respond(discovery.api_group_list(),
                                                               headers={"Vary": "Accept"})


async def api_group(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    if not any(g == group for g, _ in registry.group_versions()):
        raise errors.NotFound(f"the server could not find the requested resource (group {group})")
    return codec.respond(discovery.api_group(group))


async def resource_list(request: web.Request) -> web.Response:
    group, ver = request.match_info.get("group", ""), request.match_info["version"]
    if (group, ver) not in set(registry.group_versions()):
        raise errors.NotFound(f"the server could not find the requested resource ({group}/{ver})")
    return codec.respond(discovery.api_resource_list(group, ver))


async def openapi_v2(request: web.Request) -> web.Response:
    accept = request.headers.get("Accept", "")
    # kubectl asks for the protobuf form only; it must get 406, not JSON it would misread.
    if accept and "application/json" not in accept and "*/*" not in accept:
        raise errors.NotAcceptable("only application/json is served for /openapi/v2")
    return web.Response(body=openapi.openapi_v2_json(), content_type="application/json")


async def openapi_v3_index(request: web.Request) -> web.Response:
    return codec.respond(openapi.openapi_v3_index())


async def openapi_v3_doc(request: web.Request) -> web.Response:
    group, ver = openapi.parse_v3_path(request.match_info["path"])
    cache = "public, immutable" if request.query.get("hash") else "no-cache"
    return web.Response(body=openapi.openapi_v3_json(group, ver), content_type="application/json",
                        headers={"Cache-Control": cache})


# -- background ----------------------------------------------------------------------------


class ServerObjects:
    """`admission.Objects` over this apiserver's stores and watch caches; writes go as the apiserver itself."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server

    def _kind(self, resource: str, group: str) -> Kind:
        return next(k for k in registry.STORED_KINDS if k.plural == resource and k.group == group)

    async def get(self, resource: str, namespace: str, name: str, group: str = "") -> dict[str, Any] | None:
        """From the watch cache, else from etcd: the cache may lag an object created a moment ago."""
        kind = self._kind(resource, group)
        cached = self.server.caches[kind].objects.get(kind.key(namespace or None, name))
        if cached is not None:
            return cached
        try:
            return await self.server.stores[kind].get(namespace, name)
        except errors.NotFound:
            return None

    async def list(self, resource: str, namespace: str, group: str = "") -> list[dict[str, Any]]:
        kind = self._kind(resource, group)
        prefix = kind.key_prefix(namespace or None)
        return [obj for key, obj in self.server.caches[kind].objects.items() if key.startswith(prefix)]

    async def update_status(self, resource: str, obj: dict[str, Any], group: str = "") -> dict[str, Any]:
        kind = self._kind(resource, group)
        md = obj.get("metadata") or {}
        return await self.server.stores[kind].update(md.get("namespace", ""), md.get("name", ""), obj,
                                                     user=authn.APISERVER_USER, subresource="status")


def _bootstrap_secret(server: ApiServer, name: str) -> dict[str, Any] | None:
    kind = registry.by_path("", "v1", "secrets")
    return server.caches[kind].objects.get(kind.key("kube-system", name))


async def ensure_system_namespaces(server: ApiServer) -> None:
    store = server.stores[registry.by_path("", "v1", "namespaces")]
    for name in SYSTEM_NAMESPACES:
        with contextlib.suppress(errors.AlreadyExists):
            await store.create("", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                               user=_SYSTEM_USER)


async def _bookmarks(server: ApiServer) -> None:
    while True:
        await asyncio.sleep(server.config.bookmark_interval)
        for cache in server.caches.values():
            cache.bookmark()


async def _compactor(server: ApiServer) -> None:
    """Compact etcd to the revision seen one interval ago, as upstream's apiserver does."""
    previous = compacted = 0
    while True:
        await asyncio.sleep(server.config.compaction_interval)
        try:
            current = await server.backend.current_revision()
            if previous > compacted:
                await server.backend.compact(previous)
                compacted = previous
                for cache in server.caches.values():
                    cache.compacted(previous)
            previous = current
        except StorageError as exc:
            log.warning("compaction failed: %s", exc)


def store_options(config: Config, allocations: ServiceAllocations,
                  escalation: authz.EscalationCheck) -> dict[registry.Kind, StoreOptions]:
    """The stores set up beyond their kind: Services hold cluster IPs and node ports, Events expire, roles and
    bindings grant no more than their writer holds."""
    services = StoreOptions(lifecycle=allocations,
                            validation_options=validation.Options(node_port_range=allocations.port_range.bounds()))
    rbac_kinds = (authz.ROLES, authz.CLUSTER_ROLES, authz.ROLE_BINDINGS, authz.CLUSTER_ROLE_BINDINGS)
    return {registry.by_path("", "v1", "services"): services,
            registry.by_path("", "v1", "events"): StoreOptions(ttl=config.event_ttl),
            **{kind: StoreOptions(write_guard=escalation) for kind in rbac_kinds}}


async def _repair(allocations: ServiceAllocations, interval: float) -> None:
    """Upstream's repair loops: keys for Services' values, leaked keys freed."""
    while True:
        try:
            restored, released = await allocations.repair()
            if restored or released:
                log.info("allocation repair: %d restored, %d released", restored, released)
        except StorageError as exc:
            log.warning("allocation repair failed: %s", exc)
        await asyncio.sleep(interval)


def backend_context(make_backend: Callable[[], Awaitable[Backend]]) -> Callable[[web.Application],
                                                                                  AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        server = app[STATE]
        server.backend = await make_backend()
        objects = ServerObjects(server)
        ctx = PluginContext(namespace_lookup=lambda name: objects.get("namespaces", "", name),
                            service_account_lookup=lambda ns, name: objects.get("serviceaccounts", ns, name),
                            objects=objects,
                            configuration=server.config.admission_configuration,
                            metrics=server.metrics,
                            default_not_ready_toleration_seconds=server.config.default_not_ready_toleration_seconds,
                            default_unreachable_toleration_seconds=server.config.default_unreachable_toleration_seconds)
        server.authorization = authz.build(server.config.authorization_mode, server.caches)
        ctx = dataclasses.replace(ctx, authorizer=server.authorization.authorizer)
        server.chain = Chain.build(server.config.admission_plugins, ctx, server.authorization.authorizer)
        allocations = ServiceAllocations(server.backend, IPRange(server.config.service_cluster_ip_range),
                                         PortRange(server.config.service_node_port_range))
        escalation = authz.EscalationCheck(server.authorization, authz.CachePolicy(server.caches))
        options = store_options(server.config, allocations, escalation)
        for kind in registry.STORED_KINDS:
            cache = WatchCache(kind, server.backend)
            server.caches[kind] = cache
            server.stores[kind] = Store(kind, server.backend, cache, server.chain,
                                        options=options.get(kind, StoreOptions()))
        await asyncio.gather(*(c.start() for c in server.caches.values()))
        await ensure_system_namespaces(server)
        if "RBAC" in server.config.authorization_mode:
            written = await authz.reconcile_bootstrap_policy(server.stores, server.caches, _SYSTEM_USER)
            log.info("bootstrap policy: %d roles and bindings written", written)
        endpoints = ApiServerEndpoints(server, allocations.ip_range.first())
        try:
            await endpoints.tick()
        except (errors.ApiError, StorageError) as exc:
            log.error("default/kubernetes: %s", exc)
        tasks = [asyncio.create_task(_bookmarks(server), name="bookmarks"),
                 asyncio.create_task(_compactor(server), name="compactor"),
                 asyncio.create_task(_repair(allocations, server.config.allocation_repair_interval),
                                     name="allocation-repair"),
                 asyncio.create_task(endpoints.run(), name="kubernetes-endpoints")]
        log.info("apiserver ready: %d kinds, etcd %s", len(registry.STORED_KINDS), server.config.etcd_servers)
        yield
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await endpoints.stop()
        for cache in server.caches.values():
            await cache.stop()
        await server.backend.close()

    return run


async def _end_watches(app: web.Application) -> None:
    """On shutdown, end every watch stream so the server need not wait out open watches."""
    for cache in app[STATE].caches.values():
        for watcher in list(cache.watchers):
            watcher.close()


async def _close(auditor: audit.Auditor) -> None:
    auditor.writer.close()


def build_app(config: Config, make_backend: Callable[[], Awaitable[Backend]]) -> web.Application:
    middlewares = [codec.negotiation, request_warnings.collect, observe, authenticate, authorize_paths]
    if config.audit_policy_file and config.audit_log_path:
        auditor = audit.Auditor(audit.load_policy(Path(config.audit_policy_file)),
                                audit.LogWriter(Path(config.audit_log_path), config.audit_log_maxsize,
                                                config.audit_log_maxbackup, config.audit_log_maxage))
        middlewares.insert(4, audit.middleware(auditor, lambda r: r.get(authn.USER), handlers.describe))
        app_cleanup: list[Callable[[web.Application], Awaitable[None]]] = [lambda _app: _close(auditor)]
    else:
        app_cleanup = []
    app = web.Application(middlewares=middlewares, client_max_size=codec.MAX_BODY)
    app.on_cleanup.extend(app_cleanup)
    metrics = Metrics()
    server = ApiServer(config=config, backend=None, chain=None, metrics=metrics)  # type: ignore[arg-type]
    if config.secure_port:
        server.authentication = authn.build(client_ca_file=config.client_ca_file,
                                            token_auth_file=config.token_auth_file, registry=metrics.registry,
                                            service_accounts=tokenrequest.checker_from(config, server.caches),
                                            bootstrap_tokens=(lambda name: _bootstrap_secret(server, name))
                                            if config.enable_bootstrap_token_auth else None)
    server.token_issuer = tokenrequest.issuer_from(config)
    app[STATE] = server
    app.cleanup_ctx.append(backend_context(make_backend))
    app.cleanup_ctx.append(subresources.kubelet_client)
    app.on_shutdown.append(_end_watches)
    r = app.router
    for path in ("/healthz", "/livez", "/readyz", "/healthz/{check}", "/livez/{check}", "/readyz/{check}"):
        r.add_get(path, health)
    r.add_get("/metrics", metrics_endpoint)
    r.add_get("/version", version)
    r.add_get("/version/", version)
    r.add_get("/api", api_root)
    r.add_get("/apis", apis_root)
    r.add_get("/openapi/v2", openapi_v2)
    r.add_get("/openapi/v3", openapi_v3_index)
    r.add_get("/openapi/v3/{path:.+}", openapi_v3_doc)
    r.add_get("/api/{version}", resource_list)
    r.add_get("/apis/{group}", api_group)
    r.add_get("/apis/{group}/{version}", resource_list)
    r.add_route("*", "/api/{version}/{tail:.+}", handlers.handle_resource)
    r.add_route("*", "/apis/{group}/{version}/{tail:.+}", handlers.handle_resource)
    return app
