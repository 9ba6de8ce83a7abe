"""Request bodies in, responses out: JSON or YAML, and the `as=Table` view kubectl asks for.

Decoding checks what Kubernetes checks before an object reaches the store: that the body
is one JSON (or YAML) object and that its apiVersion and kind are the ones the URL serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from harness.api import errors
from harness.api.registry import Kind

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"

#: Request bodies larger than this are refused before they are read (as upstream's 3 MiB).
MAX_BODY = 3 * 1024 * 1024


@dataclass(frozen=True)
class Output:
    """How the client wants objects returned."""

    media_type: str = JSON  # JSON or YAML
    view: str = ""  # "", "Table" or "PartialObjectMetadata"
    include_object: str = "Metadata"  # for Table: None, Metadata or Object


def _params(part: str) -> tuple[str, dict[str, str]]:
    fields = [f.strip() for f in part.split(";")]
    params = {}
    for f in fields[1:]:
        key, _, value = f.partition("=")
        params[key.strip()] = value.strip()
    return fields[0].lower(), params


def negotiate(accept: str, query: Any = None) -> Output:
    """Pick the first acceptable representation from an Accept header (406 if none)."""
    include = (query or {}).get("includeObject") or "Metadata"
    if include not in ("None", "Metadata", "Object"):
        raise errors.BadRequest(f'includeObject: Unsupported value: "{include}"')
    if not accept.strip():
        return Output()
    for part in accept.split(","):
        media, params = _params(part)
        if media in ("application/json", "*/*", "application/*", "application/json-seq"):
            view = params.get("as", "")
            if view and params.get("g") != "meta.k8s.io":
                continue
            if view in ("Table",):
                return Output(JSON, "Table", include)
            if view in ("PartialObjectMetadata", "PartialObjectMetadataList"):
                return Output(JSON, "PartialObjectMetadata")
            if not view:
                return Output(JSON)
        elif media in (YAML, "application/x-yaml", "text/yaml"):
            return Output(YAML)
    raise errors.NotAcceptable(f"only the following media types are accepted: {JSON}, {YAML}")


def dumps(obj: Any, media_type: str = JSON) -> bytes:
    if media_type == YAML:
        return yaml.safe_dump(obj, sort_keys=False).encode()
    return orjson.dumps(obj)


def respond(obj: Any, *, status: int = 200, media_type: str = JSON,
            headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(obj, media_type), status=status, content_type=media_type, headers=headers)


def error_response(err: errors.ApiError) -> web.Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
    return respond(err.to_status(), status=err.code, headers=headers)


async def read_body(request: web.Request) -> bytes:
    """The raw body, refused with 413 before reading when it is over MAX_BODY."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise errors.RequestEntityTooLarge(f"the request body is too large: {length} bytes, the limit is "
                                           f"{MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.RequestEntityTooLarge(f"the request body is too large: over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_document(body: bytes, content_type: str, *, what: str) -> Any:
    """Parse a JSON or YAML body (400 with the parser's complaint if it is neither)."""
    if not body.strip():
        raise errors.BadRequest(f"the body of the request was empty; expected {what}")
    media = content_type.split(";")[0].strip().lower()
    if media in (YAML, "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise errors.BadRequest(f"the object provided is not valid YAML: {exc}") from None
    if media == PROTOBUF:
        # kubectl's generator commands (create namespace/configmap/deployment, run, expose) send
        # protobuf bodies; manifests sent with apply/create -f are JSON.
        raise errors.UnsupportedMediaType(
            f"harness accepts {JSON} and {YAML} request bodies, not protobuf: kubectl sends protobuf for "
            f"generator commands such as `kubectl create namespace` or `kubectl run`; write the object as a "
            f"manifest and use `kubectl apply -f FILE` (or `kubectl create -f FILE`) instead")
    if media not in ("", JSON, "*/*"):
        raise errors.UnsupportedMediaType(f'the body of the request was in an unknown format - accepted media '
                                          f'types include: {JSON}, {YAML}; got "{media}"')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {what}): couldn't get "
                                f"version/kind; json parse error: {exc}") from None


def decode_object(body: bytes, content_type: str, kind: Kind, *, expect_kind: str = "",
                  expect_api_version: str = "") -> dict[str, Any]:
    """A request body as an object of the kind the URL serves (400 if it is anything else)."""
    want_kind = expect_kind or kind.kind
    want_version = expect_api_version or kind.api_version
    obj = decode_document(body, content_type, what=want_kind)
    if not isinstance(obj, dict):
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {want_kind}): "
                                f"expected a JSON object, got {type(obj).__name__}")
    api_version, obj_kind = obj.get("apiVersion"), obj.get("kind")
    if api_version is None and obj_kind is None:
        obj["apiVersion"], obj["kind"] = want_version, want_kind
    elif api_version != want_version:
        raise errors.BadRequest(f"the API version in the data ({api_version}) does not match the expected API "
                                f"version ({want_version})")
    elif obj_kind != want_kind:
        raise errors.BadRequest(f"the kind in the data ({obj_kind}) does not match the expected kind "
                                f"({want_kind})")
    md = obj.get("metadata")
    if md is not None and not isinstance(md, dict):
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {want_kind}): metadata "
                                "must be an object")
    return obj


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def partial_metadata_list(lst: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": lst["metadata"],
            "items": [partial_metadata(o) for o in lst["items"]]}
