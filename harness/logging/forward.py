"""The Fluentd Forward protocol (v1), the wire format between log agents and the aggregator.

Spec: https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1. A connection carries msgpack
arrays, one per message, in any of the four event modes:

- Message:                 [tag, time, record, option?]
- Forward:                 [tag, [[time, record], ...], option?]
- PackedForward:           [tag, bin(msgpack stream of [time, record]), option?]
- CompressedPackedForward: PackedForward whose bin is gzip'd, option {"compressed": "gzip"}

`time` is an integer (seconds) or an EventTime (msgpack ext type 0: seconds and nanoseconds, two big-endian
uint32). When option carries `chunk` (the sender's `require_ack_response`), the receiver answers {"ack": chunk}
once the events are stored; the sender keeps them until then and sends them again otherwise, so delivery is
at-least-once. The handshake (HELO/PING/PONG, for shared keys) is not implemented: peers are on the cluster network.
"""

from __future__ import annotations

import base64
import gzip
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

EVENT_TIME_EXT = 0
DEFAULT_PORT = 24224


class ForwardProtocolError(Exception):
    """A message that is not Forward protocol (the connection is closed: the stream cannot be resynchronised)."""


@dataclass
class Entry:
    """One log event: when (seconds since the epoch, with fractions) and what."""

    time: float
    record: dict[str, Any]


@dataclass
class Message:
    """A decoded protocol message: its tag, its entries, and the chunk id to acknowledge (None: no ack wanted)."""

    tag: str
    entries: list[Entry]
    chunk: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def event_time(seconds: float) -> msgpack.ExtType:
    """An EventTime (nanosecond precision), as fluent-logger sends with nanosecond_precision=True."""
    sec = int(seconds)
    return msgpack.ExtType(EVENT_TIME_EXT, struct.pack(">II", sec, round((seconds - sec) * 1e9) % 1_000_000_000))


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_EXT and len(data) == 8:
        sec, nsec = struct.unpack(">II", data)
        return sec + nsec / 1e9
    return msgpack.ExtType(code, data)


def _time(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ForwardProtocolError(f"event time must be an integer or an EventTime, not {type(value).__name__}")


def _record(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ForwardProtocolError(f"record must be a map, not {type(value).__name__}")
    return {(k.decode(errors="replace") if isinstance(k, bytes) else str(k)):
            (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in value.items()}


def new_unpacker() -> msgpack.Unpacker:
    """A streaming unpacker for a connection's bytes (feed it, iterate it for whole messages)."""
    return msgpack.Unpacker(raw=False, ext_hook=_ext_hook, max_buffer_size=64 * 1024 * 1024,
                            unicode_errors="surrogateescape")


def decode(message: Any) -> Message:
    """One unpacked protocol message, in any mode, as a Message; ForwardProtocolError if it is not one."""
    if not isinstance(message, (list, tuple)) or len(message) < 2 or not isinstance(message[0], str):
        raise ForwardProtocolError("a message is an array starting with a tag string")
    tag, second = message[0], message[1]
    if isinstance(second, (list, tuple)):  # Forward
        options = message[2] if len(message) > 2 else {}
        entries = [_entry(e) for e in second]
    elif isinstance(second, (bytes, bytearray)):  # PackedForward / CompressedPackedForward
        options = message[2] if len(message) > 2 else {}
        data = bytes(second)
        if isinstance(options, dict) and options.get("compressed") == "gzip":
            data = gzip.decompress(data)
        unpacker = new_unpacker()
        unpacker.feed(data)
        entries = [_entry(e) for e in unpacker]
    else:  # Message: [tag, time, record, option?]
        if len(message) < 3:
            raise ForwardProtocolError("a Message is [tag, time, record, option?]")
        options = message[3] if len(message) > 3 else {}
        entries = [Entry(_time(second), _record(message[2]))]
    if not isinstance(options, dict):
        raise ForwardProtocolError("option must be a map")
    chunk = options.get("chunk")
    return Message(tag, entries, str(chunk) if chunk is not None else None, options)


def _entry(value: Any) -> Entry:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ForwardProtocolError("an entry is [time, record]")
    return Entry(_time(value[0]), _record(value[1]))


def new_chunk_id() -> str:
    """A chunk id as fluentd makes them: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode()


def pack_entries(entries: Iterable[Entry]) -> bytes:
    """The msgpack stream of [EventTime, record] a PackedForward carries."""
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join(packer.pack([event_time(e.time), e.record]) for e in entries)


def packed_forward(tag: str, entries: Iterable[Entry], chunk: str | None = None, *, compress: bool = False) -> bytes:
    """A PackedForward message (CompressedPackedForward with compress), asking for an ack when chunk is given."""
    entries = list(entries)
    data = pack_entries(entries)
    options: dict[str, Any] = {"size": len(entries)}
    if compress:
        data = gzip.compress(data, compresslevel=1)
        options["compressed"] = "gzip"
    if chunk is not None:
        options["chunk"] = chunk
    return msgpack.packb([tag, data, options], use_bin_type=True)


def ack(chunk: str) -> bytes:
    return msgpack.packb({"ack": chunk}, use_bin_type=True)


def read_acks(unpacker: msgpack.Unpacker) -> Iterator[str]:
    """The chunk ids acknowledged in what the unpacker holds."""
    for reply in unpacker:
        if isinstance(reply, dict) and "ack" in reply:
            yield str(reply["ack"])


__all__ = ["DEFAULT_PORT", "Entry", "ForwardProtocolError", "Message", "ack", "decode", "event_time",
           "new_chunk_id", "new_unpacker", "pack_entries", "packed_forward", "read_acks"]
