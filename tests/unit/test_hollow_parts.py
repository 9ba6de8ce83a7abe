"""The pure parts of hollow nodes: addresses, the objects they write, the timetable, the key queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from harness.api import nodes as objects
from harness.hollow import podstatus
from harness.hollow.addresses import PodIPs, PoolExhausted, fake_pod_cidr, node_ip
from harness.hollow.timetable import Timetable
from harness.hollow.watching import KeyQueue

T0, T1 = "2026-01-02T03:04:05Z", "2026-01-02T03:05:00Z"

# -- addresses ------------------------------------------------------------------------------


def test_node_ips_skip_zero_and_broadcast_looking_hosts() -> None:
    assert [node_ip(i) for i in (0, 1, 253, 254, 999)] == \
           ["10.250.0.1", "10.250.0.2", "10.250.0.254", "10.250.1.1", "10.250.3.238"]
    with pytest.raises(ValueError):
        node_ip(254 * 256)


def test_fake_pod_cidrs_are_one_slash_24_per_node() -> None:
    assert fake_pod_cidr(0) == "100.64.0.0/24"
    assert fake_pod_cidr(257) == "100.65.1.0/24"


def test_pod_ips_are_sequential_skipping_network_and_gateway() -> None:
    pool = PodIPs("10.244.3.0/24")
    assert [pool.allocate(f"p{i}") for i in range(3)] == ["10.244.3.2", "10.244.3.3", "10.244.3.4"]
    assert pool.allocate("p1") == "10.244.3.3", "an owner keeps its address"
    assert pool.size == 253  # .2 to .254: no network, gateway or broadcast


def test_pod_ips_are_reused_only_once_released_and_run_out() -> None:
    pool = PodIPs("10.0.0.0/29")  # .2 .. .6
    got = [pool.allocate(f"p{i}") for i in range(5)]
    assert got[-1] == "10.0.0.6"
    with pytest.raises(PoolExhausted):
        pool.allocate("late")
    pool.release("p1")
    assert pool.allocate("late") == "10.0.0.3"


def test_pod_ips_wrap_around_after_the_last_address() -> None:
    pool = PodIPs("10.0.0.0/29")
    for i in range(5):
        pool.allocate(f"p{i}")
    pool.release("p0")
    pool.release("p4")
    assert pool.allocate("x") == "10.0.0.2"  # the next after .6 is .2 again


def test_claimed_ips_are_not_handed_out_again() -> None:
    pool = PodIPs("10.244.0.0/24")
    assert pool.claim("old", "10.244.0.2")
    assert not pool.claim("other", "10.244.0.2"), "taken by another owner"
    assert not pool.claim("far", "10.9.9.9"), "outside the range"
    assert not pool.claim("gw", "10.244.0.1"), "the gateway is not a pod address"
    assert pool.allocate("new") == "10.244.0.3"


def test_ipv6_pod_cidrs_work_too() -> None:
    assert PodIPs("fd00:10:244::/64").allocate("p") == "fd00:10:244::2"


# -- node and lease objects -----------------------------------------------------------------


def test_micro_time_has_six_fraction_digits() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert objects.micro_time(when) == "2026-01-02T03:04:05.123456Z"


def test_node_object_is_a_ready_kubelet_registration() -> None:
    shape = objects.NodeShape(cpu="8", memory="32Gi", pods=50, labels={"zone": "a"},
                              taints=[{"key": "k", "effect": "NoSchedule"}])
    node = objects.node_object("hollow-3", "10.250.0.4", shape, now=T0)
    assert node["metadata"]["labels"] == {"kubernetes.io/hostname": "hollow-3", "kubernetes.io/os": "linux",
                                          "kubernetes.io/arch": "amd64", "zone": "a"}
    assert node["spec"]["taints"] == [{"key": "k", "effect": "NoSchedule"}]
    status = node["status"]
    assert status["capacity"] == {"cpu": "8", "memory": "32Gi", "pods": "50", "ephemeral-storage": "100Gi"}
    assert [c["type"] for c in status["conditions"]] == ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    assert status["conditions"][-1]["reason"] == "KubeletReady"
    assert status["addresses"] == [{"type": "InternalIP", "address": "10.250.0.4"},
                                   {"type": "Hostname", "address": "hollow-3"}]
    assert status["nodeInfo"]["containerRuntimeVersion"] == "hollow://1.0"
    assert not objects.status_outdated(node, "10.250.0.4")


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = objects.node_conditions(T0)
    later = objects.node_conditions(T1, first)
    assert all(c["lastHeartbeatTime"] == T1 and c["lastTransitionTime"] == T0 for c in later)
    unknown = [{**c, "status": "Unknown"} if c["type"] == "Ready" else c for c in first]
    ready = next(c for c in objects.node_conditions(T1, unknown) if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == T1


def test_status_is_outdated_when_someone_else_marked_the_node_unknown() -> None:
    node = objects.node_object("n", "10.250.0.1", objects.NodeShape(), now=T0)
    node["status"]["conditions"][-1].update(status="Unknown", reason="NodeStatusUnknown")
    assert objects.status_outdated(node, "10.250.0.1")


def test_adopting_adds_labels_only_when_missing() -> None:
    shape = objects.NodeShape()
    existing: dict[str, Any] = {"metadata": {"name": "n", "labels": {"rack": "r1"}}}
    relabelled = objects.adopted(existing, shape)
    assert relabelled is not None and relabelled["metadata"]["labels"]["rack"] == "r1"
    assert objects.adopted(relabelled, shape) is None


def test_a_renewed_lease_is_held_and_owned_by_the_current_node() -> None:
    lease = objects.lease_object("n", "uid-1", renew_time="2026-01-02T03:04:05.000001Z")
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["spec"] == {"holderIdentity": "n", "leaseDurationSeconds": 40,
                             "renewTime": "2026-01-02T03:04:05.000001Z"}
    renewed = objects.renewed_lease(lease, "n", "uid-2", renew_time="2026-01-02T03:04:15.000002Z")
    assert renewed["spec"]["renewTime"] == "2026-01-02T03:04:15.000002Z"
    assert [r["uid"] for r in renewed["metadata"]["ownerReferences"]] == ["uid-2"]
    assert lease["spec"]["renewTime"].endswith("000001Z"), "the input is not changed"


# -- pod statuses ---------------------------------------------------------------------------


def pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": "hollow-0", "containers": [{"name": "a", "image": "busybox:1.36"},
                                                            {"name": "b", "image": "nginx"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort", **status}}


def test_merge_conditions_sets_by_type_and_keeps_others() -> None:
    current = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": T0},
               {"type": "example.com/Gate", "status": "False", "lastTransitionTime": T0}]
    merged = podstatus.merge_conditions(current, [{"type": "Ready", "status": "True"},
                                                  {"type": "PodScheduled", "status": "True"}], now=T1)
    assert [c["type"] for c in merged] == ["PodScheduled", "example.com/Gate", "Ready"]
    assert merged[0]["lastTransitionTime"] == T0 and merged[2]["lastTransitionTime"] == T1


def test_running_status_keeps_what_the_scheduler_wrote() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": T0}
    p = pod(conditions=[scheduled])
    status = podstatus.running_status(p, host_ip="10.250.0.1", pod_ip="10.244.0.2", now=T1)
    assert status["phase"] == "Running" and status["qosClass"] == "BestEffort"
    assert status["conditions"][0] == scheduled
    assert {c["type"]: c["status"] for c in status["conditions"]} == \
           {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    assert status["podIPs"] == [{"ip": "10.244.0.2"}] and status["hostIPs"] == [{"ip": "10.250.0.1"}]
    assert status["startTime"] == T1
    a, b = status["containerStatuses"]
    assert (a["name"], a["containerID"], a["ready"], a["started"], a["restartCount"]) == \
           ("a", "hollow://u1-a", True, True, 0)
    assert a["state"] == {"running": {"startedAt": T1}}
    assert a["imageID"].startswith("busybox:1.36@sha256:") and b["image"] == "nginx"
    assert p["status"]["phase"] == "Pending", "the input is not changed"


def test_running_status_adds_pod_scheduled_when_nobody_wrote_it() -> None:
    status = podstatus.running_status(pod(), host_ip="10.250.0.1", pod_ip="10.244.0.2", now=T1)
    assert status["conditions"][0]["type"] == "PodScheduled"


def test_terminated_status_stops_every_container() -> None:
    running = pod()
    running["status"] = podstatus.running_status(running, host_ip="10.250.0.1", pod_ip="10.244.0.2", now=T0)
    assert not podstatus.all_terminated(running)
    status = podstatus.terminated_status(running, now=T1)
    assert status["phase"] == "Succeeded"
    for ctr in status["containerStatuses"]:
        assert ctr["state"]["terminated"]["startedAt"] == T0 and ctr["state"]["terminated"]["finishedAt"] == T1
        assert not ctr["ready"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["lastTransitionTime"]) == ("False", T1)
    assert podstatus.all_terminated({**running, "status": status})


def test_which_pods_still_need_to_be_started() -> None:
    assert podstatus.needs_running(pod())
    assert not podstatus.needs_running(pod(phase="Running"))
    assert not podstatus.needs_running(pod(phase="Succeeded"))
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = T0
    assert not podstatus.needs_running(deleting)


# -- timetable and key queue ----------------------------------------------------------------


def test_timetable_pops_due_keys_in_order_and_honours_rescheduling() -> None:
    now = [0.0]
    table = Timetable(clock=lambda: now[0])
    table.at(("a", "lease"), 5)
    table.at(("b", "lease"), 2)
    table.at(("c", "lease"), 3)
    table.at(("c", "lease"), 9)  # rescheduled: the entry at 3 is stale
    table.cancel(("b", "lease"))
    assert table.pop_due(4) == []
    assert table.next_time() == 5
    assert table.pop_due(10) == [("a", "lease"), ("c", "lease")]
    assert len(table) == 0


async def test_timetable_wakes_for_a_sooner_key() -> None:
    table = Timetable()
    table.after(("late", "lease"), 3600)
    table.after(("soon", "lease"), 0)
    assert await table.wait_due() == [("soon", "lease")]


async def test_key_queue_dedupes_and_never_hands_out_a_key_twice_at_once() -> None:
    q = KeyQueue()
    q.add("ns/a")
    q.add("ns/a")
    q.add("ns/b")
    assert await q.get() == "ns/a"
    q.add("ns/a")  # changed while being worked on: comes back after done()
    assert await q.get() == "ns/b"
    q.done("ns/b")
    assert len(q) == 1 and q._queue.empty()
    q.done("ns/a")
    assert await q.get() == "ns/a"
    q.done("ns/a")
    assert q.idle()
