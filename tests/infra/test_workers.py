"""Workers: kubelet and kube-proxy running; the pod bridge carries the node's podCIDR gateway; routes to every
other node's podCIDR; kube-proxy's chains; runc; the kubelet's and kube-proxy's ports."""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.infra.support import NODE_PROGRAMS, InfraCluster

testinfra_hosts = ["ansible://workers"]


def node_of(host: Any, cluster: InfraCluster) -> dict[str, Any]:
    return cluster.nodes()[host.backend.get_hostname()]


def test_kubelet_and_kube_proxy_run(host: Any, cluster: InfraCluster) -> None:
    for program in NODE_PROGRAMS:
        supervised = host.supervisor(program, supervisorctl_path=f"{cluster.venv}/bin/supervisorctl",
                                     supervisorctl_conf="/etc/harness/supervisor/supervisord.conf")
        assert supervised.is_running, f"{program}: {supervised.status}"


def test_pod_bridge_carries_the_pod_cidr_gateway(host: Any, cluster: InfraCluster) -> None:
    cidr = ipaddress.ip_network(node_of(host, cluster)["spec"]["podCIDR"])
    gateway = str(next(cidr.hosts()))
    assert host.interface("cni0").exists
    assert gateway in host.interface("cni0").addresses, host.check_output("ip -o -4 addr show cni0")


def test_routes_to_every_other_node_pod_cidr(host: Any, cluster: InfraCluster) -> None:
    me = host.backend.get_hostname()
    routes = host.check_output("ip -4 route show")
    for name, node in cluster.nodes().items():
        if name == me:
            continue
        expected = f"{node['spec']['podCIDR']} via {cluster.machines[name].ip}"
        assert expected in routes, f"{me} has no route {expected}:\n{routes}"


def test_kube_proxy_chains_exist(host: Any) -> None:
    nat = host.check_output("iptables-save -t nat")
    for chain in (":KUBE-SERVICES", ":KUBE-NODEPORTS", ":KUBE-POSTROUTING", ":KUBE-MARK-MASQ"):
        assert chain in nat, f"no {chain} chain in the nat table"
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" in nat, nat


def test_runc_is_there(host: Any) -> None:
    assert host.exists("runc")
    assert host.run("runc --version").rc == 0


def test_kubelet_and_kube_proxy_ports(host: Any, cluster: InfraCluster) -> None:
    assert host.socket("tcp://0.0.0.0:10250").is_listening, "kubelet API"
    assert host.socket("tcp://0.0.0.0:10256").is_listening, "kube-proxy healthz"
    ip = cluster.machines[host.backend.get_hostname()].ip
    assert host.socket(f"tcp://{ip}:10248").is_listening, "kubelet healthz, plain HTTP"
    assert host.socket(f"tcp://{ip}:10249").is_listening, "kube-proxy metrics, on the node address for Prometheus"
    assert not host.socket("tcp://0.0.0.0:10249").is_listening
