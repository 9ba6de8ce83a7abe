"""root-ca-cert-publisher and clusterrole-aggregation: seed the caches, call reconcile, assert the exact API actions
made (the fakes of tests/unit/fakes.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness.api import errors
from harness.controllers.base import NAMESPACES, Context
from harness.controllers.clusterroleaggregation import CLUSTER_ROLES, ClusterRoleAggregationController
from harness.controllers.rootcacertpublisher import CONFIG_MAPS, DESCRIPTION, RootCACertPublisher
from harness.machinery.workqueue import WorkQueue
from tests.unit.fakes import FakeClient, FakeInformers, context

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
DESCRIPTION_TEXT = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
                    "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
                    "distributions of Kubernetes clusters.")


async def drain(queue: WorkQueue) -> list[str]:
    return [key for _ in range(len(queue)) if (key := await queue.get()) is not None]


# -- root-ca-cert-publisher ----------------------------------------------------------------------------------------

def namespace(name: str, *, phase: str = "Active", deleting: bool = False) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"}
    if deleting:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": md, "status": {"phase": phase}}


def root_ca_map(ns: str, data: dict[str, str], *, annotated: bool = True) -> dict[str, Any]:
    md: dict[str, Any] = {"name": "kube-root-ca.crt", "namespace": ns, "uid": "cm-uid", "resourceVersion": "7"}
    if annotated:
        md["annotations"] = {"kubernetes.io/description": DESCRIPTION_TEXT}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


def publisher(tmp_path: Path, ca: str | None = CA) -> tuple[RootCACertPublisher, FakeClient, FakeInformers]:
    ctx, client, informers, _ = context()
    path = ""
    if ca is not None:
        (tmp_path / "ca.crt").write_text(ca)
        path = str(tmp_path / "ca.crt")
    ctx = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, root_ca_file=path))
    c = RootCACertPublisher(ctx)
    c.setup()
    return c, client, informers


def test_the_description_is_upstreams() -> None:
    assert DESCRIPTION == DESCRIPTION_TEXT


async def test_publisher_creates_the_config_map_in_an_active_namespace(tmp_path: Path) -> None:
    c, client, informers = publisher(tmp_path)
    informers.seed(NAMESPACES, namespace("ns"))
    await c.reconcile("ns")
    assert client.actions == [("create", "configmaps", "ns", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "ns",
                     "annotations": {"kubernetes.io/description": DESCRIPTION_TEXT}},
        "data": {"ca.crt": CA}})]


async def test_publisher_tolerates_a_create_that_lost_a_race(tmp_path: Path) -> None:
    c, client, informers = publisher(tmp_path)
    informers.seed(NAMESPACES, namespace("ns"))
    client.fail[("create", "configmaps")] = errors.AlreadyExists('configmaps "kube-root-ca.crt" already exists')
    await c.reconcile("ns")
    assert [a[0] for a in client.actions] == ["create"]


async def test_publisher_updates_a_config_map_whose_data_differs(tmp_path: Path) -> None:
    c, client, informers = publisher(tmp_path)
    informers.seed(NAMESPACES, namespace("ns"))
    old = root_ca_map("ns", {"ca.crt": "an old CA", "extra": "x"})
    informers.seed(CONFIG_MAPS, old)
    await c.reconcile("ns")
    ((verb, plural, subresource, body),) = client.actions
    assert (verb, plural, subresource) == ("update", "configmaps", "")
    assert body["data"] == {"ca.crt": CA}
    assert body["metadata"]["name"] == "kube-root-ca.crt" and body["metadata"]["namespace"] == "ns"
    assert body["metadata"]["resourceVersion"] == "7"  # an update, so a conflict is detected
    # The cached object is not changed.
    assert old["data"] == {"ca.crt": "an old CA", "extra": "x"}


async def test_publisher_restores_the_description_when_it_updates(tmp_path: Path) -> None:
    """BUG: RootCACertPublisher.reconcile only compares and rewrites `data`.

    Upstream's syncNamespace updates when the data differs *or* the kubernetes.io/description annotation is empty, and
    its update always sets that annotation; here a ConfigMap whose annotation was removed keeps it removed, both when
    the data matches (no update at all) and when the data differs (the update leaves the annotation out)."""
    c, client, informers = publisher(tmp_path)
    informers.seed(NAMESPACES, namespace("ns"), namespace("other"))
    informers.seed(CONFIG_MAPS, root_ca_map("ns", {"ca.crt": CA}, annotated=False),
                   root_ca_map("other", {"ca.crt": "an old CA"}, annotated=False))
    await c.reconcile("ns")
    await c.reconcile("other")
    updated = {a[3]["metadata"]["namespace"]: a[3] for a in client.actions if a[0] == "update"}
    assert sorted(updated) == ["ns", "other"]
    for body in updated.values():
        assert body["data"] == {"ca.crt": CA}
        assert body["metadata"]["annotations"]["kubernetes.io/description"] == DESCRIPTION_TEXT


async def test_publisher_leaves_a_config_map_that_is_right(tmp_path: Path) -> None:
    c, client, informers = publisher(tmp_path)
    informers.seed(NAMESPACES, namespace("ns"))
    informers.seed(CONFIG_MAPS, root_ca_map("ns", {"ca.crt": CA}))
    await c.reconcile("ns")
    assert client.actions == []


async def test_publisher_does_nothing_in_a_terminating_or_missing_namespace(tmp_path: Path) -> None:
    c, client, informers = publisher(tmp_path)
    informers.seed(NAMESPACES, namespace("going", phase="Terminating", deleting=True),
                   namespace("phase-only", phase="Terminating"), namespace("deleting", deleting=True))
    informers.seed(CONFIG_MAPS, root_ca_map("going", {"ca.crt": "an old CA"}))
    for key in ("going", "phase-only", "deleting", "gone"):
        await c.reconcile(key)
    assert client.actions == []


async def test_publisher_without_a_root_ca_does_nothing_at_all(tmp_path: Path) -> None:
    c, client, informers = publisher(tmp_path, ca=None)
    informers.seed(NAMESPACES, namespace("ns"))
    await c.reconcile("ns")
    assert client.actions == []
    assert all(not informer.handlers for informer in informers.by_kind.values())


async def test_publisher_with_an_empty_root_ca_file_does_nothing(tmp_path: Path) -> None:
    c, client, informers = publisher(tmp_path, ca="")
    informers.seed(NAMESPACES, namespace("ns"))
    await c.reconcile("ns")
    assert client.actions == []
    assert all(not informer.handlers for informer in informers.by_kind.values())


async def test_publisher_handlers_queue_the_namespace(tmp_path: Path) -> None:
    c, _, informers = publisher(tmp_path)
    (ns_handlers,) = informers(NAMESPACES).handlers
    (cm_handlers,) = informers(CONFIG_MAPS).handlers
    ns_handlers["on_add"](namespace("a"))
    ns_handlers["on_update"](namespace("b"), namespace("b"))
    cm_handlers["on_update"](root_ca_map("c", {}), root_ca_map("c", {}))
    cm_handlers["on_delete"](root_ca_map("d", {}))
    other = root_ca_map("e", {})
    other["metadata"]["name"] = "something-else"
    cm_handlers["on_delete"](other)
    assert await drain(c.queue) == ["a", "b", "c", "d"]


# -- clusterrole-aggregation ---------------------------------------------------------------------------------------

R_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
R_SVCS = {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}
R_DEPLOY = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}
R_SECRETS = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
TO_VIEW = {"rbac.example.com/aggregate-to-view": "true"}


def cluster_role(name: str, rules: list[dict[str, Any]] | None = None, *, labels: dict[str, str] | None = None,
                 aggregate: list[dict[str, str]] | None = None) -> dict[str, Any]:
    role: dict[str, Any] = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                            "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}}}
    if rules is not None:
        role["rules"] = rules
    if aggregate is not None:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": m} for m in aggregate]}
    return role


def aggregation() -> tuple[ClusterRoleAggregationController, FakeClient, FakeInformers, Context]:
    ctx, client, informers, _ = context()
    c = ClusterRoleAggregationController(ctx)
    c.setup()
    return c, client, informers, ctx


async def test_aggregation_patches_in_the_union_of_matching_roles_rules() -> None:
    c, client, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES,
                   cluster_role("view", [R_SECRETS], aggregate=[TO_VIEW]),
                   # Listed out of name order: the rules come in role-name order all the same.
                   cluster_role("b-role", [R_SVCS, R_PODS], labels=TO_VIEW),
                   cluster_role("a-role", [R_PODS, R_DEPLOY, R_PODS], labels=TO_VIEW),
                   cluster_role("unrelated", [R_SECRETS], labels={"other": "true"}))
    await c.reconcile("view")
    assert client.actions == [("patch", "clusterroles", "", "view", {"rules": [R_PODS, R_DEPLOY, R_SVCS]})]


async def test_aggregation_matches_any_of_several_selectors() -> None:
    c, client, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES,
                   cluster_role("edit", aggregate=[TO_VIEW, {"to-edit": "true"}]),
                   cluster_role("x", [R_SVCS], labels={"to-edit": "true"}),
                   cluster_role("y", [R_PODS], labels=TO_VIEW))
    await c.reconcile("edit")
    assert client.actions == [("patch", "clusterroles", "", "edit", {"rules": [R_SVCS, R_PODS]})]


async def test_aggregation_empties_a_role_nothing_matches_any_more() -> None:
    c, client, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES, cluster_role("view", [R_PODS], aggregate=[TO_VIEW]))
    await c.reconcile("view")
    assert client.actions == [("patch", "clusterroles", "", "view", {"rules": []})]


async def test_aggregation_does_nothing_when_the_rules_are_already_right() -> None:
    c, client, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES,
                   cluster_role("view", [R_PODS, R_SVCS], aggregate=[TO_VIEW]),
                   cluster_role("a-role", [R_PODS], labels=TO_VIEW),
                   cluster_role("b-role", [R_SVCS, R_PODS], labels=TO_VIEW))
    await c.reconcile("view")
    assert client.actions == []


async def test_aggregation_of_nothing_into_a_role_without_rules_does_nothing() -> None:
    c, client, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES, cluster_role("view", aggregate=[TO_VIEW]))
    await c.reconcile("view")
    assert client.actions == []


async def test_aggregation_ignores_plain_and_missing_roles() -> None:
    c, client, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES, cluster_role("plain", [R_PODS], labels=TO_VIEW))
    await c.reconcile("plain")
    await c.reconcile("gone")
    assert client.actions == []


async def test_aggregation_tolerates_a_role_deleted_meanwhile() -> None:
    c, client, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES, cluster_role("view", aggregate=[TO_VIEW]),
                   cluster_role("a-role", [R_PODS], labels=TO_VIEW))
    client.fail[("patch", "clusterroles")] = errors.NotFound('clusterroles "view" not found')
    await c.reconcile("view")
    assert [a[0] for a in client.actions] == ["patch"]


async def test_aggregation_any_change_queues_every_aggregated_role() -> None:
    c, _, informers, _ = aggregation()
    informers.seed(CLUSTER_ROLES, cluster_role("view", aggregate=[TO_VIEW]),
                   cluster_role("edit", aggregate=[{"to-edit": "true"}]),
                   cluster_role("a-role", [R_PODS], labels=TO_VIEW))
    (handlers,) = informers(CLUSTER_ROLES).handlers
    changed = cluster_role("unrelated", [R_SECRETS])
    handlers["on_add"](changed)
    handlers["on_update"](changed, changed)
    handlers["on_delete"](changed)
    assert sorted(await drain(c.queue)) == ["edit", "view"]
