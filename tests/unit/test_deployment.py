"""Deployment controller: seed the caches, reconcile, assert the exact API actions made.

A small `World` lands the controller's writes in the caches (as the informers would after the
apiserver answered) and plays the ReplicaSet controller's part by hand: `settle` makes each
set's status catch up with its spec, so a rollout can be followed step by step.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness.api import conditions, errors, meta
from harness.api.meta import Obj
from harness.api.patch import apply_merge_patch
from harness.api.selectors import label_selector_from_spec
from harness.controllers.base import DEPLOYMENTS, PODS, REPLICASETS, controller_of
from harness.controllers.deployment import DeploymentController
from harness.controllers.deployment_rollout import proportional_steps
from harness.controllers.deployment_util import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    POD_TEMPLATE_HASH,
    REVISION,
    REVISION_HISTORY,
    compute_hash,
    fenceposts,
)
from tests.unit.fakes import context

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid", "controller": True,
         "blockOwnerDeletion": True}


def template(image: str) -> Obj:
    return {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}


def deployment(replicas: int = 3, image: str = "web:1", *, surge: Any = "25%", unavailable: Any = "25%",
               **spec: Any) -> Obj:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 1, "resourceVersion": "1",
                         "annotations": {"kubernetes.io/change-cause": "first"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template(image),
                     "strategy": strategy, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600, **spec}}


def replicaset(name: str, image: str, replicas: int, *, revision: int, available: int | None = None,
               created: str = "2025-12-01T00:00:00Z", owner: Obj | None = OWNER, desired: int | None = None) -> Obj:
    labels = {"app": "web", POD_TEMPLATE_HASH: name.rsplit("-", 1)[-1]}
    tmpl = template(image)
    tmpl["metadata"]["labels"] = labels
    anns = {REVISION: str(revision), "kubernetes.io/change-cause": "first"}
    if desired is not None:
        anns |= {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(desired + 1)}
    md: Obj = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1, "resourceVersion": "2",
               "creationTimestamp": created, "labels": labels, "annotations": anns}
    if owner is not None:
        md["ownerReferences"] = [owner]
    ready = replicas if available is None else available
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": md,
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": tmpl},
            "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                       "observedGeneration": 1}}


def pod(name: str, rs: Obj, *, phase: str = "Running") -> Obj:
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
           "uid": rs["metadata"]["uid"], "controller": True}
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "4",
                         "labels": dict(rs["metadata"]["labels"]), "ownerReferences": [ref]},
            "spec": {"nodeName": "n1"}, "status": {"phase": phase}}


def verbs(actions: list[tuple[Any, ...]]) -> list[tuple[str, str, str]]:
    """(verb, resource, namespace-or-subresource) of each action."""
    return [(a[0], a[1], a[2]) for a in actions]


class World:
    """A controller, its caches, and the clock; writes land in the caches after each reconcile."""

    def __init__(self, d: Obj, *rss: Obj) -> None:
        self.ctx, self.client, self.informers, self.recorder = context()
        self.controller = DeploymentController(self.ctx)
        self.now = T0
        self.controller.clock = lambda: self.now
        self._rv = itertools.count(100)
        self._created = itertools.count(1)
        self.informers.seed(DEPLOYMENTS, d)
        self.informers.seed(REPLICASETS, *rss)

    @property
    def deployment(self) -> Obj:
        found = self.informers(DEPLOYMENTS).cache.get("ns/web")
        assert found is not None
        return found

    def sets(self) -> dict[str, Obj]:
        return {rs["metadata"]["name"]: rs for rs in self.informers(REPLICASETS).cache.list()}

    def sizes(self) -> dict[str, int]:
        return {name: rs["spec"]["replicas"] for name, rs in sorted(self.sets().items())}

    def change(self, edit: Callable[[Obj], None]) -> None:
        """A user's update of the deployment's spec."""
        d = copy.deepcopy(self.deployment)
        edit(d)
        d["metadata"]["generation"] += 1
        self.informers.seed(DEPLOYMENTS, d)

    async def sync(self) -> list[tuple[Any, ...]]:
        self.client.actions.clear()
        self.recorder.events.clear()
        self.recorder.messages.clear()
        await self.controller.reconcile("ns/web")
        actions = list(self.client.actions)
        for action in actions:
            self._land(action)
        return actions

    def _land(self, action: tuple[Any, ...]) -> None:
        verb, resource = action[0], action[1]
        cache = self.informers(REPLICASETS if resource == "replicasets" else DEPLOYMENTS).cache
        if verb == "delete":
            cache.pop(f"{action[2]}/{action[3]}")
            return
        if verb == "patch":
            cache.put(apply_merge_patch(cache.get(f"{action[2]}/{action[3]}") or {}, action[4]))
            return
        obj = copy.deepcopy(action[3])
        md = obj["metadata"]
        old = cache.get(f"{md['namespace']}/{md['name']}")
        if verb == "create":
            md |= {"uid": f"uid-{md['name']}", "generation": 1,
                   "creationTimestamp": f"2026-01-01T00:00:{next(self._created):02d}Z"}
            obj["status"] = {}
        elif resource == "replicasets" and old is not None:
            obj["status"] = old.get("status", {})
            if obj["spec"] != old["spec"]:
                md["generation"] = old["metadata"]["generation"] + 1
        md["resourceVersion"] = str(next(self._rv))
        cache.put(obj)

    def settle(self, **available: int) -> None:
        """The ReplicaSet controller caught up: every set runs spec.replicas pods, all available
        unless `available[name]` says otherwise."""
        for name, rs in self.sets().items():
            size = rs["spec"]["replicas"]
            ready = available.get(name.replace("-", "_"), size)
            rs["status"] = {"replicas": size, "readyReplicas": ready, "availableReplicas": ready,
                            "observedGeneration": rs["metadata"]["generation"]}

    def available_after(self) -> int:
        """Available pods once the sets' sizes apply (a set scaled down loses available pods)."""
        return sum(min(rs["spec"]["replicas"], rs["status"].get("availableReplicas", 0))
                   for rs in self.sets().values())


def condition(obj: Obj, type_: str) -> tuple[str, str]:
    cond = conditions.get(obj, type_)
    assert cond is not None, f"no {type_} condition in {obj.get('status')}"
    return cond["status"], cond["reason"]


# -- the new replica set ----------------------------------------------------------------------


def test_template_hash_is_stable_safe_encoded_and_changed_by_collisions() -> None:
    a = {"spec": {"containers": [{"name": "web", "image": "web:1"}]}, "metadata": {"labels": {"app": "web"}}}
    b = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "web:1", "name": "web"}]}}
    assert compute_hash(a, None) == compute_hash(b, None)
    assert set(compute_hash(a, None)) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert compute_hash(a, None) != compute_hash(template("web:2"), None)
    assert compute_hash(a, 1) != compute_hash(a, None) != compute_hash(a, 0)


async def test_new_deployment_creates_a_set_named_by_template_hash_at_revision_1() -> None:
    world = World(deployment(3))
    actions = await world.sync()
    assert verbs(actions) == [("create", "replicasets", "ns"), ("update", "deployments", "status"),
                              ("update", "deployments", "status")]
    body = actions[0][3]
    pod_hash = compute_hash(template("web:1"), None)
    labels = {"app": "web", POD_TEMPLATE_HASH: pod_hash}
    assert body["metadata"]["name"] == f"web-{pod_hash}"
    assert body["metadata"]["labels"] == labels
    assert body["metadata"]["ownerReferences"] == [OWNER]
    assert body["metadata"]["annotations"] == {REVISION: "1", DESIRED_REPLICAS: "3", MAX_REPLICAS: "4",
                                               "kubernetes.io/change-cause": "first"}
    assert body["spec"]["replicas"] == 3
    assert body["spec"]["selector"] == {"matchLabels": labels}
    assert body["spec"]["template"] == {**template("web:1"), "metadata": {"labels": labels}}
    assert world.recorder.events == [("Normal", "ScalingReplicaSet")]
    assert world.recorder.messages == [f"Scaled up replica set web-{pod_hash} from 0 to 3"]
    first, second = actions[1][3], actions[2][3]
    assert first["metadata"]["annotations"][REVISION] == "1"
    assert condition(first, "Progressing") == ("True", "NewReplicaSetCreated")
    assert second["status"]["observedGeneration"] == 1 and second["status"]["unavailableReplicas"] == 3
    assert condition(second, "Available") == ("False", "MinimumReplicasUnavailable")


async def test_kubectl_history_finds_the_sets_by_selector_owner_and_revision() -> None:
    """`kubectl rollout history/undo` list sets by the deployment's selector, keep those it controls,
    and read their revision and change-cause annotations."""
    world = World(deployment(3))
    await world.sync()
    (rs,) = world.sets().values()
    selector = label_selector_from_spec(world.deployment["spec"]["selector"])
    assert selector.matches(rs["metadata"]["labels"])
    assert (controller_of(rs) or {}).get("uid") == world.deployment["metadata"]["uid"]
    assert rs["metadata"]["annotations"][REVISION] == "1"
    assert rs["metadata"]["annotations"]["kubernetes.io/change-cause"] == "first"


async def test_nothing_is_written_once_a_rollout_is_complete() -> None:
    world = World(deployment(3))
    await world.sync()
    world.settle()
    await world.sync()
    d = world.deployment
    assert condition(d, "Progressing") == ("True", "NewReplicaSetAvailable")
    assert condition(d, "Available") == ("True", "MinimumReplicasAvailable")
    assert {k: d["status"][k] for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")} \
        == {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
    assert "unavailableReplicas" not in d["status"]
    assert await world.sync() == []


async def test_a_taken_name_with_another_template_bumps_collision_count() -> None:
    pod_hash = compute_hash(template("web:1"), None)
    squatter = replicaset(f"web-{pod_hash}", "other:1", 1, revision=1,
                          owner={**OWNER, "name": "other", "uid": "other-uid"})
    world = World(deployment(3), squatter)
    world.client.fail[("create", "replicasets")] = errors.AlreadyExists("exists")
    with pytest.raises(errors.AlreadyExists):
        await world.controller.reconcile("ns/web")
    status_update = world.client.actions[-1]
    assert verbs([status_update]) == [("update", "deployments", "status")]
    assert status_update[3]["status"]["collisionCount"] == 1


# -- rolling update ---------------------------------------------------------------------------


def test_fenceposts_round_surge_up_and_unavailable_down_never_both_zero() -> None:
    assert fenceposts(deployment(10)) == (3, 2)
    assert fenceposts(deployment(4, surge=1, unavailable=0)) == (1, 0)
    assert fenceposts(deployment(5, surge="0%", unavailable="10%")) == (0, 1)


async def test_rolling_update_steps_within_max_surge_and_max_unavailable() -> None:
    old = replicaset("web-old", "web:1", 4, revision=1, desired=4)
    world = World(deployment(4, surge=1, unavailable=1), old)
    world.change(lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="web:2"))
    new = f"web-{compute_hash(template('web:2'), None)}"
    seen = []
    for _ in range(10):
        actions = await world.sync()
        if not [a for a in actions if a[1] == "replicasets"]:
            break
        sizes = world.sizes()
        seen.append((sizes["web-old"], sizes[new]))
        assert sum(sizes.values()) <= 4 + 1, f"surge exceeded: {sizes}"
        assert world.available_after() >= 4 - 1, f"too few available: {sizes}"
        world.settle()
    assert seen == [(3, 1), (3, 2), (1, 2), (1, 4), (0, 4)]
    d = world.deployment
    assert d["metadata"]["annotations"][REVISION] == "2"
    assert world.sets()[new]["metadata"]["annotations"][REVISION] == "2"
    assert {k: d["status"].get(k) for k in ("observedGeneration", "replicas", "updatedReplicas")} == \
        {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4}
    assert condition(d, "Progressing") == ("True", "NewReplicaSetAvailable")
    assert "web-old" in world.sets(), "the old set is history, kept within revisionHistoryLimit"


async def test_rolling_update_scales_down_unavailable_old_pods_first() -> None:
    old = replicaset("web-old", "web:1", 4, revision=1, available=2, desired=4)
    new = replicaset("web-new", "web:2", 1, revision=2, desired=4, created="2025-12-02T00:00:00Z")
    world = World(deployment(4, image="web:2", surge=1, unavailable=1), old, new)
    actions = await world.sync()
    # 3 available (1 new + 2 old) is the minimum already; but two old pods are unavailable, and
    # removing those costs nothing, so the old set goes 4 -> 2 at once.
    assert [(a[3]["metadata"]["name"], a[3]["spec"]["replicas"]) for a in actions if a[1] == "replicasets"] \
        == [("web-old", 2)]
    assert world.recorder.messages == ["Scaled down replica set web-old from 4 to 2"]


async def test_rollout_status_reports_progress_and_the_deadline() -> None:
    old = replicaset("web-old", "web:1", 2, revision=1, desired=2)
    world = World(deployment(2, surge=1, unavailable=0, progressDeadlineSeconds=60), old)
    world.change(lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="web:2"))
    await world.sync()
    new = f"web-{compute_hash(template('web:2'), None)}"
    world.settle(**{new.replace("-", "_"): 0})  # the new pod never becomes available
    world.now = T0 + timedelta(seconds=10)
    await world.sync()
    assert condition(world.deployment, "Progressing") == ("True", "ReplicaSetUpdated")
    world.now = T0 + timedelta(seconds=30)
    assert await world.sync() == [], "no progress, not yet past the deadline: nothing to write"
    world.now = T0 + timedelta(seconds=71)
    actions = await world.sync()
    assert verbs(actions) == [("update", "deployments", "status")]
    assert condition(world.deployment, "Progressing") == ("False", "ProgressDeadlineExceeded")
    (cond,) = [c for c in world.deployment["status"]["conditions"] if c["type"] == "Progressing"]
    assert cond["message"] == f'ReplicaSet "{new}" has timed out progressing.'


# -- recreate ---------------------------------------------------------------------------------


async def test_recreate_scales_old_to_zero_waits_for_its_pods_then_creates_the_new_set() -> None:
    old = replicaset("web-old", "web:1", 2, revision=1, desired=2)
    d = deployment(2, image="web:2")
    d["spec"]["strategy"] = {"type": "Recreate"}
    world = World(d, old)
    world.informers.seed(PODS, pod("a", old), pod("b", old))

    actions = await world.sync()
    assert [a[3]["spec"]["replicas"] for a in actions if a[1] == "replicasets"] == [0]
    assert world.recorder.messages == ["Scaled down replica set web-old from 2 to 0"]

    await world.sync()  # the old set still reports its pods
    world.settle()
    world.informers(PODS).cache.put({**pod("b", old), "metadata": {**pod("b", old)["metadata"],
                                                                   "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    world.informers(PODS).cache.pop("ns/a")
    actions = await world.sync()  # the set says 0, but pod b is still terminating
    assert [a for a in actions if a[1] == "replicasets"] == []

    world.informers(PODS).cache.pop("ns/b")
    actions = await world.sync()
    creates = [a for a in actions if a[0] == "create"]
    assert len(creates) == 1 and creates[0][3]["spec"]["replicas"] == 2
    assert creates[0][3]["metadata"]["annotations"][REVISION] == "2"


async def test_a_deleted_pod_wakes_a_recreate_deployment() -> None:
    old = replicaset("web-old", "web:1", 0, revision=1)
    d = deployment(2)
    d["spec"]["strategy"] = {"type": "Recreate"}
    world = World(d, old)
    world.controller.setup()
    (on_delete,) = [h["on_delete"] for h in world.informers(PODS).handlers]
    on_delete(pod("a", old))
    assert len(world.controller.queue) == 1


# -- rollback, pause, scaling -----------------------------------------------------------------


async def test_rollback_gives_the_old_set_the_next_revision_and_scales_it_up() -> None:
    first = replicaset("web-aaa", "web:1", 0, revision=1, created="2025-11-01T00:00:00Z")
    second = replicaset("web-bbb", "web:2", 3, revision=2, desired=3)
    d = deployment(3, image="web:1", surge=1, unavailable=0)
    d["metadata"]["annotations"] = {REVISION: "2", "kubernetes.io/change-cause": "undo"}
    world = World(d, first, second)

    actions = await world.sync()
    rs_updates = [a[3] for a in actions if a[1] == "replicasets"]
    assert [u["metadata"]["name"] for u in rs_updates] == ["web-aaa", "web-aaa"]
    annotations = rs_updates[0]["metadata"]["annotations"]
    assert annotations[REVISION] == "3" and annotations[REVISION_HISTORY] == "1"
    assert annotations["kubernetes.io/change-cause"] == "undo"
    assert rs_updates[1]["spec"]["replicas"] == 1
    assert world.recorder.messages == ["Scaled up replica set web-aaa from 0 to 1"]

    await world.sync()
    assert world.deployment["metadata"]["annotations"][REVISION] == "3"


async def test_paused_deployment_scales_but_makes_no_rollout_progress() -> None:
    old = replicaset("web-old", "web:1", 3, revision=1, desired=3)
    d = deployment(5, image="web:2", paused=True)
    world = World(d, old)
    actions = await world.sync()
    assert [a for a in actions if a[0] == "create"] == []
    (scale,) = [a[3] for a in actions if a[1] == "replicasets"]
    assert scale["spec"]["replicas"] == 5 and scale["metadata"]["annotations"][DESIRED_REPLICAS] == "5"
    assert condition(world.deployment, "Progressing") == ("Unknown", "DeploymentPaused")

    world.settle()
    world.change(lambda d: d["spec"].update(paused=False))
    actions = await world.sync()
    assert condition(actions[0][3], "Progressing") == ("Unknown", "DeploymentResumed")
    assert [a[0] for a in actions if a[1] == "replicasets"] == ["create", "update"]


async def test_scaling_mid_rollout_shares_the_change_in_proportion() -> None:
    old = replicaset("web-old", "web:1", 8, revision=1, desired=10)
    new = replicaset("web-new", "web:2", 5, revision=2, available=0, desired=10, created="2025-12-02T00:00:00Z")
    for rs in (old, new):
        rs["metadata"]["annotations"][MAX_REPLICAS] = "13"
    d = deployment(20, image="web:2", surge=3, unavailable=2)
    world = World(d, old, new)
    actions = await world.sync()
    scaled = [(a[3]["metadata"]["name"], a[3]["spec"]["replicas"]) for a in actions if a[1] == "replicasets"]
    assert scaled == [("web-old", 14), ("web-new", 9)]
    assert world.recorder.messages == ["Scaled up replica set web-old from 8 to 14",
                                       "Scaled up replica set web-new from 5 to 9"]
    assert all(a[3]["metadata"]["annotations"][MAX_REPLICAS] == "23" for a in actions if a[1] == "replicasets")


def test_scaling_down_mid_rollout_takes_from_the_larger_set_first() -> None:
    old = replicaset("web-old", "web:1", 8, revision=1, desired=10)
    new = replicaset("web-new", "web:2", 5, revision=2, desired=10, created="2025-12-02T00:00:00Z")
    for rs in (old, new):
        rs["metadata"]["annotations"][MAX_REPLICAS] = "13"
    steps = proportional_steps(deployment(5, image="web:2", surge=3, unavailable=2), new, [old])
    # 13 -> 8 pods: old 8*8/13 = 4.9 -> 5, new 5*8/13 = 3.1 -> 3.
    assert [(s.name, s.size) for s in steps] == [("web-old", 5), ("web-new", 3)]


# -- ownership and history --------------------------------------------------------------------


async def test_adopts_matching_orphans_and_releases_sets_that_stop_matching() -> None:
    orphan = replicaset("web-orphan", "web:1", 0, revision=1, owner=None)
    stray = replicaset("web-stray", "web:0", 0, revision=1)
    stray["metadata"]["labels"] = {"app": "other"}
    world = World(deployment(3), orphan, stray)
    actions = await world.sync()
    patches = {a[3]: a[4]["metadata"]["ownerReferences"] for a in actions if a[0] == "patch"}
    assert patches == {"web-orphan": [OWNER], "web-stray": None}


async def test_revision_history_limit_deletes_the_oldest_scaled_down_sets() -> None:
    sets = [replicaset(f"web-r{n}", f"web:{n}", 0, revision=n) for n in (1, 2, 3)]
    sets[1]["status"]["replicas"] = 1  # still has a pod going away: kept for now
    current = replicaset("web-r4", "web:4", 3, revision=4, desired=3)
    d = deployment(3, image="web:4", revisionHistoryLimit=1)
    d["status"] = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    world = World(d, *sets, current)
    actions = await world.sync()
    assert [a[3] for a in actions if a[0] == "delete"] == ["web-r1"]
    # Its pod gone, the deployment's status catches up (a rollout complete again), then r2 goes too.
    sets[1]["status"]["replicas"] = 0
    world.informers.seed(REPLICASETS, sets[1])
    actions = await world.sync() + await world.sync()
    assert [a[3] for a in actions if a[0] == "delete"] == ["web-r2"]


async def test_replica_set_changes_map_to_the_owning_deployment() -> None:
    world = World(deployment(3))
    world.controller.setup()
    (handlers,) = world.informers(REPLICASETS).handlers
    owned = replicaset("web-aaa", "web:1", 1, revision=1)
    handlers["on_add"](owned)
    handlers["on_add"](replicaset("web-orphan", "web:1", 1, revision=1, owner=None))
    handlers["on_add"](replicaset("x-bbb", "x:1", 1, revision=1, owner={**OWNER, "name": "x", "uid": "x-uid"}))
    assert await world.controller.queue.get() == "ns/web"
    world.controller.queue.done("ns/web")
    assert len(world.controller.queue) == 0, "the key is queued once; another deployment's set is ignored"
    handlers["on_delete"](owned)
    assert len(world.controller.queue) == 1


async def test_a_deleted_deployment_only_updates_its_status() -> None:
    d = deployment(3)
    d["metadata"]["deletionTimestamp"] = meta.format_time(T0)
    world = World(d, replicaset("web-old", "web:0", 3, revision=1))
    actions = await world.sync()
    assert verbs(actions) == [("update", "deployments", "status")]
