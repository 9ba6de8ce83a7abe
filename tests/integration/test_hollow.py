"""Hollow nodes against the real apiserver: registration, leases, pods, pause, re-registration."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from ipaddress import ip_address, ip_network
from typing import Any

import pytest_asyncio

from harness.api import errors, registry
from harness.client.rest import Client
from harness.hollow import HollowCluster
from tests.integration.apiserver_fixtures import ApiServerProcess, wait_for

NODES = registry.by_path("", "v1", "nodes")
PODS = registry.by_path("", "v1", "pods")
LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")
LEASE_NS = "kube-node-lease"


@pytest_asyncio.fixture
async def client(apiserver: ApiServerProcess) -> AsyncIterator[Client]:
    async with Client.for_url(apiserver.url) as c:
        yield c


@pytest_asyncio.fixture
async def hollow(client: Client) -> AsyncIterator[HollowCluster]:
    cluster = HollowCluster(client, count=5, prefix=f"h{uuid.uuid4().hex[:6]}", heartbeat=0.5,
                            status_interval=5.0, labels={"pool": "hollow-test"})
    await cluster.start()
    yield cluster
    await cluster.stop()
    for name in cluster.node_names:
        with contextlib.suppress(errors.NotFound):
            await client.delete(NODES, name)
        with contextlib.suppress(errors.NotFound):
            await client.delete(LEASES, name, LEASE_NS)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == ctype), {})


async def renew_time(client: Client, name: str) -> str:
    return str((await client.get(LEASES, name, LEASE_NS))["spec"]["renewTime"])


async def wait_renewed(client: Client, name: str, since: str, *, within: float = 10.0) -> str:
    async def later() -> str | None:
        now = await renew_time(client, name)
        return now if now > since else None
    result: str = await wait_for(later, within=within, what=f"lease {name} renewed after {since}")
    return result


async def bound_pod(client: Client, ns: str, name: str, node: str) -> dict[str, Any]:
    await client.create(PODS, {"metadata": {"name": name},
                               "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}],
                                        "terminationGracePeriodSeconds": 30}}, ns)
    await client.request("POST", Client.path(PODS, ns, name, "binding"),
                         body={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                               "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    return await client.get(PODS, name, ns)


async def wait_running(client: Client, ns: str, name: str) -> dict[str, Any]:
    async def running() -> dict[str, Any] | None:
        pod = await client.get(PODS, name, ns)
        return pod if pod["status"].get("phase") == "Running" else None
    result: dict[str, Any] = await wait_for(running, within=10, what=f"pod {ns}/{name} Running")
    return result


async def test_nodes_register_ready_with_leases_that_are_renewed(client: Client, hollow: HollowCluster) -> None:
    assert len(hollow.node_names) == 5
    for name in hollow.node_names:
        node = await client.get(NODES, name)
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name
        assert labels["node.harness.dev/hollow"] == "true" and labels["pool"] == "hollow-test"
        ready = condition(node, "Ready")
        assert (ready["status"], ready["reason"], ready["message"]) == \
               ("True", "KubeletReady", "kubelet is posting ready status"), ready
        for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            assert condition(node, ctype)["status"] == "False", node["status"]["conditions"]
        status = node["status"]
        assert status["capacity"] == {"cpu": "4", "memory": "16Gi", "pods": "110",
                                      "ephemeral-storage": "100Gi"}
        assert status["allocatable"]["pods"] == "110"
        internal = next(a["address"] for a in status["addresses"] if a["type"] == "InternalIP")
        assert ip_address(internal) in ip_network("10.250.0.0/16")
        assert status["nodeInfo"]["kubeletVersion"] == "v1.37.0-hollow"
        assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250

        lease = await client.get(LEASES, name, LEASE_NS)
        assert lease["spec"]["holderIdentity"] == name
        assert lease["spec"]["leaseDurationSeconds"] == 40
        assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    first = hollow.node_names[0]
    await wait_renewed(client, first, await renew_time(client, first))


async def test_bound_pod_runs_with_an_ip_from_the_node_pod_cidr(client: Client, hollow: HollowCluster,
                                                                 ns: str) -> None:
    node = hollow.node_names[1]
    await client.patch(NODES, node, {"spec": {"podCIDR": "10.244.42.0/24"}})
    await wait_for(lambda: _true(hollow.node(node).pod_cidr == "10.244.42.0/24"),
                   what="the hollow node to see its podCIDR")
    scheduled = condition(await bound_pod(client, ns, "web", node), "PodScheduled")

    pod = await wait_running(client, ns, "web")
    status = pod["status"]
    assert ip_address(status["podIP"]) in ip_network("10.244.42.0/24"), status
    assert status["podIP"] not in ("10.244.42.0", "10.244.42.1"), status
    assert status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["hostIP"] == hollow.node(node).ip and status["hostIPs"] == [{"ip": status["hostIP"]}]
    assert condition(pod, "PodScheduled") == scheduled, "the scheduler's condition must survive"
    for ctype in ("Initialized", "ContainersReady", "Ready"):
        assert condition(pod, ctype)["status"] == "True", status["conditions"]
    [ctr] = status["containerStatuses"]
    assert ctr["ready"] and ctr["started"] and ctr["restartCount"] == 0
    assert ctr["containerID"] == f"hollow://{pod['metadata']['uid']}-app"
    assert "startedAt" in ctr["state"]["running"] and status["startTime"]

    await bound_pod(client, ns, "web2", node)
    second = await wait_running(client, ns, "web2")
    assert second["status"]["podIP"] != status["podIP"], "each pod gets its own IP"


async def test_deleted_pod_with_a_grace_period_is_removed_by_its_node(client: Client, hollow: HollowCluster,
                                                                       ns: str) -> None:
    await bound_pod(client, ns, "doomed", hollow.node_names[2])
    await wait_running(client, ns, "doomed")
    await client.delete(PODS, "doomed", ns, grace_period=30)

    async def gone() -> bool:
        try:
            await client.get(PODS, "doomed", ns)
        except errors.NotFound:
            return True
        return False
    await wait_for(gone, within=10, what="the terminating pod to be removed by its hollow node")


async def test_paused_node_stops_renewing_its_lease_until_resumed(client: Client, hollow: HollowCluster) -> None:
    dead, alive = hollow.node_names[3], hollow.node_names[4]
    hollow.pause_heartbeats(dead)
    # A renewal already in flight when pausing may still land: let the live node renew once first.
    seen = await wait_renewed(client, alive, await renew_time(client, alive))
    frozen = await renew_time(client, dead)
    for _ in range(3):
        seen = await wait_renewed(client, alive, seen)
    assert await renew_time(client, dead) == frozen, "a paused node must not renew its lease"

    hollow.resume_heartbeats(dead)
    await wait_renewed(client, dead, frozen)


async def test_deleted_node_registers_again(client: Client, hollow: HollowCluster) -> None:
    name = hollow.node_names[0]
    old_uid = (await client.get(NODES, name))["metadata"]["uid"]
    await client.delete(NODES, name)

    async def back() -> dict[str, Any] | None:
        try:
            node = await client.get(NODES, name)
        except errors.NotFound:
            return None
        return node if node["metadata"]["uid"] != old_uid else None
    node = await wait_for(back, within=10, what=f"node {name} registered again")
    assert condition(node, "Ready")["status"] == "True"

    async def lease_owned() -> bool:
        lease = await client.get(LEASES, name, LEASE_NS)
        return bool(lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"])
    await wait_for(lease_owned, within=10, what="the lease owned by the new Node")


async def _true(value: bool) -> bool:
    return value


async def test_a_node_marked_unknown_by_someone_else_reports_ready_again(client: Client,
                                                                        hollow: HollowCluster) -> None:
    name = hollow.node_names[2]
    ready = condition(await client.get(NODES, name), "Ready")
    unknown = {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
               "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": ready["lastHeartbeatTime"],
               "lastTransitionTime": ready["lastTransitionTime"]}
    await client.patch(NODES, name, {"status": {"conditions": [unknown]}}, patch_type="strategic",
                       subresource="status")

    async def ready_again() -> dict[str, Any] | None:
        cond = condition(await client.get(NODES, name), "Ready")
        return cond if cond["status"] == "True" else None
    cond = await wait_for(ready_again, within=10, what=f"node {name} to post Ready again")
    assert cond["reason"] == "KubeletReady"


async def test_an_existing_node_is_adopted(client: Client) -> None:
    prefix = f"a{uuid.uuid4().hex[:6]}"
    name = f"{prefix}-0"
    made = await client.create(NODES, {"metadata": {"name": name, "labels": {"rack": "r1"}},
                                       "spec": {"podCIDR": "10.244.43.0/24"}})
    cluster = HollowCluster(client, count=1, prefix=prefix, heartbeat=0.5)
    try:
        await cluster.start()
        node = await client.get(NODES, name)
        assert node["metadata"]["uid"] == made["metadata"]["uid"], "adopted, not replaced"
        assert node["metadata"]["labels"]["rack"] == "r1"
        assert node["metadata"]["labels"]["node.harness.dev/hollow"] == "true"
        assert node["spec"]["podCIDR"] == "10.244.43.0/24"
        assert condition(node, "Ready")["status"] == "True"
        assert cluster.node(name).pod_cidr == "10.244.43.0/24"
    finally:
        await cluster.stop()
        await client.delete(NODES, name)
        with contextlib.suppress(errors.NotFound):
            await client.delete(LEASES, name, LEASE_NS)
