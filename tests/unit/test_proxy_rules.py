"""kube-proxy's iptables mode: the model from Services/Endpoints, the rendered rules, and the sync decisions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from harness.proxy import iptables, model
from harness.proxy.iptables import endpoint_chain, render, service_chain
from harness.proxy.model import Endpoint, ServicePort
from harness.proxy.proxier import IptablesProxier, Metrics, ProxyLoop, Runner, ensure_sysctls


def service(name: str = "svc1", *, ns: str = "ns1", ip: str = "172.30.0.41", ports: list[dict[str, Any]] | None = None,
            **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": ports if ports is not None else [{"name": "p80", "port": 80}], **spec}}


def endpoints(name: str = "svc1", *, ns: str = "ns1", ips: tuple[str, ...] = ("10.180.0.1",), port: int = 80,
              port_name: str = "p80", not_ready: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                         "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}]}


def sp(n: int = 1, **kw: Any) -> ServicePort:
    base: dict[str, Any] = {"namespace": "ns1", "name": "svc1", "port_name": "p80", "protocol": "TCP",
                            "cluster_ip": "172.30.0.41", "port": 80,
                            "endpoints": tuple(Endpoint(f"10.180.0.{i + 1}", 80) for i in range(n))}
    return ServicePort(**{**base, **kw})


def rules_of(text: str, chain: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


# -- the model -----------------------------------------------------------------------------------


def test_model_resolves_ready_endpoints_by_port_name() -> None:
    svc = service(ports=[{"name": "p80", "port": 80}, {"name": "metrics", "port": 9090, "protocol": "TCP"}])
    ep = {"metadata": {"namespace": "ns1", "name": "svc1"},
          "subsets": [{"addresses": [{"ip": "10.180.0.2"}, {"ip": "10.180.0.1"}],
                       "notReadyAddresses": [{"ip": "10.9.9.9"}],
                       "ports": [{"name": "p80", "port": 8080}, {"name": "metrics", "port": 9100}]}]}
    ports = model.build([svc], {"ns1/svc1": ep})
    assert [p.key for p in ports] == ["ns1/svc1:metrics", "ns1/svc1:p80"]
    assert ports[1].endpoints == (Endpoint("10.180.0.1", 8080), Endpoint("10.180.0.2", 8080))
    assert ports[0].endpoints == (Endpoint("10.180.0.1", 9100), Endpoint("10.180.0.2", 9100))


def test_model_unnamed_port_key_and_missing_endpoints() -> None:
    ports = model.build([service(ports=[{"port": 53, "protocol": "UDP"}])], {})
    assert [(p.key, p.protocol, p.endpoints) for p in ports] == [("ns1/svc1", "UDP", ())]


def test_model_skips_headless_externalname_and_unallocated() -> None:
    services = [service("headless", ip="None"), service("ext", type="ExternalName", externalName="example.com"),
                service("noip", ip="")]
    assert model.build(services, {}) == []


def test_model_affinity_and_nodeport() -> None:
    svc = service(type="NodePort", sessionAffinity="ClientIP",
                  ports=[{"name": "p80", "port": 80, "nodePort": 30080}])
    (port,) = model.build([svc], {})
    assert (port.node_port, port.affinity_timeout) == (30080, model.DEFAULT_AFFINITY_TIMEOUT)
    svc["spec"]["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 60}}
    svc["spec"]["type"] = "ClusterIP"  # a ClusterIP service's leftover nodePort is not served
    (port,) = model.build([svc], {})
    assert (port.node_port, port.affinity_timeout) == (0, 60)


# -- rendering -----------------------------------------------------------------------------------


def test_chain_names_match_upstream_hashes() -> None:
    # The same names upstream's proxier_test.go expects for ns1/svc1:p80 -> 10.180.0.1:80.
    assert service_chain(sp()) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert endpoint_chain(sp(), "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def test_cluster_ip_rules() -> None:
    rules = render([sp(1)], cluster_cidr="10.0.0.0/8")
    svc, sep = "KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert rules_of(rules.nat, "KUBE-SERVICES") == [
        f'-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41/32 '
        f'--dport 80 -j {svc}',
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in '
        'this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS']
    assert rules_of(rules.nat, svc) == [
        f'-A {svc} -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41/32 --dport 80 '
        f'! -s 10.0.0.0/8 -j KUBE-MARK-MASQ',
        f'-A {svc} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j {sep}']
    assert rules_of(rules.nat, sep) == [
        f"-A {sep} -m comment --comment ns1/svc1:p80 -s 10.180.0.1/32 -j KUBE-MARK-MASQ",
        f"-A {sep} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80"]
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000" in rules.nat
    assert "-j MASQUERADE" in rules.nat
    assert f":{svc} - [0:0]" in rules.nat and f":{sep} - [0:0]" in rules.nat
    assert "REJECT" not in rules.filter


def test_probabilities_spread_over_endpoints() -> None:
    rules = render([sp(3)])
    lb = [r for r in rules_of(rules.nat, service_chain(sp(3))) if "KUBE-SEP-" in r]
    assert len(lb) == 3
    assert "--probability 0.3333333333 " in lb[0]
    assert "--probability 0.5000000000 " in lb[1]
    assert "statistic" not in lb[2]
    assert [r.split("-j ")[-1] for r in lb] == [endpoint_chain(sp(3), f"10.180.0.{i}:80") for i in (1, 2, 3)]


def test_client_ip_affinity() -> None:
    port = sp(2, affinity_timeout=600)
    rules = render([port])
    svc_rules = rules_of(rules.nat, service_chain(port))
    seps = [endpoint_chain(port, f"10.180.0.{i}:80") for i in (1, 2)]
    recent = [r for r in svc_rules if "--rcheck" in r]
    assert [r.split("-j ")[-1] for r in recent] == seps
    assert all("--seconds 600 --reap" in r for r in recent)
    assert svc_rules.index(recent[-1]) < min(i for i, r in enumerate(svc_rules) if "statistic" in r)
    for sep in seps:
        (dnat,) = [r for r in rules_of(rules.nat, sep) if "DNAT" in r]
        assert f"-m recent --name {sep} --set" in dnat


def test_node_ports() -> None:
    port = sp(1, node_port=30080)
    rules = render([port])
    assert rules_of(rules.nat, "KUBE-NODEPORTS") == [
        "-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 30080 -j KUBE-MARK-MASQ",
        f"-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 30080 -j {service_chain(port)}"]
    assert rules_of(rules.nat, "KUBE-SERVICES")[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")


def test_no_endpoints_rejects_in_filter() -> None:
    port = sp(0, node_port=30080)
    rules = render([port])
    assert rules_of(rules.filter, "KUBE-SERVICES") == [
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.41/32 '
        '--dport 80 -j REJECT --reject-with icmp-port-unreachable']
    assert rules_of(rules.filter, "KUBE-EXTERNAL-SERVICES") == [
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL '
        '-m tcp -p tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable']
    assert "KUBE-SVC-" not in rules.nat and "KUBE-SEP-" not in rules.nat
    assert not rules_of(rules.nat, "KUBE-NODEPORTS")


def test_output_is_deterministic() -> None:
    services = [service("b", ip="10.96.0.2"), service("a", ip="10.96.0.1")]
    eps = {"ns1/a": endpoints("a", ips=("10.1.0.3", "10.1.0.1", "10.1.0.2")), "ns1/b": endpoints("b")}
    first = render(model.build(services, eps)).text
    again = render(model.build(list(reversed(services)), dict(reversed(list(eps.items()))))).text
    assert first == again
    assert first.index("ns1/a:p80 cluster IP") < first.index("ns1/b:p80 cluster IP")


def test_stale_chains_are_deleted_after_the_rules() -> None:
    rules = render([sp(1)])
    text = rules.with_deletions({"KUBE-SVC-OLD", service_chain(sp(1))})
    nat = text[text.index("*nat"):]
    assert ":KUBE-SVC-OLD - [0:0]" in nat and nat.count("-X ") == 1
    assert nat.index("-X KUBE-SVC-OLD") > nat.index("-A KUBE-SEP-") and nat.rstrip().endswith("COMMIT")


def test_cleanup_text_and_chain_parsing() -> None:
    saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-X - [0:0]\n:OTHER - [0:0]\nCOMMIT\n"
    found = iptables.chains_in(saved)["nat"]
    assert iptables.ours(found, "nat") == {"KUBE-SERVICES", "KUBE-SEP-X"}
    text = iptables.cleanup_text(iptables.ours(found, "nat"), [])
    assert text == "*nat\n:KUBE-SEP-X - [0:0]\n:KUBE-SERVICES - [0:0]\n-X KUBE-SEP-X\n-X KUBE-SERVICES\nCOMMIT\n"


# -- the proxier and the loop, with a fake iptables ------------------------------------------------


class FakeRunner(Runner):
    def __init__(self) -> None:
        super().__init__()
        self.restored: list[str] = []
        self.wrote = asyncio.Event()
        self.jumps: list[iptables.Jump] = []
        self.saved = "*nat\n:KUBE-SVC-STALE - [0:0]\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"

    async def restore(self, text: str) -> None:
        self.restored.append(text)
        self.wrote.set()

    async def save(self, table: str) -> str:
        return self.saved if table == "nat" else f"*{table}\nCOMMIT\n"

    async def has(self, jump: iptables.Jump) -> bool:
        return jump in self.jumps

    async def insert(self, jump: iptables.Jump) -> None:
        self.jumps.append(jump)

    async def delete(self, jump: iptables.Jump) -> bool:
        if jump in self.jumps:
            self.jumps.remove(jump)
            return True
        return False


async def test_sync_writes_only_on_change_and_cleans_stale_chains() -> None:
    runner = FakeRunner()
    proxier = IptablesProxier(runner=runner, proc_sys=None)
    assert await proxier.sync([sp(1)], full=True)
    assert "-X KUBE-SVC-STALE" in runner.restored[0]
    assert sorted(runner.jumps, key=str) == sorted(iptables.JUMPS, key=str)
    assert not await proxier.sync([sp(1)], full=False)
    assert len(runner.restored) == 1
    assert await proxier.sync([sp(2)], full=False)
    assert await proxier.sync([], full=False)  # the service is gone: its chains are deleted
    assert f"-X {service_chain(sp(1))}" in runner.restored[-1]
    await proxier.cleanup()
    assert runner.jumps == []


async def test_loop_bounds_sync_rate_and_records_programming_latency() -> None:
    runner = FakeRunner()
    metrics = Metrics()
    proxier = IptablesProxier(runner=runner, metrics=metrics, proc_sys=None)
    svc, eps = service(), endpoints()
    store: dict[str, dict[str, Any]] = {}
    loop = ProxyLoop(proxier, services=lambda: [svc], endpoints=store.get, metrics=metrics,
                     min_sync_period=0.2, sync_period=60)
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(loop.synced.wait(), 5)
        assert "REJECT" in runner.restored[-1]
        eps["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": "2020-01-01T00:00:00Z"}
        store["ns1/svc1"] = eps
        started = asyncio.get_running_loop().time()
        runner.wrote.clear()
        loop.endpoints_handlers()["on_add"](eps)
        await asyncio.wait_for(runner.wrote.wait(), 5)
        assert len(runner.restored) == 2
        assert asyncio.get_running_loop().time() - started >= 0.15  # waited out min_sync_period
        assert "DNAT --to-destination 10.180.0.1:80" in runner.restored[-1]
        count = metrics.registry.get_sample_value("kubeproxy_network_programming_duration_seconds_count")
        assert count == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_sysctls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "net/ipv4").mkdir(parents=True)
    (tmp_path / "net/ipv4/ip_forward").write_text("0\n")
    ensure_sysctls(tmp_path)
    assert (tmp_path / "net/ipv4/ip_forward").read_text() == "1\n"
    assert "br_netfilter is not loaded" in caplog.text
    (tmp_path / "net/bridge").mkdir()
    (tmp_path / "net/bridge/bridge-nf-call-iptables").write_text("0\n")
    ensure_sysctls(tmp_path)
    assert (tmp_path / "net/bridge/bridge-nf-call-iptables").read_text() == "1\n"
