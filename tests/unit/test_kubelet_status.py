"""Pure parts of the kubelet: pod status and phase, crash-loop back-off, managed pod files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.kubelet import podfiles
from harness.kubelet import status as ps
from harness.kubelet.backoff import Backoff
from harness.kubelet.containers import container_id, pull_policy
from harness.kubelet.runtime.types import ContainerInfo

NOW = "2026-11-25T10:00:00Z"


def info(name: str = "app", attempt: int = 0, state: str = "running", exit_code: int | None = None,
         reason: str | None = None) -> ContainerInfo:
    return ContainerInfo(id=f"uid-{name}-{attempt}", pod_uid="uid", name=name, attempt=attempt, state=state,  # type: ignore[arg-type]
                         image_ref="busybox", image_id="sha256:abc", started_at="2026-11-25T09:59:58.123456789Z",
                         finished_at="2026-11-25T09:59:59.5Z" if state == "exited" else None, exit_code=exit_code,
                         reason=reason)


def pod(restart: str = "Always", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "uid"},
            "spec": {"restartPolicy": restart, "containers": [{"name": "app", "image": "busybox"}]},
            "status": status}


def view(cur: ContainerInfo | None = None, **kw: Any) -> ps.ContainerView:
    return ps.ContainerView({"name": cur.name if cur else "app", "image": "busybox"}, cur, **kw)


def test_phase_follows_upstream_rules() -> None:
    assert ps.phase("Always", [], [view()]) == "Pending"
    assert ps.phase("Always", [], [view(info())]) == "Running"
    assert ps.phase("Never", [], [view(info(state="exited", exit_code=0))]) == "Succeeded"
    assert ps.phase("Never", [], [view(info(state="exited", exit_code=1))]) == "Failed"
    assert ps.phase("OnFailure", [], [view(info(state="exited", exit_code=1))]) == "Running"
    assert ps.phase("Always", [], [view(info(state="exited", exit_code=0))]) == "Running"
    crashed = view(info(state="exited", exit_code=1), waiting=("CrashLoopBackOff", "back-off 10s"))
    assert ps.phase("Always", [], [crashed]) == "Running"
    assert ps.phase("Always", [view(info("init", state="running"))], [view()]) == "Pending"
    assert ps.phase("Never", [view(info("init", state="exited", exit_code=2))], [view()]) == "Failed"


def test_container_status_running_after_a_restart_shows_last_state() -> None:
    previous = info(attempt=0, state="exited", exit_code=137, reason="OOMKilled")
    current = info(attempt=1)
    st = ps.container_status(view(current, previous=previous, ready=True, started=True))
    assert st["restartCount"] == 1 and st["ready"] and st["started"]
    assert st["containerID"] == "runc://uid-app-1"
    assert st["state"] == {"running": {"startedAt": "2026-11-25T09:59:58Z"}}
    term = st["lastState"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137 and term["signal"] == 9
    assert term["finishedAt"] == "2026-11-25T09:59:59Z"


def test_container_status_in_crash_loop_is_waiting_with_the_exit_as_last_state() -> None:
    exited = info(attempt=3, state="exited", exit_code=3)
    st = ps.container_status(view(exited, waiting=("CrashLoopBackOff", "back-off 40s restarting failed container")))
    assert st["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert st["lastState"]["terminated"]["exitCode"] == 3
    assert st["restartCount"] == 3


def test_never_started_container_is_container_creating() -> None:
    assert ps.container_status(view())["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_conditions_keep_transition_times_and_name_unready_containers() -> None:
    p = pod(conditions=[{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    conds = {c["type"]: c for c in ps.conditions(p, "Running", [], [view(info(), ready=False)], sandbox_ready=True,
                                                  now=NOW)}
    assert conds["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert conds["Ready"]["message"] == "containers with unready status: [app]"
    assert conds["PodScheduled"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    ready = {c["type"]: c for c in ps.conditions(p, "Running", [], [view(info(), ready=True)], sandbox_ready=True,
                                                  now=NOW)}
    assert ready["Ready"]["status"] == "True" and ready["Ready"]["lastTransitionTime"] == NOW


def test_qos_classes() -> None:
    def with_res(res: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"containers": [{"name": "a", "resources": res}]}}

    assert ps.qos_class(with_res({})) == "BestEffort"
    assert ps.qos_class(with_res({"limits": {"cpu": "1", "memory": "1Gi"}})) == "Guaranteed"
    assert ps.qos_class(with_res({"requests": {"cpu": "1"}})) == "Burstable"


def test_backoff_restarts_at_once_then_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(initial=10, maximum=40, reset_after=600)
    assert b.wait("k", failed_at=100, now=100) == 0  # the first failure restarts at once
    b.retrying("k")
    assert b.wait("k", failed_at=200, now=201) == 9
    b.retrying("k")
    b.retrying("k")
    b.retrying("k")
    assert b.delay("k") == 40
    assert b.wait("k", failed_at=300, now=300, ran_for=700) == 0  # ran cleanly long enough: forgiven


def test_pull_policy_defaults_like_the_apiserver() -> None:
    assert pull_policy({"image": "busybox"}) == "Always"
    assert pull_policy({"image": "busybox:latest"}) == "Always"
    assert pull_policy({"image": "busybox:1.36"}) == "IfNotPresent"
    assert pull_policy({"image": "registry:5000/busybox"}) == "Always"
    assert pull_policy({"image": "busybox", "imagePullPolicy": "Never"}) == "Never"


def test_container_ids_are_runc_safe() -> None:
    assert container_id("0a1b2c3d-4e5f-6789-abcd-ef0123456789", "app", 2) == "0a1b2c3d4e5f-app-2"


def test_pod_files_for_cluster_first_dns(tmp_path: Path) -> None:
    p = {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"hostAliases": [{"ip": "1.2.3.4",
                                                                                    "hostnames": ["a", "b"]}]}}
    node_resolv = tmp_path / "resolv.conf"
    node_resolv.write_text("nameserver 10.255.255.53\nsearch example.org\n")
    text = podfiles.resolv_conf(p, ["10.96.0.10"], "cluster.local", node_resolv)
    assert text.splitlines() == ["search shop.svc.cluster.local svc.cluster.local cluster.local example.org",
                                 "nameserver 10.96.0.10", "options ndots:5"]
    hosts = podfiles.hosts_file(p, "10.244.1.5", "cluster.local")
    assert "10.244.1.5\tweb" in hosts.splitlines()
    assert "1.2.3.4\ta\tb" in hosts.splitlines()
    default = podfiles.resolv_conf({**p, "spec": {"dnsPolicy": "Default"}}, ["10.96.0.10"], "cluster.local",
                                   node_resolv)
    assert "nameserver 10.255.255.53" in default
    files = podfiles.write_pod_files(tmp_path / "pod", p, pod_ip="10.244.1.5", cluster_dns=["10.96.0.10"],
                                     cluster_domain="cluster.local")
    assert files["/etc/hostname"].read_text() == "web\n"
