"""The resource quota controller: seed the caches, call reconcile, assert the exact status written; and which changes
of quotas and counted objects put a quota back in the queue (upstream's replenishment)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from harness.api import quota, registry
from harness.auth import bootstrappolicy, rbac
from harness.auth.authorizer import RequestInfo
from harness.cli import controller_manager
from harness.controllers.base import PODS
from harness.controllers.manager import CONTROLLERS, SERVICE_ACCOUNTS
from harness.controllers.resourcequota import RESOURCE_QUOTAS, ResourceQuotaController
from harness.machinery.workqueue import WorkQueue
from tests.unit.fakes import FakeClient, FakeInformers, context

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SERVICES = registry.by_path("", "v1", "services")
CONFIG_MAPS = registry.by_path("", "v1", "configmaps")
DEPLOYMENTS = registry.by_path("apps", "v1", "deployments")


def rq(name: str = "q", hard: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
       namespace: str = "ns") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ResourceQuota",
                           "metadata": {"name": name, "namespace": namespace, "resourceVersion": "4"},
                           "spec": {"hard": hard if hard is not None else {"pods": "2"}}}
    if status is not None:
        obj["status"] = status
    return obj


def pod(name: str, *, cpu: str | None = None, phase: str = "Running", namespace: str = "ns") -> dict[str, Any]:
    resources = {"requests": {"cpu": cpu}} if cpu else {}
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
            "status": {"phase": phase}}


def controller() -> tuple[ResourceQuotaController, FakeClient, FakeInformers]:
    ctx, client, informers, _ = context()
    c = ResourceQuotaController(ctx)
    c.now = lambda: NOW
    c.setup()
    return c, client, informers


async def drain(queue: WorkQueue) -> list[str]:
    """The keys queued, each then done (so the next add queues it again)."""
    keys = [key for _ in range(len(queue)) if (key := await queue.get()) is not None]
    for key in keys:
        queue.done(key)
    return sorted(keys)


async def test_a_new_quota_gets_its_hard_and_used_written_through_the_status() -> None:
    c, client, informers = controller()
    q = rq(hard={"pods": "5", "count/pods": "9", "requests.cpu": "4", "configmaps": "3",
                 "count/deployments.apps": "2", "services.loadbalancers": "1"})
    informers.seed(RESOURCE_QUOTAS, q)
    informers.seed(PODS, pod("a", cpu="500m"), pod("b", cpu="1"), pod("done", cpu="2", phase="Succeeded"),
                   pod("elsewhere", cpu="1", namespace="other"))
    informers.seed(CONFIG_MAPS, {"metadata": {"name": "cm", "namespace": "ns"}})
    informers.seed(SERVICES, {"metadata": {"name": "lb", "namespace": "ns"}, "spec": {"type": "LoadBalancer"}})
    await c.reconcile("ns/q")
    assert client.actions == [("update", "resourcequotas", "status", {**q, "status": {
        "hard": {"configmaps": "3", "count/deployments.apps": "2", "count/pods": "9", "pods": "5",
                 "requests.cpu": "4", "services.loadbalancers": "1"},
        "used": {"configmaps": "1", "count/deployments.apps": "0", "count/pods": "3", "pods": "2",
                 "requests.cpu": "1500m", "services.loadbalancers": "1"}}})]
    # The write carries the cached resourceVersion: a quota charged meanwhile is a conflict, not lost usage.
    assert client.actions[0][3]["metadata"]["resourceVersion"] == "4"


async def test_a_current_quota_is_left_alone_and_a_gone_one_is_forgotten() -> None:
    c, client, informers = controller()
    informers.seed(RESOURCE_QUOTAS, rq(status={"hard": {"pods": "2"}, "used": {"pods": "1"}}))
    informers.seed(PODS, pod("a"), pod("done", phase="Failed"))
    await c.reconcile("ns/q")
    await c.reconcile("ns/gone")
    assert client.actions == []


async def test_usage_given_back_is_written() -> None:
    c, client, informers = controller()
    informers.seed(RESOURCE_QUOTAS, rq(status={"hard": {"pods": "2"}, "used": {"pods": "2"}}))
    informers.seed(PODS, pod("a"))
    await c.reconcile("ns/q")
    assert [a[3]["status"] for a in client.actions] == [{"hard": {"pods": "2"}, "used": {"pods": "1"}}]


def handlers(informers: FakeInformers, kind: registry.Kind) -> dict[str, Any]:
    """Each event's handlers, all called as an informer calls them."""
    def calling(event: str) -> Any:
        return lambda *objs: [h[event](*objs) for h in informers(kind).handlers if h.get(event) is not None]
    return {event: calling(event) for event in ("on_add", "on_update", "on_delete")}


async def test_deleted_and_finished_objects_requeue_the_quotas_that_count_them() -> None:
    c, _, informers = controller()
    informers.seed(RESOURCE_QUOTAS, rq("pods", status={"hard": {"pods": "2"}, "used": {"pods": "2"}}),
                   rq("cms", status={"hard": {"configmaps": "2"}, "used": {"configmaps": "1"}}),
                   rq("svc", status={"hard": {"services.nodeports": "2"}, "used": {"services.nodeports": "0"}}),
                   rq("pods", namespace="other", status={"hard": {"pods": "2"}, "used": {"pods": "0"}}))
    on_pod, on_cm, on_svc = handlers(informers, PODS), handlers(informers, CONFIG_MAPS), handlers(informers, SERVICES)

    on_pod["on_delete"](pod("a"))
    assert await drain(c.queue) == ["ns/pods"]
    on_pod["on_update"](pod("a"), pod("a", phase="Succeeded"))
    assert await drain(c.queue) == ["ns/pods"]
    relabelled = pod("a")
    relabelled["metadata"]["labels"] = {"x": "y"}
    on_pod["on_update"](pod("a"), relabelled)  # still counts: nothing to give back
    on_pod["on_update"](pod("a", phase="Succeeded"), pod("a", phase="Failed"))
    assert await drain(c.queue) == []

    on_cm["on_delete"]({"metadata": {"name": "cm", "namespace": "ns"}})
    assert await drain(c.queue) == ["ns/cms"]
    on_cm["on_update"]({"metadata": {"name": "cm", "namespace": "ns"}},
                       {"metadata": {"name": "cm", "namespace": "ns"}, "data": {"k": "v"}})
    assert await drain(c.queue) == []

    service = {"metadata": {"name": "s", "namespace": "ns"}, "spec": {"type": "NodePort"}}
    on_svc["on_update"](service, {**service, "spec": {"type": "ClusterIP"}})
    assert await drain(c.queue) == ["ns/svc"]
    on_svc["on_update"](service, {**service, "spec": {"type": "NodePort", "ports": []}})
    assert await drain(c.queue) == []


async def test_only_spec_changes_of_a_quota_requeue_it() -> None:
    c, _, informers = controller()
    on_quota = handlers(informers, RESOURCE_QUOTAS)
    current = rq(status={"hard": {"pods": "2"}, "used": {"pods": "1"}})
    on_quota["on_add"](current)
    assert await drain(c.queue) == ["ns/q"]
    charged = {**current, "status": {"hard": {"pods": "2"}, "used": {"pods": "2"}}}
    on_quota["on_update"](current, charged)  # the admission plugin's charge: not a reason to recount
    assert await drain(c.queue) == []
    on_quota["on_update"](charged, {**charged, "spec": {"hard": {"pods": "3"}}})
    assert await drain(c.queue) == ["ns/q"]
    on_quota["on_update"](charged, {**charged, "spec": {"hard": {"pods": "2000m"}}})  # the same amount
    assert await drain(c.queue) == []


async def test_every_quota_is_recalculated_each_sync_period() -> None:
    ctx, _, informers, _ = context()
    ctx = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, resource_quota_sync_period=0.01))
    c = ResourceQuotaController(ctx)
    informers.seed(RESOURCE_QUOTAS, rq("a", status={}), rq("b", namespace="other", status={}))
    task = asyncio.create_task(c._resync())
    try:
        async with asyncio.timeout(5):
            keys = [await c.queue.get(), await c.queue.get()]
    finally:
        task.cancel()
    assert sorted(k for k in keys if k) == ["ns/a", "other/b"]


def test_the_controller_is_registered_under_upstreams_names_and_its_role_suffices() -> None:
    assert CONTROLLERS["resourcequota"] is ResourceQuotaController
    assert SERVICE_ACCOUNTS["resourcequota"] == "resourcequota-controller"
    role = bootstrappolicy.load().cluster_role("system:controller:resourcequota-controller")
    assert role is not None

    def allowed(verb: str, group: str, resource: str, subresource: str = "") -> bool:
        info = RequestInfo(verb, group, "v1", resource, subresource, "ns")
        return any(rbac.rule_allows(rule, info) for rule in role["rules"])

    for evaluator in quota.EVALUATORS.values():  # the informers of everything it counts
        assert allowed("list", evaluator.kind.group, evaluator.kind.plural)
        assert allowed("watch", evaluator.kind.group, evaluator.kind.plural)
    assert allowed("update", "", "resourcequotas", "status")
    assert not allowed("update", "", "resourcequotas") and not allowed("create", "", "pods")


def test_the_sync_period_flag_takes_upstreams_durations() -> None:
    parser = argparse.ArgumentParser()
    controller_manager.add_arguments(parser)
    args = parser.parse_args(["--kubeconfig", "k"])
    assert controller_manager.config_from(args).options.resource_quota_sync_period == 300.0  # upstream's 5m0s
    for text, seconds in (("5m0s", 300.0), ("30s", 30.0), ("1m30s", 90.0), ("1.5s", 1.5), ("45", 45.0)):
        args = parser.parse_args(["--kubeconfig", "k", "--resource-quota-sync-period", text])
        assert controller_manager.config_from(args).options.resource_quota_sync_period == seconds, text
    for bad in ("0s", "soon", "5m later"):
        with pytest.raises(argparse.ArgumentTypeError):
            controller_manager.sync_period(bad)
