"""Quota evaluation (harness.api.quota): what objects use of quota resources, which quotas select them, and the
status the resource quota controller recalculates — upstream's evaluators, table by table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from harness.api import quota, registry
from harness.api.quota import Amount

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PODS = quota.evaluator_for("", "pods")
SERVICES = quota.evaluator_for("", "services")
assert PODS is not None and SERVICES is not None


def raw(amounts: quota.ResourceList) -> dict[str, str]:
    return quota.to_raw(amounts)


def ctr(name: str = "c", requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
        **extra: Any) -> dict[str, Any]:
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None}
    return {"name": name, "image": "busybox", "resources": resources, **extra}


def pod(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None, phase: str = "Running",
        metadata: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", **(metadata or {})},
            "spec": {"containers": list(containers) or [ctr()], "initContainers": init or [], **spec},
            "status": {"phase": phase}}


# -- amounts --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "total"), [
    ("1Gi", "512Mi", "1536Mi"),
    ("0", "1Gi", "1Gi"),          # a zero takes the other's format, as upstream's Quantity.Add
    ("500m", "1", "1500m"),
    ("1", "1", "2"),
    ("1k", "1", "1001"),
    ("2e3", "1e3", "3e3"),
    (1, "2", "3"),
])
def test_sums_keep_the_format_they_were_written_in(a: Any, b: Any, total: str) -> None:
    assert str(Amount.of(a).plus(Amount.of(b))) == total


def test_resource_list_arithmetic_is_upstreams() -> None:
    a, b = quota.resource_list({"cpu": "1", "memory": "1Gi", "pods": 2}), quota.resource_list({"cpu": "1500m",
                                                                                               "secrets": "1"})
    assert raw(quota.add(a, b)) == {"cpu": "2500m", "memory": "1Gi", "pods": "2", "secrets": "1"}
    assert raw(quota.subtract_non_negative(a, b)) == {"cpu": "0", "memory": "1Gi", "pods": "2", "secrets": "0"}
    assert raw(quota.remove_zeros(quota.subtract_non_negative(a, b))) == {"memory": "1Gi", "pods": "2"}
    assert quota.exceeding(quota.resource_list({"cpu": "2", "pods": "1"}), a) == ["cpu"]
    assert quota.equals(quota.resource_list({"cpu": "1000m"}), quota.resource_list({"cpu": "1"}))
    assert not quota.equals(quota.resource_list({"cpu": "1"}), quota.resource_list({"cpu": "1", "pods": "0"}))
    assert quota.pretty(quota.resource_list({"requests.memory": "1Gi", "requests.cpu": "2"})) == \
        "requests.cpu=2,requests.memory=1Gi"
    assert quota.negative(quota.resource_list({"cpu": "-1", "pods": "1"})) == ["cpu"]
    assert quota.resource_list({"cpu": "lots", "pods": "1"}) == {"pods": Amount.of("1")}


# -- pods -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "obj", "usage"), [
    ("requests and limits of one container", pod(ctr(requests={"cpu": "500m", "memory": "128Mi"},
                                                     limits={"cpu": "1", "memory": "256Mi"})),
     {"count/pods": "1", "pods": "1", "cpu": "500m", "requests.cpu": "500m", "limits.cpu": "1",
      "memory": "128Mi", "requests.memory": "128Mi", "limits.memory": "256Mi"}),
    ("containers are summed", pod(ctr("a", requests={"cpu": "250m"}), ctr("b", requests={"cpu": "1",
                                                                                        "memory": "1Gi"})),
     {"count/pods": "1", "pods": "1", "cpu": "1250m", "requests.cpu": "1250m", "memory": "1Gi",
      "requests.memory": "1Gi"}),
    ("an init container larger than the containers sets the pod's request",
     pod(ctr(requests={"cpu": "500m", "memory": "1Gi"}), init=[ctr("i", requests={"cpu": "2", "memory": "64Mi"})]),
     {"count/pods": "1", "pods": "1", "cpu": "2", "requests.cpu": "2", "memory": "1Gi", "requests.memory": "1Gi"}),
    ("a sidecar runs alongside the containers and the init containers after it",
     pod(ctr(requests={"cpu": "1"}), init=[ctr("side", requests={"cpu": "500m"}, restartPolicy="Always"),
                                           ctr("i", requests={"cpu": "1200m"})]),
     {"count/pods": "1", "pods": "1", "cpu": "1700m", "requests.cpu": "1700m"}),
    ("overhead is added to requests, and to limits that are set",
     pod(ctr(requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "2"}), overhead={"cpu": "250m",
                                                                                   "memory": "64Mi"}),
     {"count/pods": "1", "pods": "1", "cpu": "1250m", "requests.cpu": "1250m", "limits.cpu": "2250m",
      "memory": "1088Mi", "requests.memory": "1088Mi"}),
    ("pod-level resources replace the containers' cpu and memory",
     pod(ctr(requests={"cpu": "100m", "ephemeral-storage": "1Gi"}),
         resources={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}),
     {"count/pods": "1", "pods": "1", "cpu": "1", "requests.cpu": "1", "memory": "2Gi", "requests.memory": "2Gi",
      "limits.memory": "4Gi", "ephemeral-storage": "1Gi", "requests.ephemeral-storage": "1Gi"}),
    ("hugepages and extended resources", pod(ctr(requests={"hugepages-2Mi": "4Mi", "example.com/gpu": "2"},
                                                 limits={"hugepages-2Mi": "4Mi", "example.com/gpu": "2"})),
     {"count/pods": "1", "pods": "1", "hugepages-2Mi": "4Mi", "requests.hugepages-2Mi": "4Mi",
      "requests.example.com/gpu": "2"}),
    ("ephemeral storage", pod(ctr(requests={"ephemeral-storage": "1G"}, limits={"ephemeral-storage": "2G"})),
     {"count/pods": "1", "pods": "1", "ephemeral-storage": "1G", "requests.ephemeral-storage": "1G",
      "limits.ephemeral-storage": "2G"}),
    ("a succeeded pod only counts as an object", pod(ctr(requests={"cpu": "1"}), phase="Succeeded"),
     {"count/pods": "1"}),
    ("a failed pod only counts as an object", pod(ctr(requests={"cpu": "1"}), phase="Failed"), {"count/pods": "1"}),
    ("a pod deleted past its grace period only counts as an object",
     pod(ctr(requests={"cpu": "1"}), metadata={"deletionTimestamp": "2026-01-01T11:59:00Z",
                                               "deletionGracePeriodSeconds": 30}),
     {"count/pods": "1"}),
    ("a pod within its grace period still counts",
     pod(ctr(requests={"cpu": "1"}), metadata={"deletionTimestamp": "2026-01-01T11:59:50Z",
                                               "deletionGracePeriodSeconds": 30}),
     {"count/pods": "1", "pods": "1", "cpu": "1", "requests.cpu": "1"}),
    ("a best-effort pod", pod(), {"count/pods": "1", "pods": "1"}),
])
def test_pod_usage(case: str, obj: dict[str, Any], usage: dict[str, str]) -> None:
    assert raw(PODS.usage(obj, NOW)) == usage, case


@pytest.mark.parametrize(("required", "obj", "message"), [
    (["limits.cpu", "limits.memory", "pods"], pod(ctr("nginx")),
     "must specify limits.cpu for: nginx; limits.memory for: nginx"),
    (["requests.cpu"], pod(ctr("b"), ctr("a", requests={"cpu": "1"}), init=[ctr("i"), ctr("c")]),
     "must specify requests.cpu for: b,c,i"),
    (["cpu", "memory"], pod(ctr(requests={"cpu": "1", "memory": "1Gi"})), ""),
    # Only cpu and memory must be stated (upstream's backward-compatibility rule), not storage or extended ones.
    (["requests.ephemeral-storage", "requests.example.com/gpu", "pods"], pod(ctr()), ""),
])
def test_pod_constraints_name_the_containers_that_state_nothing(required: list[str], obj: dict[str, Any],
                                                                message: str) -> None:
    assert PODS.constraints(required, obj) == message


def test_pods_are_charged_for_compute_hugepages_and_extended_requests_only() -> None:
    asked = ["pods", "requests.cpu", "services", "count/pods", "requests.hugepages-1Gi", "requests.example.com/gpu",
             "limits.example.com/gpu", "configmaps", "hugepages-2Mi"]
    assert PODS.matching_resources(asked) == ["pods", "requests.cpu", "count/pods", "requests.hugepages-1Gi",
                                              "requests.example.com/gpu", "hugepages-2Mi"]


# -- scopes ---------------------------------------------------------------------------------------------------------

BURSTABLE = pod(ctr(requests={"cpu": "1"}))
DEADLINE = pod(activeDeadlineSeconds=60)
HIGH = pod(priorityClassName="high")
CROSS = pod(affinity={"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
    {"weight": 1, "podAffinityTerm": {"topologyKey": "zone", "namespaceSelector": {}}}]}})


@pytest.mark.parametrize(("selector", "obj", "selected"), [
    ({"scopeName": "Terminating", "operator": "Exists"}, DEADLINE, True),
    ({"scopeName": "Terminating", "operator": "Exists"}, BURSTABLE, False),
    ({"scopeName": "NotTerminating", "operator": "Exists"}, BURSTABLE, True),
    ({"scopeName": "BestEffort", "operator": "Exists"}, pod(), True),
    ({"scopeName": "BestEffort", "operator": "Exists"}, BURSTABLE, False),
    ({"scopeName": "BestEffort", "operator": "Exists"}, pod(ctr(requests={"cpu": "0"})), True),
    ({"scopeName": "NotBestEffort", "operator": "Exists"}, BURSTABLE, True),
    ({"scopeName": "PriorityClass", "operator": "Exists"}, HIGH, True),
    ({"scopeName": "PriorityClass", "operator": "Exists"}, pod(), False),
    ({"scopeName": "PriorityClass", "operator": "In", "values": ["high", "mid"]}, HIGH, True),
    ({"scopeName": "PriorityClass", "operator": "In", "values": ["low"]}, HIGH, False),
    ({"scopeName": "PriorityClass", "operator": "NotIn", "values": ["low"]}, HIGH, True),
    ({"scopeName": "PriorityClass", "operator": "NotIn", "values": ["low"]}, pod(), True),
    ({"scopeName": "PriorityClass", "operator": "DoesNotExist"}, pod(), True),
    ({"scopeName": "PriorityClass", "operator": "DoesNotExist"}, HIGH, False),
    ({"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}, CROSS, True),
    ({"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}, BURSTABLE, False),
])
def test_pod_scopes(selector: dict[str, Any], obj: dict[str, Any], selected: bool) -> None:
    assert PODS.matches_scope(selector, obj) is selected


def rq(hard: dict[str, Any], *, scopes: list[str] | None = None, expressions: list[dict[str, Any]] | None = None,
       used: dict[str, Any] | None = None, spec_hard: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"hard": hard if spec_hard is None else spec_hard}
    if scopes:
        spec["scopes"] = scopes
    if expressions:
        spec["scopeSelector"] = {"matchExpressions": expressions}
    status: dict[str, Any] = {"hard": hard}
    if used is not None:
        status["used"] = used
    return {"metadata": {"name": "q", "namespace": "ns", "resourceVersion": "5"}, "spec": spec, "status": status}


@pytest.mark.parametrize(("case", "q", "obj", "evaluator", "selected"), [
    ("a pod quota selects a pod", rq({"pods": "2"}), pod(), PODS, True),
    ("a quota on other things does not", rq({"services": "2"}), pod(), PODS, False),
    ("the quota's status.hard decides, not its spec", rq({}, spec_hard={"pods": "2"}), pod(), PODS, False),
    ("every scope must select the pod", rq({"pods": "2"}, scopes=["BestEffort", "NotTerminating"]), pod(), PODS,
     True),
    ("one scope that does not is enough", rq({"pods": "2"}, scopes=["BestEffort", "Terminating"]), pod(), PODS,
     False),
    ("a scope selector", rq({"pods": "2"}, expressions=[{"scopeName": "PriorityClass", "operator": "In",
                                                          "values": ["high"]}]), HIGH, PODS, True),
    ("nothing but pods is in a scope", rq({"services": "2"}, scopes=["NotBestEffort"]), {"spec": {}}, SERVICES,
     False),
])
def test_which_quotas_select_an_object(case: str, q: dict[str, Any], obj: dict[str, Any],
                                       evaluator: quota.Evaluator, selected: bool) -> None:
    assert quota.matches(evaluator, q, obj) is selected, case


# -- other kinds ----------------------------------------------------------------------------------------------------

def svc(kind: str = "ClusterIP", ports: int = 2, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "s", "namespace": "ns"},
            "spec": {"type": kind, "ports": [{"port": 80 + i, **({"nodePort": 30000 + i} if i == 0 else {})}
                                             for i in range(ports)], **spec}}


@pytest.mark.parametrize(("obj", "nodeports", "balancers"), [
    (svc(), "0", "0"),
    (svc("NodePort"), "2", "0"),
    (svc("LoadBalancer", 3), "3", "1"),
    # Without node ports allocated, only the ports that ask for one by number hold one.
    (svc("LoadBalancer", 3, allocateLoadBalancerNodePorts=False), "1", "1"),
    (svc("ExternalName", 0), "0", "0"),
])
def test_service_usage(obj: dict[str, Any], nodeports: str, balancers: str) -> None:
    assert raw(SERVICES.usage(obj, NOW)) == {"count/services": "1", "services": "1",
                                              "services.nodeports": nodeports, "services.loadbalancers": balancers}


@pytest.mark.parametrize(("group", "resource", "names", "operations"), [
    ("", "configmaps", ["count/configmaps", "configmaps"], ["CREATE"]),
    ("", "secrets", ["count/secrets", "secrets"], ["CREATE"]),
    ("", "replicationcontrollers", ["count/replicationcontrollers", "replicationcontrollers"], ["CREATE"]),
    ("", "resourcequotas", ["count/resourcequotas", "resourcequotas"], ["CREATE"]),
    ("", "serviceaccounts", ["count/serviceaccounts"], ["CREATE"]),
    ("apps", "deployments", ["count/deployments.apps"], ["CREATE"]),
    ("coordination.k8s.io", "leases", ["count/leases.coordination.k8s.io"], ["CREATE"]),
    ("", "services", ["count/services", "services", "services.nodeports", "services.loadbalancers"],
     ["CREATE", "UPDATE"]),
    ("", "pods", ["count/pods", "pods"], ["CREATE"]),
])
def test_every_namespaced_kind_is_counted(group: str, resource: str, names: list[str],
                                          operations: list[str]) -> None:
    evaluator = quota.evaluator_for(group, resource)
    assert evaluator is not None
    assert evaluator.matching_resources([*names, "count/other"]) == names
    assert [op for op in ("CREATE", "UPDATE", "DELETE") if evaluator.handles(op)] == operations
    if group or resource not in ("pods", "services"):
        assert raw(evaluator.usage({"metadata": {"name": "x"}}, NOW)) == dict.fromkeys(names, "1")


def test_events_and_cluster_scoped_kinds_are_not_counted() -> None:
    assert quota.evaluator_for("", "events") is None
    assert quota.evaluator_for("", "nodes") is None and quota.evaluator_for("", "namespaces") is None
    assert quota.evaluator_for("authorization.k8s.io", "localsubjectaccessreviews") is None
    counted = {(k.group, k.plural) for k in registry.STORED_KINDS if k.namespaced} - {("", "events")}
    assert set(quota.EVALUATORS) == counted


# -- recalculation (the controller's) -------------------------------------------------------------------------------

def objects(pods: list[dict[str, Any]], services: list[dict[str, Any]] | None = None,
            configmaps: int = 0) -> quota.ObjectsOf:
    by_kind = {"pods": pods, "services": services or [],
               "configmaps": [{"metadata": {"name": f"cm{i}"}} for i in range(configmaps)]}
    return lambda evaluator: by_kind.get(evaluator.kind.plural, [])


RUNNING = [pod(ctr(requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"})),
           pod(ctr(requests={"cpu": "250m", "memory": "512Mi"})), pod(), pod(ctr(requests={"cpu": "4"}),
                                                                          phase="Succeeded")]


def test_a_new_quota_gets_hard_from_its_spec_and_used_from_the_objects() -> None:
    q = {"metadata": {"name": "q", "namespace": "ns"},
         "spec": {"hard": {"pods": "10", "count/pods": 10, "requests.cpu": "2000m", "requests.memory": "4Gi",
                           "limits.cpu": "4", "configmaps": "5", "services.nodeports": "3",
                           "requests.storage": "10Gi"}}}
    status = quota.sync_status(q, objects(RUNNING, [svc("NodePort"), svc()], configmaps=2), NOW)
    assert status == {
        "hard": {"pods": "10", "count/pods": "10", "requests.cpu": "2", "requests.memory": "4Gi", "limits.cpu": "4",
                 "configmaps": "5", "services.nodeports": "3", "requests.storage": "10Gi"},
        # requests.storage: no kind here is charged for it, so it has no usage to report.
        "used": {"pods": "3", "count/pods": "4", "requests.cpu": "750m", "requests.memory": "1536Mi",
                 "limits.cpu": "1", "configmaps": "2", "services.nodeports": "2"}}


def test_a_quota_whose_status_is_current_needs_no_write() -> None:
    q = rq({"pods": "10", "requests.cpu": "2"}, used={"pods": "3", "requests.cpu": "750m"})
    assert quota.sync_status(q, objects(RUNNING), NOW) is None
    # The same amounts written differently are the same.
    q = rq({"pods": "10", "requests.cpu": "2000m"}, used={"pods": 3, "requests.cpu": "0.75"})
    assert quota.sync_status(q, objects(RUNNING), NOW) is None


def test_usage_goes_down_with_the_objects_and_follows_a_new_spec() -> None:
    q = rq({"pods": "10"}, used={"pods": "7"})
    assert quota.sync_status(q, objects(RUNNING), NOW) == {"hard": {"pods": "10"}, "used": {"pods": "3"}}
    q = rq({"pods": "10"}, used={"pods": "3"}, spec_hard={"pods": "5", "secrets": "1"})
    assert quota.sync_status(q, objects(RUNNING), NOW) == {"hard": {"pods": "5", "secrets": "1"},
                                                           "used": {"pods": "3", "secrets": "0"}}


def test_a_scoped_quota_counts_only_the_pods_its_scopes_select() -> None:
    best_effort = rq({"pods": "10"}, scopes=["BestEffort"], used={"pods": "0"})
    assert quota.sync_status(best_effort, objects(RUNNING), NOW) == {"hard": {"pods": "10"}, "used": {"pods": "1"}}
    high = rq({"pods": "10"}, expressions=[{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}],
              used={"pods": "0"})
    assert quota.sync_status(high, objects([*RUNNING, HIGH]), NOW) == {"hard": {"pods": "10"}, "used": {"pods": "1"}}
