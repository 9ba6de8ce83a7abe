"""Masters: the apiserver is ready; ports listen where docs/architecture.md ("Ports") says and nowhere else; the
scheduler and the controller-manager each hold their leader Lease; the cluster DNS answers."""

from __future__ import annotations

import datetime
import ssl
import urllib.request
from typing import Any

from tests.infra.support import InfraCluster

testinfra_hosts = ["ansible://masters"]

# docs/architecture.md ("Ports") on a master: etcd client/peer/metrics, apiserver, controller-manager, scheduler;
# cluster DNS (53, with its health/metrics port 8080 as CoreDNS has); sshd (22) to reach the machine; the log agent's
# /healthz and /metrics (24221); on the first: Prometheus (9090) and the log aggregator (Forward 24224, its query
# API 24220).
MASTER_TCP = {22, 2379, 2380, 2381, 6443, 10257, 10259, 53, 8080, 24221}
FIRST_MASTER_TCP = {9090, 24224, 24220}
MASTER_UDP = {53}
# What a VM has beyond a namespace node: the DHCP client of its management interface (Vagrant's NAT network, eth0).
VM_UDP = {68}


def test_apiserver_is_ready(host: Any, cluster: InfraCluster) -> None:
    ip = cluster.machines[host.backend.get_hostname()].ip
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    with urllib.request.urlopen(f"https://{ip}:6443/readyz", timeout=5, context=context) as resp:
        assert resp.status == 200 and resp.read().strip() == b"ok"


def listening(host: Any) -> tuple[set[int], set[int]]:
    sockets = host.socket.get_listening_sockets()
    tcp = {int(s.rsplit(":", 1)[1]) for s in sockets if s.startswith("tcp://")}
    udp = {int(s.rsplit(":", 1)[1]) for s in sockets if s.startswith("udp://")}
    return tcp, udp


def test_ports_listen_where_the_design_says_and_nowhere_else(host: Any, cluster: InfraCluster) -> None:
    tcp, udp = listening(host)
    expected = MASTER_TCP | (FIRST_MASTER_TCP if host.backend.get_hostname() == cluster.masters[0].name else set())
    assert tcp == expected, f"unexpected: {sorted(tcp - expected)}, missing: {sorted(expected - tcp)}"
    expected_udp = MASTER_UDP | (VM_UDP if cluster.vms else set())
    assert udp == expected_udp, f"unexpected: {sorted(udp - expected_udp)}, missing: {sorted(expected_udp - udp)}"


def test_components_listen_on_the_node_address(host: Any, cluster: InfraCluster) -> None:
    ip = cluster.machines[host.backend.get_hostname()].ip
    for port in (6443, 10257, 10259, 2380):
        assert host.socket(f"tcp://{ip}:{port}").is_listening, f"nothing listens on {ip}:{port}"


def test_scheduler_and_controller_manager_hold_their_leases(cluster: InfraCluster) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for lease in ("kube-scheduler", "kube-controller-manager"):
        spec = cluster.get("lease", "-n", "kube-system", lease)["spec"]
        renewed = datetime.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
        assert spec.get("holderIdentity"), f"{lease}: nobody holds the lease: {spec}"
        assert (now - renewed).total_seconds() < spec["leaseDurationSeconds"], f"{lease}: lease expired: {spec}"


def test_cluster_dns_answers_on_the_master(host: Any, cluster: InfraCluster) -> None:
    ip = cluster.machines[host.backend.get_hostname()].ip
    answer = host.run(f"busybox nslookup kubernetes.default.svc.cluster.local {ip}")
    assert answer.rc == 0 and "10.96.0.1" in answer.stdout, answer.stdout + answer.stderr
