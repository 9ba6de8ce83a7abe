"""Two real nodes on one network: pods on different nodes reach each other directly (host-gw routes).

Each kubelet learns the other node's `spec.podCIDR` from the API and routes it via that
node's InternalIP. The test sets the podCIDRs itself, as the controller-manager's node IPAM
controller would.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from harness.api import registry
from harness.client.rest import Client
from tests.integration.apiserver_fixtures import wait_for
from tests.integration.node_fixtures import Network, Node, destroy, make_node, network, wait_node_ready  # noqa: F401

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
NAMESPACES = registry.by_path("", "v1", "namespaces")

pytestmark = pytest.mark.kubelet


@pytest.fixture(scope="module")
def two_nodes(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:  # noqa: F811
    nodes: list[Node] = []
    try:
        for i in range(2):
            nodes.append(make_node(network, tmp_path_factory.mktemp(f"node{i}"), index=i))
            nodes[-1].start_kubelet()
        for n in nodes:
            wait_node_ready(n)
        yield nodes
    finally:
        for n in nodes:
            destroy(n)


@pytest_asyncio.fixture
async def client(two_nodes: list[Node]) -> AsyncIterator[Client]:
    async with Client.from_kubeconfig(two_nodes[0].kubeconfig) as c:
        yield c


async def test_pods_on_two_nodes_reach_each_other_over_host_gw_routes(client: Client, two_nodes: list[Node]) -> None:
    for n in two_nodes:  # what the node IPAM controller would do
        await client.patch(NODES, n.name, {"spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]}})
    ns = f"kt-{uuid.uuid4().hex[:6]}"
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    a, b = two_nodes
    server = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "server"},
              "spec": {"nodeName": b.name, "terminationGracePeriodSeconds": 0,
                       "containers": [{"name": "httpd", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                       "command": ["sh", "-c", "echo hello from $(hostname) > /tmp/index.html; "
                                                   "httpd -f -p 8080 -h /tmp"]}]}}
    await client.create(PODS, server, ns)

    async def server_ip() -> str:
        pod = await client.get(PODS, "server", ns)
        statuses = pod["status"].get("containerStatuses") or []
        return str(pod["status"].get("podIP", "")) if statuses and "running" in statuses[0]["state"] else ""

    ip = await wait_for(server_ip, within=20, what="server pod running")
    assert ip.startswith(b.pod_cidr.rsplit(".", 1)[0])

    # node a routes b's pod CIDR via b's address
    async def routed() -> bool:
        routes = a.run_in("ip", "route", "show", b.pod_cidr).stdout
        return f"via {b.ip}" in routes

    await wait_for(routed, within=10, what=f"host-gw route to {b.pod_cidr} on {a.name}")
    client_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
                  "spec": {"nodeName": a.name, "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 0,
                           "containers": [{"name": "get", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                           "command": ["wget", "-q", "-O-", f"http://{ip}:8080/"]}]}}
    await client.create(PODS, client_pod, ns)

    async def fetched() -> dict[str, str] | None:
        pod = await client.get(PODS, "client", ns)
        return pod if pod["status"].get("phase") == "Succeeded" else None

    done = await wait_for(fetched, within=30, what="client pod on the other node fetched the page")
    assert done["status"]["podIP"].startswith(a.pod_cidr.rsplit(".", 1)[0])
    async with aiohttp.ClientSession() as http, \
            http.get(f"{a.apiserver.url}/api/v1/namespaces/{ns}/pods/client/log") as answer:
        assert answer.status == 200
        assert (await answer.text()).strip() == "hello from server"
