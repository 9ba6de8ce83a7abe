"""Real nodes for kubelet tests: network namespaces on a host bridge, `harness kubelet` running in each.

A `Network` is a bridge `hkb-<id>` on the host holding 192.168.<n>.1/24, with <n> a subnet
no host interface uses yet (so two test runs never collide). Each node namespace `hkt-<id>`
gets a veth onto it (192.168.<n>.2, .3, ...) and nothing else: no default route, so nothing a
pod sends can leave. The module's apiserver listens on the bridge address, where the nodes
reach it and where it reaches their kubelets (pods/log). Node i's pods get 10.244.<n>.<64 i>/26.
The kubelet's directories live in a temporary directory, and the teardown removes
everything the nodes made, even after a failure: pods, containers and shims, mounts,
network namespaces, cgroups, links.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.util import mountinfo
from tests.clusters import free_subnet
from tests.integration.apiserver_fixtures import ApiServerProcess, start_apiserver, stop_apiserver

CGROUP_ROOT = "/sys/fs/cgroup"
SERVICE_CIDR = "10.96.0.0/12"


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Network:
    """The host bridge the test nodes sit on, and the apiserver that listens on it."""

    bridge: str
    subnet: int
    apiserver: ApiServerProcess | None = None

    @property
    def host_ip(self) -> str:
        return f"192.168.{self.subnet}.1"


@dataclass
class Node:
    name: str
    netns: str
    root: Path
    apiserver: ApiServerProcess
    ip: str
    pod_cidr: str
    kubelet_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 10250

    @property
    def kubeconfig(self) -> Path:
        return self.apiserver.kubeconfig

    @property
    def log(self) -> Path:
        return self.root / "kubelet.log"

    @property
    def runc_root(self) -> Path:
        return self.root / "run" / "runc"

    @property
    def netns_dir(self) -> Path:
        return self.root / "run" / "netns"

    @property
    def pod_log_dir(self) -> Path:
        return self.root / "log" / "pods"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def run_in(self, *argv: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's network namespace (nsenter keeps /sys, so cgroups stay visible)."""
        return sh("nsenter", f"--net=/run/netns/{self.netns}", *argv, check=check, timeout=timeout)

    def start_kubelet(self) -> None:
        cmd = ["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-m", "harness.cli", "kubelet",
               "--kubeconfig", str(self.kubeconfig), "--node-name", self.name, "--node-ip", self.ip,
               "--address", self.ip, "--port", str(self.port),
               "--root-dir", str(self.root / "lib"), "--run-dir", str(self.root / "run"),
               "--pod-log-dir", str(self.pod_log_dir), "--pod-cidr", self.pod_cidr,
               "--cgroup-root", f"/harness-test/{self.name}", "--cpu", "2", "--memory", "4Gi",
               "--relist-period", "0.2", "--sync-frequency", "2", "--node-status-update-frequency", "5",
               "--node-lease-renew-interval", "2", "--crash-loop-backoff", "1", "--crash-loop-backoff-max", "4",
               "--log-level", "debug", *self.kubelet_args]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def stop_kubelet(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def runc_ids(self) -> list[str]:
        out = sh("runc", "--root", str(self.runc_root), "list", "-q", check=False).stdout
        return [line for line in out.split() if line]

    def netns_files(self) -> list[str]:
        return sorted(os.listdir(self.netns_dir)) if self.netns_dir.exists() else []

    def links(self) -> list[str]:
        out = self.run_in("ip", "-o", "link", "show").stdout
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line)

    def mounts(self) -> list[str]:
        root = str(self.root)
        return [m.mount_point for m in mountinfo.read() if m.mount_point.startswith(root)]


def _kill_shims(root: Path) -> None:
    """Shims of this node that outlived the kubelet: they name the node's state dir on their command line."""
    marker = str(root).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"harness.kubelet.runtime.shim" in cmdline and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def destroy(node: Node) -> None:
    """Remove everything the node made, whatever state the test left it in."""
    node.stop_kubelet(signal.SIGKILL)
    for cid in node.runc_ids():
        sh("runc", "--root", str(node.runc_root), "delete", "--force", cid, check=False)
    _kill_shims(node.root)
    for mount in sorted(node.mounts(), key=len, reverse=True):
        sh("umount", "-l", mount, check=False)
    sh("ip", "netns", "delete", node.netns, check=False)
    sh("ip", "link", "delete", f"{node.netns}h", check=False)
    for controller in os.listdir(CGROUP_ROOT) if os.path.isdir(CGROUP_ROOT) else []:
        base = Path(CGROUP_ROOT) / controller / "harness-test" / node.name
        if base.is_dir():
            for path in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_dir():
                    with contextlib.suppress(OSError):
                        path.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()
            with contextlib.suppress(OSError):
                base.parent.rmdir()  # harness-test itself, unless another node's tests still use it
    shutil.rmtree(node.root, ignore_errors=True)


def make_network(etcd: Any, workdir: Path) -> Network:
    """The host bridge on a free 192.168.<n>.0/24, and an apiserver listening on its address."""
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.fail("kubelet tests need root and runc: run `make deps` as root")
    net = Network(bridge=f"hkb-{uuid.uuid4().hex[:6]}", subnet=free_subnet())
    try:
        sh("ip", "link", "add", net.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{net.host_ip}/24", "dev", net.bridge)
        sh("ip", "link", "set", net.bridge, "up")
        # what escapes a node to the service range must never reach the host's default route
        sh("ip", "route", "replace", "unreachable", SERVICE_CIDR)
        net.apiserver = start_apiserver(etcd.endpoint, workdir, host=net.host_ip,
                                        extra=["--compaction-interval", "100000"])
    except Exception:
        sh("ip", "link", "delete", net.bridge, check=False)
        raise
    return net


def destroy_network(net: Network) -> None:
    if net.apiserver is not None:
        stop_apiserver(net.apiserver)
    sh("ip", "link", "delete", net.bridge, check=False)
    bridges = sh("ip", "-o", "link", "show", "type", "bridge").stdout
    if not re.search(r": hkb?-", bridges):  # the last test network (or local cluster) is gone
        sh("ip", "route", "delete", "unreachable", SERVICE_CIDR, check=False)


def make_node(net: Network, workdir: Path, index: int = 0) -> Node:
    """Node `index` on the network: a namespace with a veth on the bridge; its kubelet is not started."""
    assert net.apiserver is not None
    suffix = uuid.uuid4().hex[:6]
    netns = f"hkt-{suffix}"
    host_if = f"{netns}h"
    ip = f"192.168.{net.subnet}.{index + 2}"
    sh("ip", "netns", "add", netns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        sh("ip", "link", "set", host_if, "master", net.bridge, "up")
        ns = ["ip", "-n", netns]
        sh(*ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh(*ns, "link", "set", "eth0", "up")
        sh(*ns, "link", "set", "lo", "up")
        # the service range goes to the node network's gateway, as a default route would take it: kube-proxy's
        # DNAT rewrites it first, so nothing is actually sent there (the host has it unreachable, see make_network)
        sh(*ns, "route", "add", SERVICE_CIDR, "via", net.host_ip)
    except Exception:
        sh("ip", "netns", "delete", netns, check=False)
        sh("ip", "link", "delete", host_if, check=False)
        raise
    root = workdir / f"node-{suffix}"
    root.mkdir()
    return Node(name=f"node-{suffix}", netns=netns, root=root, apiserver=net.apiserver, ip=ip,
                pod_cidr=f"10.244.{net.subnet}.{index * 64}/26")


@pytest.fixture(scope="module")
def network(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    net = make_network(etcd, tmp_path_factory.mktemp("network"))
    try:
        yield net
    finally:
        destroy_network(net)


@pytest.fixture(scope="module")
def node(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node with a running kubelet, shared by the tests of one module."""
    made = make_node(network, tmp_path_factory.mktemp("node"))
    try:
        made.start_kubelet()
        wait_node_ready(made)
        yield made
    finally:
        log_copy = made.log_tail(200)
        destroy(made)
        if os.environ.get("HARNESS_TEST_VERBOSE"):
            print(log_copy)


def wait_node_ready(node: Node, within: float = 30.0) -> None:
    """Until the kubelet serves /healthz on the node IP (it registers the Node before serving pods)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if node.proc is not None and node.proc.poll() is not None:
            raise AssertionError(f"kubelet exited with {node.proc.returncode}:\n{node.log_tail()}")
        try:  # the node IP is on the host's side of the veth: reachable from here
            with urllib.request.urlopen(f"http://{node.ip}:{node.port}/healthz", timeout=1) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"kubelet not serving within {within}s:\n{node.log_tail()}")
