"""etcd with client-certificate authentication, as clusters run it: the backend and the apiserver reach it with the
etcd CA's client certificates (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`), and a client without one, or
with a certificate of another CA, is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.client.rest import Client
from harness.cluster import pki
from harness.cluster.local import NodeSpec
from harness.storage.backend import StorageError
from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd, ServerTLS
from harness.util import x509
from tests.integration.apiserver_fixtures import start_apiserver, stop_apiserver


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalEtcd, Path]]:
    directory = tmp_path_factory.mktemp("etcd-tls") / "pki"
    pki.ensure(directory, pki.plan([NodeSpec("master-1", "master", "127.0.0.1")], service_cidr="10.96.0.0/12"),
               key_kind="ecdsa")
    member = directory / "machines" / "master-1" / "etcd"
    server = LocalEtcd(tls=ServerTLS(str(directory / "etcd" / "ca.crt"), str(member / "server.crt"),
                                     str(member / "server.key")))
    server.start_sync()
    yield server, directory
    server.stop()


def backend(server: LocalEtcd, directory: Path, stem: str | None = "apiserver-etcd-client") -> EtcdBackend:
    return EtcdBackend([server.endpoint], ca_file=str(directory / "etcd" / "ca.crt"),
                       cert_file=str(directory / f"{stem}.crt") if stem else None,
                       key_file=str(directory / f"{stem}.key") if stem else None, connect_timeout=3)


async def test_the_apiserver_client_certificate_reads_and_writes(secured: tuple[LocalEtcd, Path]) -> None:
    server, directory = secured
    key = f"/test/tls-{uuid.uuid4().hex[:8]}"
    async with backend(server, directory) as etcd:
        await etcd.create(key, b"v1")
        record = await etcd.get(key)
        assert record is not None and record.value == b"v1"


async def test_no_certificate_or_another_cas_is_refused(secured: tuple[LocalEtcd, Path], tmp_path: Path) -> None:
    server, directory = secured
    with pytest.raises(StorageError):
        async with backend(server, directory, stem=None) as etcd:
            await etcd.get("/test/anything")
    stranger = x509.sign(x509.new_ca("not-etcd", key_kind="ecdsa"), x509.CertRequest("kube-apiserver-etcd-client"),
                         key_kind="ecdsa")
    x509.save(stranger, tmp_path / "s.crt", tmp_path / "s.key")
    other = EtcdBackend([server.endpoint], ca_file=str(directory / "etcd" / "ca.crt"),
                        cert_file=str(tmp_path / "s.crt"), key_file=str(tmp_path / "s.key"), connect_timeout=3)
    with pytest.raises(StorageError):
        async with other as etcd:
            await etcd.get("/test/anything")


async def test_the_apiserver_serves_from_etcd_over_tls(secured: tuple[LocalEtcd, Path], tmp_path: Path) -> None:
    server, directory = secured
    process = start_apiserver(server.endpoint, tmp_path, extra=[
        "--etcd-cafile", str(directory / "etcd" / "ca.crt"),
        "--etcd-certfile", str(directory / "apiserver-etcd-client.crt"),
        "--etcd-keyfile", str(directory / "apiserver-etcd-client.key")])
    try:
        async with Client.from_kubeconfig(process.kubeconfig) as client:
            names = {ns["metadata"]["name"] for ns in (await client.request("GET", "/api/v1/namespaces"))["items"]}
        assert "kube-system" in names
    finally:
        stop_apiserver(process)
