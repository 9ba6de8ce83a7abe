"""`harness pki rotate` on a running cluster: renewed certificates are served without a restart or a refused request,
and a client certificate outside its validity period is a 401, at the apiserver and at the kubelet."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from harness.cluster import certrotation, pki
from harness.util import x509
from tests.infra.support import InfraCluster

HARNESS = str(Path(sys.executable).with_name("harness"))


def _status(url: str, context: ssl.SSLContext, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_rotation_serves_renewed_certificates_with_no_restart_and_no_refusal(cluster: InfraCluster) -> None:
    directory = Path(cluster.cluster_vars["pki_source"])
    worker, master = cluster.workers[0].name, cluster.masters[0].name
    names = ["apiserver", f"machines/{worker}/kubelet", f"machines/{master}/etcd/server", "admin"]
    nodes, cidr = certrotation.cluster_from_inventory(cluster.inventory)
    the_plan = pki.plan(nodes, service_cidr=cidr)
    before = {n: x509.load_cert(directory / f"{n}.crt").serial_number for n in names}
    programs = {m: cluster.programs(m) for m in cluster.machines}

    failures: list[str] = []
    answered: list[int] = []
    stop = threading.Event()

    context = cluster.tls()  # a client started before the rotation, presenting the old (still valid) certificate
    assert context is not None

    def keep_asking() -> None:  # it connects anew for every request, right through the rotation
        while not stop.is_set():
            try:
                code = _status(f"{cluster.servers[0]}/api/v1/namespaces/default", context, 5 * cluster.time_scale)
            except OSError as exc:
                failures.append(str(exc))
                continue
            if code != 200:
                failures.append(f"HTTP {code}")
            answered.append(code)

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        home = cluster.inventory.resolve().parent  # inventory/<name>; `harness` runs where inventory/ is
        done = subprocess.run([HARNESS, "pki", "rotate", "--name", home.name, *names], cwd=home.parent.parent,
                              capture_output=True, text=True, timeout=300, check=False)
    finally:
        stop.set()
        asker.join(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Rotated 4 certificate(s)" in done.stdout and "nothing was restarted" in done.stdout, done.stdout
    after = {n: x509.load_cert(directory / f"{n}.crt").serial_number for n in names}
    assert all(after[n] != before[n] for n in names)
    for ep in certrotation.endpoints(the_plan, nodes, [the_plan.by_name()[n] for n in names], directory):
        assert certrotation.served_serial(ep, directory) == after[ep.cert], ep
    assert failures == [], f"{len(failures)} request(s) failed during the rotation: {failures[:5]}"
    assert len(answered) > 20, "the client kept asking throughout"
    assert {m: cluster.programs(m) for m in cluster.machines} == programs, "a program restarted"
    assert cluster.kubectl("get", "nodes").returncode == 0  # the renewed admin certificate works


def _dated_admin(cluster: InfraCluster, tmp_path: Path, shift_days: int) -> ssl.SSLContext:
    directory = Path(cluster.cluster_vars["pki_source"])
    ca = x509.load(directory / "ca.crt", directory / "ca.key")
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=shift_days)
    x509.save(x509.sign(ca, x509.CertRequest("kubernetes-admin", ("system:masters",), days=1), now=when,
                        key_kind="ecdsa"), tmp_path / "a.crt", tmp_path / "a.key")
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    context.load_cert_chain(tmp_path / "a.crt", tmp_path / "a.key")
    return context


def test_an_expired_or_future_certificate_is_401_at_the_apiserver_and_the_kubelet(cluster: InfraCluster,
                                                                                 tmp_path: Path) -> None:
    worker = cluster.workers[0]
    for shift in (-10, 10):
        context = _dated_admin(cluster, tmp_path, shift)
        assert _status(f"{cluster.servers[0]}/api/v1/namespaces", context) == 401, shift
        assert _status(f"https://{worker.ip}:10250/pods", context) == 401, shift
