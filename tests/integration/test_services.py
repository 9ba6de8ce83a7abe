"""Services end to end: two real nodes (kubelet + kube-proxy each), the endpoints controller and cluster DNS.

Three busybox httpd pods behind a NodePort Service `web`, a client pod on the other node: the
ClusterIP answers from pods and from each node, spreading over all three pods; the NodePort
answers on every node IP; a deleted pod leaves the rotation; pods resolve
`web.<ns>.svc.cluster.local` through the kube-dns Service (10.96.0.10), which `harness dns`
(on the host side of the node network) keeps pointing at itself. The host gets routes to the nodes'
pod CIDRs via the node IPs (as every machine of a host-gw network has), so DNS answers reach
pods; they are removed with the network.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.api import errors, registry
from harness.client.rest import Client
from harness.storage.local import free_port
from tests.integration.apiserver_fixtures import wait_for
from tests.integration.node_fixtures import Network, Node, destroy, make_node, network, sh, wait_node_ready  # noqa: F401

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
NAMESPACES = registry.by_path("", "v1", "namespaces")

pytestmark = pytest.mark.kubelet


@dataclass
class Cluster:
    network: Network
    nodes: list[Node]
    procs: list[subprocess.Popen[bytes]]
    workdir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.nodes[0].kubeconfig

    def start_proxy(self, node: Node) -> subprocess.Popen[bytes]:
        proc = _spawn(["proxy", "--kubeconfig", str(self.kubeconfig), "--hostname-override", node.name,
                       "--iptables-min-sync-period", "0.2", "--healthz-bind-address", f"{node.ip}:10256"],
                      self.workdir / f"proxy-{node.name}.log", node.netns)
        self.procs.append(proc)
        return proc


def _spawn(args: list[str], log: Path, netns: str = "") -> subprocess.Popen[bytes]:
    prefix = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    with open(log, "ab") as out:
        return subprocess.Popen([*prefix, sys.executable, "-m", "harness.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cluster(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # noqa: F811
    workdir = tmp_path_factory.mktemp("services")
    nodes: list[Node] = []
    procs: list[subprocess.Popen[bytes]] = []
    routes: list[str] = []
    made = Cluster(network, nodes, procs, workdir)
    try:
        for i in range(2):
            node = make_node(network, workdir, index=i)
            nodes.append(node)
            node.start_kubelet()
        kc = str(nodes[0].kubeconfig)
        for node in nodes:
            made.start_proxy(node)
            sh("ip", "route", "replace", node.pod_cidr, "via", node.ip)
            routes.append(node.pod_cidr)
        procs.append(_spawn(["controller-manager", "--kubeconfig", kc, "--controllers", "endpoints",
                             "--leader-elect=false", "--secure-port", str(free_port())], workdir / "cm.log"))
        procs.append(_spawn(["dns", "--kubeconfig", kc, "--bind-address", network.host_ip, "--port", "53",
                             "--health-port", str(free_port()), "--service-ip", "10.96.0.10"], workdir / "dns.log"))
        for node in nodes:
            wait_node_ready(node)
        yield made
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in nodes:
            node.run_in(sys.executable, "-m", "harness.cli", "proxy", "--cleanup", timeout=60)
            destroy(node)
        for cidr in routes:
            sh("ip", "route", "delete", cidr, check=False)


@pytest_asyncio.fixture(scope="module")
async def web(cluster: Cluster) -> AsyncIterator[dict[str, Any]]:
    """Namespace, podCIDRs, kube-dns, and the `web` Service over three httpd pods (two on node 0, one on node 1)."""
    async with Client.from_kubeconfig(cluster.kubeconfig) as client:
        for n in cluster.nodes:  # what the node IPAM controller would do
            await client.patch(NODES, n.name, {"spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]}})
        await _kube_dns_registered(client, cluster.network.host_ip)
        ns = f"svc-{uuid.uuid4().hex[:6]}"
        await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i, node in enumerate([cluster.nodes[0], cluster.nodes[0], cluster.nodes[1]]):
            await client.create(PODS, {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"web-{i}", "labels": {"app": "web"}},
                "spec": {"nodeName": node.name, "terminationGracePeriodSeconds": 0, "containers": [{
                    "name": "httpd", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "hostname > /tmp/index.html; touch /tmp/ready; httpd -f -p 8080 -h /tmp"],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}}]}},
                ns)
        svc = await client.create(SERVICES, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}, ns)

        async def three_ready() -> bool:
            try:
                ep = await client.get(ENDPOINTS, "web", ns)
            except errors.NotFound:
                return False
            return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or []) == 3

        await wait_for(three_ready, within=30, what="3 ready endpoints for web")

        await wait_programmed(cluster, ns, 3)
        yield {"ns": ns, "ip": svc["spec"]["clusterIP"], "node_port": svc["spec"]["ports"][0]["nodePort"],
               "client": client}


async def wait_programmed(cluster: Cluster, ns: str, endpoints: int) -> None:
    """Until every node's kube-proxy has exactly `endpoints` endpoints of web in its rules."""

    async def programmed() -> bool:
        for node in cluster.nodes:
            rules = node.run_in("iptables-save", "-t", "nat").stdout.splitlines()
            if sum(1 for r in rules if f"{ns}/web:http" in r and "-j KUBE-SEP-" in r) != endpoints:
                return False
        return True

    await wait_for(programmed, within=10, what=f"kube-proxy rules for {endpoints} endpoints on every node")


async def _kube_dns_registered(client: Client, dns_ip: str) -> None:
    """Until `harness dns` has put kube-system/kube-dns at 10.96.0.10 with itself as the endpoint."""

    async def registered() -> bool:
        try:
            svc = await client.get(SERVICES, "kube-dns", "kube-system")
            ep = await client.get(ENDPOINTS, "kube-dns", "kube-system")
        except errors.NotFound:
            return False
        ips = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
        return bool(svc["spec"]["clusterIP"] == "10.96.0.10" and ips == [dns_ip])

    await wait_for(registered, within=20, what="kube-dns registered by the DNS server")


def logs_of(node: Node, ns: str, name: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", str(node.kubeconfig), "logs", "-n", ns, name],
                          capture_output=True, text=True, timeout=30, check=False).stdout


def hostnames(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip().startswith("web-")}


async def run_client(client: Client, ns: str, node: Node, name: str, script: str) -> str:
    """A pod on `node` running `script` to completion; its log."""
    await client.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                               "spec": {"nodeName": node.name, "restartPolicy": "Never",
                                        "terminationGracePeriodSeconds": 0,
                                        "containers": [{"name": "c", "image": "busybox",
                                                        "imagePullPolicy": "IfNotPresent",
                                                        "command": ["sh", "-c", script]}]}}, ns)

    async def finished() -> dict[str, Any] | None:
        pod = await client.get(PODS, name, ns)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = await wait_for(finished, within=40, what=f"client pod {name} finished")
    log = logs_of(node, ns, name)
    assert pod["status"]["phase"] == "Succeeded", log
    return log


async def test_cluster_ip_from_a_pod_on_another_node_spreads_over_all_pods(cluster: Cluster,
                                                                           web: dict[str, Any]) -> None:
    log = await run_client(web["client"], web["ns"], cluster.nodes[1], "spread",
                           f"for i in $(seq 1 40); do wget -q -O- http://{web['ip']}/ 2>&1; done")
    rules = cluster.nodes[1].run_in("iptables-save", "-t", "nat").stdout
    assert hostnames(log) == {"web-0", "web-1", "web-2"}, f"{log}\n{rules}"


async def test_cluster_ip_from_each_node_and_node_port_on_every_node(cluster: Cluster, web: dict[str, Any]) -> None:
    for node in cluster.nodes:
        seen: set[str] = set()
        for _ in range(30):
            seen |= hostnames(node.run_in("busybox", "wget", "-q", "-O-", f"http://{web['ip']}/", timeout=10).stdout)
        assert seen == {"web-0", "web-1", "web-2"}, node.name
    for node in cluster.nodes:  # from the other node, through this node's NodePort
        other = next(n for n in cluster.nodes if n is not node)
        answer = other.run_in("busybox", "wget", "-q", "-O-", f"http://{node.ip}:{web['node_port']}/", timeout=10)
        assert hostnames(answer.stdout), (node.name, answer.stderr)


async def test_pods_resolve_the_service_name_through_cluster_dns(cluster: Cluster, web: dict[str, Any]) -> None:
    ns = web["ns"]
    log = await run_client(web["client"], ns, cluster.nodes[0], "dns",
                           f"nslookup web.{ns}.svc.cluster.local; wget -q -O- http://web.{ns}.svc.cluster.local/; "
                           "wget -q -O- http://web/")
    assert web["ip"] in log
    assert len(hostnames(log)) >= 1


async def test_headless_service_resolves_to_the_pod_ips(cluster: Cluster, web: dict[str, Any]) -> None:
    client, ns = web["client"], web["ns"]
    await client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
                                   "spec": {"clusterIP": "None", "selector": {"app": "web"},
                                            "ports": [{"name": "http", "port": 8080}]}}, ns)
    pod_ips = {(await client.get(PODS, f"web-{i}", ns))["status"]["podIP"] for i in range(3)}

    async def listed() -> bool:
        try:
            ep = await client.get(ENDPOINTS, "peers", ns)
        except errors.NotFound:
            return False
        return {a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []} == pod_ips

    await wait_for(listed, within=20, what="headless endpoints")
    log = await run_client(client, ns, cluster.nodes[1], "peers", f"nslookup peers.{ns}.svc.cluster.local")
    assert pod_ips <= set(log.split()), log


def kubectl_exec(node: Node, ns: str, pod: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["kubectl", "--kubeconfig", str(node.kubeconfig), "exec", "-n", ns, pod, "--", *argv],
                          capture_output=True, timeout=30, check=False)


def _rotation(node: Node, ip: str, tries: int = 24) -> set[str]:
    seen: set[str] = set()
    for _ in range(tries):
        try:
            seen |= hostnames(node.run_in("busybox", "wget", "-q", "-O-", f"http://{ip}/", timeout=3).stdout)
        except subprocess.TimeoutExpired:
            seen.add("(no answer)")
    return seen


async def test_an_unready_pod_leaves_the_rotation_and_comes_back(cluster: Cluster, web: dict[str, Any]) -> None:
    node = cluster.nodes[0]
    assert kubectl_exec(node, web["ns"], "web-1", "rm", "/tmp/ready").returncode == 0

    async def without_web_1() -> bool:
        return _rotation(node, web["ip"]) == {"web-0", "web-2"}

    await wait_for(without_web_1, within=20, what="web-1 out of rotation while unready")
    assert kubectl_exec(node, web["ns"], "web-1", "touch", "/tmp/ready").returncode == 0

    async def all_back() -> bool:
        return _rotation(node, web["ip"]) == {"web-0", "web-1", "web-2"}

    await wait_for(all_back, within=20, what="web-1 back in rotation once ready")


async def test_traffic_keeps_flowing_across_a_kube_proxy_restart(cluster: Cluster, web: dict[str, Any]) -> None:
    node = cluster.nodes[0]
    proxy = next(p for p in cluster.procs if f"--net=/run/netns/{node.netns}" in p.args)  # type: ignore[operator]
    proxy.terminate()
    proxy.wait(15)
    cluster.procs.remove(proxy)
    assert _rotation(node, web["ip"], tries=12)  # the rules stay while kube-proxy is away
    cluster.start_proxy(node)

    async def healthy() -> bool:
        return node.run_in("busybox", "wget", "-q", "-O-", f"http://{node.ip}:10256/healthz").returncode == 0

    await wait_for(healthy, within=20, what="restarted kube-proxy healthy")
    assert _rotation(node, web["ip"]) == {"web-0", "web-1", "web-2"}


async def test_a_deleted_pod_leaves_the_rotation(cluster: Cluster, web: dict[str, Any]) -> None:
    client, ns = web["client"], web["ns"]
    await client.delete(PODS, "web-2", ns, grace_period=0)

    async def two_left() -> bool:
        ep = await client.get(ENDPOINTS, "web", ns)
        return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or []) == 2

    await wait_for(two_left, within=20, what="web-2 out of the endpoints")
    await wait_programmed(cluster, ns, 2)

    async def out_of_rotation() -> bool:
        return _rotation(cluster.nodes[0], web["ip"]) == {"web-0", "web-1"}

    await wait_for(out_of_rotation, within=10, what="only web-0 and web-1 answer")
