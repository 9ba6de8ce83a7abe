"""The control plane end to end: etcd, apiserver, scheduler and controller-manager as real
processes, with hollow nodes, driven through the API like a user would.

The module has its own etcd and apiserver, so the nodes it registers never leak into other
tests. Periods are shortened (lease 2 s, node grace 4 s) so failures show in seconds.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from harness.api import errors, registry
from harness.client.rest import Client
from harness.hollow.cluster import HollowCluster
from harness.storage.local import LocalEtcd
from tests.integration.apiserver_fixtures import ApiServerProcess, free_port, start_apiserver, stop_apiserver, wait_for

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")
DEPLOYMENTS = registry.by_path("apps", "v1", "deployments")
REPLICASETS = registry.by_path("apps", "v1", "replicasets")
NAMESPACES = registry.by_path("", "v1", "namespaces")

ELECTION = ["--leader-elect-lease-duration", "2", "--leader-elect-renew-deadline", "1.5",
            "--leader-elect-retry-period", "0.2"]


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_component(kind: str, kubeconfig: Path, workdir: Path, extra: list[str]) -> Component:
    port = free_port()
    log = workdir / f"{kind}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", kind, "--kubeconfig", str(kubeconfig),
                                 "--secure-port", str(port), *ELECTION, *extra], stdout=out, stderr=subprocess.STDOUT)
    return Component(kind, proc, log, port)


def stop_component(c: Component, sig: int = signal.SIGTERM) -> None:
    if c.proc.poll() is None:
        c.proc.send_signal(sig)
        try:
            c.proc.wait(10)
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait(5)


@dataclass
class Cluster:
    api: ApiServerProcess
    client: Client
    components: list[Component]
    nodes: HollowCluster
    workdir: Path

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} (pid {c.proc.pid}) ---\n{c.tail()}" for c in self.components)


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerProcess, list[Component], Path]]:
    workdir = tmp_path_factory.mktemp("control-plane")
    with LocalEtcd() as etcd:
        api = start_apiserver(etcd.endpoint, workdir)
        components = [
            start_component("scheduler", api.kubeconfig, workdir, []),
            start_component("controller-manager", api.kubeconfig, workdir,
                            ["--node-monitor-period", "0.5", "--node-monitor-grace-period", "4"]),
        ]
        try:
            yield api, components, workdir
        finally:
            for c in components:
                stop_component(c)
            stop_apiserver(api)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cluster(control_plane: tuple[ApiServerProcess, list[Component], Path]) -> AsyncIterator[Cluster]:
    api, components, workdir = control_plane
    client = Client.from_kubeconfig(api.kubeconfig)
    nodes = HollowCluster(client, count=3, prefix="worker", cpu="2", memory="4Gi", heartbeat=0.5,
                          status_interval=2.0)
    await nodes.start()
    yield Cluster(api, client, components, nodes, workdir)
    await nodes.stop()
    await client.close()


async def _namespace(c: Cluster, name: str) -> str:
    await c.client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def web(name: str, replicas: int, image: str = "busybox:1.36", **strategy: Any) -> dict[str, Any]:
    labels = {"app": name}
    spec: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels},
                                         "spec": {"containers": [{"name": "web", "image": image,
                                                                  "resources": {"requests": {"cpu": "100m"}}}]}}}
    if strategy:
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": strategy}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


async def running_pods(c: Cluster, ns: str, app: str) -> list[dict[str, Any]]:
    pods = (await c.client.list(PODS, ns, label_selector=f"app={app}"))["items"]
    return [p for p in pods if p.get("status", {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


async def test_every_worker_registers_ready_with_a_pod_cidr(cluster: Cluster) -> None:
    async def ready() -> Any:
        nodes = (await cluster.client.list(NODES))["items"]
        cidrs = [n["spec"].get("podCIDR") for n in nodes]
        return len(nodes) == 3 and all(cidrs) and len(set(cidrs)) == 3 and nodes

    await wait_for(ready, within=20, what=f"3 nodes with distinct pod CIDRs\n{cluster.logs()}")


async def test_deployment_rolls_out_scales_and_replaces_deleted_pods(cluster: Cluster) -> None:
    ns = await _namespace(cluster, "rollout")
    await cluster.client.create(DEPLOYMENTS, web("web", 3), ns)

    async def available(n: int) -> Any:
        d = await cluster.client.get(DEPLOYMENTS, "web", ns)
        st = d.get("status", {})
        pods = await running_pods(cluster, ns, "web")
        done = st.get("availableReplicas") == n and st.get("updatedReplicas") == n and len(pods) == n
        return done and pods

    pods = await wait_for(lambda: available(3), within=30, what=f"3 available replicas\n{cluster.logs()}")
    assert len({p["spec"]["nodeName"] for p in pods}) >= 2, "pods should spread across workers"
    victim = pods[0]["metadata"]["name"]
    await cluster.client.delete(PODS, victim, ns, grace_period=0)
    replaced = await wait_for(lambda: available(3), within=30, what="the deleted pod to be replaced")
    assert victim not in {p["metadata"]["name"] for p in replaced}
    await cluster.client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 5}}, ns)
    await wait_for(lambda: available(5), within=30, what="scale up to 5")
    await cluster.client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 2}}, ns)
    await wait_for(lambda: available(2), within=30, what="scale down to 2")


async def test_rolling_update_never_exceeds_surge_and_rolls_back(cluster: Cluster) -> None:
    ns = await _namespace(cluster, "update")
    await cluster.client.create(DEPLOYMENTS, web("app", 4, maxSurge=1, maxUnavailable=1), ns)

    async def settled(image: str) -> bool:
        d = await cluster.client.get(DEPLOYMENTS, "app", ns)
        st = d.get("status", {})
        pods = await running_pods(cluster, ns, "app")
        return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("updatedReplicas") == 4
                and st.get("availableReplicas") == 4 and len(pods) == 4
                and all(p["spec"]["containers"][0]["image"] == image for p in pods))

    await wait_for(lambda: settled("busybox:1.36"), within=30, what="initial rollout")
    peak = 0
    watching = True

    async def watch_total() -> None:
        nonlocal peak
        while watching:
            pods = (await cluster.client.list(PODS, ns, label_selector="app=app"))["items"]
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            peak = max(peak, len(live))
            await asyncio.sleep(0.05)

    observer = asyncio.create_task(watch_total())
    try:
        await cluster.client.patch(DEPLOYMENTS, "app", {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "busybox:1.37"}]}}}}, ns, patch_type="strategic")
        await wait_for(lambda: settled("busybox:1.37"), within=45, what=f"rollout to 1.37\n{cluster.logs()}")
    finally:
        watching = False
        await observer
    assert peak <= 5, f"saw {peak} pods during the rollout; replicas + maxSurge is 5"
    rss = (await cluster.client.list(REPLICASETS, ns))["items"]
    revisions = sorted(int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for r in rss)
    assert revisions == [1, 2], revisions
    # Roll back as `kubectl rollout undo` does: put revision 1's template back.
    old = next(r for r in rss if r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1")
    template = old["spec"]["template"]
    template["metadata"]["labels"].pop("pod-template-hash", None)
    await cluster.client.patch(DEPLOYMENTS, "app", {"spec": {"template": template}}, ns)
    await wait_for(lambda: settled("busybox:1.36"), within=45, what="rollback to 1.36")


async def test_unschedulable_pod_says_why(cluster: Cluster) -> None:
    ns = await _namespace(cluster, "toobig")
    await cluster.client.create(PODS, {"metadata": {"name": "huge"}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "64"}}}]}}, ns)

    async def reason() -> Any:
        pod = await cluster.client.get(PODS, "huge", ns)
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond["type"] == "PodScheduled" and cond["status"] == "False":
                return cond["message"]
        return None

    message = await wait_for(reason, within=20, what="PodScheduled=False")
    assert "0/3 nodes are available" in message and "Insufficient cpu" in message, message


async def test_only_one_leader_each_and_handover_on_kill(cluster: Cluster) -> None:
    for kind in ("scheduler", "controller-manager"):
        cluster.components.append(start_component(kind, cluster.api.kubeconfig, cluster.workdir,
                                                  ["--node-monitor-period", "0.5", "--node-monitor-grace-period", "4"]
                                                  if kind == "controller-manager" else []))
    loop = asyncio.get_running_loop()
    for kind, lease_name in (("scheduler", "kube-scheduler"), ("controller-manager", "kube-controller-manager")):
        candidates = [c for c in cluster.components if c.name == kind and c.proc.poll() is None]
        assert len(candidates) == 2, candidates

        async def both_started(group: list[Component] = candidates) -> bool:
            session = await cluster.client.session()
            for c in group:
                try:
                    async with session.get(f"http://127.0.0.1:{c.port}/healthz") as resp:
                        if resp.status != 200:
                            return False
                except aiohttp.ClientError:
                    return False
            return True

        await wait_for(both_started, within=15, what=f"both {kind}s to take part in the election")
        holder = (await cluster.client.get(LEASES, lease_name, "kube-system"))["spec"]["holderIdentity"]
        leaders = [c for c in candidates if "became leader" in c.log.read_text(errors="replace")
                   and holder in c.log.read_text(errors="replace")]
        assert len(leaders) == 1, f"{kind}: expected one leader holding {holder}\n{cluster.logs()}"
        stop_component(leaders[0], signal.SIGKILL)
        killed_at = loop.time()

        async def handed_over(old: str = holder, name: str = lease_name) -> Any:
            spec = (await cluster.client.get(LEASES, name, "kube-system"))["spec"]
            return spec.get("holderIdentity") not in (None, "", old)

        await wait_for(handed_over, within=10, what=f"{lease_name} to change hands\n{cluster.logs()}")
        # The lease lasts 2 s; the standby retries every 0.2 s.
        assert loop.time() - killed_at < 4.0
    # The cluster still works with the survivors.
    ns = await _namespace(cluster, "after-handover")
    await cluster.client.create(DEPLOYMENTS, web("after", 2), ns)
    await wait_for(lambda: _count_running(cluster, ns, "after", 2), within=30,
                   what=f"a deployment after handover\n{cluster.logs()}")


async def _count_running(c: Cluster, ns: str, app: str, n: int) -> bool:
    return len(await running_pods(c, ns, app)) == n


async def test_dead_node_is_tainted_and_its_pods_move(cluster: Cluster) -> None:
    ns = await _namespace(cluster, "failover")
    dep = web("fo", 3)
    dep["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 2}]
    await cluster.client.create(DEPLOYMENTS, dep, ns)
    pods = await wait_for(lambda: _running_list(cluster, ns, "fo", 3), within=30, what="3 running pods")
    victim = pods[0]["spec"]["nodeName"]
    cluster.nodes.pause_heartbeats(victim)
    try:
        async def tainted() -> Any:
            node = await cluster.client.get(NODES, victim)
            taints = {t["key"] for t in node["spec"].get("taints") or []}
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            return "node.kubernetes.io/unreachable" in taints and ready["status"] == "Unknown"

        await wait_for(tainted, within=20, what=f"{victim} to be tainted unreachable\n{cluster.logs()}")

        async def moved() -> Any:
            running = await _running_list(cluster, ns, "fo", 3)
            return running and all(p["spec"]["nodeName"] != victim for p in running)

        await wait_for(moved, within=30, what=f"pods to leave {victim}\n{cluster.logs()}")
    finally:
        cluster.nodes.resume_heartbeats(victim)

    async def ready_again() -> Any:
        node = await cluster.client.get(NODES, victim)
        taints = {t["key"] for t in node["spec"].get("taints") or []}
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        return ready["status"] == "True" and "node.kubernetes.io/unreachable" not in taints

    await wait_for(ready_again, within=20, what=f"{victim} Ready again")


async def _running_list(c: Cluster, ns: str, app: str, n: int) -> Any:
    pods = await running_pods(c, ns, app)
    return pods if len(pods) == n else None


async def test_no_pod_was_ever_bound_twice(cluster: Cluster) -> None:
    for c in cluster.components:
        if c.name == "scheduler":
            text = c.log.read_text(errors="replace")
            assert "already assigned" not in text, c.tail()
    with pytest.raises(errors.NotFound):
        await cluster.client.get(PODS, "no-such-pod", "default")


async def test_kubectl_rollout_status_and_undo(cluster: Cluster, tmp_path: Path) -> None:
    ns = await _namespace(cluster, "kubectl-rollout")
    await cluster.client.create(DEPLOYMENTS, web("roll", 2), ns)
    kubectl = str(Path(sys.executable).with_name("kubectl"))
    env = {"KUBECONFIG": str(cluster.api.kubeconfig), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(kubectl, "-n", ns, *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}\n{cluster.logs()}"
        return out.decode()

    out = await run("rollout", "status", "deployment/roll", "--timeout=45s")
    assert "successfully rolled out" in out, out
    await run("set", "image", "deployment/roll", "web=busybox:1.37")
    out = await run("rollout", "status", "deployment/roll", "--timeout=45s")
    assert "successfully rolled out" in out, out
    history = await run("rollout", "history", "deployment/roll")
    assert "1" in history and "2" in history, history
    await run("rollout", "undo", "deployment/roll")
    await run("rollout", "status", "deployment/roll", "--timeout=45s")
    d = await cluster.client.get(DEPLOYMENTS, "roll", ns)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"


async def test_deleting_a_deployment_collects_its_replicasets_and_pods(cluster: Cluster) -> None:
    ns = await _namespace(cluster, "gc")
    await cluster.client.create(DEPLOYMENTS, web("gone", 2), ns)
    await wait_for(lambda: _count_running(cluster, ns, "gone", 2), within=30, what="2 running pods")
    await cluster.client.delete(DEPLOYMENTS, "gone", ns, propagation_policy="Background")

    async def collected() -> bool:
        rss = (await cluster.client.list(REPLICASETS, ns))["items"]
        pods = (await cluster.client.list(PODS, ns))["items"]
        return not rss and not pods

    await wait_for(collected, within=30, what=f"the garbage collector to remove RS and pods\n{cluster.logs()}")


async def test_deleting_a_namespace_empties_and_removes_it(cluster: Cluster) -> None:
    ns = await _namespace(cluster, "doomed")
    await cluster.client.create(DEPLOYMENTS, web("inside", 2), ns)
    await wait_for(lambda: _count_running(cluster, ns, "inside", 2), within=30, what="2 running pods")
    await cluster.client.delete(NAMESPACES, ns)

    async def gone() -> bool:
        try:
            await cluster.client.get(NAMESPACES, ns)
        except errors.NotFound:
            return True
        return False

    await wait_for(gone, within=30, what=f"namespace {ns} to be emptied and deleted\n{cluster.logs()}")
    assert (await cluster.client.list(PODS, ns))["items"] == []
