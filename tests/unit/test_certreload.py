"""Certificates follow their files: a changed pair is loaded into the same context, a half-written one is not."""

from __future__ import annotations

import contextlib
import gc
import ssl
from pathlib import Path

import pytest

from harness.util import certreload, x509


@pytest.fixture(autouse=True)
def _clean() -> None:
    certreload._FOLLOWED.clear()


def _pair(directory: Path, ca: x509.Issued, cn: str) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    x509.save(x509.sign(ca, x509.CertRequest(cn, sans=("localhost",), usages=(x509.SERVER_AUTH,))), cert, key)
    return cert, key


def _served_cn(context: ssl.SSLContext, ca: x509.Issued, tmp_path: Path) -> str:
    """Handshake over memory BIOs and return the CN the server presented."""
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    peer = client.getpeercert()
    assert peer is not None
    return dict(x[0] for x in peer["subject"])["commonName"]


def test_a_changed_pair_is_loaded_into_the_same_context(tmp_path: Path) -> None:
    ca = x509.new_ca("test-ca")
    cert, key = _pair(tmp_path, ca, "first")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    certreload.follow(context, str(cert), str(key))
    assert certreload.reload_changed() == []
    assert _served_cn(context, ca, tmp_path) == "first"

    _pair(tmp_path, ca, "second")
    assert certreload.reload_changed() == [str(cert)]
    assert _served_cn(context, ca, tmp_path) == "second"
    assert certreload.reload_changed() == []


def test_a_half_written_pair_keeps_the_old_one_and_is_tried_again(tmp_path: Path) -> None:
    ca = x509.new_ca("test-ca")
    cert, key = _pair(tmp_path, ca, "first")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    certreload.follow(context, str(cert), str(key))
    old_key = key.read_bytes()
    _pair(tmp_path, ca, "second")
    key.write_bytes(old_key)  # the new certificate with the old key: a rotation caught half-way
    assert certreload.reload_changed() == []
    assert _served_cn(context, ca, tmp_path) == "first"
    _pair(tmp_path, ca, "third")
    assert certreload.reload_changed() == [str(cert)]
    assert _served_cn(context, ca, tmp_path) == "third"


def test_contexts_no_longer_used_are_let_go(tmp_path: Path) -> None:
    ca = x509.new_ca("test-ca")
    cert, key = _pair(tmp_path, ca, "first")
    for _ in range(3):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        certreload.follow(context, str(cert), str(key))
        del context
        gc.collect()
    assert len(certreload._FOLLOWED) == 1
    _pair(tmp_path, ca, "second")
    assert certreload.reload_changed() == []  # the one left is dead too
