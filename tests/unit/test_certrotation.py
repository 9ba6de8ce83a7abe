"""`harness pki rotate`'s steps: renewal keeps what it must, the ports to wait on, the inventory read back, and a
live TLS server that serves the renewed certificate once its files change (no restart)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import certrotation, inventory, pki
from harness.cluster.local import NodeSpec
from harness.util import certreload, x509

NODES = [NodeSpec("master-1", "master", "192.168.56.10"), NodeSpec("master-2", "master", "192.168.56.11"),
         NodeSpec("worker-1", "worker", "192.168.56.21")]
NOW = dt.datetime.now(dt.UTC)  # the live-server tests verify validity against the clock
PLAN = pki.plan(NODES, service_cidr="10.96.0.0/12")


@pytest.fixture
def made(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.ensure(directory, PLAN, now=NOW, key_kind="ecdsa")
    return directory


def _serial(directory: Path, name: str) -> int:
    return x509.load_cert(directory / f"{name}.crt").serial_number


def test_renewing_everything_keeps_the_cas_keys_and_names(made: Path) -> None:
    kept = {p: p.read_bytes() for p in made.rglob("*") if p.name in ("ca.crt", "ca.key", "sa.key", "sa.pub",
                                                                     pki.ENCRYPTION_CONFIG)}
    before = {c.name: (_serial(made, c.name), (made / c.key_file).read_bytes(),
                       x509.describe(x509.load_cert(made / c.cert_file))) for c in PLAN.certs}
    later = NOW + dt.timedelta(days=200)
    renewed = pki.renew(made, PLAN, now=later, key_kind="ecdsa")
    assert {c.name for c in renewed} == {c.name for c in PLAN.certs}
    for cert in PLAN.certs:
        serial, key, described = before[cert.name]
        now_described = x509.describe(x509.load_cert(made / cert.cert_file))
        assert _serial(made, cert.name) != serial and (made / cert.key_file).read_bytes() != key
        assert (now_described.subject, now_described.sans) == (described.subject, described.sans)
        assert now_described.not_after > described.not_after
        x509.load(made / cert.cert_file, made / cert.key_file)  # the key is the certificate's
        assert (made / cert.key_file).stat().st_mode & 0o777 == 0o600
    assert {p: p.read_bytes() for p in kept} == kept


def test_renewing_named_certificates_touches_only_those(made: Path) -> None:
    others = {c.name: _serial(made, c.name) for c in PLAN.certs if c.name != "apiserver"}
    old = _serial(made, "apiserver")
    assert [c.name for c in pki.renew(made, PLAN, ["apiserver"], now=NOW, key_kind="ecdsa")] == ["apiserver"]
    assert _serial(made, "apiserver") != old
    assert {n: _serial(made, n) for n in others} == others


def test_an_unknown_name_is_refused_with_the_names_there_are(made: Path) -> None:
    before = _serial(made, "apiserver")
    with pytest.raises(pki.PKIError, match=r"no certificate apiserverx .*its certificates: apiserver, "):
        pki.renew(made, PLAN, ["apiserver", "apiserverx"], now=NOW)
    assert _serial(made, "apiserver") == before  # nothing renewed when a name is wrong


def test_the_ports_to_wait_on_are_where_each_certificate_is_served(made: Path) -> None:
    renewed = pki.renew(made, PLAN, ["apiserver", "machines/worker-1/kubelet", "machines/master-2/etcd/peer",
                                     "admin"], now=NOW, key_kind="ecdsa")
    eps = certrotation.endpoints(PLAN, NODES, renewed, made)
    assert {(e.cert, e.machine, e.port) for e in eps} == {
        ("apiserver", "master-1", 6443), ("apiserver", "master-2", 6443),
        ("machines/worker-1/kubelet", "worker-1", 10250), ("machines/master-2/etcd/peer", "master-2", 2380)}
    assert all(e.serial == _serial(made, e.cert) for e in eps)


def test_the_cluster_is_read_back_from_its_inventory(tmp_path: Path) -> None:
    hosts = inventory.write_inventory(tmp_path / "hosts.yml", "c", NODES, tmp_path / "key",
                                      cluster_vars={"service_cidr": "10.96.0.0/12"})
    nodes, cidr = certrotation.cluster_from_inventory(hosts)
    assert (nodes, cidr) == (NODES, "10.96.0.0/12")
    (tmp_path / "bad.yml").write_text("all: {}\n")
    with pytest.raises(certrotation.RotationError, match="names no machines"):
        certrotation.cluster_from_inventory(tmp_path / "bad.yml")


@pytest.fixture
def served(made: Path) -> Iterator[tuple[int, ssl.SSLContext]]:
    """A TLS server on loopback presenting the apiserver certificate, its context following the files."""
    cert = pki.Cert("apiserver", pki.CA, x509.CertRequest("kube-apiserver"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(made / cert.cert_file, made / cert.key_file)
    certreload.follow(context, str(made / cert.cert_file), str(made / cert.key_file))
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], context
    stop.set()
    listener.close()
    thread.join(timeout=5)
    certreload._FOLLOWED.clear()


def test_a_live_server_serves_the_renewed_certificate_once_its_files_change(
        made: Path, served: tuple[int, ssl.SSLContext]) -> None:
    port, _context = served
    before = _serial(made, "apiserver")
    ep = certrotation.Endpoint("apiserver", "master-1", "127.0.0.1", port, pki.CA, before)
    assert certrotation.served_serial(ep, made) == before
    [renewed] = pki.renew(made, PLAN, ["apiserver"], now=NOW, key_kind="ecdsa")
    [pending] = certrotation.endpoints(PLAN, [NodeSpec("master-1", "master", "127.0.0.1")], [renewed], made)
    pending = certrotation.Endpoint(pending.cert, pending.machine, pending.ip, port, pending.ca, pending.serial)
    assert certrotation.served_serial(pending, made) == before  # not reloaded yet
    assert certrotation.wait_served([pending], made, timeout=0) == [pending]
    assert certreload.reload_changed() == [str(made / "apiserver.crt")]
    seen: list[str] = []
    assert certrotation.wait_served([pending], made, timeout=10, progress=seen.append) == []
    assert seen == [f"apiserver on master-1:{port}: serving the renewed certificate"]


def test_a_port_that_does_not_answer_is_reported_late(made: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    ep = certrotation.Endpoint("apiserver", "master-1", "127.0.0.1", port, pki.CA, 1)
    assert certrotation.served_serial(ep, made) is None
    assert certrotation.wait_served([ep], made, timeout=0) == [ep]
