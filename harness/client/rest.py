"""An async REST client for the Kubernetes API, as every harness component uses it.

It reads a kubeconfig like real components do, speaks JSON over aiohttp, turns error
responses (`kind: Status`) into our own errors (harness.api.errors), and fails over between
the apiserver URLs it was given: a request that cannot reach one server is retried on the
next, and the client keeps using whichever answered. Paths are built from the resource
table, so callers name a `Kind`, not a URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from harness.api import errors
from harness.api.registry import Kind
from harness.client import kubeconfig

log = logging.getLogger(__name__)

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED MODIFIED DELETED BOOKMARK (ERROR is raised, not returned)
    obj: dict[str, Any]


class Client:
    """One connection pool to the apiservers of a cluster."""

    def __init__(self, config: kubeconfig.KubeConfig, *, timeout: float = 30.0,
                 user_agent: str = "harness") -> None:
        if not config.servers:
            raise ValueError("a client needs at least one apiserver URL")
        self.config = config
        self.servers = [s.rstrip("/") for s in config.servers]
        self.timeout = timeout
        self.user_agent = user_agent
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | Path, **kw: Any) -> Client:
        return cls(kubeconfig.load(Path(path)), **kw)

    @classmethod
    def for_url(cls, *urls: str, **kw: Any) -> Client:
        return cls(kubeconfig.KubeConfig(servers=list(urls)), **kw)

    @property
    def server(self) -> str:
        """The apiserver URL requests go to now."""
        return self.servers[self._current]

    def _ssl(self) -> ssl.SSLContext | None:
        return kubeconfig.ssl_context(self.config)

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    def set_token(self, token: str) -> None:
        """Use a new bearer token from the next request on (a renewed service-account token)."""
        self.config = dataclasses.replace(self.config, token=token)
        if self._session is not None and not self._session.closed:
            self._session.headers["Authorization"] = f"Bearer {token}"

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl() or False, limit=100)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers(),
                                                  json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- raw requests --------------------------------------------------------------------

    async def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json", request_timeout: float | None = None) -> Any:
        """One API call, failing over between servers; returns the decoded JSON body."""
        data = None if body is None else orjson.dumps(body)
        session = await self.session()
        headers = {"Content-Type": content_type} if data is not None else None
        limit = aiohttp.ClientTimeout(total=request_timeout or self.timeout)
        last: Exception | None = None
        for attempt in range(len(self.servers)):
            url = self.server + path
            try:
                async with session.request(method, url, data=data, params=params, headers=headers,
                                           timeout=limit) as resp:
                    raw = await resp.read()
                    return _decode(resp.status, raw)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                last = exc
                self._fail_over(exc, attempt)
        raise errors.ServiceUnavailable(f"no apiserver answered ({', '.join(self.servers)}): {last}")

    def _fail_over(self, exc: Exception, attempt: int) -> None:
        if len(self.servers) > 1:
            nxt = (self._current + 1) % len(self.servers)
            log.warning("apiserver %s unreachable (%s); trying %s", self.server, exc, self.servers[nxt])
            self._current = nxt

    # -- verbs ---------------------------------------------------------------------------

    @staticmethod
    def path(kind: Kind, namespace: str = "", name: str = "", subresource: str = "") -> str:
        path = kind.base_path(namespace if kind.namespaced else None)
        if name:
            path += f"/{name}"
            if subresource:
                path += f"/{subresource}"
        return path

    async def get(self, kind: Kind, name: str, namespace: str = "", *, subresource: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", self.path(kind, namespace, name, subresource))
        return result

    async def list(self, kind: Kind, namespace: str = "", *, label_selector: str = "", field_selector: str = "",
                   limit: int = 0, continue_token: str = "", resource_version: str = "") -> dict[str, Any]:
        params = _params(labelSelector=label_selector, fieldSelector=field_selector,
                         limit=str(limit) if limit else "", resourceVersion=resource_version,
                         **{"continue": continue_token})
        result: dict[str, Any] = await self.request("GET", self.path(kind, namespace), params=params)
        return result

    async def list_all(self, kind: Kind, namespace: str = "", *, label_selector: str = "",
                       field_selector: str = "", page: int = 500) -> dict[str, Any]:
        """Every object, read page by page at one revision (the List of all items)."""
        first = await self.list(kind, namespace, label_selector=label_selector, field_selector=field_selector,
                                limit=page)
        items = list(first["items"])
        token = first["metadata"].get("continue", "")
        while token:
            nxt = await self.list(kind, namespace, label_selector=label_selector,
                                  field_selector=field_selector, limit=page, continue_token=token)
            items += nxt["items"]
            token = nxt["metadata"].get("continue", "")
        first["items"] = items
        first["metadata"].pop("continue", None)
        return first

    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str = "", *,
                     dry_run: bool = False) -> dict[str, Any]:
        ns = namespace or (obj.get("metadata") or {}).get("namespace", "")
        params = {"dryRun": "All"} if dry_run else None
        result: dict[str, Any] = await self.request("POST", self.path(kind, ns), body=obj, params=params)
        return result

    async def update(self, kind: Kind, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        md = obj.get("metadata") or {}
        path = self.path(kind, md.get("namespace", ""), md["name"], subresource)
        result: dict[str, Any] = await self.request("PUT", path, body=obj)
        return result

    async def update_status(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.update(kind, obj, subresource="status")

    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str = "", *, patch_type: str = "merge",
                    subresource: str = "") -> dict[str, Any]:
        try:
            content_type = PATCH_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"patch_type must be one of {sorted(PATCH_TYPES)}, not {patch_type!r}") from None
        result: dict[str, Any] = await self.request("PATCH", self.path(kind, namespace, name, subresource),
                                                    body=patch, content_type=content_type)
        return result

    async def delete(self, kind: Kind, name: str, namespace: str = "", *, grace_period: int | None = None,
                     propagation_policy: str = "", preconditions: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if preconditions:
            body["preconditions"] = preconditions
        result: dict[str, Any] = await self.request("DELETE", self.path(kind, namespace, name), body=body)
        return result

    async def watch(self, kind: Kind, namespace: str = "", *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "", timeout_seconds: int = 0,
                    allow_bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        """Events of a watch, until the server ends it. An ERROR event is raised as its ApiError (e.g. Gone)."""
        params = _params(watch="1", resourceVersion=resource_version, labelSelector=label_selector,
                         fieldSelector=field_selector, timeoutSeconds=str(timeout_seconds) if timeout_seconds else "",
                         allowWatchBookmarks="true" if allow_bookmarks else "")
        session = await self.session()
        try:
            resp = await session.get(self.server + self.path(kind, namespace), params=params,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout))
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            self._fail_over(exc, 0)
            raise errors.ServiceUnavailable(f"watch of {kind.plural} could not connect: {exc}") from None
        async with resp:
            if resp.status != 200:
                _decode(resp.status, await resp.read())
            try:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    if event.get("type") == "ERROR":
                        raise errors.from_status(event.get("object") or {})
                    yield WatchEvent(event["type"], event["object"])
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                raise errors.ServiceUnavailable(f"watch of {kind.plural} broke: {exc}") from None


def _params(**values: str) -> dict[str, str]:
    return {k: v for k, v in values.items() if v}


def _decode(status: int, raw: bytes) -> Any:
    try:
        doc = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        doc = None
    if 200 <= status < 300:
        return doc
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        raise errors.from_status(doc, status)
    text = raw[:200].decode(errors="replace")
    raise errors.from_status({"code": status, "message": f"HTTP {status}: {text}"}, status)


async def wait_ready(client: Client, *, within: float = 30.0) -> None:
    """Wait until an apiserver answers /readyz (components start before the apiserver may)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    session = await client.session()
    while True:
        for url in client.servers:
            try:
                async with session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
        if loop.time() > deadline:
            raise errors.ServiceUnavailable(f"no apiserver ready within {within:.0f}s: {client.servers}")
        await asyncio.sleep(0.5)


async def wait_until_ready(client: Client, *, report_every: float = 30.0) -> None:
    """Wait as long as it takes for an apiserver, logging every `report_every` seconds (components start first)."""
    while True:
        try:
            await wait_ready(client, within=report_every)
            return
        except errors.ServiceUnavailable as err:
            log.warning("waiting for the apiserver: %s", err)
