"""The OpenAPI documents: `/openapi/v2` (Swagger 2.0) and `/openapi/v3[/<gv>]` (OpenAPI 3.0).

Both are assembled from `openapi_schemas` (definitions walked from the client's models) and
`openapi_paths` (operations per route), built once per process on first use and cached.
The v3 index names each group-version's document with a hash of its content, so clients
(kubectl caches them on disk) refetch only when a document changes.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson

from harness.api import errors
from harness.api.registry import group_versions, kinds_in
from harness.apiserver.discovery import GIT_VERSION
from harness.apiserver.openapi_paths import paths
from harness.apiserver.openapi_schemas import V2, V3, all_definitions, closure, refs_in

_INFO = {"title": "Kubernetes", "version": GIT_VERSION}
_BEARER = {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                              "description": "Bearer Token authentication"}}


def _gv_key(group: str, version: str) -> str:
    """The index key of a group-version: `api/v1` or `apis/<group>/<version>`."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _canonical(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


# -- v2 -------------------------------------------------------------------------------------


@functools.cache
def openapi_v2() -> dict[str, Any]:
    """The Swagger 2.0 document of the whole API (shared: do not mutate)."""
    all_paths: dict[str, Any] = {}
    for group, version in group_versions():
        all_paths.update(paths(group, version, V2))
    return {
        "swagger": "2.0",
        "info": dict(_INFO),
        "paths": dict(sorted(all_paths.items())),
        "definitions": all_definitions(V2),
        "securityDefinitions": _BEARER,
        "security": [{"BearerToken": []}],
    }


@functools.cache
def openapi_v2_json() -> bytes:
    """`openapi_v2()` encoded once, for the route to send as is."""
    return _canonical(openapi_v2())


# -- v3 -------------------------------------------------------------------------------------


@functools.cache
def _v3(group: str, version: str) -> dict[str, Any]:
    if not kinds_in(group, version):
        gv = f"{group}/{version}" if group else version
        raise errors.NotFound(f"the server could not find the requested resource (openapi/v3 {gv})")
    gv_paths = dict(sorted(paths(group, version, V3).items()))
    roots = {ref.removeprefix(V3.prefix) for ref in refs_in(gv_paths)}
    return {
        "openapi": "3.0.0",
        "info": dict(_INFO),
        "paths": gv_paths,
        "components": {"schemas": closure(roots, V3), "securitySchemes": _BEARER},
        "security": [{"BearerToken": []}],
    }


def openapi_v3(group: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one group-version ("" for core); NotFound if not served.

    Shared between callers: do not mutate.
    """
    return _v3(group, version)


@functools.cache
def openapi_v3_json(group: str, version: str) -> bytes:
    """`openapi_v3(group, version)` encoded once; its bytes are what the index hash covers."""
    return _canonical(openapi_v3(group, version))


def openapi_v3_hash(group: str, version: str) -> str:
    """Stable hash of a group-version document (upper-case SHA-512 hex, as upstream)."""
    return hashlib.sha512(openapi_v3_json(group, version)).hexdigest().upper()


@functools.cache
def openapi_v3_index() -> dict[str, Any]:
    """The body of `/openapi/v3`: each group-version's document URL, with its hash."""
    index = {}
    for group, version in group_versions():
        key = _gv_key(group, version)
        index[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={openapi_v3_hash(group, version)}"}
    return {"paths": index}


def parse_v3_path(rest: str) -> tuple[str, str]:
    """`api/v1` -> ("", "v1"), `apis/apps/v1` -> ("apps", "v1"); NotFound otherwise."""
    parts = rest.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        return "", parts[1]
    if len(parts) == 3 and parts[0] == "apis":
        return parts[1], parts[2]
    raise errors.NotFound(f"the server could not find the requested resource (openapi/v3/{rest})")
