"""Secrets encrypted at rest: the apiserver with `--encryption-provider-config` stores them under upstream's
`k8s:enc:aescbc:v1:` prefix, serves them in plain, reads what was written before the key existed (identity), and
keeps reading them when a new key is put first (rotation)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.client.rest import Client
from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd
from tests.integration.apiserver_fixtures import start_apiserver, stop_apiserver


def write_config(path: Path, *keys: tuple[str, bytes]) -> Path:
    entries = "".join(f"            - name: {name}\n              secret: {base64.b64encode(k).decode()}\n"
                      for name, k in keys)
    path.write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
                    "  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n"
                    f"{entries}      - identity: {{}}\n")
    return path


async def raw(etcd: object, key: str) -> bytes:
    async with EtcdBackend([etcd.endpoint]) as backend:  # type: ignore[attr-defined]
        rec = await backend.get(key)
        assert rec is not None, key
        return rec.value


async def create_secret(kubeconfig: Path, name: str, value: str) -> None:
    async with Client.from_kubeconfig(kubeconfig) as client:
        await client.request("POST", "/api/v1/namespaces/default/secrets",
                             body={"metadata": {"name": name}, "stringData": {"password": value}})


async def read_secret(kubeconfig: Path, name: str) -> str:
    async with Client.from_kubeconfig(kubeconfig) as client:
        secret = await client.request("GET", f"/api/v1/namespaces/default/secrets/{name}")
        return base64.b64decode(secret["data"]["password"]).decode()


@pytest.fixture
def etcd() -> Iterator[LocalEtcd]:
    """An etcd of its own: the session's apiservers have no key for what this test encrypts."""
    with LocalEtcd() as server:
        yield server


async def test_secrets_are_encrypted_in_etcd_and_keys_rotate(etcd: object, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    before, during, after = f"plain-{run}", f"enc1-{run}", f"enc2-{run}"
    plain_server = start_apiserver(etcd.endpoint, tmp_path)  # type: ignore[attr-defined]
    try:
        await create_secret(plain_server.kubeconfig, before, "written-before-encryption")
    finally:
        stop_apiserver(plain_server)

    key1, key2 = ("key1", bytes(range(32))), ("key2", bytes(range(1, 33)))
    config = write_config(tmp_path / "enc.yaml", key1)
    server = start_apiserver(etcd.endpoint, tmp_path, extra=["--encryption-provider-config", str(config)])
    try:
        await create_secret(server.kubeconfig, during, "sensitive-value-1")
        stored = await raw(etcd, f"/registry/secrets/default/{during}")
        assert stored.startswith(b"k8s:enc:aescbc:v1:key1:")
        assert b"sensitive-value-1" not in stored and base64.b64encode(b"sensitive-value-1") not in stored
        assert await read_secret(server.kubeconfig, during) == "sensitive-value-1"
        assert await read_secret(server.kubeconfig, before) == "written-before-encryption", "identity reads it"
    finally:
        stop_apiserver(server)

    rotated = write_config(tmp_path / "enc2.yaml", key2, key1)
    server = start_apiserver(etcd.endpoint, tmp_path, extra=["--encryption-provider-config", str(rotated)])
    try:
        await create_secret(server.kubeconfig, after, "sensitive-value-2")
        assert (await raw(etcd, f"/registry/secrets/default/{after}")).startswith(b"k8s:enc:aescbc:v1:key2:")
        assert await read_secret(server.kubeconfig, during) == "sensitive-value-1", "the old key still reads"
    finally:
        stop_apiserver(server)


async def test_an_apiserver_without_the_key_still_serves_everything_else(etcd: object, tmp_path: Path) -> None:
    config = write_config(tmp_path / "enc.yaml", ("key1", bytes(range(32))))
    server = start_apiserver(etcd.endpoint, tmp_path, extra=["--encryption-provider-config", str(config)])  # type: ignore[attr-defined]
    try:
        await create_secret(server.kubeconfig, "locked", "only-with-the-key")
    finally:
        stop_apiserver(server)
    keyless = start_apiserver(etcd.endpoint, tmp_path)  # type: ignore[attr-defined]  # ready: its caches synced
    try:
        async with Client.from_kubeconfig(keyless.kubeconfig) as client:
            names = [s["metadata"]["name"] for s in
                     (await client.request("GET", "/api/v1/namespaces/default/secrets"))["items"]]
            assert "locked" not in names, "an unreadable secret is left out, not served as garbage"
            await client.request("GET", "/api/v1/namespaces/default/configmaps")
        assert "cannot be read" in keyless.log.read_text()
    finally:
        stop_apiserver(keyless)
