"""Encryption at rest: upstream's stored format per provider, reads by any configured key, and clear errors."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from harness.storage.encryption import (
    AESCBCProvider,
    AESGCMProvider,
    DecryptError,
    EncryptionConfigError,
    Identity,
    _Key,
    load_config,
)

K1, K2 = _Key("key1", bytes(range(32))), _Key("key2", bytes(range(32, 64)))
KEY = "/registry/secrets/default/s"


@pytest.mark.parametrize("provider", [AESCBCProvider([K1]), AESGCMProvider([K1])], ids=["aescbc", "aesgcm"])
def test_values_round_trip_under_upstreams_prefix(provider: AESCBCProvider | AESGCMProvider) -> None:
    plain = b'{"kind":"Secret","data":{"p":"aGlkZGVu"}}'
    stored = provider.encrypt(plain, KEY)
    assert stored.startswith(f"k8s:enc:{provider.name}:v1:key1:".encode())
    assert b"aGlkZGVu" not in stored
    assert provider.encrypt(plain, KEY) != stored, "a fresh IV or nonce every time"
    assert provider.decrypt(stored, KEY) == plain


def test_a_later_key_reads_what_an_older_one_wrote() -> None:
    stored = AESCBCProvider([K1]).encrypt(b"v", KEY)
    assert AESCBCProvider([K2, K1]).decrypt(stored, KEY) == b"v"
    assert AESCBCProvider([K2]).decrypt(stored, KEY) is None, "not written by this provider's keys"


def test_gcm_binds_the_value_to_its_key() -> None:
    stored = AESGCMProvider([K1]).encrypt(b"v", KEY)
    with pytest.raises(DecryptError):
        AESGCMProvider([K1]).decrypt(stored, "/registry/secrets/default/other")


def test_a_wrong_key_of_the_same_name_is_an_error_not_garbage() -> None:
    stored = AESCBCProvider([K1]).encrypt(b"v" * 40, KEY)
    with pytest.raises(DecryptError):
        AESCBCProvider([_Key("key1", bytes(32))]).decrypt(stored, KEY)


def test_identity_reads_only_plain_values() -> None:
    assert Identity().decrypt(b"{}", KEY) == b"{}"
    assert Identity().decrypt(b"k8s:enc:aescbc:v1:key1:xxxx", KEY) is None


def config(tmp_path: Path, providers: str) -> Path:
    path = tmp_path / "enc.yaml"
    path.write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
                    f"  - resources: [secrets, '*.apps']\n    providers:\n{providers}")
    return path


def test_the_config_file_as_upstream_writes_it(tmp_path: Path) -> None:
    secret = base64.b64encode(bytes(32)).decode()
    [rule] = load_config(config(tmp_path, f"      - aesgcm:\n          keys:\n            - name: k\n"
                                          f"              secret: {secret}\n      - identity: {{}}\n"))
    assert [p.name for p in rule.providers] == ["aesgcm", "identity"]
    assert rule.covers("secrets", "") and rule.covers("deployments", "apps") and not rule.covers("configmaps", "")


@pytest.mark.parametrize(("providers", "message"), [
    ("      - secretbox: {keys: [{name: k, secret: AAAA}]}\n", "secretbox"),
    ("      - aescbc: {keys: [{name: k, secret: '!!'}]}\n", "keys[0].secret: not base64"),
    ("      - aescbc: {keys: [{name: k, secret: AAAA}]}\n", "must be 16, 24 or 32 bytes, not 3"),
    ("      - aescbc: {keys: []}\n", "at least one key"),
    ("      []\n", "at least one provider"),
])
def test_bad_configs_name_the_field(tmp_path: Path, providers: str, message: str) -> None:
    with pytest.raises(EncryptionConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(config(tmp_path, providers))
