"""The local provider: namespace nodes on a host bridge, each with its own sshd, reached with the real ssh.

Each test makes a cluster with a unique short name on a free 192.168.<n>.0/24 and checks that
destroy() leaves the host's namespaces, links, mounts, routes and processes as they were.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cluster import local
from harness.cluster.inventory import write_inventory
from harness.cluster.local import LocalProvider, LocalProviderError, NodeSpec
from harness.util import mountinfo
from tests.clusters import free_subnet
from tests.tools import needs

pytestmark = needs("sshd", "ip", "nsenter", "unshare", root=True)


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout


def snapshot(provider: LocalProvider) -> dict[str, set[str]]:
    """What the host has of this cluster (others' tests may come and go meanwhile)."""
    veths = tuple(provider.veth(spec.name) for spec in specs(provider))
    marks = (provider.bridge, f"hk-{provider.cluster}-", *veths, str(provider.state_dir))
    subnet = str(provider.network.network_address).rsplit(".", 1)[0] + "."

    def ours(line: str) -> bool:
        return any(mark in line for mark in marks) or subnet in line

    procs = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ours(cmdline):
            procs.add(f"{pid} {cmdline}")
    return {
        "netns": {line for line in sh("ip", "netns", "list").splitlines() if ours(line)},
        "links": {line.split(":")[1].strip().split("@")[0]
                  for line in sh("ip", "-o", "link", "show").splitlines() if ours(line)},
        "mounts": {m.mount_point for m in mountinfo.read() if ours(m.mount_point)},
        "routes": {line for line in sh("ip", "route", "show").splitlines()
                   if ours(line) or any(cidr in line for cidr in local.GUARD_ROUTES)},
        "procs": procs,
    }


BEFORE: dict[str, dict[str, set[str]]] = {}  # cluster -> the host's snapshot before the test


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    subnet = free_subnet()
    made = LocalProvider(f"t{uuid.uuid4().hex[:4]}", state_dir=tmp_path / "state", network=f"192.168.{subnet}.0/24")
    BEFORE[made.cluster] = snapshot(made)
    try:
        yield made
    finally:
        made.destroy()
        assert snapshot(made) == BEFORE.pop(made.cluster)


def specs(provider: LocalProvider) -> list[NodeSpec]:
    base = str(provider.network.network_address).rsplit(".", 1)[0]
    return [NodeSpec("m1", "master", f"{base}.10"), NodeSpec("w1", "worker", f"{base}.21")]


def ssh(provider: LocalProvider, node: str, script: str) -> subprocess.CompletedProcess[str]:
    argv = provider.ssh_command(node, [script])
    assert argv[0] == "ssh" and "BatchMode=yes" in argv
    return subprocess.run(["/usr/bin/ssh", *argv[1:]], capture_output=True, text=True, timeout=20, check=False)


def test_nodes_are_machines_reached_over_ssh(provider: LocalProvider, tmp_path: Path) -> None:
    nodes = specs(provider)
    messages: list[str] = []
    provider.create(nodes, progress=messages.append)
    assert any("m1" in m and "sshd answering" in m for m in messages)
    status = provider.status()
    assert set(status) == {"m1", "w1"} and all(s["alive"] and s["sshd"] for s in status.values())

    (provider.node_dir("m1") / "etc" / "x").write_text("m1-only\n")
    for spec, other in zip(nodes, reversed(nodes), strict=True):
        done = ssh(provider, spec.name, "hostname; echo ---; ps -e -o pid=,comm=; echo ---; ip route; echo ---;"
                                        f" cat /etc/harness/x 2>/dev/null; echo ---;"
                                        f" exec 3<>/dev/tcp/{other.ip}/22 && head -c 4 <&3")
        assert done.returncode == 0, done.stderr
        hostname, ps, routes, x, peer = done.stdout.split("---\n")
        assert hostname.strip() == spec.name
        procs = [line.split() for line in ps.strip().splitlines()]
        assert procs[0] == ["1", "sshd"] and len(procs) < 8, ps  # the node's own table, not the host's
        assert f"default via {provider.gateway} dev eth0" in routes
        assert x.strip() == ("m1-only" if spec.name == "m1" else "")
        assert peer == "SSH-"  # the nodes reach each other over the bridge

    during = snapshot(provider)
    assert during["procs"] and during["links"] >= {provider.bridge, provider.veth("m1"), provider.veth("w1")}
    for cidr in local.GUARD_ROUTES:
        assert any(line.startswith(f"unreachable {cidr}") for line in during["routes"])
    assert {"hk-" + provider.cluster + "-m1", "hk-" + provider.cluster + "-w1"} <= {
        line.split()[0] for line in during["netns"]}

    inventory = write_inventory(tmp_path / "inventory" / "hosts.yml", provider.cluster, nodes, provider.key)
    data = yaml.safe_load(inventory.read_text())["all"]["children"]
    assert list(data["etcd"]["hosts"]) == ["m1"] and list(data["workers"]["hosts"]) == ["w1"]
    assert data["masters"]["hosts"]["m1"]["ansible_host"] == nodes[0].ip

    provider.destroy()
    assert not provider.state_dir.exists()
    provider.destroy()  # twice is fine
    assert provider.status() == {}
    after = snapshot(provider)
    assert after == BEFORE[provider.cluster]


def test_destroy_from_a_new_process_and_without_state(provider: LocalProvider) -> None:
    provider.create(specs(provider)[:1], progress=lambda _: None)
    provider.create(specs(provider)[:1], progress=lambda _: None)  # again: the running node is kept
    LocalProvider(provider.cluster, state_dir=provider.state_dir, bridge=provider.bridge).destroy()
    assert snapshot(provider) == BEFORE[provider.cluster]
    LocalProvider(provider.cluster, state_dir=provider.state_dir).destroy()


def test_failed_create_then_destroy_leaves_nothing(provider: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    real = LocalProvider._start_init
    calls = []

    def failing(self: LocalProvider, *args: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise LocalProviderError("forced failure")
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalProvider, "_start_init", failing)
    with pytest.raises(LocalProviderError, match="forced failure"):
        provider.create(specs(provider), progress=lambda _: None)
    assert len(calls) == 2
    provider.destroy()
    assert snapshot(provider) == BEFORE[provider.cluster]


def test_rejects_bad_specs(provider: LocalProvider) -> None:
    with pytest.raises(LocalProviderError, match="not a free host address"):
        provider.create([NodeSpec("m1", "master", "10.0.0.1")])
    with pytest.raises(LocalProviderError, match="role"):
        provider.create([NodeSpec("m1", "boss", specs(provider)[0].ip)])
    with pytest.raises(LocalProviderError, match="not found"):
        provider.ssh_command("nope")
