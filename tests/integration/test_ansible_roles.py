"""`ansible/site.yml` (roles supervisord and etcd) over real SSH against a one-master `harness up` cluster."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness.cluster.spec import DEFAULT_SPEC_PATH
from tests.integration.node_fixtures import SUBNETS, _used_subnets

pytestmark = pytest.mark.kubelet

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "ansible" / "site.yml"
VENV_BIN = ROOT / ".venv" / "bin"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def harness(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def playbook(cwd: Path, name: str) -> tuple[subprocess.CompletedProcess[str], dict[str, tuple[int, ...]], float]:
    """Run site.yml against the cluster's inventory; return the run, the PLAY RECAP per host and the seconds."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOK.parent / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    started = time.monotonic()
    run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", f"inventory/{name}/hosts.yml", str(PLAYBOOK)],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    recap = {m[0]: tuple(int(n) for n in m[1:]) for m in RECAP.findall(run.stdout)}
    return run, recap, time.monotonic() - started


def processes_with(marker: str) -> list[int]:
    """Host PIDs of processes whose command line contains `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and str(os.getpid()) != proc.name:
                pids.append(int(proc.name))
    return pids


def pid_namespace_members(pid: int) -> set[int]:
    """Host PIDs of every process in the PID namespace of `pid`."""
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    members = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "ns" / "pid") == ns:
                    members.add(int(proc.name))
            except OSError:
                continue
    return members


def wait_gone(pids: set[int], deadline_s: float) -> set[int]:
    deadline = time.monotonic() + deadline_s
    left = pids
    while left and time.monotonic() < deadline:
        left = {p for p in left if Path(f"/proc/{p}").exists()}
        if left:
            time.sleep(0.1)
    return left


def test_site_yml_runs_etcd_under_supervisord_idempotently_and_it_dies_with_the_node(tmp_path: Path) -> None:
    subnet = random.choice([n for n in SUBNETS if n not in _used_subnets()])
    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    spec["network"] = {"cidr": f"192.168.{subnet}.0/24", "gateway": f"192.168.{subnet}.1",
                       "first_master": f"192.168.{subnet}.10", "first_worker": f"192.168.{subnet}.21"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec))
    name = f"a{uuid.uuid4().hex[:4]}"
    master_ip = f"192.168.{subnet}.10"
    etcd_marker = f"--initial-cluster-token harness-{name}"
    node_pids: set[int] = set()
    try:
        up = harness(tmp_path, "up", "--name", name, "--spec", str(tmp_path / "cluster.yaml"),
                     "--masters", "1", "--workers", "0")
        assert up.returncode == 0, up.stderr

        first, recap, first_s = playbook(tmp_path, name)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        assert set(recap) == {"master-1"} and recap["master-1"][1] > 0, f"first run recap: {recap}"

        health = subprocess.run(["/usr/bin/etcdctl", "--endpoints", f"http://{master_ip}:2379", "endpoint", "health"],
                                capture_output=True, text=True, timeout=10, check=False)
        assert health.returncode == 0 and "is healthy" in health.stdout + health.stderr, health.stderr
        status = harness(tmp_path, "ssh", "--name", name, "master-1",
                         f"{VENV_BIN}/supervisorctl -c /etc/harness/supervisor/supervisord.conf status")
        assert re.search(r"^harness-etcd\s+RUNNING", status.stdout, re.MULTILINE), status.stdout + status.stderr

        second, recap, second_s = playbook(tmp_path, name)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
        assert recap.get("master-1", (0, -1))[1] == 0, f"second run changed something: {recap}\n{second.stdout}"
        print(f"playbook: first run {first_s:.1f}s, second run {second_s:.1f}s")

        etcd_pids = processes_with(etcd_marker)
        assert len(etcd_pids) == 1, f"expected one etcd of cluster {name} on the host, saw PIDs {etcd_pids}"
        node_pids = pid_namespace_members(etcd_pids[0])
        assert any("supervisord" in Path(f"/proc/{p}/cmdline").read_text() for p in node_pids), node_pids
    finally:
        down = harness(tmp_path, "down", "--name", name)
    assert down.returncode == 0, down.stderr
    left = wait_gone(node_pids, 10)
    assert not left, f"processes of the node outlived `harness down`: {left}"
    assert not processes_with(etcd_marker), f"etcd of cluster {name} still runs after `harness down`"
