"""The scheduler in-process against a real apiserver (its own etcd, so the node count is ours).

Nodes are plain Node objects with allocatable resources (nothing runs on them); the
scheduler runs as an asyncio task with leader election on short durations. Binding 409s are
read from the apiserver's own metrics: in normal operation the scheduler never hits one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from harness.api import errors, registry
from harness.client.events import EventRecorder
from harness.client.rest import Client
from harness.scheduler.server import Config, SchedulerServer, serve
from harness.storage.local import LocalEtcd
from tests.integration.apiserver_fixtures import ApiServerProcess, free_port, start_apiserver, stop_apiserver, wait_for

NODES = registry.by_path("", "v1", "nodes")
PODS = registry.by_path("", "v1", "pods")
NAMESPACES = registry.by_path("", "v1", "namespaces")
EVENTS = registry.by_path("", "v1", "events")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    with LocalEtcd() as etcd:
        server = start_apiserver(etcd.endpoint, tmp_path_factory.mktemp("scheduler-apiserver"))
        try:
            yield server
        finally:
            stop_apiserver(server)


@pytest_asyncio.fixture
async def client(cluster: ApiServerProcess) -> AsyncIterator[Client]:
    async with Client.from_kubeconfig(cluster.kubeconfig) as c:
        yield c
        for n in (await c.list(NODES))["items"]:  # every test starts without nodes
            await c.delete(NODES, n["metadata"]["name"])


@pytest_asyncio.fixture
async def namespace(client: Client) -> str:
    name = f"s-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


class Schedulers:
    """Schedulers run in-process as `harness scheduler` would run them, all candidates for one lease."""

    def __init__(self, cluster: ApiServerProcess) -> None:
        self.cluster = cluster
        self.lease = f"kube-scheduler-{uuid.uuid4().hex[:6]}"
        self.running: dict[SchedulerServer, tuple[asyncio.Event, asyncio.Task[int]]] = {}

    async def start(self, *, wait_leader: bool = True) -> SchedulerServer:
        """Start one; wait until it leads unless told not to."""
        config = Config(kubeconfig=str(self.cluster.kubeconfig), port=free_port(), lease_name=self.lease,
                        lease_duration=3.0, renew_deadline=2.0, retry_period=0.2)
        server = SchedulerServer(config)
        stop = asyncio.Event()
        self.running[server] = (stop, asyncio.create_task(serve(config, stop=stop, server=server)))
        if wait_leader:
            await wait_for(_leading(server), within=15, what="the scheduler to become leader")
        return server

    async def stop(self, server: SchedulerServer) -> int:
        """Stop one as SIGTERM does; its exit code."""
        stop, task = self.running.pop(server)
        stop.set()
        return await asyncio.wait_for(task, 20)


@pytest_asyncio.fixture
async def schedulers(cluster: ApiServerProcess) -> AsyncIterator[Schedulers]:
    running = Schedulers(cluster)
    yield running
    codes = [await running.stop(server) for server in list(running.running)]
    assert all(code == 0 for code in codes), codes


def _leading(server: SchedulerServer) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return server.ready and server.elector is not None and server.elector.is_leader
    return check


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: int = 110,
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "spec": {}, "status": {"capacity": resources, "allocatable": resources,
                                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def pod(name: str, *, cpu: str = "100m", memory: str = "64Mi", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": cpu, "memory": memory}}}], **spec}}


async def create_nodes(client: Client, *nodes: dict[str, Any]) -> None:
    await asyncio.gather(*(client.create(NODES, n) for n in nodes))


async def create_pods(client: Client, namespace: str, *pods: dict[str, Any]) -> None:
    await asyncio.gather(*(client.create(PODS, p, namespace) for p in pods))


def placements(client: Client, namespace: str, count: int) -> Callable[[], Awaitable[dict[str, str] | None]]:
    """A predicate: pod -> node once all `count` pods in the namespace are bound."""
    async def check() -> dict[str, str] | None:
        items = (await client.list(PODS, namespace))["items"]
        bound = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in items if p["spec"].get("nodeName")}
        return bound if len(bound) == count else None
    return check


async def binding_responses(cluster: ApiServerProcess) -> Counter[str]:
    """pods/binding responses by HTTP code, from the apiserver's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(cluster.url + "/metrics") as resp:
        text = await resp.text()
    codes: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "apiserver_request":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("subresource") == "binding":
                    codes[sample.labels["code"]] += int(sample.value)
    return codes


def attempts(server: SchedulerServer, result: str) -> int:
    value = server.metrics.registry.get_sample_value("scheduler_schedule_attempts_total",
                                                     {"result": result, "profile": "default-scheduler"})
    return int(value or 0)


# -- tests -------------------------------------------------------------------------------------


async def test_pods_are_bound_once_each_and_spread_across_nodes(
        client: Client, namespace: str, schedulers: Schedulers, cluster: ApiServerProcess) -> None:
    before = await binding_responses(cluster)
    await create_nodes(client, *(node(f"spread-{i}", cpu="8") for i in range(4)))
    server = await schedulers.start()
    await wait_for(lambda: _true(len(server.cache.node_list()) == 4), what="the scheduler to see 4 nodes")
    count = 200
    started = time.perf_counter()
    await create_pods(client, namespace, *(pod(f"p{i}") for i in range(count)))
    bound = await wait_for(placements(client, namespace, count), within=60, what=f"{count} pods bound")
    elapsed = time.perf_counter() - started
    print(f"\nscheduled {count} pods on 4 nodes in {elapsed:.2f}s: {count / elapsed:.0f} pods/s")

    per_node = Counter(bound.values())
    assert set(per_node) == {f"spread-{i}" for i in range(4)}
    assert max(per_node.values()) - min(per_node.values()) <= 2, per_node
    after = await binding_responses(cluster)
    assert after["409"] == before["409"], f"binding conflicts: {after}"
    assert after["201"] - before["201"] == count
    assert attempts(server, "scheduled") == count and attempts(server, "error") == 0

    base = f"http://{server.config.bind_address}:{server.config.port}"
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/livez", "/readyz"):
            async with session.get(base + path) as resp:
                assert resp.status == 200, path
        async with session.get(base + "/metrics") as resp:
            exposition = await resp.text()
    assert 'scheduler_pending_pods{queue="active"} 0.0' in exposition
    assert f'scheduler_pod_scheduling_duration_seconds_count{{attempts="1"}} {count}.0' in exposition


async def test_node_selector_picks_the_matching_node(client: Client, namespace: str, schedulers: Schedulers) -> None:
    await create_nodes(client, node("sel-hdd-1", labels={"disk": "hdd"}), node("sel-ssd", labels={"disk": "ssd"}),
                       node("sel-hdd-2", labels={"disk": "hdd"}))
    await schedulers.start()
    await create_pods(client, namespace, *(pod(f"fast{i}", nodeSelector={"disk": "ssd"}) for i in range(3)))
    bound = await wait_for(placements(client, namespace, 3), what="the ssd pods bound")
    assert set(bound.values()) == {"sel-ssd"}


async def test_too_big_pod_is_unschedulable_until_a_bigger_node_joins(
        client: Client, namespace: str, schedulers: Schedulers, cluster: ApiServerProcess) -> None:
    before = await binding_responses(cluster)
    await create_nodes(client, *(node(f"small-{i}", cpu="2") for i in range(3)))
    await schedulers.start()
    await create_pods(client, namespace, pod("huge", cpu="8"))

    async def unscheduled() -> dict[str, Any] | None:
        got = await client.get(PODS, "huge", namespace)
        conds = [c for c in got.get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"]
        return conds[0] if conds and conds[0]["status"] == "False" else None

    cond = await wait_for(unscheduled, what="PodScheduled=False on the huge pod")
    assert cond["reason"] == "Unschedulable"
    assert cond["message"] == "0/3 nodes are available: 3 Insufficient cpu."
    events = await wait_for(_events(client, namespace, "huge", "FailedScheduling"), what="a FailedScheduling event")
    event = events[0]
    assert event["type"] == "Warning" and event["message"] == "0/3 nodes are available: 3 Insufficient cpu."
    assert event["source"]["component"] == "default-scheduler"
    assert event["reportingComponent"] == "default-scheduler"
    assert event["involvedObject"]["kind"] == "Pod" and event["involvedObject"]["name"] == "huge"
    assert event["count"] >= 1 and event["firstTimestamp"] and event["lastTimestamp"]

    await create_nodes(client, node("big", cpu="16"))
    bound = await wait_for(placements(client, namespace, 1), what="the huge pod bound once a big node joined")
    assert bound == {"huge": "big"}
    scheduled = await wait_for(_events(client, namespace, "huge", "Scheduled"), what="a Scheduled event")
    assert scheduled[0]["type"] == "Normal"
    assert scheduled[0]["message"] == f"Successfully assigned {namespace}/huge to big"
    after = await binding_responses(cluster)
    assert after["409"] == before["409"]


async def test_standby_takes_over_without_binding_anything_twice(
        client: Client, namespace: str, schedulers: Schedulers, cluster: ApiServerProcess) -> None:
    before = await binding_responses(cluster)
    await create_nodes(client, *(node(f"ha-{i}") for i in range(3)))
    leader = await schedulers.start()
    standby = await schedulers.start(wait_leader=False)
    await wait_for(lambda: _true(standby.ready), what="the standby's caches to sync")
    await create_pods(client, namespace, *(pod(f"a{i}") for i in range(20)))
    await wait_for(placements(client, namespace, 20), what="20 pods bound by the leader")
    assert attempts(leader, "scheduled") == 20 and attempts(standby, "scheduled") == 0
    assert standby.elector is not None and not standby.elector.is_leader

    assert await schedulers.stop(leader) == 0  # it releases the lease: the standby need not wait it out
    await wait_for(_leading(standby), within=15, what="the standby to take over")
    await create_pods(client, namespace, *(pod(f"b{i}") for i in range(20)))
    await wait_for(placements(client, namespace, 40), what="20 more pods bound by the new leader")
    assert attempts(standby, "scheduled") == 20
    after = await binding_responses(cluster)
    assert after["409"] == before["409"] and after["201"] - before["201"] == 40


async def test_repeated_events_are_aggregated_into_one_with_a_count(client: Client, namespace: str) -> None:
    target = await client.create(PODS, pod("noisy"), namespace)
    async with EventRecorder(client, component="test-recorder") as recorder:
        for _ in range(3):
            recorder.event(target, "Warning", "Flapping", "it happened again")
        recorder.event(target, "Normal", "Calm", "something else")
        await recorder.flush()
    events = await _events(client, namespace, "noisy", "Flapping")()
    assert len(events) == 1, events
    assert events[0]["count"] == 3 and events[0]["metadata"]["name"].startswith("noisy.")
    assert events[0]["involvedObject"]["uid"] == target["metadata"]["uid"]
    assert events[0]["firstTimestamp"] <= events[0]["lastTimestamp"]
    assert len(await _events(client, namespace, "noisy", "Calm")()) == 1


async def _true(value: bool) -> bool:
    return value


def _events(client: Client, namespace: str, name: str, reason: str) -> Callable[[], Awaitable[list[Any]]]:
    async def check() -> list[Any]:
        try:
            items = (await client.list(EVENTS, namespace, field_selector=f"involvedObject.name={name}"))["items"]
        except errors.ApiError:
            return []
        return [e for e in items if e["reason"] == reason]
    return check
