"""Helpers for tests that bring up whole local clusters with `harness up` (namespace nodes + site.yml).

Each test cluster gets its own name and a free 192.168.<192-223>.0/24 node network, so it never touches a user's
cluster (192.168.56.0/24) or another test's; `HostSnapshot` records what the host has (links, namespaces, mounts,
routes) so a test can show `harness down` left nothing behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.cluster.spec import DEFAULT_SPEC_PATH
from harness.util import mountinfo

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SUPERVISORCTL = f"{VENV_BIN}/supervisorctl -c /etc/harness/supervisor/supervisord.conf"
SUBNETS = range(192, 224)  # test node networks: 192.168.<n>.0/24 (a user's cluster has 192.168.56.0/24)
PROVISIONED = re.compile(r"provisioned: (\d+) tasks, (\d+) changes")


def run(argv: list[str], cwd: Path | None = None, timeout: float = 60,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, input=stdin)


def supervisor_states(status: str) -> dict[str, tuple[str, int | None]]:
    """{program: (state, pid)} from `supervisorctl status` output."""
    programs = {}
    for line in status.splitlines():
        fields = line.replace(",", " ").split()
        if len(fields) >= 2:
            pid = int(fields[fields.index("pid") + 1]) if "pid" in fields else None
            programs[fields[0]] = (fields[1], pid)
    return programs


class ClusterFiles:
    """Where a test cluster's files are (`cwd/inventory/<name>/`), and `harness` run from `cwd`."""

    cwd: Path
    name: str

    @property
    def home(self) -> Path:
        return self.cwd / "inventory" / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    def harness(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "harness.cli", *args], cwd=self.cwd, timeout=timeout)


@dataclass
class LocalCluster(ClusterFiles):
    """A cluster `harness up` makes under `cwd` (its inventory is `cwd/inventory/<name>/`)."""

    cwd: Path
    name: str
    subnet: int
    masters: int
    workers: int

    @property
    def spec(self) -> Path:
        return self.cwd / "cluster.yaml"

    def ip(self, node: str) -> str:
        role, _, index = node.rpartition("-")
        return f"192.168.{self.subnet}.{(10 if role == 'master' else 21) + int(index) - 1}"

    @property
    def worker_names(self) -> list[str]:
        return [f"worker-{i + 1}" for i in range(self.workers)]

    @property
    def master_names(self) -> list[str]:
        return [f"master-{i + 1}" for i in range(self.masters)]

    def up(self, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.harness("up", "--name", self.name, "--spec", str(self.spec), "--masters", str(self.masters),
                            "--workers", str(self.workers), *extra, timeout=timeout)

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.harness("down", "--name", self.name, timeout=120)

    def ssh(self, node: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.harness("ssh", "--name", self.name, node, command, timeout=timeout)

    def kubectl(self, *args: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], timeout=timeout, stdin=stdin)

    def programs(self, node: str) -> dict[str, tuple[str, int | None]]:
        """{program: (state, pid)} from the node's supervisorctl."""
        return supervisor_states(self.ssh(node, f"{SUPERVISORCTL} status").stdout)

    def log_tail(self, node: str, component: str, lines: int = 40) -> str:
        path = self.home / "machines" / "nodes" / node / "log" / f"{component}.log"
        try:
            return f"--- {node}:{component}.log ---\n" + "\n".join(path.read_text().splitlines()[-lines:])
        except OSError as exc:
            return f"--- {node}:{component}.log: {exc}"


@dataclass
class VagrantCluster(ClusterFiles):
    """The project's VM cluster (`harness up --provider vagrant`): one per project directory, named `vagrant`, on
    the spec's `vagrant.network` (192.168.57.0/24), run from the project so that its Vagrantfile is the one used."""

    masters: int
    workers: int
    cwd: Path = ROOT
    name: str = "vagrant"
    subnet: int = 57

    def up(self, *extra: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        """`harness up --provider vagrant`, its progress shown as it goes (it takes many minutes under emulation)."""
        argv = [sys.executable, "-m", "harness.cli", "up", "--provider", "vagrant", "--masters", str(self.masters),
                "--workers", str(self.workers), *extra]
        proc = subprocess.Popen(argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            lines.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()
            if time.monotonic() > deadline:
                proc.kill()
                lines.append(f"(stopped after {timeout:.0f} s)\n")
        code = proc.wait()
        return subprocess.CompletedProcess(argv, code, "".join(lines), "")

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.harness("down", "--name", self.name, timeout=900)

    def ssh(self, node: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.harness("ssh", "--name", self.name, node, command, timeout=timeout)


def free_subnet() -> int:
    """A random n with 192.168.<n>.0/24 not on any interface of this host."""
    out = run(["ip", "-o", "-4", "addr", "show"]).stdout
    used = {int(f.split(".")[2]) for line in out.splitlines() for f in line.split()
            if f.startswith("192.168.") and "/" in f}
    free = [n for n in SUBNETS if n not in used]
    if not free:
        pytest.fail("no free 192.168.192-223.0/24 subnet for a test node network")
    return random.choice(free)


def keep_logs(cluster: LocalCluster | VagrantCluster, reports: Path = ROOT / "reports") -> Path:
    """Copy what explains a failed run — every node's /var/log/harness and /var/log/pods, the Ansible log, the
    inventory — to reports/failed-<cluster>/ (kept when the cluster is removed); return that folder."""
    target = reports / f"failed-{cluster.name}"
    target.mkdir(parents=True, exist_ok=True)
    if isinstance(cluster, VagrantCluster):
        _copy_vm_logs(cluster, target)
    nodes = cluster.home / "machines" / "nodes"
    for node in sorted(nodes.iterdir()) if nodes.is_dir() else []:
        for sub in ("log", "pods"):
            if (node / sub).is_dir():
                shutil.copytree(node / sub, target / node.name / sub, dirs_exist_ok=True,
                                ignore_dangling_symlinks=True)
    for name in ("hosts.yml", "settings.yml", "ansible/last-run.log"):
        if (cluster.home / name).is_file():
            shutil.copy(cluster.home / name, target / name.replace("/", "-"))
    return target


def _copy_vm_logs(cluster: VagrantCluster, target: Path) -> None:
    """Each VM's /var/log/harness and /var/log/pods, by tar over SSH (a VM that does not answer is skipped)."""
    try:
        hosts = yaml.safe_load((cluster.home / "hosts.yml").read_text())["all"]["children"]
    except (OSError, KeyError, TypeError):
        return
    for group in ("masters", "workers"):
        for node in (hosts.get(group) or {}).get("hosts") or {}:
            done = cluster.ssh(node, "tar -C /var/log -cf - harness pods 2>/dev/null | base64 -w0", timeout=120)
            if done.returncode != 0 or not done.stdout:
                continue
            (target / node).mkdir(exist_ok=True)
            subprocess.run(["tar", "-C", str(target / node), "-xf", "-"], input=base64.b64decode(done.stdout),
                           capture_output=True, check=False, timeout=60)


def new_cluster(tmp_path: Path, *, masters: int, workers: int, prefix: str = "t") -> LocalCluster:
    """A cluster spec on a free test subnet under tmp_path; nothing is made yet."""
    subnet = free_subnet()
    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    spec["network"] = {"cidr": f"192.168.{subnet}.0/24", "gateway": f"192.168.{subnet}.1",
                       "first_master": f"192.168.{subnet}.10", "first_worker": f"192.168.{subnet}.21"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec))
    return LocalCluster(tmp_path, f"{prefix}{uuid.uuid4().hex[:4]}", subnet, masters, workers)


def provisioned(out: str) -> tuple[int, int]:
    """(tasks, changes) from `harness up`'s output."""
    match = PROVISIONED.search(out)
    assert match, f"`harness up` did not say what it provisioned:\n{out[-3000:]}"
    return int(match[1]), int(match[2])


NETNS_DIR = "/run/netns"


@dataclass
class HostSnapshot:
    """What the host has that a cluster could leave behind."""

    links: set[str]
    netns: set[str]
    mounts: set[str]
    routes: set[str]

    @classmethod
    def take(cls) -> HostSnapshot:
        links = {link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout)}
        netns = {line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()}
        mounts = {m.mount_point for m in mountinfo.read()}
        routes = set(run(["ip", "route", "show", "table", "all"]).stdout.splitlines())
        return cls(links, netns, mounts, routes)

    def added_since(self, before: HostSnapshot) -> dict[str, set[str]]:
        """What exists now and did not before (empty sets: nothing left behind).

        `/run/netns` itself is not the cluster's: the first `ip netns add` after boot makes it a shared mount point
        for every namespace of every user, and iproute2 keeps it. Only a fresh machine sees it appear; the
        namespaces' own mounts under it are still counted."""
        return {"links": self.links - before.links, "netns": self.netns - before.netns,
                "mounts": self.mounts - before.mounts - {NETNS_DIR}, "routes": self.routes - before.routes}


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


def node_processes(cluster: LocalCluster) -> set[int]:
    """Host PIDs of every process in the PID namespace of any of the cluster's nodes."""
    state = json.loads((cluster.home / "machines" / "state.json").read_text())
    namespaces = set()
    for record in state["nodes"].values():
        with contextlib.suppress(OSError, TypeError):
            namespaces.add(os.readlink(f"/proc/{record['init_pid']}/ns/pid"))
    members = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(proc / "ns" / "pid") in namespaces:
                    members.add(int(proc.name))
    return members


def wait_until(condition: Callable[[], object], timeout: float, what: Callable[[], str] | str,
               interval: float = 0.5) -> None:
    """Wait for `condition()` to be true; fail saying `what` (or what `what()` says) did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what if isinstance(what, str) else what()} (waited {timeout:.0f}s)")
        time.sleep(interval)
