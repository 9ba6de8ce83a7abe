"""Cluster IP / node port range math, the etcd-keyed allocators, and the kubernetes Endpoints helpers."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from harness.api import errors, identity
from harness.api.nodes import micro_time
from harness.apiserver import kubernetes_service as ks
from harness.apiserver.allocators import (
    IPRange,
    Owner,
    PortRange,
    RangeError,
    ServiceAllocations,
    candidate_offsets,
    service_ip,
    service_node_ports,
)
from tests.unit.memory_backend import MemoryBackend


def svc(name: str = "web", uid: str = "u1", type_: str = "ClusterIP", cluster_ip: str | None = None,
        ports: list[dict[str, Any]] | None = None, namespace: str = "ns") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "ports": ports if ports is not None else [{"port": 80, "protocol": "TCP"}]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": spec}


def alloc(backend: MemoryBackend, cidr: str = "10.96.0.0/12", ports: str = "30000-32767") -> ServiceAllocations:
    return ServiceAllocations(backend, IPRange(cidr), PortRange(ports), seed=1)  # type: ignore[arg-type]


# -- range math -------------------------------------------------------------------------------------


def test_ip_range_skips_network_and_broadcast_and_reserves_a_static_band() -> None:
    r = IPRange("10.96.0.0/12")
    assert r.size == 2**20 - 2
    assert r.first() == "10.96.0.1"
    assert r.value_at(r.size - 1) == "10.111.255.254"
    assert r.static_size == 256  # min(max(16, 2^20/16), 256)
    assert r.offset_of("10.96.0.10") == 9
    for outside in ("10.96.0.0", "10.111.255.255", "10.112.0.1", "192.168.0.1", "fd00::1", "bogus"):
        assert r.offset_of(outside) is None
    assert r.out_of_range() == "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"


def test_small_ranges_have_no_or_a_minimal_static_band() -> None:
    assert IPRange("10.0.0.0/28").static_size == 0
    assert IPRange("10.0.0.0/28").size == 14
    assert IPRange("10.0.0.0/24").static_size == 16
    assert IPRange("fd00::/108").size == 65535
    for bad in ("10.96.0.1/12", "nope", "10.0.0.0/31"):
        with pytest.raises(RangeError):
            IPRange(bad)


def test_port_range_parsing_and_band() -> None:
    r = PortRange("30000-32767")
    assert (r.low, r.high, r.size, r.static_size) == (30000, 32767, 2768, 86)
    assert r.offset_of("30000") == 0 and r.offset_of("32768") is None and r.offset_of("29999") is None
    assert str(r) == "30000-32767"
    assert r.out_of_range() == "provided port is not in the valid range. The range of valid ports is 30000-32767"
    for bad in ("x", "10-5", "0-10", "1-70000"):
        with pytest.raises(RangeError):
            PortRange(bad)


def test_candidates_prefer_the_dynamic_band_then_fall_back() -> None:
    order = candidate_offsets(10, 4, {5, 6}, random.Random(0))
    assert sorted(order[:4]) == [4, 7, 8, 9]
    assert sorted(order[4:]) == [0, 1, 2, 3]
    assert candidate_offsets(3, 0, {0, 1, 2}, random.Random(0)) == []


# -- allocation ------------------------------------------------------------------------------------


async def test_auto_allocation_takes_from_the_dynamic_band_and_fills_both_fields() -> None:
    backend = MemoryBackend()
    a = alloc(backend)
    obj = svc()
    claims = await a.begin_create(obj)
    await claims.commit()
    ip = obj["spec"]["clusterIP"]
    assert obj["spec"]["clusterIPs"] == [ip]
    assert a.ip_range.offset_of(ip) is not None and a.ip_range.offset_of(ip) >= 256  # type: ignore[operator]
    assert backend.keys("serviceips") == {ip}
    owner = Owner.decode(backend.data[f"/registry/allocations/serviceips/{ip}"].value)
    assert owner == Owner("ns", "web", "u1")


async def test_requested_ip_is_claimed_or_refused_with_upstreams_messages() -> None:
    a = alloc(MemoryBackend())
    await a.begin_create(svc(cluster_ip="10.96.0.10"))
    with pytest.raises(errors.Invalid) as taken:
        await a.begin_create(svc("other", "u2", cluster_ip="10.96.0.10"))
    assert taken.value.causes[0].field == "spec.clusterIPs[0]"
    assert taken.value.message == ('Service "other" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.10": '
                                   "provided IP is already allocated")
    with pytest.raises(errors.Invalid) as outside:
        await a.begin_create(svc("far", "u3", cluster_ip="10.200.0.1"))
    assert "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12" in outside.value.message


async def test_headless_and_external_name_allocate_nothing() -> None:
    backend = MemoryBackend()
    a = alloc(backend)
    headless = svc(cluster_ip="None")
    await a.begin_create(headless)
    assert headless["spec"]["clusterIPs"] == ["None"]
    await a.begin_create({"metadata": {"name": "x", "namespace": "ns", "uid": "u"},
                          "spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert backend.data == {}


async def test_concurrent_claims_never_share_a_value() -> None:
    backend = MemoryBackend()
    a = alloc(backend, "10.0.0.0/26", "30000-30040")
    objs = [svc(f"s{i}", f"u{i}", "NodePort") for i in range(40)]
    await asyncio.gather(*(a.begin_create(o) for o in objs))
    assert len({o["spec"]["clusterIP"] for o in objs}) == 40
    assert len({o["spec"]["ports"][0]["nodePort"] for o in objs}) == 40
    # 62 addresses, 16 static: 46 dynamic ones come first.
    assert all(a.ip_range.offset_of(o["spec"]["clusterIP"]) >= 16 for o in objs)  # type: ignore[operator]


async def test_a_full_range_is_an_internal_error() -> None:
    a = alloc(MemoryBackend(), "10.0.0.0/29")
    for i in range(6):
        await a.begin_create(svc(f"s{i}", f"u{i}"))
    with pytest.raises(errors.InternalError, match="range is full"):
        await a.begin_create(svc("last", "u9"))


async def test_node_ports_requested_auto_and_shared_across_protocols() -> None:
    backend = MemoryBackend()
    a = alloc(backend)
    obj = svc(type_="NodePort", ports=[{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
                                        {"name": "web", "port": 80, "protocol": "TCP"}])
    await a.begin_create(obj)
    auto = obj["spec"]["ports"][2]["nodePort"]
    assert 30086 <= auto <= 32767
    assert backend.keys("servicenodeports") == {"30053", str(auto)}
    with pytest.raises(errors.Invalid) as taken:
        await a.begin_create(svc("b", "u2", "NodePort", ports=[{"port": 1, "protocol": "TCP", "nodePort": 30053}]))
    assert str(taken.value).endswith("spec.ports[0].nodePort: Invalid value: 30053: provided port is already "
                                     "allocated")
    with pytest.raises(errors.Invalid, match="The range of valid ports is 30000-32767"):
        await a.begin_create(svc("c", "u3", "NodePort", ports=[{"port": 1, "protocol": "TCP", "nodePort": 80}]))


async def test_revert_frees_what_a_failed_write_claimed_and_dry_run_claims_nothing() -> None:
    backend = MemoryBackend()
    a = alloc(backend)
    claims = await a.begin_create(svc(type_="NodePort", cluster_ip="10.96.0.20"))
    await claims.revert()
    assert backend.data == {}
    dry = svc(type_="NodePort")
    await a.begin_create(dry, dry_run=True)
    assert dry["spec"]["clusterIP"] and dry["spec"]["ports"][0]["nodePort"]
    assert backend.data == {}
    # A failed claim on the second port gives back what the first one got.
    await a.begin_create(svc("holder", "u9", "NodePort", ports=[{"port": 1, "protocol": "TCP", "nodePort": 30100}]))
    with pytest.raises(errors.Invalid):
        await a.begin_create(svc("x", "u2", "NodePort", ports=[{"name": "a", "port": 1, "protocol": "TCP"},
                                                               {"name": "b", "port": 2, "protocol": "TCP",
                                                                "nodePort": 30100}]))
    assert backend.keys("servicenodeports") == {"30100"}
    assert len(backend.keys("serviceips")) == 1


async def test_type_changes_allocate_and_release_node_ports() -> None:
    backend = MemoryBackend()
    a = alloc(backend)
    old = svc()
    await a.begin_create(old)
    new = orjson.loads(orjson.dumps(old))
    new["spec"]["type"] = "NodePort"
    claims = await a.begin_update(new, old)
    await claims.commit()
    port = new["spec"]["ports"][0]["nodePort"]
    assert backend.keys("servicenodeports") == {str(port)}
    # An update that leaves the nodePort out keeps the one the port had.
    again = orjson.loads(orjson.dumps(new))
    del again["spec"]["ports"][0]["nodePort"]
    await (await a.begin_update(again, new)).commit()
    assert again["spec"]["ports"][0]["nodePort"] == port
    back = orjson.loads(orjson.dumps(again))
    back["spec"]["type"] = "ClusterIP"
    del back["spec"]["ports"][0]["nodePort"]
    await (await a.begin_update(back, again)).commit()
    assert backend.keys("servicenodeports") == set()
    assert backend.keys("serviceips") == {back["spec"]["clusterIP"]}
    await a.deleted(back)
    assert backend.data == {}


async def test_release_only_frees_the_owners_key() -> None:
    backend = MemoryBackend()
    a = alloc(backend)
    await a.begin_create(svc(cluster_ip="10.96.0.30"))
    await a.deleted(svc(uid="someone-else", cluster_ip="10.96.0.30"))
    assert backend.keys("serviceips") == {"10.96.0.30"}


async def test_repair_restores_missing_keys_and_frees_leaks_on_the_second_sighting() -> None:
    backend = MemoryBackend()
    a = alloc(backend)
    stored = svc(cluster_ip="10.96.0.40", type_="NodePort",
                 ports=[{"port": 80, "protocol": "TCP", "nodePort": 30400}])
    await backend.create("/registry/services/ns/web", orjson.dumps(stored))
    await a.ips.claim("10.96.0.41", Owner("ns", "gone", "u-gone"))
    assert await a.repair() == (2, 0)
    assert backend.keys("serviceips") == {"10.96.0.40", "10.96.0.41"}
    assert backend.keys("servicenodeports") == {"30400"}
    assert await a.repair() == (0, 1)
    assert backend.keys("serviceips") == {"10.96.0.40"}


def test_service_values() -> None:
    assert service_ip(svc(cluster_ip="None")) == ""
    assert service_ip(svc(cluster_ip="10.96.0.5")) == "10.96.0.5"
    assert service_ip(None) == ""
    assert service_node_ports(svc(type_="NodePort", ports=[{"port": 1, "nodePort": 30001}])) == {"30001"}
    assert service_node_ports(svc(ports=[{"port": 1, "nodePort": 30001}])) == set()


# -- the kubernetes Service and Endpoints ------------------------------------------------------------


def lease(address: str, port: int, renewed: datetime, duration: int = 15) -> dict[str, Any]:
    return {"metadata": {"name": ks.lease_name(address, port), "labels": {ks.IDENTITY_LABEL: ks.IDENTITY_VALUE},
                         "annotations": {ks.ADDRESS_ANNOTATION: address, ks.PORT_ANNOTATION: str(port)}},
            "spec": {"renewTime": micro_time(renewed), "leaseDurationSeconds": duration}}


def test_live_endpoints_come_from_unexpired_identity_leases() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    leases = [lease("10.0.0.1", 6443, now - timedelta(seconds=5)),
              lease("10.0.0.2", 6443, now - timedelta(seconds=30)),
              lease("10.0.0.3", 7443, now),
              {**lease("10.0.0.4", 6443, now), "metadata": {"labels": {}}}]
    assert ks.live_endpoints(leases, now) == [("10.0.0.1", 6443), ("10.0.0.3", 7443)]
    assert identity.lease_expired(leases[1], now) and not identity.lease_expired(leases[0], now)
    assert ks.endpoint_subsets([("10.0.0.3", 7443), ("10.0.0.1", 6443), ("10.0.0.0", 6443)]) == [
        {"addresses": [{"ip": "10.0.0.0"}, {"ip": "10.0.0.1"}], "ports": [{"name": "https", "port": 6443,
                                                                            "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.0.0.3"}], "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]}]


def test_kubernetes_service_shape_and_addresses() -> None:
    s = ks.kubernetes_service("10.96.0.1", 6443)
    assert s["metadata"]["labels"] == {"component": "apiserver", "provider": "kubernetes"}
    assert s["spec"]["ports"] == [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]
    assert "selector" not in s["spec"] and ks.ports_match(s)
    assert identity.advertised_address("", "0.0.0.0") == "127.0.0.1"
    assert identity.advertised_address("", "192.168.56.10") == "192.168.56.10"
    assert identity.advertised_address("10.0.0.9", "0.0.0.0") == "10.0.0.9"
    assert ks.lease_name("10.0.0.1", 6443).startswith("apiserver-")
    assert ks.lease_name("10.0.0.1", 6443) != ks.lease_name("10.0.0.1", 6444)
