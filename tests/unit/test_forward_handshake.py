"""The Forward protocol's shared-key handshake (HELO, PING, PONG) as fluentd's in_forward and out_forward speak it:
messages through msgpack as on the wire, the proofs pinned to the spec's formula, and each way a handshake fails."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from harness.logging import forward

KEY = "s3cret-shared-key"
AGENT, AGGREGATOR = "worker-1", "master-1-log-aggregator"


def wire(message: list[Any]) -> Any:
    """The message as the peer unpacks it (bytes stay bin, strings str)."""
    unpacker = forward.new_unpacker()
    unpacker.feed(forward.pack(message))
    (out,) = list(unpacker)
    return out


def handshake(*, client_key: str = KEY, server_key: str = KEY) -> tuple[forward.Helo, str, Any]:
    """HELO, then the client's PING, as received by the server: (the HELO as the client read it, its salt, the PING)."""
    nonce = forward.new_nonce()
    helo = forward.parse_helo(wire(forward.helo(nonce)))
    assert helo.nonce == nonce
    salt = forward.new_salt()
    return helo, salt, wire(forward.ping(helo, hostname=AGENT, shared_key=client_key, salt=salt))


def test_both_sides_prove_the_same_key_and_the_client_learns_the_server_s_name() -> None:
    helo, salt, ping = handshake()
    client = forward.check_ping(ping, nonce=helo.nonce, shared_key=KEY)
    assert (client.hostname, client.salt) == (AGENT, salt.encode())
    pong = wire(forward.pong(client, hostname=AGGREGATOR, nonce=helo.nonce, shared_key=KEY))
    assert pong[:4] == ["PONG", True, "", AGGREGATOR]
    assert forward.check_pong(pong, hostname=AGENT, salt=salt, nonce=helo.nonce, shared_key=KEY) == AGGREGATOR


def test_proofs_are_hex_sha512_of_salt_hostname_nonce_and_key() -> None:
    nonce = bytes(range(16))
    helo = forward.Helo(nonce)
    ping = forward.ping(helo, hostname=AGENT, shared_key=KEY, salt="00ff" * 8)
    expected = hashlib.sha512(("00ff" * 8 + AGENT).encode() + nonce + KEY.encode()).hexdigest()
    assert ping == ["PING", AGENT, "00ff" * 8, expected, "", ""]
    client = forward.check_ping(ping, nonce=nonce, shared_key=KEY)
    pong = forward.pong(client, hostname=AGGREGATOR, nonce=nonce, shared_key=KEY)
    assert pong[4] == hashlib.sha512(("00ff" * 8 + AGGREGATOR).encode() + nonce + KEY.encode()).hexdigest()


def test_a_wrong_key_is_refused_with_fluentd_s_reason() -> None:
    helo, salt, ping = handshake(client_key="not-the-key")
    with pytest.raises(forward.HandshakeError) as refused:
        forward.check_ping(ping, nonce=helo.nonce, shared_key=KEY)
    assert refused.value.reason == forward.SHARED_KEY_MISMATCH == "shared_key mismatch"
    pong = wire(forward.pong_refused(refused.value.reason))
    assert pong == ["PONG", False, "shared_key mismatch", "", ""]
    with pytest.raises(forward.HandshakeError, match=r"^authentication failed: shared_key mismatch$"):
        forward.check_pong(pong, hostname=AGENT, salt=salt, nonce=helo.nonce, shared_key="not-the-key")


def test_a_ping_made_for_another_connection_s_nonce_is_refused() -> None:
    _helo, _salt, ping = handshake()
    with pytest.raises(forward.HandshakeError, match=r"^shared_key mismatch$"):
        forward.check_ping(ping, nonce=forward.new_nonce(), shared_key=KEY)  # a replayed PING


@pytest.mark.parametrize(("ping", "reason"), [
    (None, "invalid ping message"),
    ({"PING": AGENT}, "invalid ping message"),
    (["PING", AGENT, "salt", "digest", ""], "invalid ping message"),  # five fields
    (["PONG", AGENT, "salt", "digest", "", ""], "invalid ping message"),
    (["PING", 7, "salt", "digest", "", ""], "invalid ping message"),  # a hostname that is not a string
    (["PING", AGENT, None, "digest", "", ""], "invalid ping message"),
    (["PING", AGENT, "salt", 12345, "", ""], "shared_key mismatch"),  # a proof that is not a string
    (["harness.pod", b"\x92\xd7\x00", {"size": 1, "chunk": "abc"}], "invalid ping message"),  # events, no PING
], ids=["nil", "map", "short", "pong", "int-hostname", "nil-salt", "int-proof", "packed-forward"])
def test_a_malformed_ping_is_refused(ping: Any, reason: str) -> None:
    with pytest.raises(forward.HandshakeError) as refused:
        forward.check_ping(ping, nonce=forward.new_nonce(), shared_key=KEY)
    assert refused.value.reason == reason


def test_a_server_that_does_not_know_the_key_is_not_trusted() -> None:
    helo, salt, ping = handshake()
    client = forward.check_ping(ping, nonce=helo.nonce, shared_key=KEY)
    impostor = wire(forward.pong(client, hostname=AGGREGATOR, nonce=helo.nonce, shared_key="guessed"))
    with pytest.raises(forward.HandshakeError, match=r"^shared key mismatch$"):
        forward.check_pong(impostor, hostname=AGENT, salt=salt, nonce=helo.nonce, shared_key=KEY)


def test_a_server_with_the_client_s_own_name_is_a_configuration_error() -> None:
    helo, salt, ping = handshake()
    client = forward.check_ping(ping, nonce=helo.nonce, shared_key=KEY)
    loop = forward.pong(client, hostname=AGENT, nonce=helo.nonce, shared_key=KEY)
    with pytest.raises(forward.HandshakeError, match="same hostname between input and output"):
        forward.check_pong(loop, hostname=AGENT, salt=salt, nonce=helo.nonce, shared_key=KEY)


@pytest.mark.parametrize("pong", [None, ["PONG", True, "", AGGREGATOR], ["HELO", {}], {"ack": "x"},
                                  ["PONG", True, "", 5, "digest"]])
def test_a_malformed_pong_is_refused(pong: Any) -> None:
    with pytest.raises(forward.HandshakeError, match=r"^invalid format for PONG message$"):
        forward.check_pong(pong, hostname=AGENT, salt="salt", nonce=b"n", shared_key=KEY)


def test_helo_options_as_fluentd_sends_them() -> None:
    assert wire(forward.helo(b"\x00" * 16)) == ["HELO", {"nonce": b"\x00" * 16, "auth": b"", "keepalive": True}]
    assert forward.parse_helo(["HELO", {"nonce": "text-nonce", "keepalive": False}]) == \
        forward.Helo(b"text-nonce", b"", False)
    assert forward.parse_helo(["HELO", None]) == forward.Helo(b"", b"", True)
    for bad in (["HELO"], ["PONG", {}], ["HELO", ["nonce"]], ["HELO", {"nonce": 5}], "HELO"):
        with pytest.raises(forward.HandshakeError, match="invalid helo"):
            forward.parse_helo(bad)


def test_a_helo_with_a_user_auth_salt_gets_username_and_password_digest() -> None:
    helo = forward.Helo(b"nonce", auth=b"auth-salt")
    ping = forward.ping(helo, hostname=AGENT, shared_key=KEY, salt="salt", username="u", password="p")
    assert ping[4:] == ["u", hashlib.sha512(b"auth-salt" + b"u" + b"p").hexdigest()]
    assert forward.ping(forward.Helo(b"nonce"), hostname=AGENT, shared_key=KEY, salt="salt",
                        username="u", password="p")[4:] == ["", ""]


def test_salts_and_nonces_are_fresh() -> None:
    assert len({forward.new_nonce() for _ in range(50)}) == 50
    salt = forward.new_salt()
    assert len(salt) == 32 and int(salt, 16) >= 0


def test_the_shared_key_file_is_read_without_surrounding_whitespace(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(f"  {KEY}\n")
    assert forward.read_shared_key(str(tmp_path / "key")) == KEY
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="holds no shared key"):
        forward.read_shared_key(str(tmp_path / "empty"))
    with pytest.raises(OSError):
        forward.read_shared_key(str(tmp_path / "missing"))


def test_packed_handshake_messages_keep_the_nonce_binary() -> None:
    raw = msgpack.unpackb(forward.pack(forward.helo(b"\xff" * 16)), raw=True)
    assert raw[1][b"nonce"] == b"\xff" * 16
