"""Pod networking as the kubelet does it, inside a node made of a network namespace (`hkt-<id>`).

`PodNetwork` and `HostGwRoutes` run in a worker process that entered the node's namespace (as the kubelet runs under
`nsenter --net`); the test itself stays in the host's namespace and looks at the node with `ip -n` and at the pods
with `nsenter --net=<pod netns file>` or sockets opened inside their namespaces. Every namespace file, mount and the
IPAM state live under the test's tmp_path; the node namespace (and with it the bridge and every veth) is deleted
in the fixture's finalizer, after the pod namespaces' mounts are undone, whatever the test left behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.kubelet.network import netns
from harness.kubelet.network.ipam import all_allocations
from harness.kubelet.network.pods import NetworkNotReady, PodInterface, PodNetwork, host_veth_name
from harness.kubelet.network.routes import HostGwRoutes, RouteError
from harness.util import mountinfo

T = TypeVar("T")
CIDR_A = "10.244.1.0/24"
CIDR_B = "10.244.2.0/24"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


# -- what runs inside the node (in the worker process) -------------------------------------------------------


def _net(root: str, *, mtu: int | None = None) -> PodNetwork:
    return PodNetwork(netns_dir=Path(root) / "netns", ipam_dir=Path(root) / "ipam", mtu=mtu)


def _configure(root: str, cidr: str, mtu: int | None = None) -> int | None:
    net = _net(root, mtu=mtu)
    net.configure(cidr)
    return net.mtu


def _setup(root: str, cidr: str, uid: str) -> PodInterface:
    net = _net(root)
    net.configure(cidr)
    return net.setup(uid, "default", f"pod-{uid[:8]}")


def _setup_unconfigured(root: str, uid: str) -> PodInterface:
    return _net(root).setup(uid, "default", "pod")


def _teardown(root: str, uid: str) -> None:
    _net(root).teardown(uid)


def _list(root: str) -> dict[str, PodInterface]:
    return _net(root).list()


def _timed_setup_teardown(root: str, cidr: str, count: int) -> tuple[list[PodInterface], list[float], list[float]]:
    net = _net(root)
    net.configure(cidr)
    made, setups, teardowns = [], [], []
    for i in range(count):
        start = time.perf_counter()
        made.append(net.setup(f"timed-{i}", "default", f"pod-{i}"))
        setups.append(time.perf_counter() - start)
    alive = all(netns.is_netns(iface.netns_path) for iface in made)
    for i in range(count):
        start = time.perf_counter()
        net.teardown(f"timed-{i}")
        teardowns.append(time.perf_counter() - start)
    assert alive, "a pod namespace was missing right after setup"
    return made, setups, teardowns


def _concurrent_setup(root: str, cidr: str, count: int) -> list[PodInterface]:
    """As the kubelet does: many `setup`s at once from worker threads of a running loop."""

    async def many() -> list[PodInterface]:
        net = _net(root)
        net.configure(cidr)
        return list(await asyncio.gather(*(asyncio.to_thread(net.setup, f"many-{i}", "default", f"pod-{i}")
                                           for i in range(count))))

    return asyncio.run(many())


def _from_a_running_loop(root: str, cidr: str, uid: str) -> tuple[PodInterface, dict[str, str]]:
    async def inside() -> tuple[PodInterface, dict[str, str]]:
        net = _net(root)
        net.configure(cidr)  # called straight from the loop, as the kubelet's informer callbacks do
        iface = net.setup(uid, "default", "pod")
        routes = HostGwRoutes()
        routes.sync({})
        current = routes.current()
        net.teardown(uid)
        return iface, current

    return asyncio.run(inside())


def _sync_routes(routes: dict[str, str]) -> str:
    try:
        HostGwRoutes().sync(routes)
    except RouteError as exc:
        return str(exc)
    return ""


def _current_routes() -> dict[str, str]:
    return HostGwRoutes().current()


# -- the node --------------------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    root: Path
    pool: ProcessPoolExecutor

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.name}"

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` inside the node's network namespace."""
        return self.pool.submit(fn, *args).result(timeout=60)

    def ip(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.name, *argv, check=check)

    def uplink(self, address: str, mtu: int = 1500) -> None:
        """An interface `d0` holding `address`, up (a veth whose peer `d1` stays in the node: no dummy driver here)."""
        self.ip("link", "add", "d0", "mtu", str(mtu), "type", "veth", "peer", "name", "d1", "mtu", str(mtu))
        self.ip("addr", "add", address, "dev", "d0")
        self.ip("link", "set", "d1", "up")
        self.ip("link", "set", "d0", "up")

    def links(self) -> list[str]:
        return sorted(line.split(":")[1].strip().split("@")[0] for line in self.ip("-o", "link").stdout.splitlines())

    def netns_files(self) -> list[str]:
        directory = self.root / "netns"
        return sorted(os.listdir(directory)) if directory.is_dir() else []

    def pod_mounts(self) -> list[str]:
        """Mounts of pod namespace files (not the netns directory's own bind mount)."""
        prefix = f"{self.root / 'netns'}/"
        return [mount for mount in _mounts_under(self.root) if mount.startswith(prefix)]


def _mounts_under(root: Path) -> list[str]:
    return [m.mount_point for m in mountinfo.read()
            if m.mount_point == str(root) or m.mount_point.startswith(f"{root}/")]


def _enter(path: str) -> None:
    netns.enter(path)


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[[], Node]]:
    """Nodes: a fresh `hkt-` namespace each, with lo up and a worker process inside it."""
    if os.geteuid() != 0 or shutil.which("busybox") is None:
        pytest.fail("pod network tests need root and busybox (Debian busybox-static)")
    made: list[Node] = []

    def make() -> Node:
        name = f"hkt-{uuid.uuid4().hex[:8]}"
        sh("ip", "netns", "add", name)
        root = tmp_path / name
        root.mkdir()
        pool = ProcessPoolExecutor(1, mp_context=get_context("fork"), initializer=_enter,
                                   initargs=(f"/run/netns/{name}",))
        node = Node(name=name, root=root, pool=pool)
        made.append(node)
        node.ip("link", "set", "lo", "up")
        return node

    try:
        yield make
    finally:
        for node in made:
            node.pool.shutdown(wait=True, cancel_futures=True)
            for mount in sorted(_mounts_under(node.root), key=len, reverse=True):
                sh("umount", "-l", mount, check=False)
            sh("ip", "netns", "delete", node.name, check=False)
        leftover = [n for n in made if Path(n.netns_path).exists()]
        assert not leftover, f"node namespaces left behind: {leftover}"


@pytest.fixture
def node(make_node: Callable[[], Node]) -> Node:
    return make_node()


def in_pod(iface: PodInterface, *argv: str) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net={iface.netns_path}", *argv, check=False)


def ping(src: PodInterface, dst: str) -> None:
    result = in_pod(src, "busybox", "ping", "-c1", "-W2", dst)
    assert result.returncode == 0, f"{src.ip} cannot ping {dst}: {result.stdout}{result.stderr}"


def tcp_exchange(client: PodInterface, server: PodInterface) -> None:
    """A TCP connection from one pod to a listener in the other, each socket opened in its pod's namespace."""
    listener = netns.open_socket(server.netns_path, socket.AF_INET, socket.SOCK_STREAM, 0)
    conn = netns.open_socket(client.netns_path, socket.AF_INET, socket.SOCK_STREAM, 0)
    with listener, conn:
        listener.bind((server.ip, 0))
        listener.listen(1)
        listener.settimeout(5)
        conn.settimeout(5)
        conn.connect((server.ip, listener.getsockname()[1]))
        accepted, peer = listener.accept()
        with accepted:
            conn.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
        assert peer[0] == client.ip


def pod_addresses(iface: PodInterface) -> str:
    return in_pod(iface, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout


# -- tests -----------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[netns.NetnsStore]:
    """A NetnsStore in tmp_path, used from the test process itself (namespaces made there touch no network)."""
    if os.geteuid() != 0:
        pytest.fail("network namespace tests need root")
    try:
        yield netns.NetnsStore(tmp_path / "netns")
    finally:
        for mount in sorted(_mounts_under(tmp_path), key=len, reverse=True):
            sh("umount", "-l", mount, check=False)


def test_netns_store_creates_lists_and_deletes_namespaces(store: netns.NetnsStore) -> None:
    path = store.create("one")
    assert netns.is_netns(path) and path == store.directory / "one"
    assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino, "a new namespace, not ours"
    with pytest.raises(netns.NetnsError, match="already exists"):
        store.create("one")
    assert store.create("one", exist_ok=True) == path
    (store.directory / "stale").touch()  # a file nothing is mounted on (a crash, a reboot): reused
    store.create("stale")
    assert store.list() == ["one", "stale"]
    shared = [m for m in mountinfo.read() if m.mount_point == str(store.directory)]
    assert shared and any(f.startswith("shared:") for f in shared[-1].optional_fields), \
        f"{store.directory} is not a shared mount: {shared}"
    assert store.delete("one") is True
    assert store.delete("one") is False
    assert not path.exists()
    assert store.list() == ["stale"]
    assert store.delete("stale") is True
    assert _mounts_under(store.directory) == [str(store.directory)]
    with pytest.raises(netns.NetnsError):
        store.path("../escape")


def test_a_socket_opened_in_a_namespace_lives_there(store: netns.NetnsStore) -> None:
    path = store.create("sock")
    with netns.open_socket(path, socket.AF_INET, socket.SOCK_STREAM, 0) as inside:
        inside.bind(("127.0.0.1", 0))
        inside.listen(1)
        # the listener is on the namespace's own loopback: from here nobody listens on that port
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(inside.getsockname(), timeout=2).close()
    store.delete("sock")


def test_configure_makes_an_up_bridge_holding_the_gateway_and_turns_forwarding_on(node: Node) -> None:
    node.call(_configure, str(node.root), CIDR_A)
    shown = node.ip("-o", "-4", "addr", "show", "dev", "cni0").stdout
    assert "10.244.1.1/24" in shown, shown
    assert "UP" in node.ip("link", "show", "cni0").stdout
    forward = sh("nsenter", f"--net={node.netns_path}", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
    assert forward == "1"
    before = node.ip("-d", "-o", "addr", "show").stdout
    node.call(_configure, str(node.root), CIDR_A)
    assert node.ip("-d", "-o", "addr", "show").stdout == before


def test_a_new_pod_cidr_replaces_the_old_gateway_on_the_bridge(node: Node) -> None:
    node.call(_configure, str(node.root), CIDR_A)
    node.call(_configure, str(node.root), CIDR_B)
    shown = node.ip("-o", "-4", "addr", "show", "dev", "cni0").stdout
    assert "10.244.2.1/24" in shown and "10.244.1.1" not in shown, shown


def test_mtu_follows_the_interface_holding_the_default_route(node: Node) -> None:
    node.uplink("192.168.56.11/24", mtu=1400)
    node.ip("route", "add", "default", "via", "192.168.56.1")
    assert node.call(_configure, str(node.root), CIDR_A) == 1400
    iface = node.call(_setup, str(node.root), CIDR_A, "mtu-pod")
    assert "mtu 1400" in node.ip("link", "show", "cni0").stdout
    assert "mtu 1400" in node.ip("link", "show", iface.host_veth).stdout
    assert "mtu 1400" in in_pod(iface, "ip", "link", "show", "eth0").stdout


def test_an_explicit_mtu_wins_and_1500_is_the_fallback(node: Node) -> None:
    assert node.call(_configure, str(node.root), CIDR_A) == 1500  # only lo: nothing to follow
    assert node.call(_configure, str(node.root), CIDR_A, 1300) == 1300
    assert "mtu 1300" in node.ip("link", "show", "cni0").stdout


def test_two_pods_get_different_addresses_and_reach_each_other_and_the_gateway(node: Node) -> None:
    a = node.call(_setup, str(node.root), CIDR_A, "pod-a-uid")
    b = node.call(_setup, str(node.root), CIDR_A, "pod-b-uid")
    network = ipaddress.ip_network(CIDR_A)
    assert a.ip != b.ip
    assert {ipaddress.ip_address(a.ip), ipaddress.ip_address(b.ip)} <= set(network.hosts())
    assert a.gateway == b.gateway == "10.244.1.1"
    assert a.prefix_len == 24
    assert a.host_veth == host_veth_name("pod-a-uid") and len(a.host_veth) == 12
    assert a.netns_path == str(node.root / "netns" / "pod-a-uid")
    assert f"{a.ip}/24" in pod_addresses(a)
    assert "default via 10.244.1.1 dev eth0" in in_pod(a, "ip", "route").stdout
    assert ",UP," in in_pod(a, "ip", "link", "show", "lo").stdout
    shown = node.ip("-d", "link", "show", a.host_veth).stdout
    assert "master cni0" in shown and "hairpin on" in shown, shown
    ping(a, b.ip)
    ping(b, a.ip)
    ping(a, a.gateway)
    ping(a, "127.0.0.1")
    tcp_exchange(a, b)


def test_setup_is_idempotent(node: Node) -> None:
    first = node.call(_setup, str(node.root), CIDR_A, "same-pod")
    links, files = node.links(), node.netns_files()
    again = node.call(_setup, str(node.root), CIDR_A, "same-pod")
    assert again == first
    assert node.links() == links
    assert node.netns_files() == files == ["same-pod"]
    assert all_allocations(node.root / "ipam") == {CIDR_A: {first.ip: "same-pod"}}


def test_setup_before_any_pod_cidr_is_refused_as_not_ready(node: Node) -> None:
    with pytest.raises(NetworkNotReady):
        node.call(_setup_unconfigured, str(node.root), "early-pod")
    assert node.netns_files() == []


def test_teardown_removes_the_veth_the_namespace_and_the_address(node: Node) -> None:
    node.call(_configure, str(node.root), CIDR_A)
    keep = node.call(_setup, str(node.root), CIDR_A, "keep-pod")
    links, files, mounts = node.links(), node.netns_files(), node.pod_mounts()
    iface = node.call(_setup, str(node.root), CIDR_A, "gone-pod")
    assert iface.host_veth in node.links() and len(node.pod_mounts()) == len(mounts) + 1
    node.call(_teardown, str(node.root), "gone-pod")
    assert node.links() == links
    assert node.netns_files() == files
    assert node.pod_mounts() == mounts
    assert all_allocations(node.root / "ipam") == {CIDR_A: {keep.ip: "keep-pod"}}
    assert set(node.call(_list, str(node.root))) == {"keep-pod"}
    node.call(_teardown, str(node.root), "gone-pod")  # again: nothing left to do, no error
    node.call(_teardown, str(node.root), "never-was")
    ping(keep, keep.gateway)


def test_teardown_works_after_a_restart_with_parts_already_gone(node: Node) -> None:
    node.call(_configure, str(node.root), CIDR_A)
    links = node.links()
    a = node.call(_setup, str(node.root), CIDR_A, "veth-gone")
    b = node.call(_setup, str(node.root), CIDR_A, "record-gone")
    node.ip("link", "del", a.host_veth)
    (node.root / "ipam" / "pods" / "record-gone.json").unlink()
    node.call(_teardown, str(node.root), "veth-gone")  # every call is a fresh PodNetwork, as after a restart
    node.call(_teardown, str(node.root), "record-gone")
    assert node.links() == links
    assert node.netns_files() == []
    assert node.pod_mounts() == []
    assert all_allocations(node.root / "ipam") == {CIDR_A: {}}
    assert node.call(_list, str(node.root)) == {}
    assert not netns.is_netns(a.netns_path) and not netns.is_netns(b.netns_path)


def test_setup_repairs_a_pod_whose_veth_disappeared(node: Node) -> None:
    first = node.call(_setup, str(node.root), CIDR_A, "repair-pod")
    node.ip("link", "del", first.host_veth)
    again = node.call(_setup, str(node.root), CIDR_A, "repair-pod")
    assert again == first
    assert f"{first.ip}/24" in pod_addresses(again)
    ping(again, again.gateway)


def _setup_after_bridge_loss(root: str, cidr: str, uid: str) -> PodInterface:
    net = _net(root)
    net.configure(cidr)
    net.setup("before-loss", "default", "pod")
    subprocess.run(["ip", "link", "del", "cni0"], check=True)  # we are inside the node: its bridge
    return net.setup(uid, "default", "pod")


def test_a_lost_bridge_is_made_again_and_pods_attached_to_it(node: Node) -> None:
    iface = node.call(_setup_after_bridge_loss, str(node.root), CIDR_A, "after-loss")
    before = node.call(_setup, str(node.root), CIDR_A, "before-loss")  # re-attached to the new bridge
    assert "master cni0" in node.ip("link", "show", before.host_veth).stdout
    ping(iface, before.ip)
    ping(before, before.gateway)


def test_setup_finishes_a_setup_that_stopped_half_way(node: Node) -> None:
    first = node.call(_setup, str(node.root), CIDR_A, "half-pod")
    node.ip("link", "set", first.host_veth, "down")  # the host side goes up last: down = not finished
    links = node.links()
    again = node.call(_setup, str(node.root), CIDR_A, "half-pod")
    assert again == first
    assert node.links() == links
    assert ",UP," in node.ip("link", "show", first.host_veth).stdout
    ping(again, again.gateway)


def test_addresses_and_records_survive_a_new_pod_network_object(node: Node) -> None:
    a = node.call(_setup, str(node.root), CIDR_A, "first-pod")
    node.call(_teardown, str(node.root), "first-pod")
    b = node.call(_setup, str(node.root), CIDR_A, "second-pod")
    c = node.call(_setup, str(node.root), CIDR_A, "third-pod")
    addr = [int(ipaddress.ip_address(x.ip)) for x in (a, b, c)]
    assert addr[1] == addr[0] + 1 and addr[2] == addr[1] + 1, "a fresh object continues after the last address"
    listed = node.call(_list, str(node.root))
    assert listed == {"second-pod": b, "third-pod": c}
    record = json.loads((node.root / "ipam" / "pods" / "third-pod.json").read_text())
    assert record["ip"] == c.ip and record["cidr"] == CIDR_A and record["name"] == "pod-third-po"


def test_concurrent_setups_get_distinct_working_addresses(node: Node) -> None:
    made = node.call(_concurrent_setup, str(node.root), CIDR_A, 8)
    assert len({iface.ip for iface in made}) == 8
    assert len(node.netns_files()) == 8
    ping(made[0], made[-1].ip)
    ping(made[-1], made[0].gateway)


def test_calls_made_from_a_running_event_loop_work(node: Node) -> None:
    iface, routes = node.call(_from_a_running_loop, str(node.root), CIDR_A, "loop-pod")
    assert iface.ip.startswith("10.244.1.")
    assert routes == {}
    assert node.netns_files() == []


def test_twenty_pods_set_up_and_torn_down(node: Node) -> None:
    node.call(_configure, str(node.root), CIDR_A)
    links = node.links()
    made, setups, teardowns = node.call(_timed_setup_teardown, str(node.root), CIDR_A, 20)
    assert len({iface.ip for iface in made}) == 20
    assert node.links() == links
    assert node.netns_files() == [] and node.pod_mounts() == []
    print(f"\npod network, 20 pods: setup p50 {statistics.median(setups) * 1000:.1f} ms "
          f"(max {max(setups) * 1000:.1f}), teardown p50 {statistics.median(teardowns) * 1000:.1f} ms "
          f"(max {max(teardowns) * 1000:.1f})")


def _link_nodes(one: Node, two: Node) -> None:
    """A wire between two nodes: eth1 in each, 192.168.56.11 and .12 (inside the test namespaces only)."""
    one.ip("link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", two.name)
    for node, address in ((one, "192.168.56.11/24"), (two, "192.168.56.12/24")):
        node.ip("addr", "add", address, "dev", "eth1")
        node.ip("link", "set", "eth1", "up")


def test_host_gw_routes_connect_pods_on_two_nodes(make_node: Callable[[], Node]) -> None:
    one, two = make_node(), make_node()
    _link_nodes(one, two)
    pod_one = one.call(_setup, str(one.root), CIDR_A, "pod-on-one")
    pod_two = two.call(_setup, str(two.root), CIDR_B, "pod-on-two")
    everything = {CIDR_A: "192.168.56.11", CIDR_B: "192.168.56.12"}
    assert one.call(_sync_routes, everything) == ""
    assert two.call(_sync_routes, everything) == ""
    assert one.call(_current_routes) == {CIDR_B: "192.168.56.12"}
    assert two.call(_current_routes) == {CIDR_A: "192.168.56.11"}
    assert "10.244.2.0/24 via 192.168.56.12 dev eth1 proto 75" in one.ip("route").stdout
    assert "10.244.1.0/24 dev cni0 proto kernel" in one.ip("route").stdout, "the own CIDR stays connected"
    ping(pod_one, pod_two.ip)
    tcp_exchange(pod_two, pod_one)
    assert one.call(_sync_routes, everything) == ""  # idempotent
    assert one.call(_current_routes) == {CIDR_B: "192.168.56.12"}


def test_route_sync_only_ever_changes_its_own_routes(node: Node) -> None:
    node.uplink("192.168.56.11/24")
    node.ip("route", "add", "10.244.9.0/24", "via", "192.168.56.1")  # an administrator's route
    failure = node.call(_sync_routes, {"10.244.3.0/24": "192.168.56.13", "10.244.9.0/24": "192.168.56.13"})
    assert "10.244.9.0/24" in failure and "someone else" in failure
    assert node.call(_current_routes) == {"10.244.3.0/24": "192.168.56.13"}
    assert node.call(_sync_routes, {"10.244.3.0/24": "192.168.56.14", "10.244.4.0/24": "192.168.56.13"}) == ""
    assert node.call(_current_routes) == {"10.244.3.0/24": "192.168.56.14", "10.244.4.0/24": "192.168.56.13"}
    assert node.call(_sync_routes, {"10.244.5.0/24": "192.168.56.11"}) == ""  # our own node IP: skipped
    assert node.call(_current_routes) == {}
    shown = node.ip("route").stdout
    assert "10.244.9.0/24 via 192.168.56.1" in shown and "proto 75" not in shown, shown


def test_a_reused_address_is_reachable_at_once_from_other_pods_and_the_node(node: Node) -> None:
    """A pod that gets the address of a pod that went is reached at once: it announces itself (gratuitous ARP) and
    the node's entry is dropped, instead of neighbours sending to the old pod's MAC until their entries age out."""
    cidr = "10.244.9.0/29"  # five pod addresses: reuse comes quickly
    peer = node.call(_setup, str(node.root), cidr, "peer")
    first = node.call(_setup, str(node.root), cidr, "reuse-0")
    node_ping = ["ip", "netns", "exec", node.name, "busybox", "ping", "-c1", "-W2"]
    ping(peer, first.ip)
    assert sh(*node_ping, first.ip, check=False).returncode == 0
    assert "REACHABLE" in in_pod(peer, "ip", "neigh", "show", first.ip).stdout
    node.call(_teardown, str(node.root), "reuse-0")
    for i in range(1, 7):
        again = node.call(_setup, str(node.root), cidr, f"reuse-{i}")
        if again.ip == first.ip:
            break
    else:
        pytest.fail(f"{first.ip} was not handed out again in a /29")
    ping(peer, again.ip)
    pinged = sh(*node_ping, again.ip, check=False)
    assert pinged.returncode == 0, f"the node cannot reach the pod that took {again.ip}: {pinged.stdout}"
