"""etcd members: healthy, as many as there are masters, their data directory private."""

from __future__ import annotations

from typing import Any

from tests.infra.support import InfraCluster

testinfra_hosts = ["ansible://etcd"]


PKI = "/etc/harness/pki/etcd"


def etcdctl(cluster: InfraCluster, ip: str) -> str:
    """etcdctl as the health-check client of the etcd CA."""
    return (f"etcdctl --endpoints https://{ip}:2379 --cacert {PKI}/ca.crt --cert {PKI}/healthcheck-client.crt "
            f"--key {PKI}/healthcheck-client.key")


def test_member_is_healthy(host: Any, cluster: InfraCluster) -> None:
    ip = cluster.machines[host.backend.get_hostname()].ip
    health = host.run(f"{etcdctl(cluster, ip)} endpoint health")
    assert health.rc == 0 and "is healthy" in health.stdout + health.stderr, health.stdout + health.stderr


def test_member_count_equals_the_masters(host: Any, cluster: InfraCluster) -> None:
    ip = cluster.machines[host.backend.get_hostname()].ip
    members = host.check_output(f"{etcdctl(cluster, ip)} member list")
    names = sorted(line.split(", ")[2] for line in members.splitlines())
    assert names == sorted(m.name for m in cluster.masters), members


def test_data_directory_is_private(host: Any) -> None:
    data = host.file("/var/lib/harness/etcd")
    assert data.is_directory and data.mode == 0o700 and data.user == "root", oct(data.mode)
