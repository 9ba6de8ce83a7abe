"""Request bodies in, responses out: JSON, YAML or protobuf, and the `as=Table` view kubectl asks for.

Decoding checks what Kubernetes checks before an object reaches the store: that the body
is one JSON (or YAML, or protobuf) object and that its apiVersion and kind are the ones the URL serves.

Protobuf (`application/vnd.kubernetes.protobuf`, what kubectl's typed clients send) is read for every kind
`harness.api.protobuf` has a message for, and written when the client lists it first in Accept and the
response is such an object, a list of one, or a Status; anything else (Tables, discovery, watch streams) stays
JSON. Responses built without a negotiated media type (`respond` without `media_type`, `error_response`) follow
the request's Accept as well: the `negotiation` middleware remembers it for the request, and `read_body` does
for the requests it reads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from harness.api import errors, protobuf
from harness.api.registry import Kind

log = logging.getLogger(__name__)

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"

#: Request bodies larger than this are refused before they are read (as upstream's 3 MiB).
MAX_BODY = 3 * 1024 * 1024


@dataclass(frozen=True)
class Output:
    """How the client wants objects returned."""

    media_type: str = JSON  # JSON, YAML or PROTOBUF
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
        if media in ("application/json", "*/*", "application/*", "application/json-seq", PROTOBUF):
            view = params.get("as", "")
            if view and params.get("g") != "meta.k8s.io":
                continue
            # Views (Table, PartialObjectMetadata) are served as JSON even when asked for as protobuf.
            if view in ("Table",):
                return Output(JSON, "Table", include)
            if view in ("PartialObjectMetadata", "PartialObjectMetadataList"):
                return Output(JSON, "PartialObjectMetadata")
            if not view:
                return Output(PROTOBUF if media == PROTOBUF else JSON)
        elif media in (YAML, "application/x-yaml", "text/yaml"):
            return Output(YAML)
    raise errors.NotAcceptable(f"only the following media types are accepted: {JSON}, {YAML}, {PROTOBUF}")


#: The Accept header of the request being served (None: not known), for responses built without a negotiated
#: media type. Each aiohttp request runs in its own task, so this never leaks from one request to the next.
_ACCEPT: ContextVar[str | None] = ContextVar("harness_codec_accept", default=None)


def _prefers_protobuf(accept: str | None) -> bool:
    """Whether the first media type the Accept header lists (the one we would serve) is protobuf, as a whole
    object (a view such as `as=Table` is served as JSON)."""
    if not accept:
        return False
    first = accept.split(",", 1)[0]
    media, params = _params(first)
    return media == PROTOBUF and not params.get("as")


@web.middleware
async def negotiation(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Remember the request's Accept header for `respond` and `error_response` (outermost middleware)."""
    token = _ACCEPT.set(request.headers.get("Accept", ""))
    try:
        return await handler(request)
    finally:
        _ACCEPT.reset(token)


def dumps(obj: Any, media_type: str = JSON) -> bytes:
    if media_type == YAML:
        return yaml.safe_dump(obj, sort_keys=False).encode()
    return orjson.dumps(obj)


def respond(obj: Any, *, status: int = 200, media_type: str | None = None,
            headers: dict[str, str] | None = None) -> web.Response:
    """`obj` in `media_type`; without one, as protobuf when the request asked for protobuf first (and obj has a
    message), else JSON. What protobuf cannot carry is sent as JSON."""
    if media_type is None:
        media_type = PROTOBUF if _prefers_protobuf(_ACCEPT.get()) else JSON
    if media_type == PROTOBUF:
        body = _protobuf_body(obj)
        if body is not None:
            return web.Response(body=body, status=status, content_type=PROTOBUF, headers=headers)
        media_type = JSON
    return web.Response(body=dumps(obj, media_type), status=status, content_type=media_type, headers=headers)


def _protobuf_body(obj: Any) -> bytes | None:
    if not protobuf.can_encode(obj):
        return None
    try:
        return protobuf.encode(obj)
    except protobuf.ProtobufError as exc:
        log.warning("answering in JSON: %s %s cannot be encoded as protobuf: %s", obj.get("apiVersion"),
                    obj.get("kind"), exc)
        return None


def error_response(err: errors.ApiError) -> web.Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
    return respond(err.to_status(), status=err.code, headers=headers)


#: The body once read (the audit log reads it before the handler does), or why it could not be.
_BODY = web.RequestKey("harness_body", bytes)
_BODY_REFUSED = web.RequestKey("harness_body_refused", errors.ApiError)


async def read_body(request: web.Request) -> bytes:
    """The raw body, refused with 413 before reading when it is over MAX_BODY. (Remembers the request's Accept
    for the response, see `respond`.)"""
    _ACCEPT.set(request.headers.get("Accept", ""))
    cached = request.get(_BODY)
    if cached is not None:
        return cached
    refused = request.get(_BODY_REFUSED)
    if refused is not None:  # a second reader must not get what is left of a stream read halfway
        raise refused
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
            error = request[_BODY_REFUSED] = errors.RequestEntityTooLarge(
                f"the request body is too large: over {MAX_BODY} bytes")
            raise error
        chunks.append(chunk)
    body = request[_BODY] = b"".join(chunks)
    return body


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def decode_document(body: bytes, content_type: str, *, what: str) -> Any:
    """Parse a JSON, YAML or protobuf body (400 with the parser's complaint if it is none of them). A protobuf
    body is of the type its envelope names, or of the kind `what` when it names none."""
    media = _media_type(content_type)
    if media == PROTOBUF:
        if not body:
            raise errors.BadRequest(f"the body of the request was empty; expected {what}")
        known = protobuf.kinds.by_kind_name().get(what)
        return protobuf.decode(body, api_version=known[0] if known else "", kind=what)
    if not body.strip():
        raise errors.BadRequest(f"the body of the request was empty; expected {what}")
    if media in (YAML, "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise errors.BadRequest(f"the object provided is not valid YAML: {exc}") from None
    if media not in ("", JSON, "*/*"):
        raise errors.UnsupportedMediaType(f'the body of the request was in an unknown format - accepted media '
                                          f'types include: {JSON}, {YAML}, {PROTOBUF}; got "{media}"')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {what}): couldn't get "
                                f"version/kind; json parse error: {exc}") from None


def _check_type(api_version: Any, obj_kind: Any, want_version: str, want_kind: str) -> bool:
    """Whether the body's apiVersion and kind must be filled in (both absent); 400 if they are not the URL's."""
    if api_version is None and obj_kind is None:
        return True
    if api_version != want_version:
        raise errors.BadRequest(f"the API version in the data ({api_version}) does not match the expected API "
                                f"version ({want_version})")
    if obj_kind != want_kind:
        raise errors.BadRequest(f"the kind in the data ({obj_kind}) does not match the expected kind "
                                f"({want_kind})")
    return False


def _decode_protobuf_object(body: bytes, want_version: str, want_kind: str) -> dict[str, Any]:
    """A protobuf body as the object the URL serves: the envelope's type is checked before its bytes are read."""
    if not body:
        raise errors.BadRequest(f"the body of the request was empty; expected {want_kind}")
    envelope = protobuf.unwrap(body)
    protobuf.check_envelope(envelope)
    _check_type(envelope.api_version or None, envelope.kind or None, want_version, want_kind)
    msg = protobuf.message_for(want_version, want_kind)
    if msg is None:
        raise errors.UnsupportedMediaType(f"{want_version} {want_kind} cannot be sent as {PROTOBUF}; send "
                                          f"{JSON} or {YAML}")
    obj: dict[str, Any] = {"apiVersion": want_version, "kind": want_kind}
    obj.update(protobuf.decode_raw(msg, envelope.raw))
    return obj


def decode_object(body: bytes, content_type: str, kind: Kind, *, expect_kind: str = "",
                  expect_api_version: str = "") -> dict[str, Any]:
    """A request body as an object of the kind the URL serves (400 if it is anything else)."""
    want_kind = expect_kind or kind.kind
    want_version = expect_api_version or kind.api_version
    if _media_type(content_type) == PROTOBUF:
        return _decode_protobuf_object(body, want_version, want_kind)
    obj = decode_document(body, content_type, what=want_kind)
    if not isinstance(obj, dict):
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {want_kind}): "
                                f"expected a JSON object, got {type(obj).__name__}")
    if _check_type(obj.get("apiVersion"), obj.get("kind"), want_version, want_kind):
        obj["apiVersion"], obj["kind"] = want_version, want_kind
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
