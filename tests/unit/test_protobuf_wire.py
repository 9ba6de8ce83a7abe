"""Protobuf bytes we did not write: fields we do not know are skipped whatever their wire type, and malformed or
truncated bodies are a 400 that says what is wrong, never another exception."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest

from harness.api import errors
from harness.api import protobuf as pb
from harness.api.protobuf import wire
from tests.unit.test_protobuf import SAMPLES

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x", "labels": {"a": "b"}},
      "data": {"k": "v"}}


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    return wire.tag(number, wire_type) + payload


def ld(number: int, payload: bytes) -> bytes:
    return field(number, wire.LENGTH, wire.encode_varint(len(payload)) + payload)


def body(raw: bytes, api_version: str = "v1", kind: str = "ConfigMap") -> bytes:
    return pb.wrap(api_version, kind, raw)


def raw_of(obj: dict) -> bytes:
    return pb.unwrap(pb.encode(obj)).raw


UNKNOWN_FIELDS = (
    field(900, wire.VARINT, wire.encode_varint(2**63))
    + field(901, wire.FIXED64, struct.pack("<d", 1.5))
    + ld(902, b"\x0a\x03abc anything at all")
    + field(903, wire.FIXED32, b"\x01\x02\x03\x04")
    + field(904, wire.START_GROUP, field(1, wire.VARINT, b"\x01") + field(2, wire.START_GROUP, b"")
            + field(2, wire.END_GROUP, b"") + ld(3, b"xyz")) + field(904, wire.END_GROUP, b"")
)


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    raw = raw_of(CM)
    assert pb.decode(body(UNKNOWN_FIELDS + raw + UNKNOWN_FIELDS)) == CM


def test_unknown_fields_inside_nested_messages_and_the_envelope_are_skipped() -> None:
    md = raw_of({"apiVersion": "v1", "kind": "ConfigMap", "metadata": CM["metadata"]})
    inner = md[2:]  # the ObjectMeta bytes (tag and one-byte length stripped)
    assert md[0] == 0x0a and md[1] == len(inner)
    data = raw_of({"apiVersion": "v1", "kind": "ConfigMap", "data": CM["data"]})
    raw = ld(1, UNKNOWN_FIELDS + inner + UNKNOWN_FIELDS) + data
    envelope = (pb.MAGIC + ld(1, ld(1, b"v1") + ld(2, b"ConfigMap") + UNKNOWN_FIELDS) + ld(2, raw)
                + UNKNOWN_FIELDS + ld(3, b"") + ld(4, b""))
    assert pb.decode(envelope) == CM


def test_fields_may_come_in_any_order_and_repeat() -> None:
    raw = raw_of(CM)
    parts = [ld(2, ld(1, b"k2") + ld(2, b"v2")), raw]  # another entry of data (field 2)
    got = pb.decode(body(b"".join(reversed(parts))))
    assert got["data"] == {"k": "v", "k2": "v2"}
    # an optional field seen twice: the last one wins, as protobuf has it
    two = ld(1, ld(1, b"first")) + ld(1, ld(1, b"second"))
    assert pb.decode(body(two))["metadata"] == {"name": "second"}


def test_packed_repeated_numbers_are_read() -> None:
    # proto2 writes repeated numbers unpacked; readers must take both forms (PodSecurityContext.supplementalGroups
    # is a repeated int64).
    msg = pb.load_schema()["k8s.io.api.core.v1.PodSecurityContext"]
    f = next(fld for fld in msg.fields if fld.name == "supplementalGroups")
    packed = b"".join(wire.encode_varint(v) for v in (1, 300, 2**40))
    unpacked = b"".join(field(f.number, wire.VARINT, wire.encode_varint(v)) for v in (7, 8))
    assert pb.decode_raw(msg, ld(f.number, packed) + unpacked) == {"supplementalGroups": [1, 300, 2**40, 7, 8]}


def test_negative_numbers() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"priority": -5, "securityContext": {"supplementalGroups": [-1]}},
           "status": {"containerStatuses": [{"name": "c", "ready": False, "restartCount": 0,
                                             "image": "", "imageID": "",
                                             "state": {"terminated": {"exitCode": -1}}}]}}
    assert pb.decode(pb.encode(pod)) == pod
    assert b"\xfb\xff\xff\xff\xff\xff\xff\xff\xff\x01" in pb.encode(pod)  # int32 -5 as protobuf writes it


MALFORMED = [
    ("bad magic", b"k8s\x01" + raw_of(CM), "prefix"),
    ("json body", b'{"apiVersion": "v1"}', "prefix"),
    ("empty after magic", pb.MAGIC, "no protobuf message"),
    ("truncated varint", body(b"\x0a\x02\x0a\x80"), "varint"),
    ("truncated tag", body(raw_of(CM) + b"\x80"), "varint"),
    ("length past end", body(b"\x0a\x20\x0a\x01c"), "runs past the end"),
    ("length past the parent message", body(ld(1, b"\x0a\x10c")), "runs past the end"),
    ("huge length", body(b"\x0a\xff\xff\xff\xff\x0f"), "runs past the end"),
    ("wrong wire type for a message field", body(b"\x08\x01"), "metadata"),
    ("wrong wire type for a string", body(ld(1, b"\x08\x01")), r"field 1 \(name\)"),
    ("wrong wire type for a varint", body(ld(1, field(7, wire.LENGTH, b"\x00"))), "generation"),
    ("wrong wire type in a map entry", body(ld(2, b"\x08\x01")), "key"),
    ("wire type 6 for a known field", body(b"\x0e"), "metadata.* wire type 6"),
    ("invalid wire type 7 in an unknown field", body(field(99, 7, b"")), "invalid wire type"),
    ("field number 0", body(b"\x02\x00"), "field number 0"),
    ("unmatched end group", body(field(5, wire.END_GROUP, b"")), "end-group"),
    ("unterminated group", body(field(900, wire.START_GROUP, b"\x08\x01")), "varint"),
    ("mismatched group", body(field(900, wire.START_GROUP, b"") + field(901, wire.END_GROUP, b"")), "group"),
    ("truncated fixed64", body(field(900, wire.FIXED64, b"\x00\x00")), "runs past the end"),
    ("truncated fixed32", body(field(900, wire.FIXED32, b"\x00")), "runs past the end"),
    ("overlong varint", body(field(900, wire.VARINT, b"\xff" * 11)), "longer than 10 bytes"),
    ("invalid utf-8", body(ld(1, ld(1, b"\xff\xfe"))), "UTF-8"),
    ("invalid utf-8 in the envelope", pb.MAGIC + ld(1, ld(2, b"\xff")), "UTF-8"),
    ("wrong wire type in the envelope", pb.MAGIC + b"\x10\x01", "envelope"),
    ("unknown type in the envelope", body(b"", "v1", "Gadget"), "no protobuf message"),
    ("encoded content", pb.MAGIC + ld(1, ld(1, b"v1") + ld(2, b"ConfigMap")) + ld(2, b"") + ld(3, b"gzip"),
     "contentEncoding"),
    ("raw extension that is not JSON", pb.wrap("apps/v1", "ControllerRevision", ld(2, ld(1, b"{nope"))),
     "not JSON"),
]


@pytest.mark.parametrize(("case", "data", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_bodies_are_a_bad_request(case: str, data: bytes, message: str) -> None:
    with pytest.raises(pb.ProtobufError, match=message) as err:
        pb.decode(data)
    assert isinstance(err.value, errors.BadRequest) and err.value.code == 400
    assert err.value.to_status()["reason"] == "BadRequest"


def test_nesting_too_deep_is_refused_not_a_recursion_error() -> None:
    # Our messages do not nest that deep: nest unknown groups, and RawExtensions holding enveloped objects.
    groups = b""
    for _ in range(wire.MAX_DEPTH + 5):
        groups = field(900, wire.START_GROUP, groups) + field(900, wire.END_GROUP, b"")
    with pytest.raises(pb.ProtobufError, match="nested too deeply"):
        pb.decode(body(groups))
    inner = pb.encode({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    for _ in range(wire.MAX_DEPTH + 5):
        inner = pb.wrap("apps/v1", "ControllerRevision", ld(2, ld(1, inner)))
    with pytest.raises(pb.ProtobufError, match="nested too deeply"):
        pb.decode(inner)


def test_every_truncation_of_a_real_object_is_a_bad_request_or_a_prefix() -> None:
    """Cutting a Pod anywhere either fails cleanly or (at a field boundary) decodes to less."""
    full = pb.encode(SAMPLES["Pod"])
    for cut in range(len(full)):
        with contextlib.suppress(pb.ProtobufError):
            pb.decode(full[:cut])


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(1234)
    full = pb.encode(SAMPLES["Deployment"])
    for _ in range(3000):
        data = bytearray(full)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)
        with contextlib.suppress(pb.ProtobufError):
            pb.decode(bytes(data))
    for _ in range(500):
        junk = pb.MAGIC + bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        with contextlib.suppress(pb.ProtobufError):
            pb.decode(junk, api_version="v1", kind="Pod")
