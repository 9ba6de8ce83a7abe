"""`harness proxy --mode userspace`, run in a node network namespace of its own against a real apiserver.

The node is a namespace from node_fixtures (a veth on the test bridge, where the apiserver
listens); no kubelet runs. Stand-ins for three pods are addresses on the loopback interface of
the node namespace, with listeners (TCP and UDP) that answer with their own address. The proxy
puts cluster IPs on the namespace's `lo` and relays; no iptables rule is involved. Everything
is inside that namespace, which the teardown deletes.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.api import registry
from harness.client.rest import Client
from tests.integration.apiserver_fixtures import free_port, wait_for
from tests.integration.node_fixtures import Network, Node, destroy, destroy_network, make_network, make_node
from tests.integration.test_proxy_iptables import CLIENT, PROXY, _stop

NAMESPACES = registry.by_path("", "v1", "namespaces")
SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
TARGET_PORT = 8080
UDP_PORT = 5353

LISTENER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for ip in sys.argv[3:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, int(sys.argv[1]))); s.listen(64); sel.register(s, selectors.EVENT_READ, "tcp")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, int(sys.argv[2])))
    sel.register(u, selectors.EVENT_READ, "udp")
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "tcp":
            conn, _ = key.fileobj.accept()
            conn.sendall(conn.getsockname()[0].encode()); conn.close()
        else:
            data, peer = key.fileobj.recvfrom(512)
            key.fileobj.sendto(key.fileobj.getsockname()[0].encode() + b" " + data, peer)
"""

UDP_CLIENT = """
import json, socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
answers = []
for i in range(n):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2); s.connect((ip, port)); s.send(b"ping%d" % i)
        try:
            answers.append(s.recv(512).decode())
        except OSError as exc:
            answers.append(type(exc).__name__)
print(json.dumps(answers))
"""


@dataclass
class ProxyNode:
    net: Network
    node: Node
    pod_ips: list[str]
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def connect(self, ip: str, port: int, n: int) -> dict[str, Any]:
        out = self.node.run_in(sys.executable, "-c", CLIENT, ip, str(port), str(n), check=True, timeout=60).stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def udp(self, ip: str, port: int, n: int) -> list[str]:
        out = self.node.run_in(sys.executable, "-c", UDP_CLIENT, ip, str(port), str(n), check=True, timeout=60).stdout
        result: list[str] = json.loads(out)
        return result

    def our_addresses(self) -> set[str]:
        out = self.node.run_in("ip", "-o", "-4", "addr", "show", "dev", "lo", "label", "lo:kp", check=True).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()}

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://{self.node.ip}:{self.metrics_port}/metrics", timeout=2) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith((name + " ", name + "{}")):
                    return float(line.split()[-1])
        return 0.0

    def alive(self) -> None:
        assert self.proc.poll() is None, "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture(scope="module")
def proxy_node(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyNode]:
    workdir = tmp_path_factory.mktemp("proxy-userspace")
    net = make_network(etcd, workdir)
    procs: list[subprocess.Popen[bytes]] = []
    node: Node | None = None
    try:
        node = make_node(net, workdir)
        pod_ips = [f"10.244.{net.subnet}.{i}" for i in (11, 12, 13)]
        for ip in pod_ips:
            node.run_in("ip", "addr", "add", f"{ip}/32", "dev", "lo", check=True)
        listener = subprocess.Popen(["nsenter", f"--net=/run/netns/{node.netns}", sys.executable, "-c", LISTENER,
                                     str(TARGET_PORT), str(UDP_PORT), *pod_ips], stdout=subprocess.PIPE)
        procs.append(listener)
        assert listener.stdout is not None and listener.stdout.readline() == b"listening\n"
        metrics_port = free_port()
        log = workdir / "proxy.log"
        cmd = ["nsenter", f"--net=/run/netns/{node.netns}", sys.executable, *PROXY, "--mode", "userspace",
               "--kubeconfig", str(node.kubeconfig), "--iptables-min-sync-period", "0",
               "--healthz-bind-address", f"{node.ip}:{free_port()}",
               "--metrics-bind-address", f"{node.ip}:{metrics_port}", "--log-level", "debug"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        yield ProxyNode(net, node, pod_ips, proc, metrics_port, log)
    finally:
        for p in reversed(procs):
            _stop(p)
        if node is not None:
            destroy(node)  # deletes the namespace, and every address in it
        destroy_network(net)


@pytest_asyncio.fixture
async def client(proxy_node: ProxyNode) -> AsyncIterator[Client]:
    assert proxy_node.net.apiserver is not None
    async with Client.for_url(proxy_node.net.apiserver.url) as c:
        yield c


@pytest_asyncio.fixture
async def ns(client: Client) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def cluster_ip() -> str:
    return f"10.111.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def make_service(client: Client, ns: str, name: str, ip: str, *, protocol: str = "TCP",
                       **spec: Any) -> None:
    port: dict[str, Any] = {"name": "p", "port": 80, "protocol": protocol,
                            "targetPort": TARGET_PORT if protocol == "TCP" else UDP_PORT}
    port.update(spec.pop("port_extra", {}))
    await client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                   "spec": {"clusterIP": ip, "ports": [port], **spec}}, ns)


def endpoints_body(name: str, ips: list[str], protocol: str = "TCP") -> dict[str, Any]:
    port = TARGET_PORT if protocol == "TCP" else UDP_PORT
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "ports": [{"name": "p", "port": port, "protocol": protocol}]}]}


async def wait_serving(proxy_node: ProxyNode, ip: str, port: int) -> None:
    async def serving() -> bool:
        proxy_node.alive()
        return ip in proxy_node.our_addresses() and proxy_node.connect(ip, port, 1)["errors"] == []

    await wait_for(serving, within=15, what=f"the proxy serving {ip}:{port}")


async def test_connections_spread_round_robin(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    ip = cluster_ip()
    await make_service(client, ns, "web", ip)
    await client.create(ENDPOINTS, endpoints_body("web", proxy_node.pod_ips), ns)
    await wait_serving(proxy_node, ip, 80)
    result = proxy_node.connect(ip, 80, 9)
    assert result["errors"] == []
    assert result["hits"] == {pod: 3 for pod in proxy_node.pod_ips}
    assert proxy_node.metric("kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1
    assert "KUBE-" not in proxy_node.node.run_in("iptables-save").stdout


async def test_client_ip_affinity_sticks(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    ip = cluster_ip()
    await make_service(client, ns, "sticky", ip, sessionAffinity="ClientIP",
                       sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    await client.create(ENDPOINTS, endpoints_body("sticky", proxy_node.pod_ips), ns)
    await wait_serving(proxy_node, ip, 80)
    result = proxy_node.connect(ip, 80, 6)
    assert result["errors"] == [] and len(result["hits"]) == 1 and sum(result["hits"].values()) == 6, result


async def test_udp_through_the_cluster_ip(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    ip = cluster_ip()
    await make_service(client, ns, "dns", ip, protocol="UDP")
    await client.create(ENDPOINTS, endpoints_body("dns", proxy_node.pod_ips, "UDP"), ns)

    async def answering() -> bool:
        proxy_node.alive()
        return ip in proxy_node.our_addresses() and proxy_node.udp(ip, 80, 1)[0].endswith(" ping0")

    await wait_for(answering, within=15, what=f"UDP answers through {ip}:80")
    answers = proxy_node.udp(ip, 80, 3)  # three clients: three sessions, one per endpoint
    assert [a.split()[1] for a in answers] == ["ping0", "ping1", "ping2"], answers
    assert {a.split()[0] for a in answers} == set(proxy_node.pod_ips)


async def test_service_without_endpoints_is_reset_fast(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    ip = cluster_ip()
    await make_service(client, ns, "empty", ip)

    async def listening() -> bool:
        proxy_node.alive()
        errors = proxy_node.connect(ip, 80, 1)["errors"]
        return ip in proxy_node.our_addresses() and [e[0] for e in errors] == ["ConnectionResetError"]

    await wait_for(listening, within=15, what=f"the proxy listening on {ip}:80")
    result = proxy_node.connect(ip, 80, 3)
    assert result["hits"] == {}
    assert [e[0] for e in result["errors"]] == ["ConnectionResetError"] * 3
    assert max(e[1] for e in result["errors"]) < 0.5


async def test_endpoint_removal_and_node_port(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    ip, node_port = cluster_ip(), random.randint(30000, 32767)
    await make_service(client, ns, "shrink", ip, type="NodePort", port_extra={"nodePort": node_port})
    await client.create(ENDPOINTS, endpoints_body("shrink", proxy_node.pod_ips), ns)
    await wait_serving(proxy_node, ip, 80)
    via_node_port = proxy_node.connect(proxy_node.node.ip, node_port, 3)
    assert via_node_port["errors"] == [] and set(via_node_port["hits"]) == set(proxy_node.pod_ips)

    current = await client.get(ENDPOINTS, "shrink", ns)
    current["subsets"] = endpoints_body("shrink", proxy_node.pod_ips[:1])["subsets"]
    await client.update(ENDPOINTS, current)

    async def only_one() -> bool:
        return proxy_node.connect(ip, 80, 3)["hits"] == {proxy_node.pod_ips[0]: 3}

    await wait_for(only_one, within=10, what="connections going to the one endpoint left")

    await client.delete(SERVICES, "shrink", ns)

    async def gone() -> bool:
        return ip not in proxy_node.our_addresses()

    await wait_for(gone, within=10, what=f"{ip} removed from lo with its service")


async def test_cleanup_removes_the_addresses(proxy_node: ProxyNode) -> None:
    """Last in the module: stops the proxy."""
    assert proxy_node.our_addresses()
    _stop(proxy_node.proc)
    done = proxy_node.node.run_in(sys.executable, *PROXY, "--mode", "userspace", "--cleanup", timeout=30)
    assert done.returncode == 0, done.stderr
    assert proxy_node.our_addresses() == set()
    lo = proxy_node.node.run_in("ip", "-o", "-4", "addr", "show", "dev", "lo", check=True).stdout
    assert all(pod in lo for pod in proxy_node.pod_ips)  # addresses not ours are left alone
