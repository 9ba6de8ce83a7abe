"""The envelope of every Kubernetes protobuf body: the 4 bytes `k8s\\x00`, then a `runtime.Unknown` message
{1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding, 4 contentType} whose raw bytes are the object's
message."""

from __future__ import annotations

from dataclasses import dataclass

from harness.api.protobuf import wire
from harness.api.protobuf.wire import LENGTH, ProtobufError, read_length, read_varint, utf8, with_length

MAGIC = b"k8s\x00"


@dataclass(frozen=True)
class Envelope:
    """The `runtime.Unknown` around every Kubernetes protobuf body."""

    api_version: str
    kind: str
    raw: bytes
    content_encoding: str = ""
    content_type: str = ""


def unwrap(body: bytes) -> Envelope:
    """The envelope of a protobuf body: `k8s\\x00`, then runtime.Unknown {1 typeMeta {1 apiVersion, 2 kind},
    2 raw, 3 contentEncoding, 4 contentType}."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the protobuf body does not start with the Kubernetes protobuf prefix "
                            "(the 4 bytes 'k8s\\x00')")
    fields: dict[int, bytes] = {}
    pos, end = len(MAGIC), len(body)
    while pos < end:
        key, pos = read_varint(body, pos, end)
        number, wt = key >> 3, key & 7
        if number in (1, 2, 3, 4):
            if wt != LENGTH:
                raise ProtobufError(f"the protobuf body is malformed: field {number} of the runtime.Unknown "
                                    f"envelope has wire type {wire.WIRE_TYPE_NAMES.get(wt, wt)}")
            start, pos = read_length(body, pos, end, f"field {number} of the runtime.Unknown envelope")
            fields[number] = body[start:pos]
        else:
            wire.check_field_number(key)
            pos = wire.skip_field(body, pos, end, key)
    api_version = kind = ""
    type_meta = fields.get(1, b"")
    pos, end = 0, len(type_meta)
    while pos < end:
        key, pos = read_varint(type_meta, pos, end)
        number, wt = key >> 3, key & 7
        if number in (1, 2) and wt == LENGTH:
            start, pos = read_length(type_meta, pos, end, "the typeMeta of the runtime.Unknown envelope")
            text = utf8(type_meta, start, pos, "the typeMeta of the runtime.Unknown envelope")
            if number == 1:
                api_version = text
            else:
                kind = text
        else:
            wire.check_field_number(key)
            pos = wire.skip_field(type_meta, pos, end, key)
    return Envelope(api_version, kind, fields.get(2, b""),
                    utf8(fields.get(3, b""), 0, len(fields.get(3, b"")), "contentEncoding"),
                    utf8(fields.get(4, b""), 0, len(fields.get(4, b"")), "contentType"))


def wrap(api_version: str, kind: str, raw: bytes) -> bytes:
    av, k = api_version.encode(), kind.encode()
    type_meta = b"\x0a" + with_length(av) + b"\x12" + with_length(k)
    return MAGIC + b"\x0a" + with_length(type_meta) + b"\x12" + with_length(raw) + b"\x1a\x00\x22\x00"


def check_envelope(env: Envelope) -> None:
    if env.content_encoding:
        raise ProtobufError(f"the protobuf body has contentEncoding {env.content_encoding!r}; only unencoded "
                            "bodies are read")
    if env.content_type not in ("", "application/vnd.kubernetes.protobuf"):
        raise ProtobufError(f"the protobuf body's envelope holds contentType {env.content_type!r}, not protobuf")


