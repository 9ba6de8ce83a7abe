"""Cluster IPs and node ports allocated by the real apiserver, and the default/kubernetes Service.

The session's apiserver and etcd are shared with every other test: allocations are global, so
these tests never assume an empty range, ask for static IPs at random in the static band, and
delete what they create.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest_asyncio

from harness.storage.etcd import EtcdBackend
from tests.integration.apiserver_fixtures import Api, ApiServerProcess, start_apiserver, stop_apiserver, wait_for

IPS = "/registry/allocations/serviceips/"
PORTS = "/registry/allocations/servicenodeports/"
RANGE = ipaddress.ip_network("10.96.0.0/12")
MERGE = "application/merge-patch+json"


def service(name: str, type_: str = "ClusterIP", cluster_ip: str | None = None,
            ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "selector": {"app": name},
                            "ports": ports or [{"port": 80, "targetPort": 8080}]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def static_ip() -> str:
    """An address in the static band (10.96.0.1-10.96.1.0) that dynamic allocation avoids."""
    return f"10.96.0.{random.randrange(100, 250)}"


async def owner_uid(backend: EtcdBackend, key: str) -> str | None:
    rec = await backend.get(key)
    return None if rec is None else str(orjson.loads(rec.value)["uid"])


async def create(api: Api, ns: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    status, created = await api.post(f"/api/v1/namespaces/{ns}/services", body, **kw)
    assert status == 201, created
    return dict(created)


async def test_auto_allocation_fills_the_ip_fields_and_claims_a_key(api: Api, ns: str,
                                                                    backend: EtcdBackend) -> None:
    created = await create(api, ns, service("web"))
    spec = created["spec"]
    ip = spec["clusterIP"]
    assert ipaddress.ip_address(ip) in RANGE and ip != "10.96.0.1"
    assert int(ipaddress.ip_address(ip)) - int(RANGE.network_address) > 256  # the dynamic band
    assert spec["clusterIPs"] == [ip] and spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert await owner_uid(backend, IPS + ip) == created["metadata"]["uid"]
    status, _ = await api.delete(f"/api/v1/namespaces/{ns}/services/web")
    assert status == 200
    assert await backend.get(IPS + ip) is None


async def test_requested_ip_taken_and_out_of_range(api: Api, ns: str, backend: EtcdBackend) -> None:
    ip = static_ip()
    first = await create(api, ns, service("first", cluster_ip=ip))
    assert first["spec"]["clusterIPs"] == [ip]
    status, err = await api.post(f"/api/v1/namespaces/{ns}/services", service("second", cluster_ip=ip))
    assert status == 422, err
    assert err["reason"] == "Invalid"
    assert err["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.clusterIPs[0]",
                                         "message": f'Invalid value: "{ip}": provided IP is already allocated'}]
    status, err = await api.post(f"/api/v1/namespaces/{ns}/services", service("far", cluster_ip="10.200.0.5"))
    assert status == 422
    assert err["message"] == ('Service "far" is invalid: spec.clusterIPs[0]: Invalid value: "10.200.0.5": provided '
                              "IP is not in the valid range. The range of valid IPs is 10.96.0.0/12")
    # Deleting frees the address at once: it can be asked for again.
    status, _ = await api.delete(f"/api/v1/namespaces/{ns}/services/first")
    assert status == 200
    again = await create(api, ns, service("second", cluster_ip=ip))
    assert await owner_uid(backend, IPS + ip) == again["metadata"]["uid"]
    # Creating it again is AlreadyExists (409), even asking for the IP it holds, and claims nothing new.
    status, err = await api.post(f"/api/v1/namespaces/{ns}/services", service("second", cluster_ip=ip))
    assert status == 409 and err["reason"] == "AlreadyExists", err
    other_ip = static_ip()
    status, _ = await api.post(f"/api/v1/namespaces/{ns}/services", service("second", cluster_ip=other_ip))
    assert status == 409
    if other_ip != ip:
        assert await backend.get(IPS + other_ip) is None
    await api.delete(f"/api/v1/namespaces/{ns}/services/second")


async def test_headless_and_dry_run_claim_nothing(api: Api, ns: str, backend: EtcdBackend) -> None:
    headless = await create(api, ns, service("headless", cluster_ip="None"))
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["clusterIPs"] == ["None"]
    ip = static_ip()
    dry = await create(api, ns, service("dry", "NodePort", cluster_ip=ip,
                                        ports=[{"port": 80, "nodePort": 30000 + random.randrange(10, 80)}]),
                       params={"dryRun": "All"})
    assert dry["spec"]["clusterIP"] == ip
    assert await backend.get(IPS + ip) is None
    assert await backend.get(PORTS + str(dry["spec"]["ports"][0]["nodePort"])) is None
    status, _ = await api.get(f"/api/v1/namespaces/{ns}/services/dry")
    assert status == 404
    await api.delete(f"/api/v1/namespaces/{ns}/services/headless")


async def test_concurrent_creates_get_distinct_ips_and_node_ports(api: Api, ns: str, backend: EtcdBackend) -> None:
    bodies = [service(f"s{i}", "NodePort") for i in range(50)]
    results = await asyncio.gather(*(api.post(f"/api/v1/namespaces/{ns}/services", b) for b in bodies))
    try:
        assert [s for s, _ in results] == [201] * 50, [b for s, b in results if s != 201][:3]
        ips = {b["spec"]["clusterIP"] for _, b in results}
        ports = {b["spec"]["ports"][0]["nodePort"] for _, b in results}
        assert len(ips) == 50 and len(ports) == 50
        assert all(30000 <= p <= 32767 for p in ports)
        for _, body in results[:5]:
            assert await owner_uid(backend, IPS + body["spec"]["clusterIP"]) == body["metadata"]["uid"]
            assert await owner_uid(backend, PORTS + str(body["spec"]["ports"][0]["nodePort"])) == \
                body["metadata"]["uid"]
    finally:
        await asyncio.gather(*(api.delete(f"/api/v1/namespaces/{ns}/services/s{i}") for i in range(50)))
    for _, body in results:
        assert await backend.get(IPS + body["spec"]["clusterIP"]) is None
        assert await backend.get(PORTS + str(body["spec"]["ports"][0]["nodePort"])) is None


async def test_node_ports_requested_taken_and_type_changes(api: Api, ns: str, backend: EtcdBackend) -> None:
    wanted = 30000 + random.randrange(10, 80)  # the static band of the default range
    await create(api, ns, service("np", "NodePort", ports=[{"port": 80, "nodePort": wanted}]))
    status, err = await api.post(f"/api/v1/namespaces/{ns}/services",
                                 service("np2", "NodePort", ports=[{"port": 80, "nodePort": wanted}]))
    assert status == 422
    assert err["message"] == (f'Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: {wanted}: provided '
                              "port is already allocated")
    # ClusterIP -> NodePort allocates; NodePort -> ClusterIP releases.
    plain = await create(api, ns, service("plain"))
    status, changed = await api.patch(f"/api/v1/namespaces/{ns}/services/plain", {"spec": {"type": "NodePort"}},
                                      MERGE)
    assert status == 200, changed
    port = changed["spec"]["ports"][0]["nodePort"]
    assert changed["spec"]["clusterIP"] == plain["spec"]["clusterIP"]
    assert await owner_uid(backend, PORTS + str(port)) == plain["metadata"]["uid"]
    status, back = await api.patch(f"/api/v1/namespaces/{ns}/services/plain", {"spec": {"type": "ClusterIP"}}, MERGE)
    assert status == 200, back
    assert "nodePort" not in back["spec"]["ports"][0]
    assert await backend.get(PORTS + str(port)) is None
    for name in ("np", "plain"):
        await api.delete(f"/api/v1/namespaces/{ns}/services/{name}")
    assert await backend.get(PORTS + str(wanted)) is None


async def test_a_finalized_service_keeps_its_ip_until_it_is_really_gone(api: Api, ns: str,
                                                                         backend: EtcdBackend) -> None:
    ip = static_ip()
    body = service("held", cluster_ip=ip)
    body["metadata"]["finalizers"] = ["example.com/hold"]
    created = await create(api, ns, body)
    status, deleting = await api.delete(f"/api/v1/namespaces/{ns}/services/held")
    assert status == 202 and deleting["metadata"].get("deletionTimestamp"), deleting
    assert await owner_uid(backend, IPS + ip) == created["metadata"]["uid"]
    status, _ = await api.patch(f"/api/v1/namespaces/{ns}/services/held", {"metadata": {"finalizers": None}}, MERGE)
    assert status == 200
    assert (await api.get(f"/api/v1/namespaces/{ns}/services/held"))[0] == 404
    assert await backend.get(IPS + ip) is None


def addresses(endpoints: dict[str, Any]) -> set[tuple[str, int]]:
    return {(a["ip"], p["port"]) for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []
            for p in s.get("ports") or []}


def port_of(server: ApiServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def test_kubernetes_service_and_endpoints(api: Api, apiserver: ApiServerProcess) -> None:
    status, svc = await api.get("/api/v1/namespaces/default/services/kubernetes")
    assert status == 200, svc
    assert svc["spec"]["clusterIP"] == "10.96.0.1" and svc["spec"]["clusterIPs"] == ["10.96.0.1"]
    assert svc["metadata"]["labels"] == {"component": "apiserver", "provider": "kubernetes"}
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [("https", 443, "TCP")]
    assert "selector" not in svc["spec"]
    status, eps = await api.get("/api/v1/namespaces/default/endpoints/kubernetes")
    assert status == 200
    assert ("127.0.0.1", port_of(apiserver)) in addresses(eps)
    for namespace in ("default", "kube-system"):
        assert (await api.get(f"/api/v1/namespaces/{namespace}"))[0] == 200
    status, leases = await api.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
                                   params={"labelSelector": "apiserver.kubernetes.io/identity=kube-apiserver"})
    assert status == 200 and leases["items"]


@pytest_asyncio.fixture
async def two_apiservers(etcd: Any, tmp_path: Path) -> AsyncIterator[list[ApiServerProcess]]:
    flags = ["--identity-lease-duration-seconds", "2", "--identity-lease-renew-interval-seconds", "0.3",
             "--compaction-interval", "100000"]
    servers: list[ApiServerProcess] = []
    try:
        for _ in range(2):
            servers.append(await asyncio.to_thread(start_apiserver, etcd.endpoint, tmp_path, extra=flags))
        yield servers
    finally:
        for server in servers:
            if server.proc.poll() is None:
                await asyncio.to_thread(stop_apiserver, server)


async def test_endpoints_follow_the_live_apiservers(two_apiservers: list[ApiServerProcess], api: Api) -> None:
    first, second = two_apiservers
    async with aiohttp.ClientSession() as session:
        first_api = Api(session, first.url)

        async def listed() -> set[tuple[str, int]]:
            status, eps = await first_api.get("/api/v1/namespaces/default/endpoints/kubernetes")
            return addresses(eps) if status == 200 else set()

        both = {("127.0.0.1", port_of(first)), ("127.0.0.1", port_of(second))}
        await wait_for(lambda: _contains(listed, both), within=10, what="both apiservers in the endpoints")
        # Killed: it disappears once its lease expires.
        second.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(second.proc.wait, 10)
        gone = ("127.0.0.1", port_of(second))
        await wait_for(lambda: _lacks(listed, gone), within=10, what="the killed apiserver leaving the endpoints")
        assert ("127.0.0.1", port_of(first)) in await listed()
    # Stopped cleanly: it takes itself out on the way down (read through the session's apiserver).
    await asyncio.to_thread(stop_apiserver, first)
    status, eps = await api.get("/api/v1/namespaces/default/endpoints/kubernetes")
    assert status == 200
    assert ("127.0.0.1", port_of(first)) not in addresses(eps)


async def _contains(listed: Any, wanted: set[tuple[str, int]]) -> bool:
    return wanted <= await listed()


async def _lacks(listed: Any, unwanted: tuple[str, int]) -> bool:
    return unwanted not in await listed()
