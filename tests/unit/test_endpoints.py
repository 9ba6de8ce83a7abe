"""Endpoints controller: seed a service and pods, reconcile, assert the exact Endpoints written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from harness.controllers.base import PODS
from harness.controllers.endpoints import (
    ENDPOINTS,
    HEADLESS,
    MANAGED_BY,
    SERVICES,
    TRIGGER_TIME,
    EndpointsController,
)
from tests.unit.fakes import context

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def service(name: str = "web", *, ports: list[dict[str, Any]] | None = None, selector: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "labels": {"team": "a"}},
            "spec": {"clusterIP": "10.96.0.5", "selector": {"app": "web"} if selector is None else selector,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                               {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]
                     if ports is None else ports, **spec}}


def pod(name: str, ip: str, *, ready: bool = True, http: int | None = 8080, labels: dict[str, str] | None = None,
        terminating: bool = False, phase: str = "Running") -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": labels or {"app": "web"}}
    if terminating:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    ports = [{"name": "http", "containerPort": http}] if http else []
    return {"metadata": md, "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def address(name: str, ip: str) -> dict[str, Any]:
    return {"ip": ip, "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": name,
                                                      "uid": f"uid-{name}"}}


def controller() -> tuple[EndpointsController, Any, Any]:
    ctx, client, informers, _ = context()
    c = EndpointsController(ctx)
    c.now = lambda: NOW
    return c, client, informers


async def test_endpoints_list_ready_and_not_ready_pods_per_resolved_port() -> None:
    c, client, informers = controller()
    informers.seed(SERVICES, service())
    informers.seed(PODS, pod("a", "10.244.0.2"), pod("b", "10.244.0.3", ready=False),
                   pod("c", "10.244.0.4", http=None),  # no port named http: only in the metrics subset
                   pod("no-ip", ""), pod("leaving", "10.244.0.5", terminating=True),
                   pod("done", "10.244.0.6", phase="Succeeded"), pod("other", "10.244.0.7", labels={"app": "db"}))
    await c.reconcile("ns/web")
    ((verb, plural, ns, body),) = client.actions
    assert (verb, plural, ns) == ("create", "endpoints", "ns")
    assert body["metadata"] == {"name": "web", "namespace": "ns",
                                "labels": {"team": "a", MANAGED_BY: "endpoint-controller"},
                                "annotations": {TRIGGER_TIME: "2026-01-01T00:00:00Z"}}
    assert body["subsets"] == [
        {"addresses": [address("a", "10.244.0.2")], "notReadyAddresses": [address("b", "10.244.0.3")],
         "ports": [{"port": 8080, "protocol": "TCP", "name": "http"}]},
        {"addresses": [address("a", "10.244.0.2"), address("c", "10.244.0.4")],
         "notReadyAddresses": [address("b", "10.244.0.3")],
         "ports": [{"port": 9090, "protocol": "TCP", "name": "metrics"}]},
    ]


async def test_ports_offered_by_the_same_pods_share_one_subset() -> None:
    c, client, informers = controller()
    informers.seed(SERVICES, service())
    informers.seed(PODS, pod("a", "10.244.0.2"))
    await c.reconcile("ns/web")
    (subset,) = client.actions[0][3]["subsets"]
    assert [p["name"] for p in subset["ports"]] == ["http", "metrics"]


async def test_endpoints_are_written_only_when_their_content_changes() -> None:
    c, client, informers = controller()
    informers.seed(SERVICES, service())
    informers.seed(PODS, pod("a", "10.244.0.2"))
    await c.reconcile("ns/web")
    created = client.actions[0][3]
    informers.seed(ENDPOINTS, {**created, "metadata": {**created["metadata"], "resourceVersion": "3"}})
    client.actions.clear()
    await c.reconcile("ns/web")
    assert client.actions == []
    informers.seed(PODS, pod("a", "10.244.0.2", ready=False))
    await c.reconcile("ns/web")
    ((verb, _, _, body),) = client.actions
    assert verb == "update" and body["metadata"]["resourceVersion"] == "3"
    assert [set(s) for s in body["subsets"]] == [{"notReadyAddresses", "ports"}]


async def test_publish_not_ready_addresses_lists_every_pod_with_an_ip_as_ready() -> None:
    c, client, informers = controller()
    informers.seed(SERVICES, service(publishNotReadyAddresses=True))
    informers.seed(PODS, pod("b", "10.244.0.3", ready=False), pod("leaving", "10.244.0.5", terminating=True))
    await c.reconcile("ns/web")
    (subset,) = client.actions[0][3]["subsets"]
    assert subset["addresses"] == [address("b", "10.244.0.3"), address("leaving", "10.244.0.5")]


async def test_a_headless_service_without_ports_gets_addresses_without_ports() -> None:
    c, client, informers = controller()
    informers.seed(SERVICES, service(ports=[], clusterIP="None"))
    informers.seed(PODS, pod("a", "10.244.0.2"))
    await c.reconcile("ns/web")
    body = client.actions[0][3]
    assert body["subsets"] == [{"addresses": [address("a", "10.244.0.2")]}]
    assert body["metadata"]["labels"][HEADLESS] == ""


async def test_a_deleted_service_takes_its_endpoints_and_a_selectorless_one_keeps_them() -> None:
    c, client, informers = controller()
    informers.seed(ENDPOINTS, {"metadata": {"name": "web", "namespace": "ns", "uid": "ep-1"}, "subsets": []},
                   {"metadata": {"name": "manual", "namespace": "ns"}, "subsets": [{"addresses": [{"ip": "1.2.3.4"}]}]})
    informers.seed(SERVICES, service("manual", selector={}))
    await c.reconcile("ns/web")
    await c.reconcile("ns/manual")
    assert client.actions == [("delete", "endpoints", "ns", "web")]


async def test_pod_changes_queue_the_services_selecting_the_old_or_new_labels() -> None:
    c, _, informers = controller()
    informers.seed(SERVICES, service("web"), service("db", selector={"app": "db"}), service("none", selector={}))
    before, after = pod("a", "10.244.0.2"), pod("a", "10.244.0.2", labels={"app": "db"})
    c._pod_updated(before, {**before, "metadata": {**before["metadata"], "annotations": {"x": "y"}}})
    assert len(c.queue) == 0  # nothing the endpoints show changed
    c._pod_updated(before, after)
    assert {await c.queue.get(), await c.queue.get()} == {"ns/web", "ns/db"}
