"""Cluster DNS records: seed Services and Endpoints caches, ask questions, assert the exact answers."""

from __future__ import annotations

from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from harness.dns.records import Resolver
from harness.dns.server import Handler, Metrics
from harness.machinery.informer import Cache, index_by_namespace

Z = "cluster.local."


def service(name: str, ns: str = "ns", *, ip: str = "10.96.0.5", ports: list[dict[str, Any]] | None = None,
            **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"clusterIP": ip, "type": "ClusterIP",
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                      {"name": "dns", "port": 53, "protocol": "UDP"},
                                      {"port": 9000, "protocol": "TCP"}] if ports is None else ports}
    body.update(spec)
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoints(name: str, ns: str = "ns", *, addresses: list[dict[str, Any]],
              not_ready: list[dict[str, Any]] | None = None, ports: list[dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    subset: dict[str, Any] = {"addresses": addresses,
                              "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports}
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"metadata": {"name": name, "namespace": ns}, "subsets": [subset]}


@pytest.fixture
def caches() -> tuple[Cache, Cache]:
    services = Cache({"namespace": index_by_namespace})
    eps = Cache({"namespace": index_by_namespace})
    services.put(service("web"))
    services.put(service("np", ip="10.96.0.6", type="NodePort"))
    services.put(service("lb", ip="10.96.0.7", type="LoadBalancer"))
    services.put(service("pending", ip=""))
    services.put(service("db", ip="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    eps.put(endpoints("db", addresses=[{"ip": "10.244.1.5", "hostname": "db-0"}, {"ip": "10.244.2.7"}],
                      not_ready=[{"ip": "10.244.3.9", "hostname": "db-2"}],
                      ports=[{"name": "pg", "port": 5433, "protocol": "TCP"}]))
    services.put(service("empty", ip="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    services.put(service("ext", ip="", ports=[], type="ExternalName", externalName="db.example.com"))
    services.put(service("alias", ip="", ports=[], type="ExternalName", externalName="web.ns.svc.cluster.local"))
    services.put(service("kube-dns", "kube-system", ip="10.96.0.10"))
    return services, eps


@pytest.fixture
def resolver(caches: tuple[Cache, Cache]) -> Resolver:
    return Resolver(*caches)


def data(answer: Any) -> list[tuple[str, str, str]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in answer]


def test_cluster_ip_service_a_record(resolver: Resolver) -> None:
    got = resolver.resolve("web.ns.svc.cluster.local", QTYPE.A)
    assert got.rcode == RCODE.NOERROR and got.authoritative
    assert data(got.answer) == [("web.ns.svc.cluster.local.", "A", "10.96.0.5")]
    assert got.answer[0].ttl == 5
    assert got.authority == []


@pytest.mark.parametrize("name,ip", [("np", "10.96.0.6"), ("lb", "10.96.0.7")])
def test_nodeport_and_loadbalancer_have_their_cluster_ip(resolver: Resolver, name: str, ip: str) -> None:
    assert data(resolver.resolve(f"{name}.ns.svc.cluster.local.", QTYPE.A).answer)[0][2] == ip


def test_names_are_case_insensitive_and_answers_echo_the_question(resolver: Resolver) -> None:
    got = resolver.resolve("WeB.Ns.SVC.Cluster.Local.", QTYPE.A)
    assert data(got.answer) == [("WeB.Ns.SVC.Cluster.Local.", "A", "10.96.0.5")]


def test_aaaa_is_nodata_with_soa(resolver: Resolver) -> None:
    got = resolver.resolve("web.ns.svc.cluster.local.", QTYPE.AAAA)
    assert got.rcode == RCODE.NOERROR and got.answer == []
    assert [(str(rr.rname), QTYPE[rr.rtype]) for rr in got.authority] == [(Z, "SOA")]
    assert str(got.authority[0].rdata.mname) == "ns.dns.cluster.local."


def test_service_without_cluster_ip_yet_is_nodata(resolver: Resolver) -> None:
    got = resolver.resolve("pending.ns.svc.cluster.local.", QTYPE.A)
    assert (got.rcode, got.answer) == (RCODE.NOERROR, [])


def test_headless_service_has_every_ready_address(resolver: Resolver) -> None:
    got = resolver.resolve("db.ns.svc.cluster.local.", QTYPE.A)
    assert [d[2] for d in data(got.answer)] == ["10.244.1.5", "10.244.2.7"]  # not the not-ready 10.244.3.9


def test_headless_service_without_endpoints_is_nodata(resolver: Resolver) -> None:
    got = resolver.resolve("empty.ns.svc.cluster.local.", QTYPE.A)
    assert (got.rcode, got.answer) == (RCODE.NOERROR, [])


def test_headless_endpoint_hostnames_and_dashed_ips(resolver: Resolver) -> None:
    assert data(resolver.resolve("db-0.db.ns.svc.cluster.local.", QTYPE.A).answer) == [
        ("db-0.db.ns.svc.cluster.local.", "A", "10.244.1.5")]
    assert data(resolver.resolve("10-244-2-7.db.ns.svc.cluster.local.", QTYPE.A).answer)[0][2] == "10.244.2.7"
    assert resolver.resolve("db-2.db.ns.svc.cluster.local.", QTYPE.A).rcode == RCODE.NXDOMAIN  # not ready
    assert resolver.resolve("db-0.web.ns.svc.cluster.local.", QTYPE.A).rcode == RCODE.NXDOMAIN  # not headless


def test_srv_of_a_normal_service_targets_the_service(resolver: Resolver) -> None:
    got = resolver.resolve("_http._tcp.web.ns.svc.cluster.local.", QTYPE.SRV)
    assert data(got.answer) == [("_http._tcp.web.ns.svc.cluster.local.", "SRV", "0 100 80 web.ns.svc.cluster.local.")]
    assert data(got.additional) == [("web.ns.svc.cluster.local.", "A", "10.96.0.5")]
    udp = resolver.resolve("_dns._udp.web.ns.svc.cluster.local.", QTYPE.SRV)
    assert data(udp.answer)[0][2] == "0 100 53 web.ns.svc.cluster.local."


def test_srv_of_a_headless_service_targets_each_endpoint(resolver: Resolver) -> None:
    got = resolver.resolve("_pg._tcp.db.ns.svc.cluster.local.", QTYPE.SRV)
    assert [d[2] for d in data(got.answer)] == ["0 50 5433 10-244-2-7.db.ns.svc.cluster.local.",
                                                "0 50 5433 db-0.db.ns.svc.cluster.local."]
    assert sorted(data(got.additional)) == [("10-244-2-7.db.ns.svc.cluster.local.", "A", "10.244.2.7"),
                                            ("db-0.db.ns.svc.cluster.local.", "A", "10.244.1.5")]


def test_srv_misses(resolver: Resolver) -> None:
    assert resolver.resolve("_http._udp.web.ns.svc.cluster.local.", QTYPE.SRV).rcode == RCODE.NXDOMAIN
    assert resolver.resolve("_nope._tcp.web.ns.svc.cluster.local.", QTYPE.SRV).rcode == RCODE.NXDOMAIN
    # an existing SRV name asked for A, and the _proto empty non-terminal: NODATA
    for name, qtype in (("_http._tcp.web.ns.svc.cluster.local.", QTYPE.A), ("_tcp.web.ns.svc.cluster.local.",
                                                                            QTYPE.SRV)):
        got = resolver.resolve(name, qtype)
        assert (got.rcode, got.answer) == (RCODE.NOERROR, []), name
    assert resolver.resolve("_sctp.web.ns.svc.cluster.local.", QTYPE.SRV).rcode == RCODE.NXDOMAIN
    # a headless service with a declared port but no endpoints: the name exists, no records
    got = resolver.resolve("_pg._tcp.empty.ns.svc.cluster.local.", QTYPE.SRV)
    assert (got.rcode, got.answer) == (RCODE.NOERROR, [])


def test_ptr_of_cluster_ip_and_of_named_headless_endpoints(resolver: Resolver) -> None:
    got = resolver.resolve("5.0.96.10.in-addr.arpa.", QTYPE.PTR)
    assert data(got.answer) == [("5.0.96.10.in-addr.arpa.", "PTR", "web.ns.svc.cluster.local.")]
    assert data(resolver.resolve("5.1.244.10.in-addr.arpa.", QTYPE.PTR).answer)[0][2] == \
        "db-0.db.ns.svc.cluster.local."
    # an endpoint without hostname has no PTR; inside our reverse zones that is NXDOMAIN with the zone's SOA
    miss = resolver.resolve("7.2.244.10.in-addr.arpa.", QTYPE.PTR)
    assert miss.rcode == RCODE.NXDOMAIN
    assert [(str(rr.rname), QTYPE[rr.rtype]) for rr in miss.authority] == [("244.10.in-addr.arpa.", "SOA")]


def test_ptr_outside_reverse_cidrs_is_refused(resolver: Resolver) -> None:
    got = resolver.resolve("1.0.168.192.in-addr.arpa.", QTYPE.PTR)
    assert (got.rcode, got.authoritative, got.answer, got.authority) == (RCODE.REFUSED, False, [], [])
    assert resolver.resolve("garbage.in-addr.arpa.", QTYPE.PTR).rcode == RCODE.REFUSED
    assert resolver.resolve("96.10.in-addr.arpa.", QTYPE.PTR).rcode == RCODE.NOERROR  # our empty non-terminal


def test_ptr_index_follows_invalidate(caches: tuple[Cache, Cache]) -> None:
    services, _ = caches
    resolver = Resolver(*caches)
    assert resolver.resolve("9.9.96.10.in-addr.arpa.", QTYPE.PTR).rcode == RCODE.NXDOMAIN
    services.put(service("late", ip="10.96.9.9"))
    resolver.invalidate()
    assert data(resolver.resolve("9.9.96.10.in-addr.arpa.", QTYPE.PTR).answer)[0][2] == "late.ns.svc.cluster.local."


def test_external_name_is_a_cname(resolver: Resolver) -> None:
    got = resolver.resolve("ext.ns.svc.cluster.local.", QTYPE.A)
    assert (got.rcode, data(got.answer)) == (RCODE.NOERROR, [("ext.ns.svc.cluster.local.", "CNAME",
                                                              "db.example.com.")])
    assert data(resolver.resolve("ext.ns.svc.cluster.local.", QTYPE.CNAME).answer)[0][2] == "db.example.com."
    assert resolver.resolve("_http._tcp.ext.ns.svc.cluster.local.", QTYPE.SRV).rcode == RCODE.NXDOMAIN


def test_external_name_inside_the_cluster_domain_is_chased(resolver: Resolver) -> None:
    got = resolver.resolve("alias.ns.svc.cluster.local.", QTYPE.A)
    assert data(got.answer) == [("alias.ns.svc.cluster.local.", "CNAME", "web.ns.svc.cluster.local."),
                                ("web.ns.svc.cluster.local.", "A", "10.96.0.5")]


def test_existing_names_without_records_are_nodata(resolver: Resolver) -> None:
    for name in (Z, "svc.cluster.local.", "ns.svc.cluster.local.", "kube-system.svc.cluster.local.",
                 "pod.cluster.local.", "ns.pod.cluster.local."):
        got = resolver.resolve(name, QTYPE.A)
        assert (got.rcode, got.answer) == (RCODE.NOERROR, []), name
        assert [QTYPE[rr.rtype] for rr in got.authority] == ["SOA"], name


def test_unknown_names_in_the_zone_are_nxdomain_with_soa(resolver: Resolver) -> None:
    for name in ("nope.ns.svc.cluster.local.", "web.other.svc.cluster.local.", "other.svc.cluster.local.",
                 "x.y.web.ns.svc.cluster.local.", "random.cluster.local.", "web.ns.cluster.local."):
        got = resolver.resolve(name, QTYPE.A)
        assert got.rcode == RCODE.NXDOMAIN, name
        assert got.answer == [] and [(str(rr.rname), QTYPE[rr.rtype]) for rr in got.authority] == [(Z, "SOA")]


def test_names_outside_the_cluster_domain_are_refused(resolver: Resolver) -> None:
    for name in ("example.com.", "local.", "cluster.local.example.com.", "."):
        got = resolver.resolve(name, QTYPE.A)
        assert (got.rcode, got.authoritative, got.authority) == (RCODE.REFUSED, False, []), name


def test_apex_soa_ns_and_schema_version(resolver: Resolver) -> None:
    assert [QTYPE[rr.rtype] for rr in resolver.resolve(Z, QTYPE.SOA).answer] == ["SOA"]
    assert data(resolver.resolve(Z, QTYPE.NS).answer) == [(Z, "NS", "ns.dns.cluster.local.")]
    assert data(resolver.resolve("ns.dns.cluster.local.", QTYPE.A).answer)[0][2] == "10.96.0.10"
    assert data(resolver.resolve("dns-version.cluster.local.", QTYPE.TXT).answer)[0][2] == '"1.1.0"'


def test_pod_records(resolver: Resolver) -> None:
    assert data(resolver.resolve("10-244-1-5.ns.pod.cluster.local.", QTYPE.A).answer)[0][2] == "10.244.1.5"
    assert resolver.resolve("not-an-ip.ns.pod.cluster.local.", QTYPE.A).rcode == RCODE.NXDOMAIN


def test_any_returns_every_record_at_the_name(resolver: Resolver) -> None:
    assert data(resolver.resolve("web.ns.svc.cluster.local.", QTYPE.ANY).answer) == [
        ("web.ns.svc.cluster.local.", "A", "10.96.0.5")]


def test_custom_domain(caches: tuple[Cache, Cache]) -> None:
    resolver = Resolver(*caches, domain="corp.example.")
    assert data(resolver.resolve("web.ns.svc.corp.example.", QTYPE.A).answer)[0][2] == "10.96.0.5"
    assert resolver.resolve("web.ns.svc.cluster.local.", QTYPE.A).rcode == RCODE.REFUSED
    assert resolver.owns("x.corp.example.") and resolver.owns("5.0.96.10.in-addr.arpa.")
    assert not resolver.owns("example.") and not resolver.owns("1.1.168.192.in-addr.arpa.")


# -- the wire handler ---------------------------------------------------------------------------


def ask(handler: Handler, name: str, qtype: str = "A", *, proto: str = "udp", edns: int = 0) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    wire = handler.handle(q.pack(), proto=proto)
    assert wire is not None
    reply = DNSRecord.parse(wire)
    assert reply.header.id == q.header.id and reply.header.qr == 1
    return reply


def test_handler_flags_and_rcodes(resolver: Resolver) -> None:
    handler = Handler(resolver, Metrics())
    ok = ask(handler, "web.ns.svc.cluster.local")
    assert (ok.header.aa, ok.header.ra, ok.header.rcode) == (1, 0, RCODE.NOERROR)
    refused = ask(handler, "example.com")
    assert (refused.header.aa, refused.header.rcode) == (0, RCODE.REFUSED)
    chaos = DNSRecord.question("version.bind", "TXT", "CH")
    assert DNSRecord.parse(handler.handle(chaos.pack(), proto="udp") or b"").header.rcode == RCODE.REFUSED
    assert handler.handle(b"\x00\x01", proto="udp") is None
    bad = DNSRecord.parse(handler.handle(b"\x12\x34" + b"\xff" * 20, proto="udp") or b"")
    assert (bad.header.id, bad.header.rcode) == (0x1234, RCODE.FORMERR)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in handler.metrics.registry.collect()
               for s in m.samples}
    assert samples[("coredns_dns_responses_total", (("rcode", "REFUSED"), ("server", "dns://:53"),
                                                    ("zone", Z)))] == 2  # example.com and CHAOS


def test_handler_servfails_in_zone_until_synced(resolver: Resolver) -> None:
    handler = Handler(resolver, Metrics(), ready=lambda: False)
    assert ask(handler, "web.ns.svc.cluster.local").header.rcode == RCODE.SERVFAIL
    assert ask(handler, "example.com").header.rcode == RCODE.REFUSED


def test_large_udp_answers_are_truncated_unless_edns_or_tcp(caches: tuple[Cache, Cache]) -> None:
    services, eps = caches
    services.put(service("big", ip="None"))
    eps.put(endpoints("big", addresses=[{"ip": f"10.244.5.{i}"} for i in range(1, 60)]))  # 59 A records: > 512 B
    handler = Handler(Resolver(*caches), Metrics())
    udp = ask(handler, "big.ns.svc.cluster.local")
    assert (udp.header.tc, udp.rr) == (1, [])
    assert len(ask(handler, "big.ns.svc.cluster.local", proto="tcp").rr) == 59
    edns = ask(handler, "big.ns.svc.cluster.local", edns=4096)
    assert (edns.header.tc, len(edns.rr)) == (0, 59)
    assert any(rr.rtype == QTYPE.OPT for rr in edns.ar)
