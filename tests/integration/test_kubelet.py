"""The kubelet on a real node: pods in runc containers with their own network, probes, restarts, logs.

One node (a network namespace with `harness kubelet` in it, see node_fixtures) serves the whole
module; every test makes its own namespace. Pods are bound by setting `spec.nodeName`, so no
scheduler is needed. Everything is observed the way a user would: through the API, kubectl,
and the pod's own network.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from harness.api import errors, registry
from harness.client.rest import Client
from harness.kubelet.containers import container_id
from harness.kubelet.network.pods import host_veth_name
from tests.integration.apiserver_fixtures import wait_for
from tests.integration.node_fixtures import Node, network, node  # noqa: F401  (fixtures)

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")
NAMESPACES = registry.by_path("", "v1", "namespaces")
CONFIGMAPS = registry.by_path("", "v1", "configmaps")
SECRETS = registry.by_path("", "v1", "secrets")
EVENTS = registry.by_path("", "v1", "events")

pytestmark = pytest.mark.kubelet


@pytest_asyncio.fixture
async def client(node: Node) -> AsyncIterator[Client]:  # noqa: F811
    async with Client.from_kubeconfig(node.kubeconfig) as c:
        yield c


@pytest_asyncio.fixture
async def kns(client: Client) -> AsyncIterator[str]:
    name = f"kt-{uuid.uuid4().hex[:6]}"
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    for pod in (await client.list(PODS, name))["items"]:
        with contextlib.suppress(errors.NotFound):
            await client.delete(PODS, pod["metadata"]["name"], name, grace_period=0)


def pod_body(node: Node, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:  # noqa: F811
    for c in containers:
        c.setdefault("image", "busybox")
        c.setdefault("imagePullPolicy", "IfNotPresent")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node.name, "containers": containers, "terminationGracePeriodSeconds": 2, **spec}}


async def get_pod(client: Client, ns: str, name: str) -> dict[str, Any]:
    return await client.get(PODS, name, ns)


def cstatus(pod: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if name is None or s["name"] == name), {})


def condition(pod: dict[str, Any], ctype: str) -> str:
    return next((c["status"] for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == ctype), "")


async def wait_pod(client: Client, ns: str, name: str, pred: Any, what: str, within: float = 20.0) -> dict[str, Any]:
    """Until the pod satisfies `pred`; on timeout, the failure shows the pod's last status."""
    last: dict[str, Any] = {}

    async def check() -> dict[str, Any] | None:
        nonlocal last
        last = await get_pod(client, ns, name)
        return last if pred(last) else None

    try:
        result: dict[str, Any] = await wait_for(check, within=within, what=f"pod {name}: {what}")
    except AssertionError:
        raise AssertionError(f"pod {name}: no {what} within {within}s; last status: {last.get('status')}") from None
    return result


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and "running" in cstatus(pod).get("state", {})


def kubectl(node: Node, *args: str, timeout: float = 30,  # noqa: F811
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(node.kubeconfig), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, input=stdin)


# -- the node -----------------------------------------------------------------------------------


async def test_node_registers_ready_with_capacity_and_lease(client: Client, node: Node) -> None:  # noqa: F811
    async def ready() -> dict[str, Any] | None:
        n = await client.get(NODES, node.name)
        conds = {c["type"]: c["status"] for c in n["status"]["conditions"]}
        return n if conds.get("Ready") == "True" else None

    n = await wait_for(ready, what="node Ready")
    status = n["status"]
    assert status["capacity"]["cpu"] == "2" and status["capacity"]["memory"] == "4Gi"
    assert status["capacity"]["pods"] == "110"
    assert {"type": "InternalIP", "address": node.ip} in status["addresses"]
    assert {c["type"] for c in status["conditions"]} >= {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("runc://")
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == node.port
    lease = await client.get(LEASES, node.name, "kube-node-lease")
    first = lease["spec"]["renewTime"]

    async def renewed() -> bool:
        again = await client.get(LEASES, node.name, "kube-node-lease")
        return bool(again["spec"]["renewTime"] != first)

    await wait_for(renewed, within=10, what="lease renewal")


# -- networking ---------------------------------------------------------------------------------


async def test_httpd_pod_serves_on_its_pod_ip_and_pods_reach_each_other(client: Client, node: Node,  # noqa: F811
                                                                         kns: str) -> None:
    web = pod_body(node, "web", [{"name": "httpd", "command": ["httpd", "-f", "-p", "8080", "-h", "/var/www"],
                                  "ports": [{"containerPort": 8080}]}])
    await client.create(PODS, web, kns)
    pod = await wait_pod(client, kns, "web", running, "running")
    ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(node.pod_cidr)
    assert pod["status"]["hostIP"] == node.ip
    page = ""
    for _ in range(50):  # httpd binds a moment after the container starts
        result = node.run_in("busybox", "wget", "-q", "-O-", f"http://{ip}:8080/", timeout=5)
        page = result.stdout
        if result.returncode == 0:
            break
    assert "harness" in page.lower() or "<html" in page.lower(), page
    client_pod = pod_body(node, "client", [{"name": "get", "command": ["sh", "-c", f"wget -q -O- http://{ip}:8080/ "
                                                                      "&& cat /etc/resolv.conf /etc/hosts"]}],
                          restartPolicy="Never")
    await client.create(PODS, client_pod, kns)
    done = await wait_pod(client, kns, "client", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
                          "finished")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    logs = kubectl(node, "logs", "-n", kns, "client")
    assert logs.returncode == 0, logs.stderr
    assert "<html" in logs.stdout.lower()
    assert "nameserver 10.96.0.10" in logs.stdout
    assert f"search {kns}.svc.cluster.local svc.cluster.local cluster.local" in logs.stdout
    assert "options ndots:5" in logs.stdout
    assert f"{done['status']['podIP']}\tclient" in logs.stdout


# -- probes and restarts ------------------------------------------------------------------------


async def test_failing_liveness_probe_restarts_with_backoff(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    body = pod_body(node, "sick", [{"name": "app", "command": ["sleep", "1000"],
                                    "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1,
                                                      "failureThreshold": 1}}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "sick", lambda p: cstatus(p).get("restartCount", 0) >= 2, "restarted twice",
                         within=40)
    last = cstatus(pod)["lastState"]["terminated"]
    assert last["exitCode"] in (137, 143) and last["reason"] == "Error"
    events = (await client.list(EVENTS, kns))["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "sick"}
    assert {"Unhealthy", "Killing", "Started"} <= reasons


async def test_crashing_container_goes_into_crash_loop_back_off(client: Client, node: Node,  # noqa: F811
                                                               kns: str) -> None:
    body = pod_body(node, "crash", [{"name": "app", "command": ["sh", "-c", "echo boom; exit 3"]}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "crash", lambda p: cstatus(p).get("state", {}).get("waiting", {}).get("reason")
                         == "CrashLoopBackOff", "CrashLoopBackOff", within=30)
    st = cstatus(pod)
    assert st["lastState"]["terminated"]["exitCode"] == 3
    assert "back-off" in st["state"]["waiting"]["message"]
    assert pod["status"]["phase"] == "Running"
    previous = kubectl(node, "logs", "-n", kns, "crash", "--previous")
    assert previous.returncode == 0 and "boom" in previous.stdout, previous.stderr


async def test_readiness_probe_gates_ready(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    body = pod_body(node, "gate", [{"name": "app", "command": ["sh", "-c", "sleep 2; touch /tmp/ready; sleep 1000"],
                                    "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]},
                                                       "periodSeconds": 1}}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "gate", running, "running")
    assert condition(pod, "Ready") == "False" and not cstatus(pod)["ready"]
    pod = await wait_pod(client, kns, "gate", lambda p: condition(p, "Ready") == "True", "Ready", within=15)
    assert cstatus(pod)["ready"] and cstatus(pod)["started"]
    assert condition(pod, "ContainersReady") == "True"


# -- configuration into containers --------------------------------------------------------------


async def test_env_configmap_and_secret_volumes_appear_in_the_container(client: Client, node: Node,  # noqa: F811
                                                                        kns: str) -> None:
    await client.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                                     "data": {"color": "blue", "app.conf": "listen 80\n"}}, kns)
    await client.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
                                  "data": {"password": base64.b64encode(b"s3cret").decode()}}, kns)
    script = ("echo COLOR=$COLOR NAME=$MY_NAME IP=$MY_IP PW=$PW; cat /etc/cfg/app.conf; cat /etc/sec/password; "
              "echo; id -u; pwd")
    body = pod_body(node, "conf", [{
        "name": "app", "command": ["sh", "-c", script], "workingDir": "/tmp",
        "securityContext": {"runAsUser": 1000},
        "env": [{"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}]}],
        restartPolicy="Never",
        volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "sec", "secret": {"secretName": "sec"}}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "conf", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
                         "finished")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    out = kubectl(node, "logs", "-n", kns, "conf").stdout.splitlines()
    assert out[0] == f"COLOR=blue NAME=conf IP={pod['status']['podIP']} PW=s3cret"
    assert out[1:] == ["listen 80", "s3cret", "1000", "/tmp"]


async def test_missing_configmap_is_a_create_container_config_error(client: Client, node: Node,  # noqa: F811
                                                                  kns: str) -> None:
    body = pod_body(node, "nocfg", [{"name": "app", "command": ["sleep", "100"],
                                     "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent",
                                                                                             "key": "k"}}}]}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "nocfg", lambda p: cstatus(p).get("state", {}).get("waiting", {}).get("reason")
                         == "CreateContainerConfigError", "CreateContainerConfigError")
    assert cstatus(pod)["state"]["waiting"]["message"] == 'configmap "absent" not found'
    assert pod["status"]["phase"] == "Pending"


async def test_unknown_image_is_err_image_pull_then_back_off(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    body = pod_body(node, "noimg", [{"name": "app", "image": "example.invalid/nothing:1.0"}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "noimg", lambda p: cstatus(p).get("state", {}).get("waiting", {}).get("reason")
                         in ("ErrImagePull", "ImagePullBackOff"), "image pull failure")
    assert "example.invalid/nothing:1.0" in cstatus(pod)["state"]["waiting"].get("message", "")
    await wait_pod(client, kns, "noimg", lambda p: cstatus(p).get("state", {}).get("waiting", {}).get("reason")
                   == "ImagePullBackOff", "ImagePullBackOff")


async def test_init_containers_run_in_order_before_the_app(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    body = pod_body(node, "inits", [{"name": "app", "command": ["sh", "-c", "cat /work/order; sleep 1000"],
                                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                    initContainers=[{"name": f"init{i}", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", f"echo init{i} >> /work/order"],
                                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]} for i in (1, 2)],
                    volumes=[{"name": "work", "emptyDir": {}}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "inits", running, "running")
    assert condition(pod, "Initialized") == "True"
    assert [s["state"]["terminated"]["reason"] for s in pod["status"]["initContainerStatuses"]] == ["Completed"] * 2

    async def logged() -> str:
        out = kubectl(node, "logs", "-n", kns, "inits", "-c", "app").stdout
        return out if "init2" in out else ""

    assert (await wait_for(logged, what="app log")).split() == ["init1", "init2"]


async def test_memory_limit_kill_reports_oom_killed(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    body = pod_body(node, "oom", [{"name": "hog", "command": ["tail", "/dev/zero"],
                                   "resources": {"limits": {"memory": "48Mi"}}}], restartPolicy="Never")
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "oom", lambda p: p["status"].get("phase") == "Failed", "Failed", within=30)
    terminated = cstatus(pod)["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137


# -- termination --------------------------------------------------------------------------------


async def test_delete_runs_pre_stop_then_sigterm_and_leaves_nothing_behind(client: Client, node: Node,  # noqa: F811
                                                                          kns: str) -> None:
    body = pod_body(node, "bye", [{"name": "app", "command": ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; "
                                                              "while true; do sleep 0.2; done"],
                                   "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop > "
                                                                                  "/proc/1/fd/1"]}}}}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "bye", running, "running")
    uid = pod["metadata"]["uid"]
    log_dir = node.pod_log_dir / f"{kns}_bye_{uid}"
    veth = host_veth_name(uid)
    cid = container_id(uid, "app", 0)

    def traces() -> dict[str, bool]:
        ipam = node.root / "lib" / "ipam"
        return {"container": cid in node.runc_ids(), "netns": uid in node.netns_files(), "veth": veth in node.links(),
                "logs": log_dir.exists(), "pod dir": (node.root / "lib" / "kubelet" / "pods" / uid).exists(),
                "ip": any(uid in f.read_text() for f in ipam.rglob("*") if f.is_file() and f.stat().st_size < 200),
                "container state": (node.root / "lib" / "containers" / cid).exists(),
                "cgroup": any(Path(f"/sys/fs/cgroup/{c}/harness-test/{node.name}/pod{uid}").exists()
                              for c in ("memory", "cpu", "pids"))}

    assert all(v for k, v in traces().items() if k != "cgroup"), traces()
    await client.delete(PODS, "bye", kns)

    async def gone() -> bool:
        try:
            await get_pod(client, kns, "bye")
            return False
        except errors.NotFound:
            return True

    await wait_for(gone, within=20, what="pod deleted by the kubelet")

    async def clean() -> bool:
        return not any(traces().values())

    try:
        await wait_for(clean, within=10, what="no trace of the pod on the node")
    except AssertionError:
        raise AssertionError(f"left behind: {[k for k, v in traces().items() if v]}") from None
    logs = (await client.list(EVENTS, kns))["items"]
    assert "Killing" in {e["reason"] for e in logs if e["involvedObject"].get("name") == "bye"}


# -- restart safety -----------------------------------------------------------------------------


async def test_kubelet_restart_keeps_pods_running(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    body = pod_body(node, "steady", [{"name": "app", "command": ["sleep", "1000"],
                                      "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}])
    await client.create(PODS, body, kns)
    pod = await wait_pod(client, kns, "steady", lambda p: condition(p, "Ready") == "True", "Ready")
    before = cstatus(pod)
    node.stop_kubelet()
    node.start_kubelet()
    # the new kubelet takes the node over and posts a status; the container is the same one
    async def readopted() -> dict[str, Any] | None:
        p = await get_pod(client, kns, "steady")
        return p if cstatus(p).get("containerID") == before["containerID"] and condition(p, "Ready") == "True" \
            else None

    await wait_for(readopted, within=20, what="pod re-adopted")
    from tests.integration.node_fixtures import wait_node_ready
    wait_node_ready(node)
    pod = await get_pod(client, kns, "steady")
    after = cstatus(pod)
    assert after["containerID"] == before["containerID"]
    assert after["restartCount"] == 0
    assert after["state"]["running"]["startedAt"] == before["state"]["running"]["startedAt"]
    assert pod["status"]["podIP"] == (await get_pod(client, kns, "steady"))["status"]["podIP"]


# -- logs and the kubelet API --------------------------------------------------------------------


async def test_kubectl_logs_follow_tail_and_timestamps(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    body = pod_body(node, "talk", [{"name": "app", "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; "
                                                               "sleep 0.3; done"]}], restartPolicy="Never")
    await client.create(PODS, body, kns)
    await wait_pod(client, kns, "talk", lambda p: "running" in cstatus(p).get("state", {}) or
                   p["status"].get("phase") == "Succeeded", "started")
    follow = kubectl(node, "logs", "-f", "-n", kns, "talk")  # returns when the container exits
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.split() == [f"line{i}" for i in range(1, 6)]
    tail = kubectl(node, "logs", "--tail", "2", "-n", kns, "talk")
    assert tail.stdout.split() == ["line4", "line5"]
    stamped = kubectl(node, "logs", "--timestamps", "--tail", "1", "-n", kns, "talk").stdout.strip()
    stamp, _, text = stamped.partition(" ")
    assert text == "line5" and stamp.startswith("20") and stamp.endswith("Z")
    wrong = kubectl(node, "logs", "-n", kns, "talk", "-c", "nosuch")
    assert wrong.returncode != 0 and "container nosuch is not valid for pod talk" in wrong.stderr


async def test_kubelet_serves_pods_and_metrics(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    await client.create(PODS, pod_body(node, "counted", [{"name": "app", "command": ["sleep", "1000"]}]), kns)
    await wait_pod(client, kns, "counted", running, "running")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{node.ip}:{node.port}/metrics") as answer:
            metrics = await answer.text()
        async with http.get(f"http://{node.ip}:{node.port}/pods") as answer:
            pods = await answer.json()
    running_pods = next(float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith("kubelet_running_pods "))
    assert running_pods >= 1
    assert "kubelet_pod_start_duration_seconds_bucket" in metrics
    assert f'kubelet_node_name{{node="{node.name}"}} 1.0' in metrics
    assert "counted" in {p["metadata"]["name"] for p in pods["items"]}


async def test_kubectl_exec_streams_stdio_and_exit_code(client: Client, node: Node, kns: str) -> None:  # noqa: F811
    await client.create(PODS, pod_body(node, "shell", [{"name": "app", "command": ["sleep", "1000"]}]), kns)
    await wait_pod(client, kns, "shell", running, "running")
    result = kubectl(node, "exec", "-n", kns, "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out\n"
    assert "err" in result.stderr
    piped = kubectl(node, "exec", "-i", "-n", kns, "shell", "--", "sh", "-c", "tr a-z A-Z; hostname",
                    stdin="hello\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.split() == ["HELLO", "shell"]
