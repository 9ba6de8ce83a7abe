"""`harness proxy` in iptables mode, run in a node network namespace of its own against a real apiserver.

The node is a namespace from node_fixtures (a veth on the test bridge, where the apiserver
listens); no kubelet runs. Stand-ins for three pods are addresses on the loopback interface of
the node namespace, with one listener per address that answers with its own address; a route
sends the service range out of eth0 so connections to cluster IPs are routed (and DNATed).
Everything iptables touches is inside that namespace, which the teardown deletes.
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
from harness.cli import COMMANDS
from harness.client.rest import Client
from harness.proxy.iptables import service_chain
from harness.proxy.model import ServicePort
from tests.integration.apiserver_fixtures import free_port, wait_for
from tests.integration.node_fixtures import Network, Node, destroy, destroy_network, make_network, make_node

NAMESPACES = registry.by_path("", "v1", "namespaces")
SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
TARGET_PORT = 8080
#: `harness proxy`, or the module itself until the command is registered.
PROXY = ["-m", "harness.cli", "proxy"] if "proxy" in COMMANDS else ["-m", "harness.cli.proxy"]

LISTENER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for ip in sys.argv[2:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, int(sys.argv[1]))); s.listen(64); sel.register(s, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(conn.getsockname()[0].encode()); conn.close()
"""

CLIENT = """
import json, socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hits, errors = {}, []
for _ in range(n):
    started = time.monotonic()
    try:
        with socket.create_connection((ip, port), timeout=3) as s:
            got = s.recv(64).decode()
            hits[got] = hits.get(got, 0) + 1
    except OSError as exc:
        errors.append([type(exc).__name__, round(time.monotonic() - started, 3)])
print(json.dumps({"hits": hits, "errors": errors}))
"""


@dataclass
class ProxyNode:
    net: Network
    node: Node
    pod_ips: list[str]
    proc: subprocess.Popen[bytes]
    listener: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def nat(self) -> str:
        return self.node.run_in("iptables-save", "-t", "nat", check=True).stdout

    def filter(self) -> str:
        return self.node.run_in("iptables-save", "-t", "filter", check=True).stdout

    def connect(self, ip: str, port: int, n: int) -> dict[str, Any]:
        out = self.node.run_in(sys.executable, "-c", CLIENT, ip, str(port), str(n), check=True, timeout=60).stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://{self.node.ip}:{self.metrics_port}/metrics", timeout=2) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith((name + " ", name + "{}")):
                    return float(line.split()[-1])
        return 0.0

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_proxy(node: Node, workdir: Path, metrics_port: int, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / "proxy.log"
    cmd = ["nsenter", f"--net=/run/netns/{node.netns}", sys.executable, *PROXY,
           "--kubeconfig", str(node.kubeconfig), "--iptables-min-sync-period", "0",
           "--healthz-bind-address", f"{node.ip}:{free_port()}",
           "--metrics-bind-address", f"{node.ip}:{metrics_port}", "--log-level", "debug", *extra]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT), log


@pytest.fixture(scope="module")
def proxy_node(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyNode]:
    workdir = tmp_path_factory.mktemp("proxy")
    net = make_network(etcd, workdir)
    procs: list[subprocess.Popen[bytes]] = []
    node: Node | None = None
    try:
        node = make_node(net, workdir)
        pod_ips = [f"10.244.{net.subnet}.{i}" for i in (11, 12, 13)]
        for ip in pod_ips:
            node.run_in("ip", "addr", "add", f"{ip}/32", "dev", "lo", check=True)
        node.run_in("ip", "route", "add", "10.111.0.0/16", "dev", "eth0", check=True)
        listener = subprocess.Popen(["nsenter", f"--net=/run/netns/{node.netns}", sys.executable, "-c", LISTENER,
                                     str(TARGET_PORT), *pod_ips], stdout=subprocess.PIPE)
        procs.append(listener)
        assert listener.stdout is not None and listener.stdout.readline() == b"listening\n"
        metrics_port = free_port()
        proc, log = start_proxy(node, workdir, metrics_port)
        procs.append(proc)
        yield ProxyNode(net, node, pod_ips, proc, listener, metrics_port, log)
    finally:
        for p in reversed(procs):
            _stop(p)
        if node is not None:
            destroy(node)  # deletes the namespace, and every rule in it
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


async def make_service(client: Client, ns: str, name: str, ip: str, **spec: Any) -> None:
    await client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                   "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80,
                                                                        "targetPort": TARGET_PORT}], **spec}}, ns)


def endpoints_body(name: str, ips: list[str], not_ready: tuple[str, ...] = ()) -> dict[str, Any]:
    subset: dict[str, Any] = {"addresses": [{"ip": ip} for ip in ips],
                              "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}]}
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name}, "subsets": [subset]}


def chain_of(ns: str, name: str) -> str:
    return service_chain(ServicePort(ns, name, "http", "TCP", "", 80))


async def test_rules_programmed_and_connections_spread(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    ip = cluster_ip()
    await make_service(client, ns, "web", ip)
    await client.create(ENDPOINTS, endpoints_body("web", proxy_node.pod_ips), ns)
    svc = chain_of(ns, "web")

    async def programmed() -> bool:
        assert proxy_node.proc.poll() is None, proxy_node.log_tail()
        nat = proxy_node.nat()
        return svc in nat and "-j KUBE-POSTROUTING" in nat  # the jumps are ensured right after the first restore

    await wait_for(programmed, within=15, what=f"{svc} in the node's nat table")
    nat = proxy_node.nat()
    assert f"-A KUBE-SERVICES -d {ip}/32 -p tcp" in nat
    assert nat.count(f"-A {svc} ") == 4  # masquerade of off-cluster clients + 3 endpoints
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" in nat
    assert "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING" in nat
    assert proxy_node.node.run_in("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"

    result = proxy_node.connect(ip, 80, 90)
    assert result["errors"] == []
    assert set(result["hits"]) == set(proxy_node.pod_ips)
    assert min(result["hits"].values()) >= 10, result  # ~30 each; 10 is far outside chance


async def test_service_without_endpoints_is_rejected_fast(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    ip = cluster_ip()
    await make_service(client, ns, "empty", ip)

    async def rejected() -> bool:
        return f"{ns}/empty:http has no endpoints" in proxy_node.filter()

    await wait_for(rejected, within=15, what="a REJECT rule for the service without endpoints")
    result = proxy_node.connect(ip, 80, 3)
    assert result["hits"] == {}
    assert [e[0] for e in result["errors"]] == ["ConnectionRefusedError"] * 3
    assert max(e[1] for e in result["errors"]) < 0.5


async def test_sync_without_change_does_not_restore(proxy_node: ProxyNode, client: Client, ns: str) -> None:
    await make_service(client, ns, "steady", cluster_ip())
    await client.create(ENDPOINTS, endpoints_body("steady", proxy_node.pod_ips[:1]), ns)

    async def programmed() -> bool:
        return chain_of(ns, "steady") in proxy_node.nat()

    await wait_for(programmed, within=15, what="the steady service's chain")
    syncs = proxy_node.metric("kubeproxy_sync_proxy_rules_duration_seconds_count")
    restores = proxy_node.metric("harness_proxy_iptables_restores_total")
    # A not-ready address changes the Endpoints (a sync) but not the rules (no restore).
    current = await client.get(ENDPOINTS, "steady", ns)
    current["subsets"] = endpoints_body("steady", proxy_node.pod_ips[:1], not_ready=("10.9.9.9",))["subsets"]
    await client.update(ENDPOINTS, current)

    async def synced_again() -> bool:
        return proxy_node.metric("kubeproxy_sync_proxy_rules_duration_seconds_count") > syncs

    await wait_for(synced_again, within=10, what="a sync after the Endpoints update")
    assert proxy_node.metric("harness_proxy_iptables_restores_total") == restores


async def test_cleanup_removes_every_chain_and_jump(proxy_node: ProxyNode) -> None:
    """Last in the module: stops the proxy."""
    assert "KUBE-SERVICES" in proxy_node.nat()
    _stop(proxy_node.proc)
    node = proxy_node.node
    done = node.run_in(sys.executable, *PROXY, "--cleanup", timeout=30)
    assert done.returncode == 0, done.stderr
    for table in (proxy_node.nat(), proxy_node.filter()):
        assert "KUBE-" not in table, table
