"""Services: the ClusterIP answers from every worker and from pods, the NodePort on every worker, and the names
resolve through the cluster DNS. (Masters run no kube-proxy, as in Kubernetes the Hard Way: ClusterIPs are a
worker's and a pod's view.)"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.infra.support import InfraCluster, deployment, service

REPLICAS = 3


@pytest.fixture(scope="module")
def web(cluster: InfraCluster) -> Iterator[str]:
    with cluster.namespace("svc") as ns:
        cluster.apply(deployment("web", REPLICAS), ns)
        cluster.apply(service("web", "NodePort"), ns)
        cluster.wait_rollout(ns, "web")
        cluster.wait(lambda: len(cluster.get("endpoints", "-n", ns, "web").get("subsets", [{}])[0]
                                 .get("addresses", [])) == REPLICAS, 30, "the Endpoints never listed every pod")
        yield ns


def pod_names(cluster: InfraCluster, ns: str) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.live_pods(ns, "app=web")}


def test_cluster_ip_answers_from_every_worker_spreading_over_the_pods(cluster: InfraCluster, web: str) -> None:
    ip = cluster.get("svc", "-n", web, "web")["spec"]["clusterIP"]
    names = pod_names(cluster, web)
    for worker in cluster.workers:
        host = cluster.host(worker.name)
        seen: set[str] = set()

        def spread(host: Any = host, seen: set[str] = seen) -> bool:
            out = host.run(f"for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -qO- http://{ip}/hostname; "
                           "echo; done").stdout
            seen.update(line for line in out.split() if line)
            return seen == names

        cluster.wait(spread, 30, lambda w=worker, s=seen, h=host: f"{ip} from {w.name} reached {sorted(s)} of "
                     f"{sorted(names)}; its rules for the Service:\n"
                     + h.run(f"iptables-save -t nat | grep -e '{web}/web' -e KUBE-SEP").stdout
                     + cluster.describe(web, ("harness-kube-proxy",)), interval=0)


def test_node_port_answers_on_every_worker(cluster: InfraCluster, web: str) -> None:
    port = cluster.get("svc", "-n", web, "web")["spec"]["ports"][0]["nodePort"]
    names = pod_names(cluster, web)
    for worker in cluster.workers:
        with urllib.request.urlopen(f"http://{worker.ip}:{port}/hostname", timeout=5) as resp:
            assert resp.read().decode().strip() in names


def test_pods_reach_the_service_by_name(cluster: InfraCluster, web: str) -> None:
    names = pod_names(cluster, web)
    ip = cluster.get("svc", "-n", web, "web")["spec"]["clusterIP"]
    for pod in sorted(names)[:2]:
        url = f"http://web.{web}.svc.cluster.local/hostname"
        fetched = cluster.kubectl("exec", "-n", web, pod, "--", "wget", "-qO-", url)
        assert fetched.returncode == 0 and fetched.stdout.strip() in names, fetched.stderr + cluster.describe(web)
        # the short name through the search path (busybox's nslookup exits 1 for the search domains that are
        # NXDOMAIN, as they must be, so the answer is what counts)
        short = cluster.kubectl("exec", "-n", web, pod, "--", "nslookup", "web")
        assert f"Name:\tweb.{web}.svc.cluster.local\nAddress: {ip}" in short.stdout, short.stdout + short.stderr
    kubernetes = cluster.kubectl("exec", "-n", web, sorted(names)[0], "--", "nslookup",
                                 "kubernetes.default.svc.cluster.local")
    assert kubernetes.returncode == 0 and "10.96.0.1" in kubernetes.stdout, kubernetes.stdout + kubernetes.stderr
