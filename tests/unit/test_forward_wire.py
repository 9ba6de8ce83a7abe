"""Forward protocol messages as fluentd's own out_forward writes them (not only as fluent-logger does)."""

from __future__ import annotations

import struct

import msgpack

from harness.logging import forward


def out_forward_message(tag: str, entries: bytes, options: dict[str, object]) -> bytes:
    """[tag, entries, option] as out_forward writes it: the entries as a str 32 (0xdb), not a bin."""
    return (b"\x93" + msgpack.packb(tag) + struct.pack(">BI", 0xDB, len(entries)) + entries
            + msgpack.packb(options))


def test_packed_forward_entries_sent_as_a_str_are_decoded() -> None:
    now = 1_700_000_000.999999  # an EventTime whose nanoseconds, 3B 9A C6 18, are not UTF-8
    entries = forward.pack_entries([forward.Entry(now, {"message": "héllo"}), forward.Entry(now + 0.5, {"n": 1})])
    unpacker = forward.new_unpacker()
    unpacker.feed(out_forward_message("harness.component", entries, {"chunk": "c1", "size": 2}))
    (raw,) = list(unpacker)
    message = forward.decode(raw)
    assert (message.tag, message.chunk) == ("harness.component", "c1")
    assert [e.record for e in message.entries] == [{"message": "héllo"}, {"n": 1}]
    assert abs(message.entries[0].time - now) < 1e-6 and abs(message.entries[1].time - now - 0.5) < 1e-6
