"""Server-side printing: columns and cells as `kubectl get` shows them upstream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness.api.registry import KINDS, Kind, by_kind
from harness.apiserver import tables
from harness.apiserver.printers import human_duration

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)
POD = by_kind("v1", "Pod")
NODE = by_kind("v1", "Node")


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    return dict(zip((c["name"] for c in tables.printer_for(kind).columns),
                    tables.table_row(kind, obj, now=NOW)["cells"], strict=True))


# -- age ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (200, "3m20s"),
    (600, "10m"), (179 * 60, "179m"), (4 * 3600, "4h"), (4 * 3600 + 30 * 60, "4h30m"), (10 * 3600, "10h"),
    (47 * 3600, "47h"), (51 * 3600, "2d3h"), (3 * 86400, "3d"), (12 * 86400, "12d"), (400 * 86400, "400d"),
    (800 * 86400, "2y70d"), (3 * 365 * 86400, "3y"), (9 * 365 * 86400, "9y"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_column_and_unknown_age() -> None:
    assert row(by_kind("v1", "ConfigMap"), {"metadata": {"name": "c", "creationTimestamp": ago(200)}})["Age"] == "3m20s"
    assert row(by_kind("v1", "ConfigMap"), {"metadata": {"name": "c"}})["Age"] == "<unknown>"


# -- pods -----------------------------------------------------------------------------------


def pod(phase: str = "Running", statuses: list[dict[str, Any]] | None = None, *, init: int = 0,
        init_statuses: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    containers = [{"name": s["name"], "image": "busybox"} for s in statuses or []] or [{"name": "c", "image": "x"}]
    obj: dict[str, Any] = {
        "metadata": {"name": "p", "creationTimestamp": ago(60), **extra.pop("metadata", {})},
        "spec": {"containers": containers, "initContainers": [{"name": f"i{n}"} for n in range(init)]},
        "status": {"phase": phase, "containerStatuses": statuses or [], "initContainerStatuses": init_statuses or [],
                   **extra.pop("status", {})},
    }
    return obj


def cs(name: str = "c", *, state: dict[str, Any], ready: bool = False, restarts: int = 0,
       last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": state, "lastState": last or {}}


RUNNING = {"running": {"startedAt": ago(50)}}


@pytest.mark.parametrize(("obj", "status", "ready"), [
    (pod("Pending"), "Pending", "0/1"),
    (pod("Pending", [cs(state={"waiting": {"reason": "ContainerCreating"}})]), "ContainerCreating", "0/1"),
    (pod("Running", [cs(state=RUNNING, ready=True)]), "Running", "1/1"),
    (pod("Running", [cs(state={"waiting": {"reason": "CrashLoopBackOff"}})]), "CrashLoopBackOff", "0/1"),
    (pod("Succeeded", [cs(state={"terminated": {"exitCode": 0, "reason": "Completed"}})]), "Completed", "0/1"),
    (pod("Failed", [cs(state={"terminated": {"exitCode": 137}})]), "ExitCode:137", "0/1"),
    (pod("Failed", [cs(state={"terminated": {"exitCode": 0, "signal": 9}})]), "Signal:9", "0/1"),
    (pod("Running", [cs(state=RUNNING, ready=True)], metadata={"deletionTimestamp": ago(1)}), "Terminating", "1/1"),
    (pod("Succeeded", metadata={"deletionTimestamp": ago(1)}), "Succeeded", "0/1"),
    (pod("Running", metadata={"deletionTimestamp": ago(1)}, status={"reason": "NodeLost"}), "Unknown", "0/1"),
    (pod("Pending", init=2, init_statuses=[cs("i0", state=RUNNING)]), "Init:0/2", "0/1"),
    (pod("Pending", init=2, init_statuses=[cs("i0", state={"terminated": {"exitCode": 0}}),
                                           cs("i1", state={"waiting": {"reason": "PodInitializing"}})]),
     "Init:1/2", "0/1"),
    (pod("Pending", init=1, init_statuses=[cs("i0", state={"waiting": {"reason": "CrashLoopBackOff"}})]),
     "Init:CrashLoopBackOff", "0/1"),
    (pod("Pending", init=1, init_statuses=[cs("i0", state={"terminated": {"exitCode": 1, "reason": "Error"}})]),
     "Init:Error", "0/1"),
    (pod("Pending", init=1, init_statuses=[cs("i0", state={"terminated": {"exitCode": 2}})]), "Init:ExitCode:2", "0/1"),
    (pod("Pending", status={"conditions": [{"type": "PodScheduled", "status": "False",
                                            "reason": "SchedulingGated"}]}), "SchedulingGated", "0/1"),
    (pod("Failed", status={"reason": "Evicted"}), "Evicted", "0/1"),
])
def test_pod_status_column(obj: dict[str, Any], status: str, ready: str) -> None:
    cells = row(POD, obj)
    assert (cells["Status"], cells["Ready"]) == (status, ready)


def test_completed_pod_with_a_running_container_shows_running_or_not_ready() -> None:
    statuses = [cs("a", state={"terminated": {"exitCode": 0, "reason": "Completed"}}),
                cs("b", state=RUNNING, ready=True)]
    statuses.reverse()  # upstream walks containers last to first; "a" is seen last
    obj = pod("Running", statuses)
    assert row(POD, obj)["Status"] == "NotReady"
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert row(POD, obj)["Status"] == "Running"


def test_sidecar_init_containers_count_towards_ready() -> None:
    obj = pod("Running", [cs(state=RUNNING, ready=True)], init=1,
              init_statuses=[{**cs("i0", state=RUNNING, ready=True), "started": True}],
              status={"conditions": [{"type": "Initialized", "status": "True"}]})
    obj["spec"]["initContainers"][0]["restartPolicy"] = "Always"
    assert (row(POD, obj)["Ready"], row(POD, obj)["Status"]) == ("2/2", "Running")


def test_restarts_column_says_when_the_last_restart_was() -> None:
    last = {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}
    obj = pod("Running", [cs(state=RUNNING, ready=True, restarts=3, last=last)])
    assert row(POD, obj)["Restarts"] == "3 (5m ago)"
    assert row(POD, pod("Running", [cs(state=RUNNING, ready=True)]))["Restarts"] == "0"


def test_pod_wide_columns() -> None:
    obj = pod("Running", [cs(state=RUNNING, ready=True)])
    obj["spec"]["nodeName"] = "worker-1"
    obj["spec"]["readinessGates"] = [{"conditionType": "x"}, {"conditionType": "y"}]
    obj["status"].update(podIPs=[{"ip": "10.244.1.5"}], conditions=[{"type": "x", "status": "True"}])
    cells = row(POD, obj)
    assert [cells[c] for c in ("IP", "Node", "Nominated Node", "Readiness Gates")] == [
        "10.244.1.5", "worker-1", "<none>", "1/2"]
    assert row(POD, pod())["IP"] == "<none>"


def test_pod_columns_and_finished_row_conditions() -> None:
    columns = tables.printer_for(POD).columns
    assert [c["name"] for c in columns if c["priority"] == 0] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert [c["name"] for c in columns if c["priority"] == 1] == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert columns[0]["format"] == "name"
    done = tables.table_row(POD, pod("Succeeded"), now=NOW)
    assert done["conditions"][0]["type"] == "Completed"
    assert "conditions" not in tables.table_row(POD, pod("Running"), now=NOW)


# -- nodes ----------------------------------------------------------------------------------


def node(ready: str | None, *, unschedulable: bool = False, labels: dict[str, str] | None = None) -> dict[str, Any]:
    conditions = [{"type": "MemoryPressure", "status": "False"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready})
    return {"metadata": {"name": "n", "creationTimestamp": ago(86400 * 3), "labels": labels or {}},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": conditions,
                       "addresses": [{"type": "InternalIP", "address": "192.168.56.21"},
                                     {"type": "Hostname", "address": "n"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0-harness", "osImage": "Debian"}}}


@pytest.mark.parametrize(("obj", "status"), [
    (node("True"), "Ready"), (node("False"), "NotReady"), (node("Unknown"), "NotReady"), (node(None), "Unknown"),
    (node("True", unschedulable=True), "Ready,SchedulingDisabled"),
    (node(None, unschedulable=True), "Unknown,SchedulingDisabled"),
])
def test_node_status_column(obj: dict[str, Any], status: str) -> None:
    assert row(NODE, obj)["Status"] == status


def test_node_roles_version_and_wide_columns() -> None:
    cells = row(NODE, node("True", labels={"node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge",
                                           "node-role.kubernetes.io/": ""}))
    assert cells["Roles"] == "edge,worker"
    assert (cells["Age"], cells["Version"]) == ("3d", "v1.37.0-harness")
    assert (cells["Internal-IP"], cells["External-IP"], cells["OS-Image"], cells["Kernel-Version"]) == (
        "192.168.56.21", "<none>", "Debian", "<unknown>")
    assert row(NODE, node("True"))["Roles"] == "<none>"


# -- other kinds ----------------------------------------------------------------------------


def test_service_columns() -> None:
    svc: dict[str, Any] = {"metadata": {"name": "web", "creationTimestamp": ago(10)},
           "spec": {"type": "NodePort", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"],
                    "selector": {"b": "2", "a": "1"},
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}
    assert row(by_kind("v1", "Service"), svc) == {
        "Name": "web", "Type": "NodePort", "Cluster-IP": "10.96.0.12", "External-IP": "<none>",
        "Port(s)": "80:30080/TCP,53/UDP", "Age": "10s", "Selector": "a=1,b=2"}
    svc["spec"].update(type="LoadBalancer")
    assert row(by_kind("v1", "Service"), svc)["External-IP"] == "<pending>"


def test_endpoints_column_shows_three_and_counts_the_rest() -> None:
    ep = {"metadata": {"name": "web"},
          "subsets": [{"addresses": [{"ip": f"10.244.1.{i}"} for i in range(5)], "ports": [{"port": 80}]}]}
    assert row(by_kind("v1", "Endpoints"), ep)["Endpoints"] == (
        "10.244.1.0:80,10.244.1.1:80,10.244.1.2:80 + 2 more...")
    assert row(by_kind("v1", "Endpoints"), {"metadata": {"name": "x"}})["Endpoints"] == "<none>"


def test_deployment_columns() -> None:
    dep = {"metadata": {"name": "web", "creationTimestamp": ago(4000)},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                                                "matchExpressions": [{"key": "tier", "operator": "In",
                                                                      "values": ["b", "a"]}]},
                    "template": {"spec": {"containers": [{"name": "web", "image": "nginx"},
                                                         {"name": "log", "image": "busybox"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert row(by_kind("apps/v1", "Deployment"), dep) == {
        "Name": "web", "Ready": "2/3", "Up-to-date": 3, "Available": 2, "Age": "66m",
        "Containers": "web,log", "Images": "nginx,busybox", "Selector": "app=web,tier in (a,b)"}


def test_event_columns() -> None:
    ev = {"metadata": {"name": "p.1"}, "type": "Warning", "reason": "BackOff", "message": " Back-off \n",
          "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{c}"},
          "firstTimestamp": ago(600), "lastTimestamp": ago(30), "source": {"component": "kubelet", "host": "w1"}}
    cells = row(by_kind("v1", "Event"), ev)
    assert cells["Last Seen"] == "30s" and cells["First Seen"] == "10m"
    assert (cells["Object"], cells["Message"], cells["Count"]) == ("pod/web-1", "Back-off", 1)
    assert cells["Source"] == "kubelet, w1"
    assert [c["name"] for c in tables.printer_for(by_kind("v1", "Event")).columns if c["priority"] == 0] == [
        "Last Seen", "Type", "Reason", "Object", "Message"]


def test_rbac_columns() -> None:
    rb = {"metadata": {"name": "rb", "creationTimestamp": ago(5)}, "roleRef": {"kind": "ClusterRole", "name": "view"},
          "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                       {"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}]}
    assert row(by_kind("rbac.authorization.k8s.io/v1", "RoleBinding"), rb) == {
        "Name": "rb", "Role": "ClusterRole/view", "Age": "5s", "Users": "alice", "Groups": "devs",
        "ServiceAccounts": "kube-system/default"}
    role = {"metadata": {"name": "r", "creationTimestamp": "2026-01-01T03:04:05Z"}}
    assert row(by_kind("rbac.authorization.k8s.io/v1", "ClusterRole"), role) == {
        "Name": "r", "Created At": "2026-01-01T03:04:05Z"}


def test_counting_columns() -> None:
    assert row(by_kind("v1", "ConfigMap"), {"metadata": {"name": "c"}, "data": {"a": "1"},
                                            "binaryData": {"b": "AA=="}})["Data"] == 2
    assert row(by_kind("v1", "Secret"), {"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "MQ=="}})[
        "Type"] == "Opaque"
    assert row(by_kind("v1", "ServiceAccount"), {"metadata": {"name": "sa"}})["Secrets"] == 0
    assert row(by_kind("coordination.k8s.io/v1", "Lease"),
               {"metadata": {"name": "l"}, "spec": {"holderIdentity": "m1"}})["Holder"] == "m1"
    quota = {"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "limits.cpu": "2"}, "used": {"pods": "1"}}}
    cells = row(by_kind("v1", "ResourceQuota"), quota)
    assert (cells["Request"], cells["Limit"]) == ("pods: 1/10", "limits.cpu: 0/2")
    rev = {"metadata": {"name": "ds-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                                             "name": "ds", "controller": True}]}, "revision": 4}
    assert row(by_kind("apps/v1", "ControllerRevision"), rev)["Controller"] == "daemonset.apps/ds"


# -- the Table ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.resource)
def test_every_row_has_one_cell_per_column(kind: Kind) -> None:
    table = tables.to_table(kind, [{}, {"metadata": {"name": "x", "creationTimestamp": ago(1)}}], now=NOW)
    assert table["columnDefinitions"]
    assert all(len(r["cells"]) == len(table["columnDefinitions"]) for r in table["rows"])
    for column in table["columnDefinitions"]:
        assert set(column) == {"name", "type", "format", "description", "priority"}


def test_table_envelope_and_object_modes() -> None:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d", "resourceVersion": "7"}}
    table = tables.to_table(POD, [obj], list_meta={"resourceVersion": "42", "continue": "abc"}, now=NOW)
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert table["metadata"] == {"resourceVersion": "42", "continue": "abc"}
    assert table["rows"][0]["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                          "metadata": obj["metadata"]}
    assert tables.to_table(POD, [obj], include_object="Object")["rows"][0]["object"] == obj
    assert "object" not in tables.to_table(POD, [obj], include_object="None")["rows"][0]
    assert tables.to_table(POD, [obj])["metadata"] == {"resourceVersion": "7"}
    assert tables.to_table(POD, [obj], no_headers=True)["columnDefinitions"] == []


def test_kinds_without_a_printer_get_name_and_age() -> None:
    other = Kind(group="example.com", version="v1", kind="Widget", plural="widgets", namespaced=True)
    table = tables.to_table(other, [{"metadata": {"name": "w", "creationTimestamp": ago(5)}}], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["w", "5s"]
