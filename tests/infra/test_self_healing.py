"""Self-healing: a deleted pod is replaced; a killed container is restarted; `kill -9` of the kubelet, kube-proxy
and the scheduler each heal — supervisord restarts the component within 5 s — and running pods keep their
container processes across a kubelet restart."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.infra.support import BUSYBOX, InfraCluster, deployment, service

RESTART_WITHIN = 5.0  # seconds (times the cluster's time_scale: a VM under emulation starts a program slower)


@pytest.fixture(scope="module")
def web(cluster: InfraCluster) -> Iterator[str]:
    """A namespace with deploy/web (one pod per worker and one more) behind a NodePort Service."""
    with cluster.namespace("heal") as ns:
        cluster.apply(deployment("web", len(cluster.workers) + 1), ns)
        cluster.apply(service("web", "NodePort"), ns)
        cluster.wait_rollout(ns, "web")
        yield ns


def container_pid(cluster: InfraCluster, pod: dict[str, Any]) -> int:
    """The host PID (in its node's PID namespace) of the pod's container, from runc's state."""
    cid = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("runc://")
    state = cluster.host(pod["spec"]["nodeName"]).check_output(f"runc --root /run/harness/runc state {cid}")
    return int(json.loads(state)["pid"])


def kill_and_time_restart(cluster: InfraCluster, machine: str, program: str) -> float:
    """kill -9 the program on the machine; seconds until supervisord runs it again (a new PID)."""
    state, pid = cluster.programs(machine)[program]
    assert state == "RUNNING" and pid, f"{program} on {machine} is {state} before the test"
    cluster.host(machine).run(f"kill -9 {pid}")
    killed = time.monotonic()

    def restarted() -> bool:
        state, new = cluster.programs(machine).get(program, ("", None))
        return state in ("STARTING", "RUNNING") and new not in (None, pid)

    cluster.wait(restarted, 30, lambda: f"supervisord did not restart {program} on {machine}\n"
                 + cluster.log_tail(machine, program), interval=0.2)
    took = time.monotonic() - killed
    cluster.wait(lambda: cluster.programs(machine)[program][0] == "RUNNING", 30,
                 lambda: f"{program} on {machine} did not stay up after the restart\n"
                 + cluster.log_tail(machine, program))
    return took


def test_a_deleted_pod_is_replaced(cluster: InfraCluster, web: str) -> None:
    before = {p["metadata"]["name"] for p in cluster.live_pods(web, "app=web")}
    victim = sorted(before)[0]
    deleted = cluster.kubectl("delete", "pod", "-n", web, victim, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    cluster.wait(lambda: victim not in {p["metadata"]["name"] for p in cluster.ready_pods(web, "app=web")}
                 and len([p for p in cluster.ready_pods(web, "app=web")
                          if not p["metadata"].get("deletionTimestamp")]) == len(before), 60,
                 lambda: f"{victim} was not replaced by a Ready pod\n" + cluster.describe(web))


def test_a_killed_container_is_restarted(cluster: InfraCluster, web: str) -> None:
    pod = cluster.live_pods(web, "app=web")[0]
    name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    pid = container_pid(cluster, pod)
    cluster.host(node).run(f"kill -9 {pid}")

    def restarted() -> bool:
        now = cluster.get("pod", "-n", web, name)
        status = now["status"]["containerStatuses"][0]
        return status["restartCount"] == restarts + 1 and status.get("ready") is True

    cluster.wait(restarted, 60, lambda: f"{name}'s container was not restarted on {node}\n" + cluster.describe(web))
    last = cluster.get("pod", "-n", web, name)["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error", last


def test_kill_9_of_the_kubelet_heals_and_keeps_the_containers(cluster: InfraCluster, web: str) -> None:
    node = cluster.workers[0].name
    pods = [p for p in cluster.live_pods(web, "app=web") if p["spec"]["nodeName"] == node]
    assert pods, f"no web pod on {node}"
    pids = {p["metadata"]["name"]: container_pid(cluster, p) for p in pods}
    restarts = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"] for p in pods}
    took = kill_and_time_restart(cluster, node, "harness-kubelet")
    assert took <= RESTART_WITHIN * cluster.time_scale, f"the kubelet came back after {took:.1f}s"
    ip = cluster.machines[node].ip
    cluster.wait(lambda: cluster.host(node).run(f"busybox wget -qO- http://{ip}:10248/healthz").stdout == "ok",
                 30, "the restarted kubelet is not healthy")
    after = {p["metadata"]["name"]: container_pid(cluster, p)
             for p in cluster.live_pods(web, "app=web") if p["spec"]["nodeName"] == node}
    assert after == pids, f"containers changed across the kubelet restart: {pids} -> {after}"
    assert {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
            for p in cluster.live_pods(web, "app=web") if p["spec"]["nodeName"] == node} == restarts


def test_kill_9_of_kube_proxy_heals_and_the_service_still_answers(cluster: InfraCluster, web: str) -> None:
    node = cluster.workers[-1]
    took = kill_and_time_restart(cluster, node.name, "harness-kube-proxy")
    assert took <= RESTART_WITHIN * cluster.time_scale, f"kube-proxy came back after {took:.1f}s"
    port = cluster.get("svc", "-n", web, "web")["spec"]["ports"][0]["nodePort"]

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://{node.ip}:{port}/hostname", timeout=3) as resp:
                return resp.status == 200
        except OSError:
            return False

    cluster.wait(answers, 30, lambda: f"NodePort {port} on {node.name} does not answer after kube-proxy's restart\n"
                 + cluster.log_tail(node.name, "harness-kube-proxy"))


def test_kill_9_of_the_scheduler_heals_and_pods_are_still_scheduled(cluster: InfraCluster, web: str) -> None:
    holder = cluster.get("lease", "-n", "kube-system", "kube-scheduler")["spec"]["holderIdentity"]
    leader = next((m.name for m in cluster.masters if holder.startswith(m.name)), cluster.masters[0].name)
    took = kill_and_time_restart(cluster, leader, "harness-scheduler")
    assert took <= RESTART_WITHIN * cluster.time_scale, f"the scheduler came back after {took:.1f}s"
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: after-scheduler-restart}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: {BUSYBOX}, command: [sleep, '3600']}}]
""", web)
    cluster.wait(lambda: cluster.get("pod", "-n", web, "after-scheduler-restart")["status"].get("phase") == "Running",
                 60, lambda: "a pod created after the scheduler's restart did not run\n"
                 + cluster.describe(web, ("harness-scheduler",)))
