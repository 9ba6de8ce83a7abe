"""The protobuf wire format at its lowest level: varints, tags, skipping fields we do not know.

Every reader takes the buffer and an explicit `end`, so a sub-message is read in place (no copies) and a length
that runs past its parent is caught. Everything wrong with the bytes raises `ProtobufError`, a 400.
"""

from __future__ import annotations

from harness.api import errors

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
WIRE_TYPE_NAMES = {VARINT: "varint", FIXED64: "fixed64", LENGTH: "length-delimited", START_GROUP: "start-group",
                   END_GROUP: "end-group", FIXED32: "fixed32"}

_MASK64 = (1 << 64) - 1
#: How deeply messages (and groups) may nest before we give up rather than recurse without end.
MAX_DEPTH = 100


class ProtobufError(errors.BadRequest):
    """A protobuf body that cannot be read (or an object that cannot be written as one): a 400 Status."""


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The unsigned varint at `pos` (at most 10 bytes, kept to 64 bits) and the position after it."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("the protobuf body is truncated: a varint runs past the end of its message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("the protobuf body is malformed: a varint is longer than 10 bytes")


def read_length(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """The length prefix at `pos`, checked against `end`: (start of the data, end of the data)."""
    if pos < end and buf[pos] < 0x80:
        n = buf[pos]
        pos += 1
    else:
        n, pos = read_varint(buf, pos, end)
    stop = pos + n
    if stop > end:
        raise ProtobufError(f"the protobuf body is truncated: {what} has length {n}, which runs past the end of "
                            f"its message ({end - pos} bytes left)")
    return pos, stop


def skip_field(buf: bytes, pos: int, end: int, key: int, depth: int = 0) -> int:
    """The position after the value of a field we do not know (any wire type, groups included)."""
    wire_type = key & 7
    if wire_type == VARINT:
        return read_varint(buf, pos, end)[1]
    if wire_type == FIXED64:
        pos += 8
    elif wire_type == FIXED32:
        pos += 4
    elif wire_type == LENGTH:
        return read_length(buf, pos, end, f"unknown field {key >> 3}")[1]
    elif wire_type == START_GROUP:
        if depth >= MAX_DEPTH:
            raise ProtobufError("the protobuf body is nested too deeply")
        while True:
            inner, pos = read_varint(buf, pos, end)
            if inner & 7 == END_GROUP:
                if inner >> 3 != key >> 3:
                    raise ProtobufError(f"the protobuf body is malformed: group {key >> 3} ends as group "
                                        f"{inner >> 3}")
                return pos
            check_field_number(inner)
            pos = skip_field(buf, pos, end, inner, depth + 1)
    else:
        name = "an unmatched end-group" if wire_type == END_GROUP else f"invalid wire type {wire_type}"
        raise ProtobufError(f"the protobuf body is malformed: field {key >> 3} has {name}")
    if pos > end:
        raise ProtobufError(f"the protobuf body is truncated: unknown field {key >> 3} runs past the end of its "
                            "message")
    return pos


def check_field_number(key: int) -> None:
    if key >> 3 == 0:
        raise ProtobufError("the protobuf body is malformed: field number 0")


def encode_varint(value: int) -> bytes:
    """A varint; negative numbers as 64-bit two's complement (10 bytes), as protobuf writes int32 and int64."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value &= _MASK64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: The one-byte varints 0..127, precomputed: most lengths and many values on the hot path are small.
SMALL_LENGTHS = [bytes((i,)) for i in range(0x80)]
_SMALL = SMALL_LENGTHS


def tag(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def length_delimited(number_tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return number_tag + (_SMALL[n] if n < 0x80 else encode_varint(n)) + payload


def with_length(payload: bytes) -> bytes:
    """A length-delimited payload without its tag: the length as a varint, then the bytes."""
    n = len(payload)
    return (_SMALL[n] if n < 0x80 else encode_varint(n)) + payload


def length(n: int) -> bytes:
    return _SMALL[n] if n < 0x80 else encode_varint(n)


def utf8(buf: bytes, start: int, stop: int, what: str) -> str:
    """buf[start:stop] as text; a ProtobufError naming `what` when it is not UTF-8."""
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError(f"the protobuf body is malformed: {what} is not valid UTF-8") from None
