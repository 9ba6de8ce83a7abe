"""The Fluentd Forward protocol (v1), the wire format between log agents and the aggregator.

Spec: https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1. A connection carries msgpack
arrays, one per message, in any of the four event modes:

- Message:                 [tag, time, record, option?]
- Forward:                 [tag, [[time, record], ...], option?]
- PackedForward:           [tag, bin(msgpack stream of [time, record]), option?] (str 32 from fluentd's out_forward)
- CompressedPackedForward: PackedForward whose bin is gzip'd, option {"compressed": "gzip"}

`time` is an integer (seconds) or an EventTime (msgpack ext type 0: seconds and nanoseconds, two big-endian
uint32). When option carries `chunk` (the sender's `require_ack_response`), the receiver answers {"ack": chunk}
once the events are stored; the sender keeps them until then and sends them again otherwise, so delivery is
at-least-once.

The handshake (fluentd's `<security>`): before any event, a server with a shared key sends
HELO `["HELO", {"nonce": bin, "auth": salt for user auth or "", "keepalive": bool}]`; the client answers
PING `["PING", self_hostname, shared_key_salt, hex sha512(shared_key_salt + self_hostname + nonce + shared_key),
username, password_digest]`; the server answers PONG `["PONG", true, "", self_hostname, hex sha512(shared_key_salt +
server's self_hostname + nonce + shared_key)]`, which the client checks, or `["PONG", false, reason, "", ""]` and
closes. Both sides thus prove they know the key without sending it; the nonce makes each proof good for one
connection only. The functions here build and check those messages and do no I/O; the reasons are fluentd's words
(in_forward's "shared_key mismatch", out_forward's "authentication failed: ..."). TLS (`<transport tls>`) is the
connection's business, not the messages'.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
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
    elif isinstance(second, (bytes, bytearray, str)):  # PackedForward / CompressedPackedForward
        # fluentd's out_forward sends the entries as a str 32, not bin; new_unpacker kept their bytes
        options = message[2] if len(message) > 2 else {}
        data = second.encode(errors="surrogateescape") if isinstance(second, str) else bytes(second)
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


# --------------------------------------------------------------------------------------------------- handshake

HELO, PING, PONG = "HELO", "PING", "PONG"
#: in_forward's reasons in a refusing PONG.
SHARED_KEY_MISMATCH = "shared_key mismatch"
INVALID_PING = "invalid ping message"


class HandshakeError(ForwardProtocolError):
    """A handshake that failed; `reason` says why in fluentd's words (a refusing PONG carries it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Helo:
    """What a server's HELO says: the nonce to prove the key against, the user-auth salt (empty: no user auth), and
    whether the connection may carry more than one message."""

    nonce: bytes
    auth: bytes = b""
    keepalive: bool = True


@dataclass(frozen=True)
class Ping:
    """A client's valid PING: who it says it is and the salt its proof used (the PONG's proof uses it too)."""

    hostname: str
    salt: bytes
    username: str = ""


def new_nonce() -> bytes:
    """16 random bytes, as in_forward's nonce and user-auth salt."""
    return os.urandom(16)


def new_salt() -> str:
    """A client's shared-key salt, as out_forward makes it: 16 random bytes in hex."""
    return os.urandom(16).hex()


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def shared_key_digest(salt: str | bytes, hostname: str | bytes, nonce: str | bytes, shared_key: str | bytes) -> str:
    """hex sha512(salt + hostname + nonce + shared_key): the proof of the key in a PING and in a PONG."""
    return hashlib.sha512(b"".join(map(_bytes, (salt, hostname, nonce, shared_key)))).hexdigest()


def _same(digest: Any, expected: str) -> bool:
    return isinstance(digest, (str, bytes)) and hmac.compare_digest(_bytes(digest), expected.encode())


def helo(nonce: bytes, *, auth: bytes = b"", keepalive: bool = True) -> list[Any]:
    """The server's HELO."""
    return [HELO, {"nonce": nonce, "auth": auth, "keepalive": keepalive}]


def parse_helo(message: Any) -> Helo:
    """A HELO's options; HandshakeError (out_forward's words) if the message is not one."""
    if not isinstance(message, (list, tuple)) or len(message) != 2 or message[0] != HELO:
        raise HandshakeError("received invalid helo message")
    options = message[1] or {}
    if not isinstance(options, dict):
        raise HandshakeError("received invalid helo message")
    nonce, auth = options.get("nonce") or b"", options.get("auth") or b""
    if not isinstance(nonce, (str, bytes)) or not isinstance(auth, (str, bytes)):
        raise HandshakeError("received invalid helo message")
    return Helo(_bytes(nonce), _bytes(auth), bool(options.get("keepalive", True)))


def ping(server: Helo, *, hostname: str, shared_key: str, salt: str, username: str = "",
         password: str = "") -> list[Any]:
    """The client's PING answering `server`'s HELO. When the HELO carries a user-auth salt, the username and
    hex sha512(auth salt + username + password) go along (empty ones, as out_forward sends without a <user>)."""
    proof = shared_key_digest(salt, hostname, server.nonce, shared_key)
    password_digest = hashlib.sha512(server.auth + username.encode() + password.encode()).hexdigest() \
        if server.auth else ""
    return [PING, hostname, salt, proof, username if server.auth else "", password_digest]


def check_ping(message: Any, *, nonce: bytes, shared_key: str) -> Ping:
    """The client's PING checked against this connection's nonce and the key; HandshakeError with in_forward's
    reason ("invalid ping message", "shared_key mismatch") otherwise. User auth is not checked (none is set)."""
    if not isinstance(message, (list, tuple)) or len(message) != 6 or message[0] != PING:
        raise HandshakeError(INVALID_PING)
    _, hostname, salt, proof, username, _password = message
    if not isinstance(hostname, (str, bytes)) or not isinstance(salt, (str, bytes)):
        raise HandshakeError(INVALID_PING)
    if not _same(proof, shared_key_digest(salt, hostname, nonce, shared_key)):
        raise HandshakeError(SHARED_KEY_MISMATCH)
    name = hostname.decode(errors="replace") if isinstance(hostname, bytes) else hostname
    return Ping(name, _bytes(salt), username if isinstance(username, str) else "")


def pong(client: Ping, *, hostname: str, nonce: bytes, shared_key: str) -> list[Any]:
    """The server's PONG accepting `client`, proving the key in turn with the server's own hostname."""
    return [PONG, True, "", hostname, shared_key_digest(client.salt, hostname, nonce, shared_key)]


def pong_refused(reason: str) -> list[Any]:
    """The server's PONG refusing the client (the server closes the connection after it)."""
    return [PONG, False, reason, "", ""]


def check_pong(message: Any, *, hostname: str, salt: str, nonce: bytes, shared_key: str) -> str:
    """The server's PONG checked against what this client sent; the server's hostname, or HandshakeError with
    out_forward's reason: "invalid format for PONG message", "authentication failed: <the server's reason>",
    "same hostname between input and output: invalid configuration", "shared key mismatch"."""
    if not isinstance(message, (list, tuple)) or len(message) != 5 or message[0] != PONG:
        raise HandshakeError("invalid format for PONG message")
    _, accepted, reason, server, proof = message
    if accepted is not True:
        raise HandshakeError(f"authentication failed: {reason}")
    if not isinstance(server, str):
        raise HandshakeError("invalid format for PONG message")
    if server == hostname:
        raise HandshakeError("same hostname between input and output: invalid configuration")
    if not _same(proof, shared_key_digest(salt, server, nonce, shared_key)):
        raise HandshakeError("shared key mismatch")
    return server


def pack(message: Any) -> bytes:
    """One protocol message on the wire (bytes as msgpack bin, as fluentd's nonce)."""
    return msgpack.packb(message, use_bin_type=True)


def read_shared_key(path: str) -> str:
    """A shared key from its file, surrounding whitespace removed; ValueError if the file holds none (OSError if it
    cannot be read)."""
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"{path} holds no shared key")
    return key


__all__ = ["DEFAULT_PORT", "HELO", "INVALID_PING", "PING", "PONG", "SHARED_KEY_MISMATCH", "Entry",
           "ForwardProtocolError", "HandshakeError", "Helo", "Message", "Ping", "ack", "check_ping", "check_pong",
           "decode", "event_time", "helo", "new_chunk_id", "new_nonce", "new_salt", "new_unpacker", "pack",
           "pack_entries", "packed_forward", "parse_helo", "ping", "pong", "pong_refused", "read_acks",
           "read_shared_key", "shared_key_digest"]
