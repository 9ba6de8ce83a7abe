"""The message tables: upstream's protobuf messages, read once from our generated data file.

`data/k8s-1.37.json` is written by `scripts/gen_proto_tables.py` from upstream's `generated.proto` files (and the
Go struct tags next to them). Here each message becomes a `Message` with its `Field`s looked up by number (for
decoding) and listed by number (for encoding), every type name resolved to its `Message` and every scalar to its
wire type, so that nothing is looked up by name on the request path.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson

from harness.api.protobuf import wire

DATA_FILE = Path(__file__).parent / "data" / "k8s-1.37.json"

META = "k8s.io.apimachinery.pkg.apis.meta.v1"
RUNTIME = "k8s.io.apimachinery.pkg.runtime"

# Scalar kinds (and MESSAGE), as small ints the decoder switches on.
(INT32, INT64, UINT32, UINT64, SINT32, SINT64, BOOL, FIXED32, SFIXED32, FLOAT, FIXED64, SFIXED64, DOUBLE, STRING,
 BYTES, MESSAGE) = range(16)

SCALARS: dict[str, int] = {
    "int32": INT32, "int64": INT64, "uint32": UINT32, "uint64": UINT64, "sint32": SINT32, "sint64": SINT64,
    "bool": BOOL, "fixed32": FIXED32, "sfixed32": SFIXED32, "float": FLOAT, "fixed64": FIXED64,
    "sfixed64": SFIXED64, "double": DOUBLE, "string": STRING, "bytes": BYTES,
}
WIRE_TYPES: dict[int, int] = {
    INT32: wire.VARINT, INT64: wire.VARINT, UINT32: wire.VARINT, UINT64: wire.VARINT, SINT32: wire.VARINT,
    SINT64: wire.VARINT, BOOL: wire.VARINT, FIXED32: wire.FIXED32, SFIXED32: wire.FIXED32, FLOAT: wire.FIXED32,
    FIXED64: wire.FIXED64, SFIXED64: wire.FIXED64, DOUBLE: wire.FIXED64, STRING: wire.LENGTH, BYTES: wire.LENGTH,
    MESSAGE: wire.LENGTH,
}

OPTIONAL, REPEATED, MAP = 0, 1, 2
_LABELS = {"optional": OPTIONAL, "repeated": REPEATED, "map": MAP}

# Messages whose JSON is not an object of their fields (upstream's custom MarshalJSON).
GENERIC, QUANTITY, INT_OR_STRING, TIME, MICRO_TIME, DURATION, RAW_EXTENSION, FIELDS_V1, LIST_WRAPPER = range(9)
SPECIALS: dict[str, int] = {
    "k8s.io.apimachinery.pkg.api.resource.Quantity": QUANTITY,
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    f"{META}.Time": TIME,
    f"{META}.MicroTime": MICRO_TIME,
    f"{META}.Duration": DURATION,
    f"{RUNTIME}.RawExtension": RAW_EXTENSION,
    f"{META}.FieldsV1": FIELDS_V1,
}


class Field:
    """One field of a message, with everything the decoder and encoder need precomputed."""

    __slots__ = ("inline", "key_kind", "key_tag", "kind", "label", "message", "name", "number", "omit_zero",
                 "packable", "struct", "tag", "value_tag", "where", "wire_type")

    def __init__(self, number: int, name: str, label: int, kind: int, message: Message | None,
                 key_kind: int = STRING, omit_zero: bool = False, inline: bool = False) -> None:
        self.number = number
        self.name = name
        self.label = label
        self.kind = kind  # of the value, for maps
        self.message = message
        self.key_kind = key_kind
        self.omit_zero = omit_zero
        self.inline = inline
        self.wire_type = wire.LENGTH if label == MAP else WIRE_TYPES[kind]
        self.tag = wire.tag(number, self.wire_type)
        self.packable = label == REPEATED and WIRE_TYPES[kind] != wire.LENGTH
        # The tags of a map entry's key (1) and value (2).
        self.key_tag = wire.tag(1, WIRE_TYPES[key_kind])
        self.value_tag = wire.tag(2, WIRE_TYPES[kind])
        #: Whether the value is a plain message (an object of its fields), decoded without a detour.
        self.struct = message is not None and message.special == GENERIC
        #: How errors name this field (set once the owning message is known).
        self.where = f"field {number} ({name})"

    def __repr__(self) -> str:
        return f"Field({self.number}, {self.name!r})"


class Message:
    __slots__ = ("by_name", "by_number", "fields", "inline_fields", "json_names", "name", "special")

    def __init__(self, name: str, special: int) -> None:
        self.name = name
        self.special = special
        self.fields: tuple[Field, ...] = ()  # by number
        self.by_number: dict[int, Field] = {}
        #: The fields that are not inlined, by JSON name (for encoding).
        self.by_name: dict[str, Field] = {}
        self.inline_fields: tuple[Field, ...] = ()
        #: The JSON keys this message's object may hold (inlined messages' keys included).
        self.json_names: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"Message({self.name!r})"


class Schema:
    """Every message of the data file, by full name (without the leading dot)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.upstream: list[dict[str, str]] = doc.get("upstream", [])
        raw = doc["messages"]
        self.messages: dict[str, Message] = {}
        for name, spec in raw.items():
            special = SPECIALS.get(name, GENERIC)
            if spec.get("listWrapper"):
                special = LIST_WRAPPER
            self.messages[name] = Message(name, special)
        for name, spec in raw.items():
            msg = self.messages[name]
            fields = []
            for f in spec["fields"]:
                type_ = f["type"]
                if type_ in SCALARS:
                    kind, sub = SCALARS[type_], None
                else:
                    kind, sub = MESSAGE, self.messages[type_]
                fields.append(Field(f["number"], f["name"], _LABELS[f["label"]], kind, sub,
                                    key_kind=SCALARS[f.get("key", "string")], omit_zero=bool(f.get("omitZero")),
                                    inline=bool(f.get("inline"))))
            for fld in fields:
                fld.where = f"field {fld.number} ({fld.name}) of {name}"
            msg.fields = tuple(sorted(fields, key=lambda fld: fld.number))
            msg.by_number = {fld.number: fld for fld in fields}
            msg.by_name = {fld.name: fld for fld in fields if not fld.inline}
            msg.inline_fields = tuple(fld for fld in msg.fields if fld.inline)
        for msg in self.messages.values():
            msg.json_names = frozenset(_json_names(msg, 0))

    def __getitem__(self, name: str) -> Message:
        return self.messages[name]

    def get(self, name: str) -> Message | None:
        return self.messages.get(name)


def _json_names(msg: Message, depth: int) -> set[str]:
    names: set[str] = set()
    for f in msg.fields:
        if f.inline and f.message is not None and depth < 8:
            names |= _json_names(f.message, depth + 1)
        else:
            names.add(f.name)
    return names


@functools.cache
def load_schema() -> Schema:
    """The tables, loaded on first use."""
    return Schema(orjson.loads(DATA_FILE.read_bytes()))
