"""`harness up` end to end: namespace machines, site.yml through ansible-runner, a working cluster for real
kubectl, idempotent re-runs, a changed setting restarting only what uses it, and `harness down` leaving nothing.

Each test makes its own cluster (own name, own 192.168.<n>.0/24), so a user's cluster on this host is untouched.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from dnslib import QTYPE, DNSRecord

from tests.clusters import (
    SUPERVISORCTL,
    HostSnapshot,
    LocalCluster,
    node_processes,
    processes_with,
    provisioned,
    run,
    wait_until,
)

pytestmark = pytest.mark.kubelet

CONTROL_PLANE = ("harness-etcd", "harness-apiserver", "harness-scheduler", "harness-controller-manager",
                 "harness-dns", "harness-pod-routes")
NODE = ("harness-kubelet", "harness-kube-proxy")
WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: busybox
        command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def etcd_client(cluster: LocalCluster) -> list[str]:
    """etcdctl's flags for the cluster's etcd: TLS with the health-check client certificate of the etcd CA."""
    pki = cluster.home / "pki"
    return ["--cacert", str(pki / "etcd" / "ca.crt"), "--cert", str(pki / "etcd" / "healthcheck-client.crt"),
            "--key", str(pki / "etcd" / "healthcheck-client.key")]


def http_get(url: str, ca_file: Path | None = None) -> str | None:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as resp:
            return resp.read().decode().strip()
    except OSError:
        return None


def dns_a(server: str, name: str) -> list[str]:
    reply = DNSRecord.parse(DNSRecord.question(name).send(server, 53, timeout=3))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def ready_nodes(cluster: LocalCluster) -> dict[str, bool]:
    got = cluster.kubectl("get", "nodes", "-o", "json")
    assert got.returncode == 0, got.stderr
    return {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in n["status"].get("conditions", []))
            for n in json.loads(got.stdout)["items"]}


def pods(cluster: LocalCluster) -> list[dict]:
    got = cluster.kubectl("get", "pods", "-l", "app=web", "-o", "json")
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)["items"]


def diagnostics(cluster: LocalCluster) -> str:
    parts = [cluster.kubectl("get", "nodes,pods,svc,endpoints", "-A", "-o", "wide").stdout,
             cluster.kubectl("get", "events", "-A").stdout]
    parts += [cluster.log_tail(n, "kubelet") for n in cluster.worker_names]
    parts += [cluster.log_tail(n, "kube-proxy") for n in cluster.worker_names]
    return "\n".join(parts)


def all_pids(cluster: LocalCluster) -> dict[tuple[str, str], int | None]:
    return {(node, program): pid for node in cluster.master_names + cluster.worker_names
            for program, (_state, pid) in cluster.programs(node).items()}


def test_harness_up_makes_a_working_cluster_reruns_idempotently_and_down_leaves_nothing(
        local_cluster: Callable[..., LocalCluster]) -> None:
    before = HostSnapshot.take()
    cluster = local_cluster(masters=1, workers=2, prefix="u")
    master = cluster.ip("master-1")
    up = cluster.up()
    assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-3000:]
    assert f"Cluster {cluster.name} is up" in up.stdout and f"export KUBECONFIG={cluster.kubeconfig}" in up.stdout
    assert provisioned(up.stdout)[1] > 0
    for phase in ("machines", "provision", "nodes Ready"):
        assert re.search(rf"{phase} \d+\.\ds", up.stdout), f"no time for phase {phase}:\n{up.stdout[-2000:]}"

    # real kubectl with the printed kubeconfig: the workers are the Nodes, all Ready (masters run no kubelet)
    assert ready_nodes(cluster) == {"worker-1": True, "worker-2": True}
    # every program RUNNING where it belongs, from supervisord on the node
    for node in cluster.master_names:
        states = cluster.programs(node)
        assert {p: states.get(p, ("missing",))[0] for p in CONTROL_PLANE} == dict.fromkeys(CONTROL_PLANE,
                                                                                         "RUNNING"), states
    for node in cluster.worker_names:
        states = cluster.programs(node)
        assert {p: states.get(p, ("missing",))[0] for p in NODE} == dict.fromkeys(NODE, "RUNNING"), states
    status = cluster.harness("status", "--name", cluster.name)
    assert status.returncode == 0, status.stdout + status.stderr
    # etcd healthy, cluster DNS on the master
    health = run(["etcdctl", "--endpoints", f"https://{master}:2379", *etcd_client(cluster), "endpoint", "health"])
    assert health.returncode == 0, health.stdout + health.stderr
    assert dns_a(master, "kubernetes.default.svc.cluster.local") == ["10.96.0.1"]

    # a busybox Deployment behind a NodePort Service serves on every node
    applied = cluster.kubectl("apply", "-f", "-", stdin=WEB)
    assert applied.returncode == 0, applied.stderr
    rollout = cluster.kubectl("rollout", "status", "deploy/web", "--timeout=120s", timeout=130)
    assert rollout.returncode == 0, rollout.stdout + rollout.stderr + diagnostics(cluster)
    service = json.loads(cluster.kubectl("get", "svc", "web", "-o", "json").stdout)
    node_port = service["spec"]["ports"][0]["nodePort"]
    names = {p["metadata"]["name"] for p in pods(cluster)}
    for node in cluster.worker_names:
        seen: set[str] = set()

        def spread(node: str = node, seen: set[str] = seen) -> bool:
            answer = http_get(f"http://{cluster.ip(node)}:{node_port}/hostname")
            if answer:
                seen.add(answer)
            return seen == names

        wait_until(spread, 60, lambda node=node, seen=seen: f"NodePort {node_port} on {node} reached only "
                   f"{sorted(seen)} of {sorted(names)}\n{diagnostics(cluster)}", interval=0.05)
    # from a pod: the Service by its DNS name (pod -> cluster DNS on the master -> back to the pod's IP)
    pod = sorted(names)[0]
    by_name = cluster.kubectl("exec", pod, "--", "wget", "-qO-", "http://web.default.svc.cluster.local/hostname")
    assert by_name.returncode == 0 and by_name.stdout.strip() in names, by_name.stderr + diagnostics(cluster)

    # a second run changes nothing and restarts nothing
    pids = all_pids(cluster)
    containers = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["containerID"] for p in pods(cluster)}
    again = cluster.up()
    assert again.returncode == 0, again.stdout[-5000:] + again.stderr[-3000:]
    assert provisioned(again.stdout)[1] == 0, (cluster.home / "ansible" / "last-run.log").read_text()[-6000:]
    assert all_pids(cluster) == pids

    # one changed setting restarts only the program that uses it (the kubelet); the pods keep running
    changed = cluster.up("--set", "node_kubelet_status_update_frequency=30")
    assert changed.returncode == 0, changed.stdout[-5000:] + changed.stderr[-3000:]
    now = all_pids(cluster)
    restarted = {key for key in now if now[key] != pids[key]}
    assert restarted == {(w, "harness-kubelet") for w in cluster.worker_names}, restarted
    assert {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["containerID"]
            for p in pods(cluster)} == containers
    processes = node_processes(cluster)
    assert len(processes) > 10, processes  # sshd, supervisord, etcd, ..., the pods' shims and containers

    down = cluster.down()
    assert down.returncode == 0, down.stdout + down.stderr
    left = HostSnapshot.take().added_since(before)
    assert left == {"links": set(), "netns": set(), "mounts": set(), "routes": set()}, left
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in processes), 10,
               "processes of the cluster's nodes outlived `harness down`")
    assert not processes_with(str(cluster.home)), "processes of the cluster outlived `harness down`"
    assert not any(Path("/sys/fs/cgroup").glob(f"*/harness/{cluster.name}")), "the cluster's cgroups are left"
    assert not cluster.home.exists() or not any(cluster.home.iterdir()), list(cluster.home.iterdir())
    # the fixture runs `harness down` once more: it must succeed with nothing left to remove


def test_three_masters_give_an_ha_control_plane_that_survives_an_apiserver(
        local_cluster: Callable[..., LocalCluster]) -> None:
    cluster = local_cluster(masters=3, workers=1, prefix="h")
    masters = [cluster.ip(m) for m in cluster.master_names]
    up = cluster.up()
    assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-3000:]
    assert ready_nodes(cluster) == {"worker-1": True}

    # a 3-member etcd, every member healthy
    endpoints = ",".join(f"https://{ip}:2379" for ip in masters)
    members = run(["etcdctl", "--endpoints", endpoints, *etcd_client(cluster), "member", "list"])
    assert members.returncode == 0 and len(members.stdout.strip().splitlines()) == 3, members.stdout
    health = run(["etcdctl", "--endpoints", endpoints, *etcd_client(cluster), "endpoint", "health"])
    said = health.stdout + health.stderr  # etcdctl reports health on stderr
    assert health.returncode == 0 and said.count("is healthy") == 3, said
    # an apiserver on every master, all of them behind the `kubernetes` Service, every URL in the kubeconfigs
    ca_file = cluster.home / "pki" / "ca.crt"
    for ip in masters:
        assert http_get(f"https://{ip}:6443/readyz", ca_file) == "ok"
    servers = [f"https://{ip}:6443" for ip in masters]
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["extensions"][0]["extension"]["servers"] == servers
    on_node = yaml.safe_load(cluster.ssh("worker-1", "cat /etc/harness/kubelet.conf").stdout)
    assert on_node["clusters"][0]["cluster"]["extensions"][0]["extension"]["servers"] == servers
    # written by the kubelet's TLS bootstrap, with the certificate it was issued
    assert on_node["users"][0]["user"]["client-certificate"] == "/var/lib/harness/pki/kubelet-client-current.pem"

    def kubernetes_endpoints() -> list[str]:
        got = cluster.kubectl("get", "endpoints", "kubernetes", "-o", "json")
        assert got.returncode == 0, got.stderr
        ep = json.loads(got.stdout)
        return sorted(a["ip"] for s in ep.get("subsets", []) for a in s.get("addresses", []))

    wait_until(lambda: kubernetes_endpoints() == sorted(masters), 30,
               lambda: f"kubernetes Endpoints {kubernetes_endpoints()} are not the masters {masters}")
    # one leader each for the scheduler and the controller-manager
    for lease in ("kube-scheduler", "kube-controller-manager"):
        got = json.loads(cluster.kubectl("get", "lease", "-n", "kube-system", lease, "-o", "json").stdout)
        assert got["spec"].get("holderIdentity"), got

    # master-1's apiserver stops: the worker fails over to another apiserver, pods still get scheduled and run
    stopped = cluster.ssh("master-1", f"{SUPERVISORCTL} stop harness-apiserver")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    manifest = ("apiVersion: v1\nkind: Pod\nmetadata: {name: after-failover}\nspec:\n  containers:\n"
                "  - {name: c, image: busybox, command: [sleep, '3600']}\n")
    created = run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--server", servers[1], "apply", "-f", "-"],
                  stdin=manifest)
    assert created.returncode == 0, created.stderr

    def running() -> bool:
        got = run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--server", servers[2], "get", "pod",
                   "after-failover", "-o", "json"])
        return got.returncode == 0 and json.loads(got.stdout)["status"].get("phase") == "Running"

    wait_until(running, 60, lambda: "the pod made through master-2 did not run with master-1's apiserver down\n"
               + diagnostics(cluster))
