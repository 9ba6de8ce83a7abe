"""`ansible/site.yml` role control_plane over real SSH against a one-master `harness up` cluster.

Checks from the host what a user would: the apiserver is ready, kubectl lists the kubernetes and kube-dns
Services, cluster DNS answers on the master, all programs run under supervisord, a second run changes nothing,
and `harness down` leaves none of the cluster's processes behind.
"""

from __future__ import annotations

import random
import re
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from dnslib import QTYPE, DNSRecord

from harness.cluster.spec import DEFAULT_SPEC_PATH
from tests.integration import test_ansible_roles as roles
from tests.integration.node_fixtures import SUBNETS, _used_subnets

pytestmark = pytest.mark.kubelet

PROGRAMS = ("harness-etcd", "harness-apiserver", "harness-scheduler", "harness-controller-manager", "harness-dns")


def dns_a(server: str, name: str) -> list[str]:
    """A records for `name` asked over UDP of the DNS server at `server`:53."""
    reply = DNSRecord.parse(DNSRecord.question(name).send(server, 53, timeout=3))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def test_site_yml_runs_the_control_plane_under_supervisord_idempotently(tmp_path: Path) -> None:
    subnet = random.choice([n for n in SUBNETS if n not in _used_subnets()])
    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    spec["network"] = {"cidr": f"192.168.{subnet}.0/24", "gateway": f"192.168.{subnet}.1",
                       "first_master": f"192.168.{subnet}.10", "first_worker": f"192.168.{subnet}.21"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec))
    name = f"c{uuid.uuid4().hex[:4]}"
    master_ip = f"192.168.{subnet}.10"
    etcd_marker = f"--initial-cluster-token harness-{name}"
    node_pids: set[int] = set()
    try:
        up = roles.harness(tmp_path, "up", "--name", name, "--spec", str(tmp_path / "cluster.yaml"),
                           "--masters", "1", "--workers", "0")
        assert up.returncode == 0, up.stderr

        first, recap, first_s = roles.playbook(tmp_path, name)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        assert set(recap) == {"master-1"} and recap["master-1"][1] > 0, f"first run recap: {recap}"

        with urllib.request.urlopen(f"http://{master_ip}:6443/readyz", timeout=5) as resp:
            assert resp.status == 200 and resp.read().strip() == b"ok"

        svcs = subprocess.run(["kubectl", "--server", f"http://{master_ip}:6443", "get", "svc", "-A", "--no-headers"],
                              capture_output=True, text=True, timeout=20, check=False)
        assert svcs.returncode == 0, svcs.stderr
        assert re.search(r"^default\s+kubernetes\s+ClusterIP\s+10\.96\.0\.1\s", svcs.stdout, re.MULTILINE), svcs.stdout
        assert re.search(r"^kube-system\s+kube-dns\s+ClusterIP\s+10\.96\.0\.10\s", svcs.stdout, re.MULTILINE), \
            svcs.stdout

        assert dns_a(master_ip, "kubernetes.default.svc.cluster.local") == ["10.96.0.1"]

        status = roles.harness(tmp_path, "ssh", "--name", name, "master-1",
                               f"{roles.VENV_BIN}/supervisorctl -c /etc/harness/supervisor/supervisord.conf status")
        for program in PROGRAMS:
            assert re.search(rf"^{program}\s+RUNNING", status.stdout, re.MULTILINE), status.stdout + status.stderr

        kubeconfig = roles.harness(tmp_path, "ssh", "--name", name, "master-1", "cat /etc/harness/kubeconfig")
        servers = yaml.safe_load(kubeconfig.stdout)["clusters"][0]["cluster"]["extensions"][0]["extension"]["servers"]
        assert servers == [f"http://{master_ip}:6443"], kubeconfig.stdout
        cm = roles.harness(tmp_path, "ssh", "--name", name, "master-1",
                           "cat /etc/harness/supervisor/conf.d/harness-controller-manager.conf").stdout
        for flag in (f"--bind-address {master_ip}", "--secure-port 10257", "--cluster-cidr 10.244.0.0/16",
                     "--leader-elect true", "stopsignal=TERM", "logfile=/var/log/harness/controller-manager.log"):
            assert flag in cm, cm

        second, recap, second_s = roles.playbook(tmp_path, name)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
        assert recap.get("master-1", (0, -1))[1] == 0, f"second run changed something: {recap}\n{second.stdout}"
        print(f"playbook: first run {first_s:.1f}s, second run {second_s:.1f}s")

        etcd_pids = roles.processes_with(etcd_marker)
        assert len(etcd_pids) == 1, f"expected one etcd of cluster {name} on the host, saw PIDs {etcd_pids}"
        node_pids = roles.pid_namespace_members(etcd_pids[0])
    finally:
        down = roles.harness(tmp_path, "down", "--name", name)
    assert down.returncode == 0, down.stderr
    left = roles.wait_gone(node_pids, 10)
    assert not left, f"processes of the node outlived `harness down`: {left}"
    assert not roles.processes_with(etcd_marker), f"etcd of cluster {name} still runs after `harness down`"
    assert not roles.processes_with(f"--bind-address {master_ip} "), f"a component of {name} outlived `harness down`"
