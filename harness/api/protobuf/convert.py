"""Messages to and from the JSON dicts harness keeps, as upstream's JSON would show them.

`decode_message` reads a message's bytes into the value its JSON has: an object of the fields present on the wire
(a zero value Go's JSON would leave out is left out), or, for the types with their own JSON form, a string
(Quantity, Time, MicroTime, Duration), an int or a string (IntOrString), any JSON value (RawExtension, FieldsV1)
or a list (Verbs, ExtraValue). `encode_message` is the reverse and writes only what the JSON holds. Byte fields
are base64 strings in JSON, as Go writes `[]byte`.

The envelope every Kubernetes protobuf body is wrapped in is `envelope`'s; `decode_object` reads an object in
its envelope here, since a RawExtension may hold one.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

import orjson

from harness.api.protobuf import kinds, wire
from harness.api.protobuf.envelope import MAGIC, check_envelope, unwrap
from harness.api.protobuf.gotime import format_duration, format_micro_time, format_time, parse_duration, parse_rfc3339
from harness.api.protobuf.schema import (
    BOOL,
    BYTES,
    DOUBLE,
    DURATION,
    FIXED32,
    FIXED64,
    FLOAT,
    GENERIC,
    INT32,
    INT64,
    INT_OR_STRING,
    LIST_WRAPPER,
    MAP,
    MESSAGE,
    MICRO_TIME,
    OPTIONAL,
    QUANTITY,
    RAW_EXTENSION,
    REPEATED,
    SFIXED32,
    SFIXED64,
    SINT32,
    SINT64,
    STRING,
    TIME,
    UINT32,
    UINT64,
    WIRE_TYPES,
    Field,
    Message,
)
from harness.api.protobuf.wire import (
    LENGTH,
    MAX_DEPTH,
    SMALL_LENGTHS,
    VARINT,
    ProtobufError,
    length,
    read_length,
    read_varint,
    utf8,
    with_length,
)

_MASK32 = (1 << 32) - 1
_SIGN64 = 1 << 63
_RANGES = {INT32: (-(1 << 31), (1 << 31) - 1), INT64: (-(1 << 63), (1 << 63) - 1), UINT32: (0, _MASK32),
           UINT64: (0, (1 << 64) - 1), SINT32: (-(1 << 31), (1 << 31) - 1), SINT64: (-(1 << 63), (1 << 63) - 1),
           FIXED32: (0, _MASK32), SFIXED32: (-(1 << 31), (1 << 31) - 1), FIXED64: (0, (1 << 64) - 1),
           SFIXED64: (-(1 << 63), (1 << 63) - 1)}
_FIXED_FORMATS = {FIXED32: "<I", SFIXED32: "<i", FLOAT: "<f", FIXED64: "<Q", SFIXED64: "<q", DOUBLE: "<d"}
#: The messages whose JSON `null` is an empty message on the wire (Go writes their zero value so).
_EMPTY_FOR_NULL = frozenset({TIME, MICRO_TIME, RAW_EXTENSION})


# -- decoding ---------------------------------------------------------------------------------------------


def _scalar_from_varint(kind: int, v: int) -> Any:
    if kind == INT64:
        return v - (1 << 64) if v & _SIGN64 else v
    if kind == INT32:
        v &= _MASK32
        return v - (1 << 32) if v & 0x80000000 else v
    if kind == BOOL:
        return v != 0
    if kind == UINT32:
        return v & _MASK32
    if kind == SINT32:
        v &= _MASK32
        return (v >> 1) ^ -(v & 1)
    if kind == SINT64:
        return (v >> 1) ^ -(v & 1)
    return v  # UINT64


def _read_value(kind: int, sub: Message | None, buf: bytes, pos: int, end: int, depth: int,
                what: str) -> tuple[Any, int]:
    """One value of `kind` at `pos` (its wire type already checked): (the JSON value, the position after it)."""
    wt = WIRE_TYPES[kind]
    if wt == VARINT:
        if pos < end and buf[pos] < 0x80:
            v, pos = buf[pos], pos + 1
        else:
            v, pos = read_varint(buf, pos, end)
        return _scalar_from_varint(kind, v), pos
    if wt == LENGTH:
        start, stop = read_length(buf, pos, end, what)
        if kind == STRING:
            return utf8(buf, start, stop, what), stop
        if kind == BYTES:
            return base64.b64encode(buf[start:stop]).decode("ascii"), stop
        assert sub is not None
        return decode_message(sub, buf, start, stop, depth + 1), stop
    size = 4 if wt == wire.FIXED32 else 8
    if pos + size > end:
        raise ProtobufError(f"the protobuf body is truncated: {what} runs past the end of its message")
    value = struct.unpack_from(_FIXED_FORMATS[kind], buf, pos)[0]
    return value, pos + size


def _wrong_wire_type(msg: Message, f: Field, wt: int) -> ProtobufError:
    return ProtobufError(f"the protobuf body is malformed: {f.where} has wire type "
                         f"{wire.WIRE_TYPE_NAMES.get(wt, wt)}, expected {wire.WIRE_TYPE_NAMES[f.wire_type]}")


def decode_struct(msg: Message, buf: bytes, pos: int, end: int, depth: int) -> dict[str, Any]:
    """The fields of a message as a JSON object (inlined messages' fields merged in)."""
    if depth > MAX_DEPTH:
        raise ProtobufError("the protobuf body is nested too deeply")
    out: dict[str, Any] = {}
    by_number = msg.by_number
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, end)
        wt = key & 7
        f = by_number.get(key >> 3)
        if f is None:
            wire.check_field_number(key)
            pos = wire.skip_field(buf, pos, end, key, depth)
            continue
        if wt != f.wire_type:
            if wt == LENGTH and f.packable:
                start, stop = read_length(buf, pos, end, f.where)
                items = out.setdefault(f.name, [])
                while start < stop:
                    value, start = _read_value(f.kind, None, buf, start, stop, depth, f.where)
                    items.append(value)
                pos = stop
                continue
            raise _wrong_wire_type(msg, f, wt)
        kind = f.kind
        if wt == LENGTH:
            # The common cases in line: a string or a message with a one-byte length.
            if pos < end and buf[pos] < 0x80:
                start = pos + 1
                stop = start + buf[pos]
                if stop > end:
                    start, stop = read_length(buf, pos, end, f.where)
            else:
                start, stop = read_length(buf, pos, end, f.where)
            pos = stop
            if f.label == MAP:
                k, value = _decode_entry(msg, f, buf, start, stop, depth)
                entries = out.get(f.name)
                if entries is None:
                    out[f.name] = {k: value}
                else:
                    entries[k] = value
                continue
            if kind == STRING:
                try:
                    value = buf[start:stop].decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtobufError(f"the protobuf body is malformed: {f.where} is not valid UTF-8") from None
            elif f.struct:
                value = decode_struct(f.message, buf, start, stop, depth + 1)  # type: ignore[arg-type]
            elif kind == MESSAGE:
                value = decode_message(f.message, buf, start, stop, depth + 1)  # type: ignore[arg-type]
            else:
                value = base64.b64encode(buf[start:stop]).decode("ascii")
        elif wt == VARINT and kind in _SMALL_VARINTS and pos < end and buf[pos] < 0x80:
            value = buf[pos] != 0 if kind == BOOL else buf[pos]
            pos += 1
        else:
            value, pos = _read_value(kind, None, buf, pos, end, depth, f.where)
        if f.label == OPTIONAL:
            if f.omit_zero and not value:
                continue
            if f.inline:
                out.update(value)
            else:
                out[f.name] = value
        else:
            items = out.get(f.name)
            if items is None:
                out[f.name] = [value]
            else:
                items.append(value)
    return out


#: Varint kinds whose one-byte values (0-127) are the number itself (zigzag kinds are not).
_SMALL_VARINTS = frozenset({INT32, INT64, UINT32, UINT64, BOOL})


def _zero(kind: int, sub: Message | None, depth: int) -> Any:
    if kind in (STRING, BYTES):
        return ""
    if kind == BOOL:
        return False
    if kind == MESSAGE:
        assert sub is not None
        return decode_message(sub, b"", 0, 0, depth + 1)
    if kind in (FLOAT, DOUBLE):
        return 0.0
    return 0


def _decode_entry(msg: Message, f: Field, buf: bytes, pos: int, end: int, depth: int) -> tuple[str, Any]:
    """One map entry: (key, value); a missing key or value is its zero value, as protobuf has it."""
    key: Any = None
    value: Any = None
    have_value = False
    key_wt = WIRE_TYPES[f.key_kind]
    value_wt = WIRE_TYPES[f.kind]
    what = f"an entry of {f.where}"
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        number, wt = tag >> 3, tag & 7
        if number == 1:
            if wt != key_wt:
                raise ProtobufError(f"the protobuf body is malformed: the key of {what} has wire type "
                                    f"{wire.WIRE_TYPE_NAMES.get(wt, wt)}")
            key, pos = _read_value(f.key_kind, None, buf, pos, end, depth, what)
        elif number == 2:
            if wt != value_wt:
                raise ProtobufError(f"the protobuf body is malformed: the value of {what} has wire type "
                                    f"{wire.WIRE_TYPE_NAMES.get(wt, wt)}")
            value, pos = _read_value(f.kind, f.message, buf, pos, end, depth, what)
            have_value = True
        else:
            wire.check_field_number(tag)
            pos = wire.skip_field(buf, pos, end, tag, depth)
    if key is None:
        key = _zero(f.key_kind, None, depth)
    if not have_value:
        value = _zero(f.kind, f.message, depth)
    return key if isinstance(key, str) else str(key).lower() if isinstance(key, bool) else str(key), value


def _scan(msg: Message, buf: bytes, pos: int, end: int, depth: int) -> dict[int, Any]:
    """The raw fields of a small special message: ints for varints, bytes for length-delimited fields."""
    out: dict[int, Any] = {}
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        wt = key & 7
        f = msg.by_number.get(key >> 3)
        if f is None:
            wire.check_field_number(key)
            pos = wire.skip_field(buf, pos, end, key, depth)
            continue
        if wt != f.wire_type:
            raise _wrong_wire_type(msg, f, wt)
        if wt == VARINT:
            v, pos = read_varint(buf, pos, end)
            out[f.number] = _scalar_from_varint(f.kind, v)
        elif wt == LENGTH:
            start, pos = read_length(buf, pos, end, f.where)
            out[f.number] = buf[start:pos]
        else:
            out[f.number], pos = _read_value(f.kind, None, buf, pos, end, depth, f.where)
    return out


def decode_message(msg: Message, buf: bytes, pos: int, end: int, depth: int = 0) -> Any:
    """The JSON value of the message `msg` held in buf[pos:end]."""
    if depth > MAX_DEPTH:
        raise ProtobufError("the protobuf body is nested too deeply")
    special = msg.special
    if special == GENERIC:
        return decode_struct(msg, buf, pos, end, depth)
    if special == LIST_WRAPPER:
        return decode_struct(msg, buf, pos, end, depth).get(msg.fields[0].name, [])
    if special in (TIME, MICRO_TIME) and pos == end:
        return None  # the zero time is written as an empty message; Go's JSON shows it as null
    raw = _scan(msg, buf, pos, end, depth)
    if special == QUANTITY:
        return _text(raw.get(1, b"0"), msg)
    if special == INT_OR_STRING:
        if raw.get(1, 0) == 1:
            return _text(raw.get(3, b""), msg)
        return raw.get(2, 0)
    if special == TIME:
        return format_time(raw.get(1, 0))
    if special == MICRO_TIME:
        return format_micro_time(raw.get(1, 0), raw.get(2, 0))
    if special == DURATION:
        return format_duration(raw.get(1, 0))
    # RAW_EXTENSION, FIELDS_V1: JSON bytes (or, in a RawExtension, an object in its own envelope)
    data = raw.get(1)
    if data is None:
        return None
    if data.startswith(MAGIC):
        return decode_object(data, depth=depth + 1)
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtobufError(f"the protobuf body is malformed: a {msg.name.rsplit('.', 1)[-1]} holds bytes that "
                            f"are not JSON: {exc}") from None


def _text(data: bytes, msg: Message) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError(f"the protobuf body is malformed: a {msg.name} is not valid UTF-8") from None


# -- encoding ---------------------------------------------------------------------------------------------


class _Unencodable(Exception):
    """Raised while encoding; `path` is filled in on the way out (innermost last), so that paths are only built
    for errors."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _type_error(expected: str, value: Any) -> _Unencodable:
    return _Unencodable(f"expected {expected}, got {type(value).__name__} {value!r:.60}")


def _encode_scalar(kind: int, value: Any) -> bytes:
    """The bytes after the tag for one scalar value (length prefix included for strings and bytes)."""
    if kind == STRING:
        if not isinstance(value, str):
            raise _type_error("a string", value)
        data = value.encode("utf-8")
        return length(len(data)) + data
    if kind == BOOL:
        if not isinstance(value, bool):
            raise _type_error("a boolean", value)
        return b"\x01" if value else b"\x00"
    if kind == BYTES:
        if not isinstance(value, str):
            raise _type_error("a base64 string", value)
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _Unencodable(f"{value!r:.60} is not base64") from None
        return length(len(data)) + data
    if kind in (FLOAT, DOUBLE):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error("a number", value)
        return struct.pack(_FIXED_FORMATS[kind], value)
    if type(value) is not int:
        raise _type_error("an integer", value)
    low, high = _RANGES[kind]
    if not low <= value <= high:
        raise _Unencodable(f"{value} is out of range")
    if kind in _FIXED_FORMATS:
        return struct.pack(_FIXED_FORMATS[kind], value)
    if kind in (SINT32, SINT64):
        value = (value << 1) ^ (value >> 63)
    return wire.encode_varint(value)


def _encode_value(f: Field, value: Any, strict: bool) -> bytes:
    """One value of a field, after its tag."""
    kind = f.kind
    if kind == STRING and type(value) is str:
        data = value.encode("utf-8")
        n = len(data)
        return (SMALL_LENGTHS[n] if n < 0x80 else wire.encode_varint(n)) + data
    if f.struct:
        if type(value) is not dict:
            raise _type_error("an object", value)
        return with_length(_encode_struct(f.message, value, strict))  # type: ignore[arg-type]
    if kind == MESSAGE:
        return with_length(_encode_message(f.message, value, strict))  # type: ignore[arg-type]
    return _encode_scalar(kind, value)


def _map_key(kind: int, key: Any) -> bytes:
    if kind == STRING:
        return _encode_scalar(STRING, key)
    try:
        parsed: Any = {"true": True, "false": False}[key] if kind == BOOL else int(key)
    except (KeyError, ValueError, TypeError):
        raise _Unencodable(f"the key {key!r} is not a number") from None
    return _encode_scalar(kind, parsed)


def _encode_field(f: Field, value: Any, strict: bool) -> bytes:
    """A field with its tag(s): one value, each item of a list, each entry of a map."""
    label = f.label
    if label == OPTIONAL:
        return f.tag + _encode_value(f, value, strict)
    if label == REPEATED:
        if type(value) is not list:
            raise _type_error("a list", value)
        parts = []
        tag = f.tag
        for i, item in enumerate(value):
            try:
                if f.struct and type(item) is dict:
                    payload = _encode_struct(f.message, item, strict)  # type: ignore[arg-type]
                    n = len(payload)
                    parts.append(tag + (SMALL_LENGTHS[n] if n < 0x80 else wire.encode_varint(n)) + payload)
                elif item is None and f.kind == MESSAGE:
                    parts.append(tag + b"\x00")  # Go reads null as the zero value
                else:
                    parts.append(tag + _encode_value(f, item, strict))
            except _Unencodable as exc:
                exc.path.append(f"[{i}]")
                raise
        return b"".join(parts)
    if type(value) is not dict:
        raise _type_error("an object", value)
    parts = []
    for k in sorted(value):
        v = value[k]
        try:
            entry = f.key_tag + _map_key(f.key_kind, k)
            if v is not None:
                entry += f.value_tag + _encode_value(f, v, strict)
        except _Unencodable as exc:
            exc.path.append(f"[{k!r}]")
            raise
        parts.append(f.tag + with_length(entry))
    return b"".join(parts)


#: Varint kinds whose values 0-127 are written as one byte holding the number.
_PLAIN_VARINTS = frozenset({INT32, INT64, UINT32, UINT64})


def _encode_struct(msg: Message, obj: dict[str, Any], strict: bool) -> bytes:
    """A message's fields from a JSON object, in field-number order."""
    if strict:
        unknown = obj.keys() - msg.json_names - {"apiVersion", "kind"}
        if unknown:
            raise _Unencodable(f"{msg.name} has no field {', '.join(sorted(unknown))}")
    by_name = msg.by_name
    chunks: list[bytes] = []
    numbers: list[int] = []
    ordered = True
    last = 0
    for inline in msg.inline_fields:
        chunks.append(inline.tag + with_length(_encode_struct(inline.message, obj, False)))  # type: ignore[arg-type]
        numbers.append(inline.number)
        ordered = ordered and inline.number > last
        last = inline.number
    for key, value in obj.items():
        f = by_name.get(key)
        if f is None:
            continue  # apiVersion and kind, a field of an inlined message, or one protobuf has not (not strict)
        if value is None:
            if f.kind != MESSAGE or f.label != OPTIONAL or f.message.special not in _EMPTY_FOR_NULL:  # type: ignore[union-attr]
                continue
            chunk = f.tag + b"\x00"
        else:
            try:
                # The common cases in line: a string, an object, a small number, a boolean.
                if f.label == OPTIONAL:
                    kind = f.kind
                    if kind == STRING and type(value) is str:
                        data = value.encode("utf-8")
                        n = len(data)
                        chunk = f.tag + (SMALL_LENGTHS[n] if n < 0x80 else wire.encode_varint(n)) + data
                    elif f.struct and type(value) is dict:
                        data = _encode_struct(f.message, value, strict)  # type: ignore[arg-type]
                        n = len(data)
                        chunk = f.tag + (SMALL_LENGTHS[n] if n < 0x80 else wire.encode_varint(n)) + data
                    elif kind in _PLAIN_VARINTS and type(value) is int and 0 <= value < 0x80:
                        chunk = f.tag + SMALL_LENGTHS[value]
                    elif kind == BOOL and type(value) is bool:
                        chunk = f.tag + (b"\x01" if value else b"\x00")
                    else:
                        chunk = f.tag + _encode_value(f, value, strict)
                else:
                    chunk = _encode_field(f, value, strict)
            except _Unencodable as exc:
                exc.path.append(f".{key}")
                raise
        chunks.append(chunk)
        numbers.append(f.number)
        if f.number < last:
            ordered = False
        last = f.number
    if not ordered:
        chunks = [chunk for _, chunk in sorted(zip(numbers, chunks, strict=True), key=_first)]
    return b"".join(chunks)


def _first(part: tuple[int, bytes]) -> int:
    return part[0]


def _encode_message(msg: Message, value: Any, strict: bool) -> bytes:
    special = msg.special
    if special == GENERIC:
        if type(value) is not dict:
            raise _type_error("an object", value)
        return _encode_struct(msg, value, strict)
    if special == LIST_WRAPPER:
        return _encode_struct(msg, {msg.fields[0].name: value}, strict)
    if special == QUANTITY:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _type_error("a quantity", value)
        return b"\x0a" + _encode_scalar(STRING, value if isinstance(value, str) else str(value))
    if special == INT_OR_STRING:
        if isinstance(value, str):
            return b"\x08\x01\x10\x00\x1a" + _encode_scalar(STRING, value)
        if type(value) is not int:
            raise _type_error("an integer or a string", value)
        return b"\x08\x00\x10" + _encode_scalar(INT32, value) + b"\x1a\x00"
    if special in (TIME, MICRO_TIME):
        if value is None:
            return b""
        try:
            secs, nanos = parse_rfc3339(value)
        except ValueError as exc:
            raise _Unencodable(str(exc)) from None
        if special == TIME:
            return b"\x08" + wire.encode_varint(secs) + b"\x10\x00"
        return b"\x08" + wire.encode_varint(secs) + b"\x10" + wire.encode_varint(nanos // 1000 * 1000)
    if special == DURATION:
        if not isinstance(value, str):
            raise _type_error("a duration string", value)
        try:
            return b"\x08" + wire.encode_varint(parse_duration(value))
        except ValueError:
            raise _Unencodable(f"{value!r} is not a duration") from None
    # RAW_EXTENSION, FIELDS_V1
    if value is None:
        return b""
    return b"\x0a" + with_length(orjson.dumps(value))


def encode_message(msg: Message, value: Any, path: str = "", strict: bool = False) -> bytes:
    """The bytes of the message `msg` (without tag or length) for its JSON value. `strict`: JSON keys the message
    has no field for are an error rather than left out."""
    try:
        return _encode_message(msg, value, strict)
    except _Unencodable as exc:
        where = (path + "".join(reversed(exc.path))).lstrip(".") or msg.name
        raise ProtobufError(f"cannot encode {where} as protobuf: {exc.reason}") from None


def decode_object(body: bytes, *, depth: int = 0, api_version: str = "", kind: str = "") -> dict[str, Any]:
    """An object in its envelope, as JSON with apiVersion and kind first. The type is the envelope's, or the
    given one when the envelope names none."""
    env = unwrap(body)
    check_envelope(env)
    av, k = (env.api_version, env.kind) if env.api_version or env.kind else (api_version, kind)
    msg = kinds.message_for(av, k)
    if msg is None:
        raise ProtobufError(f"no protobuf message is known for apiVersion {av!r}, kind {k!r}")
    obj: dict[str, Any] = {"apiVersion": av, "kind": k}
    obj.update(decode_struct(msg, env.raw, 0, len(env.raw), depth))
    return obj
