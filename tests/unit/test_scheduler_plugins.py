"""Scheduler plugins on hand-made NodeInfos, the algorithm around them, and the cache's assumptions."""

from __future__ import annotations

import random
from typing import Any

import pytest

from harness.scheduler.algorithm import (
    Algorithm,
    FitError,
    num_feasible_nodes_to_find,
    unschedulable_message,
)
from harness.scheduler.cache import SchedulerCache
from harness.scheduler.framework import SKIP, Code, CycleState, Handle, NodeInfo, PodInfo, Status
from harness.scheduler.plugins import REGISTRY
from harness.scheduler.plugins.balanced_allocation import BalancedAllocation
from harness.scheduler.plugins.default_binder import DefaultBinder
from harness.scheduler.plugins.node_affinity import NodeAffinity
from harness.scheduler.plugins.node_name import NodeName
from harness.scheduler.plugins.node_ports import NodePorts
from harness.scheduler.plugins.node_resources_fit import NodeResourcesFit
from harness.scheduler.plugins.node_unschedulable import NodeUnschedulable
from harness.scheduler.plugins.selector_spread import SelectorSpread
from harness.scheduler.plugins.taint_toleration import TaintToleration
from harness.scheduler.profile import DEFAULT, Profile
from harness.scheduler.runtime import Framework

GI = 1024**3
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: int = 110, labels: dict[str, str] | None = None,
         taints: list[dict[str, Any]] | None = None, unschedulable: bool = False) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": allocatable, "capacity": allocatable}}


def container(cpu: str | None = None, memory: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "image": "busybox", "resources": {"requests": requests} if requests else {}, **extra}


def pod(name: str = "p", *, cpu: str | None = None, memory: str | None = None, node_name: str = "",
        uid: str = "", owner: str = "", **spec: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}"}
    if owner:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": owner,
                                  "controller": True}]
    body = {"containers": [container(cpu, memory)], **spec}
    if node_name:
        body["nodeName"] = node_name
    return {"metadata": md, "spec": body}


def info(n: dict[str, Any], *pods: dict[str, Any]) -> NodeInfo:
    ni = NodeInfo(n["metadata"]["name"], n)
    for p in pods:
        ni.add_pod(PodInfo(p))
    return ni


def filter_(plugin: Any, p: dict[str, Any], ni: NodeInfo) -> Status | None:
    state = CycleState()
    pi = PodInfo(p)
    if hasattr(plugin, "pre_filter"):
        pre = plugin.pre_filter(state, pi)
        if pre is SKIP:
            return None
    result: Status | None = plugin.filter(state, pi, ni)
    return result


def scores(plugin: Any, p: dict[str, Any], nodes: list[NodeInfo]) -> list[int]:
    state = CycleState()
    pi = PodInfo(p)
    if hasattr(plugin, "pre_score") and plugin.pre_score(state, pi, nodes) is SKIP:
        return []
    raw = [plugin.score(state, pi, n) for n in nodes]
    if hasattr(plugin, "normalize_score"):
        plugin.normalize_score(state, pi, nodes, raw)
    return raw


H = Handle()


# -- the message a user reads ------------------------------------------------------------------


def test_unschedulable_message_groups_reasons_per_node_sorted_as_upstream() -> None:
    statuses = [Status.unschedulable("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
                Status.unschedulable("Insufficient cpu"), Status.unschedulable("Insufficient cpu")]
    assert unschedulable_message(3, statuses) == ("0/3 nodes are available: 1 node(s) had untolerated taint "
                                                  "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.")


def test_unschedulable_message_counts_each_reason_of_a_node() -> None:
    statuses = [Status.unschedulable("Insufficient cpu", "Insufficient memory"), Status.unschedulable("Too many pods")]
    assert unschedulable_message(2, statuses) == \
        "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods."


def test_unschedulable_message_without_nodes() -> None:
    assert unschedulable_message(0, []) == "no nodes available to schedule pods"


def test_algorithm_explains_why_no_node_fits() -> None:
    nodes = [info(node("cp", taints=[CONTROL_PLANE_TAINT])), info(node("a", cpu="1")), info(node("b", cpu="1"))]
    algo = Algorithm(Framework(DEFAULT, Handle()))
    with pytest.raises(FitError) as caught:
        algo.schedule(CycleState(), PodInfo(pod(cpu="2")), nodes)
    assert caught.value.message == ("0/3 nodes are available: 1 node(s) had untolerated taint "
                                    "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.")
    assert set(caught.value.statuses) == {"cp", "a", "b"}


# -- filters ------------------------------------------------------------------------------------


def test_node_name_fits_only_the_named_node() -> None:
    plugin = NodeName(H)
    assert filter_(plugin, pod(), info(node("a"))) is None
    p = pod()
    p["spec"]["nodeName"] = "b"
    status = filter_(plugin, p, info(node("a")))
    assert status is not None and status.reasons == ("node(s) didn't match the requested node name",)
    assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_node_unschedulable_keeps_out_pods_that_do_not_tolerate_cordoning() -> None:
    plugin = NodeUnschedulable(H)
    cordoned = info(node("a", unschedulable=True))
    status = filter_(plugin, pod(), cordoned)
    assert status is not None and status.reasons == ("node(s) were unschedulable",)
    tolerant = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                 "effect": "NoSchedule"}])
    assert filter_(plugin, tolerant, cordoned) is None
    assert filter_(plugin, pod(), info(node("b"))) is None


def test_taint_toleration_filter_names_the_untolerated_taint() -> None:
    plugin = TaintToleration(H)
    tainted = info(node("a", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]))
    status = filter_(plugin, pod(), tainted)
    assert status is not None and status.reasons == ("node(s) had untolerated taint {dedicated: gpu}",)
    equal = pod(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu"}])
    assert filter_(plugin, equal, tainted) is None
    wrong_value = pod(tolerations=[{"key": "dedicated", "value": "cpu"}])
    assert filter_(plugin, wrong_value, tainted) is not None
    wildcard = pod(tolerations=[{"operator": "Exists"}])
    assert filter_(plugin, wildcard, tainted) is None
    prefer = info(node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}]))
    assert filter_(plugin, pod(), prefer) is None


def test_taint_toleration_scores_fewer_intolerable_prefer_no_schedule_taints_higher() -> None:
    plugin = TaintToleration(H)
    soft = [{"key": f"k{i}", "effect": "PreferNoSchedule"} for i in range(2)]
    nodes = [info(node("clean")), info(node("one", taints=soft[:1])), info(node("two", taints=soft))]
    assert scores(plugin, pod(), nodes) == [100, 50, 0]
    tolerant = pod(tolerations=[{"key": "k0", "operator": "Exists", "effect": "PreferNoSchedule"}])
    assert scores(plugin, tolerant, nodes) == [100, 100, 0]


@pytest.mark.parametrize(("expr", "fits"), [
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, True),
    ({"key": "zone", "operator": "In", "values": ["c"]}, False),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, False),
    ({"key": "gpu", "operator": "NotIn", "values": ["x"]}, True),
    ({"key": "zone", "operator": "Exists"}, True),
    ({"key": "gpu", "operator": "DoesNotExist"}, True),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, True),
    ({"key": "cores", "operator": "Gt", "values": ["16"]}, False),
    ({"key": "cores", "operator": "Lt", "values": ["17"]}, True),
    ({"key": "cores", "operator": "Lt", "values": ["1", "2"]}, False),  # invalid: matches nothing
    ({"key": "zone", "operator": "Sideways", "values": ["a"]}, False),
])
def test_node_affinity_required_expressions(expr: dict[str, Any], fits: bool) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}
    status = filter_(NodeAffinity(H), pod(affinity=affinity), info(node("n", labels={"zone": "a", "cores": "16"})))
    assert (status is None) is fits


def test_node_affinity_terms_are_ored_and_match_fields_by_name() -> None:
    terms = [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]},
             {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    plugin = NodeAffinity(H)
    assert filter_(plugin, pod(affinity=affinity), info(node("b"))) is None
    status = filter_(plugin, pod(affinity=affinity), info(node("a")))
    assert status is not None and status.reasons == ("node(s) didn't match Pod's node affinity/selector",)
    required: dict[str, Any] = {"nodeSelectorTerms": [{}]}
    empty = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    assert filter_(plugin, pod(affinity=empty), info(node("a"))) is not None


def test_node_selector_needs_every_label() -> None:
    plugin = NodeAffinity(H)
    selector = pod(nodeSelector={"disk": "ssd", "zone": "a"})
    assert filter_(plugin, selector, info(node("a", labels={"disk": "ssd", "zone": "a", "x": "y"}))) is None
    assert filter_(plugin, selector, info(node("b", labels={"disk": "ssd"}))) is not None
    assert NodeAffinity(H).pre_filter(CycleState(), PodInfo(pod())) is SKIP


def test_node_affinity_scores_preferred_weights_normalised() -> None:
    preferred = [{"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In",
                                                                      "values": ["ssd"]}]}},
                 {"weight": 30, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}}]
    p = pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}})
    nodes = [info(node("none")), info(node("ssd", labels={"disk": "ssd"})),
             info(node("both", labels={"disk": "ssd", "zone": "a"}))]
    assert scores(NodeAffinity(H), p, nodes) == [0, 25, 100]
    assert scores(NodeAffinity(H), pod(), nodes) == []  # no preferences: skipped


def test_node_resources_fit_gives_upstream_reasons() -> None:
    plugin = NodeResourcesFit(H)
    small = info(node("a", cpu="1", memory="1Gi"), pod("x", cpu="500m", memory="512Mi", node_name="a"))
    assert filter_(plugin, pod(cpu="500m", memory="512Mi"), small) is None
    status = filter_(plugin, pod(cpu="600m", memory="600Mi"), small)
    assert status is not None and status.reasons == ("Insufficient cpu", "Insufficient memory")
    assert status.code is Code.UNSCHEDULABLE
    full = info(node("b", pods=1), pod("x", node_name="b"))
    status = filter_(plugin, pod(), full)
    assert status is not None and status.reasons == ("Too many pods",)


def test_node_resources_fit_counts_init_containers_by_the_max_rule() -> None:
    p = pod(cpu="500m", initContainers=[container("2"), container("1")])
    assert PodInfo(p).requests.milli_cpu == 2000
    sidecar = pod(cpu="500m", initContainers=[container("300m", restartPolicy="Always"), container("1")])
    # The sidecar runs with the containers (800m) and during the later init container (1300m).
    assert PodInfo(sidecar).requests.milli_cpu == 1300
    status = filter_(NodeResourcesFit(H), p, info(node("a", cpu="1500m")))
    assert status is not None and status.reasons == ("Insufficient cpu",)


def test_node_resources_fit_checks_extended_resources() -> None:
    gpu_node = node("g")
    gpu_node["status"]["allocatable"]["example.com/gpu"] = "1"
    gpu = pod()
    gpu["spec"]["containers"][0]["resources"] = {"requests": {"example.com/gpu": "2"}}
    status = filter_(NodeResourcesFit(H), gpu, info(gpu_node))
    assert status is not None and status.reasons == ("Insufficient example.com/gpu",)


def test_least_allocated_prefers_emptier_nodes_and_counts_unrequested_pods() -> None:
    busy = info(node("busy", cpu="4", memory="8Gi"), pod("x", cpu="2", memory="6Gi", node_name="busy"))
    idle = info(node("idle", cpu="4", memory="8Gi"))
    # busy: cpu (4000-3000)/4000 = 25, memory (8-7)/8 = 12 -> 18; idle: 75, 87 -> 81
    assert scores(NodeResourcesFit(H), pod(cpu="1", memory="1Gi"), [busy, idle]) == [18, 81]
    # A pod without requests counts as 100m / 200Mi when scoring.
    assert scores(NodeResourcesFit(H), pod(), [idle]) == [(97 + 97) // 2]


def test_most_allocated_strategy_packs() -> None:
    plugin = NodeResourcesFit(H, scoring_strategy="MostAllocated")
    busy = info(node("busy"), pod("x", cpu="2", memory="4Gi", node_name="busy"))
    assert scores(plugin, pod(cpu="1", memory="1Gi"), [busy, info(node("idle"))]) == [68, 18]
    with pytest.raises(ValueError, match="scoring strategy"):
        NodeResourcesFit(H, scoring_strategy="Random")


def test_balanced_allocation_prefers_even_use() -> None:
    plugin = BalancedAllocation(H)
    even = info(node("even", cpu="4", memory="4Gi"), pod("x", cpu="1", memory="1Gi", node_name="even"))
    skewed = info(node("skewed", cpu="4", memory="4Gi"), pod("y", cpu="3", node_name="skewed"))
    # even: 0.5/0.5 -> 100; skewed: cpu 1.0, memory 0.25 -> std 0.375 -> 62
    assert scores(plugin, pod(cpu="1", memory="1Gi"), [even, skewed]) == [100, 62]


def test_node_ports_conflict_by_protocol_and_ip() -> None:
    plugin = NodePorts(H)

    def with_port(name: str, port: int, *, ip: str = "", protocol: str = "", node_name: str = "") -> dict[str, Any]:
        p = pod(name, node_name=node_name)
        spec = {"containerPort": 80, "hostPort": port, **({"hostIP": ip} if ip else {}),
                **({"protocol": protocol} if protocol else {})}
        p["spec"]["containers"][0]["ports"] = [spec]
        return p

    taken = info(node("a"), with_port("x", 8080, ip="10.0.0.1", node_name="a"))
    status = filter_(plugin, with_port("p", 8080), taken)  # 0.0.0.0 clashes with every IP
    assert status is not None and status.reasons == ("node(s) didn't have free ports for the requested pod ports",)
    assert filter_(plugin, with_port("p", 8080, ip="10.0.0.1"), taken) is not None
    assert filter_(plugin, with_port("p", 8080, ip="10.0.0.2"), taken) is None
    assert filter_(plugin, with_port("p", 8080, protocol="UDP"), taken) is None
    assert filter_(plugin, with_port("p", 9090), taken) is None
    assert plugin.pre_filter(CycleState(), PodInfo(pod())) is SKIP
    ni = taken
    ni.remove_pod(PodInfo(with_port("x", 8080, ip="10.0.0.1", node_name="a")))
    assert filter_(plugin, with_port("p", 8080), ni) is None


def test_selector_spread_prefers_nodes_with_fewer_siblings() -> None:
    plugin = SelectorSpread(H)
    nodes = [info(node("a"), pod("s1", owner="rs1", node_name="a"), pod("s2", owner="rs1", node_name="a")),
             info(node("b"), pod("s3", owner="rs1", node_name="b"), pod("o", owner="other", node_name="b")),
             info(node("c"))]
    assert scores(plugin, pod(owner="rs1"), nodes) == [0, 50, 100]
    assert scores(plugin, pod(), nodes) == []  # no controller: not scored


def test_selector_spread_weighs_zones() -> None:
    zone = "topology.kubernetes.io/zone"
    nodes = [info(node("a1", labels={zone: "a"}), pod("s1", owner="rs", node_name="a1")),
             info(node("a2", labels={zone: "a"})),
             info(node("b1", labels={zone: "b"}))]
    # a2 has no sibling but its zone has one; b1 is empty in an empty zone.
    assert scores(SelectorSpread(H), pod(owner="rs"), nodes) == [0, 33, 100]


async def test_default_binder_posts_a_binding_with_the_pods_uid() -> None:
    sent: list[tuple[str, str, Any]] = []

    class FakeClient:
        async def request(self, method: str, path: str, *, body: Any = None) -> Any:
            sent.append((method, path, body))
            return {"kind": "Status", "status": "Success"}

    binder = DefaultBinder(Handle(FakeClient()))  # type: ignore[arg-type]
    assert await binder.bind(CycleState(), PodInfo(pod("web", uid="u1")), "n1") is None
    assert sent == [("POST", "/api/v1/namespaces/default/pods/web/binding",
                     {"apiVersion": "v1", "kind": "Binding",
                      "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}})]


# -- profile, framework, algorithm ---------------------------------------------------------------


def test_default_profile_names_only_registered_plugins() -> None:
    names = {*DEFAULT.pre_filter, *DEFAULT.filter, *DEFAULT.pre_score, *(n for n, _ in DEFAULT.score), *DEFAULT.bind}
    assert names <= set(REGISTRY)
    with pytest.raises(ValueError, match="unknown plugin"):
        Framework(Profile(filter=("NoSuchPlugin",), bind=("DefaultBinder",)), Handle())
    with pytest.raises(ValueError, match="does not implement Filter"):
        Framework(Profile(filter=("DefaultBinder",), bind=("DefaultBinder",)), Handle())


@pytest.mark.parametrize(("nodes", "percentage", "wanted"), [
    (50, 0, 50), (99, 10, 99), (1000, 0, 420), (5000, 0, 500), (20000, 0, 1000), (1000, 5, 100),
    (1000, 100, 1000), (300, 50, 150),
])
def test_num_feasible_nodes_to_find_is_adaptive_as_upstream(nodes: int, percentage: int, wanted: int) -> None:
    assert num_feasible_nodes_to_find(nodes, percentage) == wanted


def test_algorithm_stops_at_enough_feasible_nodes_and_rotates_its_start() -> None:
    nodes = [info(node(f"n{i:04d}")) for i in range(1000)]
    algo = Algorithm(Framework(DEFAULT, Handle()))
    pi = PodInfo(pod(cpu="100m"))
    state = CycleState()
    algo.framework.run_pre_filter(state, pi)
    feasible, _, evaluated = algo.find_feasible(state, pi, nodes)
    assert len(feasible) == evaluated == 420
    again, _, _ = algo.find_feasible(state, pi, nodes)
    assert again[0].name == "n0420"


def test_select_host_picks_the_best_and_breaks_ties_at_random() -> None:
    nodes = [info(node(n)) for n in "abc"]
    algo = Algorithm(Framework(DEFAULT, Handle()), rng=random.Random(7))
    assert algo.select_host(nodes, [10, 30, 20]) == "b"
    picks = {algo.select_host(nodes, [5, 5, 5]) for _ in range(100)}
    assert picks == {"a", "b", "c"}


def test_scheduling_spreads_a_replicaset_and_places_by_selector() -> None:
    nodes = [info(node(f"n{i}", labels={"disk": "ssd" if i == 2 else "hdd"})) for i in range(3)]
    algo = Algorithm(Framework(DEFAULT, Handle()))
    placed = []
    for i in range(6):
        pi = PodInfo(pod(f"r{i}", cpu="100m", owner="rs"))
        chosen = algo.schedule(CycleState(), pi, nodes).node
        next(n for n in nodes if n.name == chosen).add_pod(PodInfo(pod(f"r{i}", cpu="100m", owner="rs",
                                                                        node_name=chosen)))
        placed.append(chosen)
    assert sorted(placed) == ["n0", "n0", "n1", "n1", "n2", "n2"]
    assert algo.schedule(CycleState(), PodInfo(pod(nodeSelector={"disk": "ssd"})), nodes).node == "n2"


# -- the cache's assumptions ---------------------------------------------------------------------


def test_assumed_pod_counts_until_confirmed_forgotten_or_expired() -> None:
    now = [0.0]
    cache = SchedulerCache(assume_ttl=30.0, clock=lambda: now[0])
    cache.add_node(node("a", cpu="1"))
    assumed = PodInfo(pod("x", cpu="600m", node_name="a"))
    cache.assume(assumed, "a")
    ni = cache.node("a")
    assert ni is not None and ni.requested.milli_cpu == 600
    status = filter_(NodeResourcesFit(H), pod("y", cpu="600m"), ni)
    assert status is not None and status.reasons == ("Insufficient cpu",)

    cache.forget(assumed)  # binding failed
    assert ni.requested.milli_cpu == 0

    cache.assume(assumed, "a")
    cache.finish_binding(assumed)
    now[0] = 29.0
    assert cache.cleanup_expired() == []
    cache.add_pod(pod("x", cpu="600m", node_name="a"))  # the watch confirms it
    assert not cache.is_assumed(assumed.uid)
    now[0] = 100.0
    assert cache.cleanup_expired() == []
    assert ni.requested.milli_cpu == 600

    other = PodInfo(pod("z", cpu="100m", node_name="a"))
    cache.assume(other, "a")
    cache.finish_binding(other)
    now[0] = 131.0
    assert [p.key for p in cache.cleanup_expired()] == ["default/z"]
    assert ni.requested.milli_cpu == 600


def test_cache_frees_finished_pods_and_keeps_pods_of_a_deleted_node() -> None:
    cache = SchedulerCache()
    cache.add_node(node("a"))
    running = pod("x", cpu="1", node_name="a")
    cache.add_pod(running)
    done = {**running, "status": {"phase": "Succeeded"}}
    cache.update_pod(done)
    ni = cache.node("a")
    assert ni is not None and ni.requested.milli_cpu == 0 and cache.pod_count() == 0
    cache.add_pod(running)
    cache.remove_node(node("a"))
    assert cache.node_list() == [] and cache.pod_count() == 1
    cache.remove_pod(running)
    assert cache.node("a") is None
