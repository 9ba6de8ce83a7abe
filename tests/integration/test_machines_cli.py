"""`harness up --machines-only`, `status`, `ssh` and `down` on a spec with a free node network: the machines
alone (test_harness_up.py provisions whole clusters)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from harness.cluster.spec import DEFAULT_SPEC_PATH
from tests.clusters import free_subnet

pytestmark = pytest.mark.kubelet


def harness(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def host_view() -> tuple[str, str, str]:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    return out("ip", "netns", "list"), out("ip", "-o", "link", "show"), out("ip", "route", "show")


def test_up_ssh_status_down_leave_nothing_behind(tmp_path: Path) -> None:
    subnet = free_subnet()
    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    spec["network"] = {"cidr": f"192.168.{subnet}.0/24", "gateway": f"192.168.{subnet}.1",
                       "first_master": f"192.168.{subnet}.10", "first_worker": f"192.168.{subnet}.21"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec))
    name = f"c{uuid.uuid4().hex[:4]}"
    before = host_view()
    try:
        up = harness(tmp_path, "up", "--name", name, "--spec", str(tmp_path / "cluster.yaml"), "--workers", "1",
                     "--machines-only")
        assert up.returncode == 0, up.stderr
        assert "master-1" in up.stdout and "worker-1" in up.stdout and "worker-2" not in up.stdout
        hosts = yaml.safe_load((tmp_path / "inventory" / name / "hosts.yml").read_text())
        assert set(hosts["all"]["children"]) >= {"masters", "workers", "etcd"}
        status = harness(tmp_path, "status", "--name", name)
        # the machines answer; nothing runs on them yet, so the cluster is not healthy
        assert status.returncode == 1 and status.stdout.count("machine up") == 2, status.stdout
        assert status.stdout.count("supervisord: not answering (not provisioned yet?)") == 2, status.stdout
        ssh = harness(tmp_path, "ssh", "--name", name, "worker-1", "hostname")
        assert ssh.returncode == 0 and ssh.stdout.strip() == "worker-1", ssh.stderr
        again = harness(tmp_path, "up", "--name", name, "--spec", str(tmp_path / "cluster.yaml"), "--workers", "1",
                        "--machines-only")
        assert again.returncode == 0, again.stderr  # idempotent: the running nodes are kept
    finally:
        down = harness(tmp_path, "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert harness(tmp_path, "down", "--name", name).returncode == 0  # safe twice
    assert host_view() == before
    assert harness(tmp_path, "status", "--name", name).returncode == 1
