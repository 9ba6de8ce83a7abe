"""Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) to and from harness's JSON dicts.

Pure encoding and decoding over bytes and dicts, no HTTP: `harness.apiserver.codec` wires it in. The messages
come from upstream's `generated.proto` files, turned into our own data file by `scripts/gen_proto_tables.py`
(`schema`); `kinds` says which message an apiVersion and kind are; `convert` does the work, showing each value
the way upstream's JSON does (Quantity "100m", IntOrString 80 or "http", Time "2026-12-07T10:00:00Z", ...).

    decode(body)          -> {"apiVersion": ..., "kind": ..., ...}   (the envelope names the type)
    encode(obj)           -> b"k8s\\x00..."                           (obj's apiVersion and kind name it)
    can_encode(obj)       -> whether obj's type has a message

Anything wrong with a body raises `ProtobufError`, a `BadRequest` (400).
"""

from __future__ import annotations

from typing import Any

from harness.api.protobuf import convert, kinds
from harness.api.protobuf.envelope import MAGIC, Envelope, check_envelope, unwrap, wrap
from harness.api.protobuf.schema import Message, load_schema
from harness.api.protobuf.wire import ProtobufError

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

__all__ = ["CONTENT_TYPE", "MAGIC", "Envelope", "Message", "ProtobufError", "can_encode", "check_envelope",
           "decode", "decode_raw", "encode", "encode_raw", "load_schema", "message_for", "unwrap", "wrap"]


def message_for(api_version: str, kind: str) -> Message | None:
    """The message of a type, or None when it has none (it is then served as JSON)."""
    return kinds.message_for(api_version, kind)


def decode(body: bytes, *, api_version: str = "", kind: str = "") -> dict[str, Any]:
    """A whole protobuf body as a JSON object; the type is the envelope's, or the one given if it names none."""
    return convert.decode_object(body, api_version=api_version, kind=kind)


def decode_raw(msg: Message, raw: bytes) -> dict[str, Any]:
    """The fields of one message (no envelope) as a JSON object."""
    return convert.decode_struct(msg, raw, 0, len(raw), 0)


def can_encode(obj: Any) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("apiVersion"), str) and isinstance(obj.get("kind"), str)
            and kinds.message_for(obj["apiVersion"], obj["kind"]) is not None)


def encode_raw(msg: Message, obj: dict[str, Any], *, strict: bool = False) -> bytes:
    """One message (no envelope). `strict`: a JSON key the message has no field for is an error, not dropped."""
    return convert.encode_message(msg, obj, "", strict)


def encode(obj: dict[str, Any], *, strict: bool = False) -> bytes:
    """An object with its apiVersion and kind as a whole protobuf body (envelope included)."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise ProtobufError("cannot encode an object without apiVersion and kind as protobuf")
    msg = kinds.message_for(api_version, kind)
    if msg is None:
        raise ProtobufError(f"no protobuf message is known for apiVersion {api_version!r}, kind {kind!r}")
    return wrap(api_version, kind, encode_raw(msg, obj, strict=strict))
