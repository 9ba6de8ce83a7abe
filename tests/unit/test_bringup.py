"""The logic around `harness up`: host-gw routes from Nodes, playbook events to progress and failures, Node
readiness, `--set` settings, and the inventory's cluster variables."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli.machines import parse_settings
from harness.client import kubeconfig
from harness.cluster import pki
from harness.cluster.bringup import BringUp, node_states
from harness.cluster.inventory import inventory
from harness.cluster.local import NodeSpec
from harness.cluster.provision import ProvisionError, TaskFailure, _message, _Progress
from harness.cluster.spec import DEFAULT_SPEC_PATH, load_spec
from harness.kubelet.network.routeagent import node_routes


def node(name: str, cidr: str | None, ip: str | None, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "Hostname", "address": name}]
                       + ([{"type": "InternalIP", "address": ip}] if ip else []),
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_node_routes_need_a_pod_cidr_and_an_internal_ip_and_skip_this_node() -> None:
    nodes = [node("worker-1", "10.244.0.0/24", "192.168.56.21"), node("worker-2", "10.244.1.0/24", "192.168.56.22"),
             node("worker-3", None, "192.168.56.23"), node("worker-4", "10.244.3.0/24", None)]
    assert node_routes(nodes) == {"10.244.0.0/24": "192.168.56.21", "10.244.1.0/24": "192.168.56.22"}
    assert node_routes(nodes, skip="worker-1") == {"10.244.1.0/24": "192.168.56.22"}


def test_node_states_read_readiness_and_pod_cidr() -> None:
    states = node_states({"items": [node("worker-1", "10.244.0.0/24", "192.168.56.21"),
                                    node("worker-2", None, "192.168.56.22", ready=False)]})
    assert (states["worker-1"].ready, states["worker-1"].pod_cidr) == (True, "10.244.0.0/24")
    assert (states["worker-2"].ready, states["worker-2"].pod_cidr) == (False, "")


def event(kind: str, **data: Any) -> dict[str, Any]:
    return {"event": kind, "event_data": data}


def test_progress_says_each_play_and_task_once_and_records_real_failures() -> None:
    said: list[str] = []
    progress = _Progress(said.append)
    for e in [event("playbook_on_play_start", play="Harness cluster"),
              event("playbook_on_task_start", task="Etcd | wait for health"),
              event("playbook_on_task_start", task="Etcd | wait for health"),
              event("runner_on_failed", host="master-1", task="Etcd | wait", ignore_errors=True, res={"msg": "x"}),
              event("runner_on_failed", host="master-2", task="Etcd | wait for health",
                    res={"msg": "non-zero return code", "stderr": "line 1\nconnection refused"}),
              event("runner_on_unreachable", host="worker-1", task="Gathering Facts",
                    res={"msg": "ssh: connect to host 192.168.56.21 port 22: No route to host"}),
              event("playbook_on_stats", ok={"master-1": 5}, changed={"master-1": 2}, failures={"master-2": 1})]:
        assert progress(e) is True
    assert said == ["play: Harness cluster", "  Etcd | wait for health"]
    assert progress.tasks == 2
    assert progress.failures == [
        TaskFailure("master-2", "Etcd | wait for health", "failed", "non-zero return code"),
        TaskFailure("worker-1", "Gathering Facts", "unreachable",
                    "ssh: connect to host 192.168.56.21 port 22: No route to host")]
    assert progress.recap["master-1"]["changed"] == 2 and progress.recap["master-2"]["failures"] == 1


def test_failure_messages_prefer_msg_then_output_then_the_failed_loop_item() -> None:
    assert _message({"stderr": "a\nb\nc\nd"}) == "b c d"
    assert _message({"results": [{"item": "ok"}, {"item": "harness-dns", "failed": True, "msg": "FATAL"}]}) \
        == "item 'harness-dns': FATAL"
    assert _message({}) == "(no message)"
    error = ProvisionError("ansible-playbook failed (exit 2)",
                           [TaskFailure("master-1", "Etcd | wait for health", "failed", "timeout")], Path("x.log"))
    assert str(error) == ("ansible-playbook failed (exit 2)\n  master-1: task 'Etcd | wait for health' failed: "
                          "timeout\nfull log: x.log")


def test_settings_are_yaml_values_and_bad_ones_say_what_to_write() -> None:
    assert parse_settings(["a=30", "b=true", "c=text", "d="]) == {"a": 30, "b": True, "c": "text", "d": ""}
    with pytest.raises(SystemExit, match="VAR=VALUE"):
        parse_settings(["no-equals"])
    with pytest.raises(SystemExit, match="VAR=VALUE"):
        parse_settings(["bad name=1"])


def test_inventory_carries_the_spec_networks_and_settings_for_every_role() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    nodes = [NodeSpec(n.name, n.role, n.ip) for n in spec.nodes()]
    inv = inventory("demo", nodes, Path("/k"), spec.cluster_vars(), {"harness_log_level": "debug"})
    assert inv["all"]["vars"] == {"cluster_name": "demo", "node_network": "192.168.56.0/24",
                                  "node_gateway": "192.168.56.1", "pod_cidr": "10.244.0.0/16",
                                  "service_cidr": "10.96.0.0/12", "cluster_dns": "10.96.0.10"}
    hosts = {**inv["all"]["children"]["masters"]["hosts"], **inv["all"]["children"]["workers"]["hosts"]}
    assert {name: h["harness_log_level"] for name, h in hosts.items()} == dict.fromkeys(hosts, "debug")
    assert list(inv["all"]["children"]["etcd"]["hosts"]) == ["master-1"]
    assert inv["all"]["children"]["workers"]["hosts"]["worker-2"]["node_ip"] == "192.168.56.22"
    assert yaml.safe_load(yaml.safe_dump(inv)) == inv


def test_vms_are_reached_as_vagrant_with_sudo_and_local_nodes_as_root() -> None:
    nodes = [NodeSpec("master-1", "master", "192.168.57.10")]
    vm = inventory("vagrant", nodes, Path("/k"), ssh_user="vagrant")["all"]["children"]["masters"]["hosts"]["master-1"]
    assert (vm["ansible_user"], vm["ansible_become"]) == ("vagrant", True)
    local = inventory("demo", nodes, Path("/k"))["all"]["children"]["masters"]["hosts"]["master-1"]
    assert local["ansible_user"] == "root" and "ansible_become" not in local


def test_leader_election_periods_take_fractional_seconds_or_go_durations() -> None:
    import argparse

    from harness.cli.flags import seconds

    assert [seconds(t) for t in ("2", "1.5", "0.2", "15s", "1.5s", "200ms", "1m30s", "1h")] == [
        2, 1.5, 0.2, 15, 1.5, 0.2, 90, 3600]
    for bad in ("", "s", "15x", "ms1", "-"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
            seconds(bad)


def test_event_ttl_takes_seconds_or_go_durations() -> None:
    import argparse

    from harness.cli.flags import duration

    assert [duration(t) for t in ("3600", "1h", "30m", "90s", "1h30m", "2m5s")] == [3600, 3600, 1800, 90, 5400, 125]
    for bad in ("", "1d", "h", "5 m", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
            duration(bad)


def test_each_machine_gets_its_components_kubeconfigs_and_workers_a_bootstrap_token(tmp_path: Path) -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    cluster = BringUp("demo", spec, tmp_path / "inventory" / "demo")
    cluster.pki_dir.mkdir(parents=True)
    (cluster.pki_dir / pki.BOOTSTRAP_TOKEN).write_text("abcdef.0123456789abcdef\n")  # as `pki.ensure` makes it
    cluster.write_component_kubeconfigs()
    made = sorted(str(p.relative_to(cluster.kubeconfigs_dir)) for p in cluster.kubeconfigs_dir.rglob("*.conf"))
    assert made == sorted([*(f"master-1/{c}.conf" for c in ("admin", "scheduler", "controller-manager", "dns",
                                                             "pod-routes")),
                           *(f"worker-{i}/{c}.conf" for i in (1, 2) for c in ("bootstrap-kubelet", "kube-proxy"))])
    kubelet = kubeconfig.load(cluster.kubeconfigs_dir / "worker-2" / "bootstrap-kubelet.conf")
    assert (kubelet.servers, kubelet.user) == (["https://192.168.56.10:6443"], "tls-bootstrap-token-user")
    assert (kubelet.ca_file, kubelet.cert_file, kubelet.token) == (
        "/etc/harness/pki/ca.crt", "", pki.bootstrap_token(cluster.pki_dir))
    assert stat.S_IMODE((cluster.kubeconfigs_dir / "worker-2" / "bootstrap-kubelet.conf").stat().st_mode) == 0o600
    admin = cluster.admin()
    assert (admin.user, Path(admin.cert_file)) == ("kubernetes-admin", (cluster.pki_dir / "admin.crt").resolve())
