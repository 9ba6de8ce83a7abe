"""The cluster's PKI: certificates as kubeadm names them, made once and kept, per-machine files, expiry, bad files."""

from __future__ import annotations

import datetime as dt
import re
import stat
from pathlib import Path

import pytest

from harness.cluster import pki
from harness.cluster.local import NodeSpec
from harness.util import x509

NODES = [NodeSpec("master-1", "master", "192.168.56.10"), NodeSpec("worker-1", "worker", "192.168.56.21")]
HA = [NodeSpec("master-1", "master", "192.168.56.10"), NodeSpec("master-2", "master", "192.168.56.11"),
      NodeSpec("master-3", "master", "192.168.56.12"), NodeSpec("worker-1", "worker", "192.168.56.21")]
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
FAST = "ecdsa"  # ECDSA keys are made in microseconds, RSA 2048 in tens of milliseconds; one test keeps RSA


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "pki"
    pki.ensure(directory, pki.plan(NODES, service_cidr="10.96.0.0/12"), now=NOW, key_kind=FAST)
    return directory


def described(directory: Path, name: str) -> x509.Description:
    return x509.describe(x509.load_cert(directory / f"{name}.crt"))


def test_apiserver_certificate_names_every_way_clients_reach_it() -> None:
    sans = pki.apiserver_sans([n for n in HA if n.role == "master"], "10.96.0.0/12")
    assert set(sans) == {"master-1", "master-2", "master-3", "192.168.56.10", "192.168.56.11", "192.168.56.12",
                         "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                         "kubernetes.default.svc.cluster.local", "localhost", "127.0.0.1"}


@pytest.mark.parametrize(("name", "subject", "issuer", "usages"), [
    ("ca", "CN=kubernetes", "CN=kubernetes", ()),
    ("etcd/ca", "CN=etcd-ca", "CN=etcd-ca", ()),
    ("front-proxy-ca", "CN=front-proxy-ca", "CN=front-proxy-ca", ()),
    ("apiserver", "CN=kube-apiserver", "CN=kubernetes", ("server",)),
    ("apiserver-kubelet-client", "CN=kube-apiserver-kubelet-client,O=system:masters", "CN=kubernetes", ("client",)),
    ("apiserver-etcd-client", "CN=kube-apiserver-etcd-client", "CN=etcd-ca", ("client",)),
    ("front-proxy-client", "CN=front-proxy-client", "CN=front-proxy-ca", ("client",)),
    ("etcd/healthcheck-client", "CN=kube-etcd-healthcheck-client", "CN=etcd-ca", ("client",)),
    ("admin", "CN=kubernetes-admin,O=system:masters", "CN=kubernetes", ("client",)),
    ("scheduler", "CN=system:kube-scheduler", "CN=kubernetes", ("client",)),
    ("controller-manager", "CN=system:kube-controller-manager", "CN=kubernetes", ("client",)),
    ("kube-proxy", "CN=system:kube-proxy,O=system:node-proxier", "CN=kubernetes", ("client",)),
    ("dns", "CN=system:kube-dns", "CN=kubernetes", ("client",)),
    ("pod-routes", "CN=system:harness-pod-routes", "CN=kubernetes", ("client",)),
    ("prometheus", "CN=system:prometheus", "CN=kubernetes", ("client",)),
    ("machines/master-1/etcd/server", "CN=master-1", "CN=etcd-ca", ("server", "client")),
    ("machines/master-1/etcd/peer", "CN=master-1", "CN=etcd-ca", ("server", "client")),
    ("machines/master-1/log-aggregator", "CN=harness-log-aggregator", "CN=kubernetes", ("server",)),
    ("machines/worker-1/kubelet", "CN=system:node:worker-1,O=system:nodes", "CN=kubernetes", ("server",)),
])
def test_each_certificate_says_what_upstream_s_does(made: Path, name: str, subject: str, issuer: str,
                                                    usages: tuple[str, ...]) -> None:
    d = described(made, name)
    assert (d.subject, d.issuer, d.usages) == (subject, issuer, usages)
    assert d.is_ca == (not usages)
    assert d.not_before == NOW - x509.BACKDATE
    assert d.not_after == NOW + dt.timedelta(days=3650 if d.is_ca else 365)


def test_etcd_and_kubelet_serving_certificates_name_their_machine(made: Path) -> None:
    assert set(described(made, "machines/master-1/etcd/server").sans) == {
        "master-1", "localhost", "192.168.56.10", "127.0.0.1", "::1"}
    assert set(described(made, "machines/worker-1/kubelet").sans) == {"worker-1", "192.168.56.21"}


def test_keys_are_0600_and_directories_0700(made: Path) -> None:
    for path in made.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.suffix == ".key":
            assert mode == 0o600, path
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_a_second_run_changes_nothing(made: Path) -> None:
    before = {p: p.read_bytes() for p in made.rglob("*") if p.is_file()}
    assert not pki.ensure(made, pki.plan(NODES, service_cidr="10.96.0.0/12"), now=NOW + dt.timedelta(days=1),
                          key_kind=FAST)
    assert {p: p.read_bytes() for p in made.rglob("*") if p.is_file()} == before


def test_new_masters_reissue_only_what_names_them(tmp_path: Path) -> None:
    pki.ensure(tmp_path, pki.plan(NODES, service_cidr="10.96.0.0/12"), now=NOW, key_kind=FAST)
    ca = (tmp_path / "ca.crt").read_bytes()
    changes = pki.ensure(tmp_path, pki.plan(HA, service_cidr="10.96.0.0/12"), now=NOW, key_kind=FAST)
    assert changes.cas == () and not changes.sa_key
    assert set(changes.certs) == {"apiserver", *(f"machines/master-{i}/{k}" for i in (2, 3)
                                                 for k in ("etcd/server", "etcd/peer", "kube-scheduler-server",
                                                           "kube-controller-manager-server", "log-aggregator"))}
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert "192.168.56.12" in described(tmp_path, "apiserver").sans


def test_certificates_near_expiry_are_renewed_and_reported(tmp_path: Path) -> None:
    the_plan = pki.plan(NODES, service_cidr="10.96.0.0/12")
    pki.ensure(tmp_path, the_plan, now=NOW, key_kind=FAST)
    later = NOW + dt.timedelta(days=365 - pki.WARN_DAYS + 1)
    assert {c.name for c in pki.expiring(tmp_path, now=later)} == {c.name for c in the_plan.certs}
    changes = pki.ensure(tmp_path, the_plan, now=later, key_kind=FAST)
    assert set(changes.certs) == {c.name for c in the_plan.certs} and not changes.cas
    assert pki.expiring(tmp_path, now=later) == []


def test_a_certificate_from_another_ca_is_replaced(tmp_path: Path) -> None:
    the_plan = pki.plan(NODES, service_cidr="10.96.0.0/12")
    pki.ensure(tmp_path, the_plan, now=NOW, key_kind=FAST)
    stranger = x509.sign(x509.new_ca("someone-else", now=NOW), the_plan.by_name()["admin"].request, now=NOW)
    x509.save(stranger, tmp_path / "admin.crt", tmp_path / "admin.key")
    assert pki.ensure(tmp_path, the_plan, now=NOW, key_kind=FAST).certs == ("admin",)
    assert x509.verify_signed_by(x509.load_cert(tmp_path / "admin.crt"), x509.load_cert(tmp_path / "ca.crt"))


def test_a_broken_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    pki.ensure(tmp_path, pki.plan(NODES, service_cidr="10.96.0.0/12"), now=NOW, key_kind=FAST)
    (tmp_path / "ca.key").write_text("not a key")
    with pytest.raises(pki.PKIError, match=r"CA ca in .* cannot be used.*remove both files"):
        pki.ensure(tmp_path, pki.plan(NODES, service_cidr="10.96.0.0/12"), now=NOW, key_kind=FAST)
    assert (tmp_path / "ca.key").read_text() == "not a key"


def test_each_machine_gets_only_what_it_needs() -> None:
    the_plan = pki.plan(NODES, service_cidr="10.96.0.0/12")
    worker = {dest: mode for _, dest, mode in pki.files_for(the_plan, NODES[1])}
    # no client certificate for the kubelet: it asks for one with the bootstrap token (TLS bootstrap)
    assert worker == {"ca.crt": 0o644, "kubelet.crt": 0o644, "kubelet.key": 0o600, "kube-proxy.crt": 0o644,
                      "kube-proxy.key": 0o600, "forward-shared-key": 0o600}
    master = {src: dest for src, dest, _ in pki.files_for(the_plan, NODES[0])}
    assert master["machines/master-1/etcd/server.crt"] == "etcd/server.crt"
    assert {"ca.key", "etcd/ca.key", "sa.key", "sa.pub", "apiserver.key", "admin.crt"} <= set(master.values())
    assert not any("kubelet" in dest and "apiserver" not in dest for dest in master.values())


def test_key_that_is_not_the_certificate_s_is_refused(tmp_path: Path) -> None:
    ca = x509.new_ca("c", now=NOW)
    one, two = (x509.sign(ca, x509.CertRequest(n), now=NOW) for n in ("one", "two"))
    x509.save(one, tmp_path / "one.crt", tmp_path / "one.key")
    x509.save(two, tmp_path / "two.crt", tmp_path / "two.key")
    with pytest.raises(x509.X509Error, match="does not belong to certificate"):
        x509.load(tmp_path / "one.crt", tmp_path / "two.key")


def test_bad_requests_are_refused() -> None:
    ca = x509.new_ca("c", now=NOW)
    with pytest.raises(x509.X509Error, match="usages must be among"):
        x509.sign(ca, x509.CertRequest("x", usages=("email",)))
    with pytest.raises(x509.X509Error, match="common name"):
        x509.sign(ca, x509.CertRequest(""))


def test_a_leaf_never_outlives_its_ca() -> None:
    ca = x509.new_ca("short", days=10, now=NOW)
    leaf = x509.sign(ca, x509.CertRequest("x", days=365), now=NOW)
    assert leaf.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_keys_are_rsa_2048_by_default(tmp_path: Path) -> None:
    one = [NodeSpec("master-1", "master", "192.168.56.10")]
    pki.ensure(tmp_path, pki.plan(one, service_cidr="10.96.0.0/12"), now=NOW)
    for name in ("ca.key", "apiserver.key", "sa.key"):
        key = x509.load_key(tmp_path / name)
        assert getattr(key, "key_size", None) == 2048, name


@pytest.mark.parametrize("node", HA, ids=lambda n: n.name)
def test_every_kubeconfig_s_certificate_is_placed_on_its_machine(node: NodeSpec) -> None:
    placed = {dest for _, dest, _ in pki.files_for(pki.plan(HA, service_cidr="10.96.0.0/12"), node)}
    for kc in pki.kubeconfigs_for(node):
        wanted = {f"{kc['cert']}.crt", f"{kc['cert']}.key"} if "cert" in kc else set()
        assert wanted | {"ca.crt"} <= placed, kc


def test_workers_join_with_the_cluster_s_bootstrap_token(made: Path) -> None:
    assert [kc for kc in pki.kubeconfigs_for(NODES[1]) if "token" in kc] == [
        {"name": "bootstrap-kubelet", "token": pki.BOOTSTRAP_TOKEN}]
    token = pki.bootstrap_token(made)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token)
    assert stat.S_IMODE((made / pki.BOOTSTRAP_TOKEN).stat().st_mode) == 0o600
    assert not [kc for kc in pki.kubeconfigs_for(NODES[0]) if "token" in kc]


def test_the_log_aggregator_certificate_names_its_master_as_agents_dial_it(made: Path) -> None:
    assert set(described(made, "machines/master-1/log-aggregator").sans) == {
        "master-1", "192.168.56.10", "localhost", "127.0.0.1"}
    placed = {src: (dest, mode) for src, dest, mode in pki.files_for(pki.plan(NODES, service_cidr="10.96.0.0/12"),
                                                                     NODES[0])}
    assert placed["machines/master-1/log-aggregator.crt"] == ("log-aggregator.crt", 0o644)
    assert placed["machines/master-1/log-aggregator.key"] == ("log-aggregator.key", 0o600)


def test_the_forward_shared_key_is_made_once_secret_and_placed_everywhere(tmp_path: Path) -> None:
    the_plan = pki.plan(HA, service_cidr="10.96.0.0/12")
    assert pki.ensure(tmp_path, the_plan, now=NOW, key_kind=FAST).forward_key
    path = tmp_path / pki.FORWARD_SHARED_KEY
    key = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key.strip()) == 64 and int(key, 16) and key.endswith("\n")  # 32 random bytes, hex
    again = pki.ensure(tmp_path, the_plan, now=NOW, key_kind=FAST)
    assert not again.forward_key and path.read_text() == key
    other = tmp_path / "other"
    pki.ensure(other, the_plan, now=NOW, key_kind=FAST)
    assert (other / pki.FORWARD_SHARED_KEY).read_text() != key, "each cluster has a key of its own"
    for node in HA:
        assert (pki.FORWARD_SHARED_KEY, pki.FORWARD_SHARED_KEY, 0o600) in pki.files_for(the_plan, node), node.name
