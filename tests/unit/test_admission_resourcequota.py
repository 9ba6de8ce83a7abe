"""The ResourceQuota admission plugin's decisions, against quotas in a small in-memory `admission.Objects`: upstream's
refusals word for word, charging with the quota's resourceVersion as precondition, and retries after conflicts."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from harness.api import errors
from harness.apiserver.admission import DEFAULT_PLUGINS, PLUGINS, AdmissionConfigError, Attributes, PluginContext
from harness.apiserver.admission_resourcequota import ResourceQuota
from harness.auth.user import UserInfo


class MemoryObjects:
    """Quotas by (namespace, name), each with an etcd-like resourceVersion.

    `lagging` makes `list` answer from a snapshot that only `sync()` refreshes, as a watch cache that has not seen
    the latest writes; `interfere` lets another writer change a quota just before the plugin's next write.
    """

    def __init__(self, *quotas: dict[str, Any], lagging: bool = False) -> None:
        self.revision = 10
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[dict[str, Any]] = []
        self.conflicts = 0
        self.interfere: list[dict[str, str]] = []
        self.lagging = lagging
        for q in quotas:
            self.put(q)
        self.snapshot = copy.deepcopy(self.stored)

    def put(self, q: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        q = copy.deepcopy(q)
        q["metadata"]["resourceVersion"] = str(self.revision)
        self.stored[(q["metadata"]["namespace"], q["metadata"]["name"])] = q
        return q

    def sync(self) -> None:
        self.snapshot = copy.deepcopy(self.stored)

    def used(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        return dict(self.stored[(namespace, name)]["status"].get("used") or {})

    async def get(self, resource: str, namespace: str, name: str, group: str = "") -> dict[str, Any] | None:
        assert resource == "resourcequotas"
        return (self.snapshot if self.lagging else self.stored).get((namespace, name))

    async def list(self, resource: str, namespace: str, group: str = "") -> list[dict[str, Any]]:
        assert resource == "resourcequotas"
        source = self.snapshot if self.lagging else self.stored
        return [q for (ns, _), q in source.items() if ns == namespace]

    async def update_status(self, resource: str, obj: dict[str, Any], group: str = "") -> dict[str, Any]:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if self.interfere:
            current = copy.deepcopy(self.stored[key])
            current["status"]["used"] = self.interfere.pop(0)
            self.put(current)
        await asyncio.sleep(0)  # let concurrent requests interleave, as real I/O would
        current = self.stored.get(key)
        if current is None:
            raise errors.NotFound(f'resourcequotas "{key[1]}" not found')
        if current["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            self.conflicts += 1
            if self.lagging:  # the watch cache catches up a moment later
                asyncio.get_running_loop().call_soon(self.sync)
            raise errors.Conflict(f'Operation cannot be fulfilled on resourcequotas "{key[1]}": the object has been '
                                  "modified; please apply your changes to the latest version and try again")
        written = self.put({**current, "status": copy.deepcopy(obj["status"])})
        self.writes.append(written)
        return written


def rq(name: str, hard: dict[str, Any], used: dict[str, Any] | None = None, *, scopes: list[str] | None = None,
       namespace: str = "ns") -> dict[str, Any]:
    status: dict[str, Any] = {"hard": hard}
    if used is not None:
        status["used"] = used
    spec: dict[str, Any] = {"hard": hard, **({"scopes": scopes} if scopes else {})}
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": namespace},
            "spec": spec, "status": status}


def pod(name: str = "nginx", requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
        **spec: Any) -> dict[str, Any]:
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": resources}], **spec}}


def create(obj: dict[str, Any], *, kind: str = "Pod", resource: str = "pods", dry_run: bool = False,
           operation: str = "CREATE", old: dict[str, Any] | None = None, subresource: str = "") -> Attributes:
    return Attributes(operation, kind, resource, subresource, "ns", obj["metadata"].get("name", ""), obj, old,
                      UserInfo("alice"), dry_run)


async def refused(plugin: ResourceQuota, attrs: Attributes, error: type[errors.ApiError] = errors.Forbidden) -> str:
    with pytest.raises(error) as caught:
        await plugin.validate(attrs)
    return caught.value.message


async def test_the_third_pod_exceeds_a_quota_of_two() -> None:
    objects = MemoryObjects(rq("pods", {"pods": "2"}, {"pods": "0"}))
    plugin = ResourceQuota(objects)
    await plugin.validate(create(pod("a")))
    await plugin.validate(create(pod("b")))
    assert objects.used("pods") == {"pods": "2"}
    assert await refused(plugin, create(pod("c"))) == \
        'pods "c" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2'
    assert objects.used("pods") == {"pods": "2"}


async def test_only_the_resources_a_quota_limits_are_charged_and_quoted() -> None:
    objects = MemoryObjects(rq("compute", {"requests.cpu": "2", "requests.memory": "4Gi", "count/pods": "10"},
                               {"requests.cpu": "1", "requests.memory": "1Gi", "count/pods": "1"}))
    plugin = ResourceQuota(objects)
    message = await refused(plugin, create(pod(requests={"cpu": "2", "memory": "1Gi"})))
    assert message == ('pods "nginx" is forbidden: exceeded quota: compute, requested: requests.cpu=2, '
                       "used: requests.cpu=1, limited: requests.cpu=2")
    await plugin.validate(create(pod(requests={"cpu": "500m", "memory": "512Mi"})))
    assert objects.used("compute") == {"requests.cpu": "1500m", "requests.memory": "1536Mi", "count/pods": "2"}


async def test_a_pod_must_state_what_a_quota_on_cpu_or_memory_limits() -> None:
    plugin = ResourceQuota(MemoryObjects(rq("compute", {"limits.cpu": "4", "limits.memory": "4Gi", "pods": "5"},
                                            {"limits.cpu": "0", "limits.memory": "0", "pods": "0"})))
    assert await refused(plugin, create(pod())) == ('pods "nginx" is forbidden: failed quota: compute: must specify '
                                                   "limits.cpu for: nginx; limits.memory for: nginx")


async def test_a_quota_without_usage_yet_refuses_what_it_limits() -> None:
    plugin = ResourceQuota(MemoryObjects(rq("fresh", {"pods": "2", "requests.cpu": "1", "services": "1"},
                                            {"services": "0"})))
    assert await refused(plugin, create(pod(requests={"cpu": "100m"}))) == \
        'pods "nginx" is forbidden: status unknown for quota: fresh, resources: pods,requests.cpu'


async def test_a_quota_the_controller_has_not_seen_limits_nothing() -> None:
    q = rq("new", {"pods": "0"})
    del q["status"]
    objects = MemoryObjects(q)
    await ResourceQuota(objects).validate(create(pod()))
    assert objects.writes == []


async def test_a_dry_run_is_checked_but_not_charged() -> None:
    objects = MemoryObjects(rq("pods", {"pods": "1"}, {"pods": "0"}))
    plugin = ResourceQuota(objects)
    await plugin.validate(create(pod(), dry_run=True))
    assert objects.writes == []
    await plugin.validate(create(pod()))
    assert await refused(plugin, create(pod("b"), dry_run=True)) == \
        'pods "b" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1'


async def test_scoped_quotas_charge_only_the_pods_they_select() -> None:
    objects = MemoryObjects(rq("best-effort", {"pods": "1"}, {"pods": "1"}, scopes=["BestEffort"]),
                            rq("all", {"pods": "5"}, {"pods": "0"}))
    plugin = ResourceQuota(objects)
    await plugin.validate(create(pod("burstable", requests={"cpu": "1"})))
    assert objects.used("best-effort") == {"pods": "1"} and objects.used("all") == {"pods": "1"}
    assert await refused(plugin, create(pod("besteffort"))) == ('pods "besteffort" is forbidden: exceeded quota: '
                                                                "best-effort, requested: pods=1, used: pods=1, "
                                                                "limited: pods=1")
    assert objects.used("all") == {"pods": "1"}  # a refused pod is charged to no quota


def service(kind: str, ports: int = 1) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "ns",
                                                                "resourceVersion": "3"},
            "spec": {"type": kind, "ports": [{"port": 80 + i} for i in range(ports)]}}


async def test_a_service_update_is_charged_what_it_adds() -> None:
    objects = MemoryObjects(rq("svc", {"services": "5", "services.nodeports": "2"},
                               {"services": "1", "services.nodeports": "0"}))
    plugin = ResourceQuota(objects)
    await plugin.validate(create(service("ClusterIP", 2), kind="Service", resource="services", operation="UPDATE",
                                 old=service("ClusterIP", 1)))
    assert objects.writes == []  # a port more, but no node port: nothing to charge
    await plugin.validate(create(service("NodePort", 2), kind="Service", resource="services", operation="UPDATE",
                                 old=service("ClusterIP", 2)))
    assert objects.used("svc") == {"services": "1", "services.nodeports": "2"}
    assert await refused(plugin, create(service("NodePort", 3), kind="Service", resource="services",
                                        operation="UPDATE", old=service("NodePort", 2))) == \
        ('services "web" is forbidden: exceeded quota: svc, requested: services.nodeports=1, '
         "used: services.nodeports=2, limited: services.nodeports=2")


async def test_objects_are_counted_by_their_legacy_and_count_names() -> None:
    objects = MemoryObjects(rq("objects", {"configmaps": "1", "count/configmaps": "5",
                                           "count/deployments.apps": "1"},
                               {"configmaps": "0", "count/configmaps": "0", "count/deployments.apps": "1"}))
    plugin = ResourceQuota(objects)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}}
    await plugin.validate(create(cm, kind="ConfigMap", resource="configmaps"))
    assert objects.used("objects")["configmaps"] == "1" and objects.used("objects")["count/configmaps"] == "1"
    assert await refused(plugin, create(cm, kind="ConfigMap", resource="configmaps")) == \
        ('configmaps "cm" is forbidden: exceeded quota: objects, requested: configmaps=1, used: configmaps=1, '
         "limited: configmaps=1")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generateName": "web-"}}
    assert await refused(plugin, create(deployment, kind="Deployment", resource="deployments")) == \
        ('deployments.apps "web-" is forbidden: exceeded quota: objects, requested: count/deployments.apps=1, '
         "used: count/deployments.apps=1, limited: count/deployments.apps=1")


async def test_what_cannot_change_usage_is_not_looked_at() -> None:
    objects = MemoryObjects(rq("tight", {"pods": "0", "count/events": "0", "configmaps": "0"},
                                {"pods": "0", "count/events": "0", "configmaps": "0"}))
    plugin = ResourceQuota(objects)
    await plugin.validate(create(pod(), operation="UPDATE", old=pod()))       # pods: only creates are charged
    await plugin.validate(create(pod(), operation="UPDATE", subresource="status", old=pod()))
    await plugin.validate(create(pod(), operation="DELETE"))
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"}}
    await plugin.validate(create(event, kind="Event", resource="events"))  # events are never counted
    cm = {"metadata": {"name": "cm", "namespace": "ns"}}
    await plugin.validate(create(cm, kind="ConfigMap", resource="configmaps", operation="UPDATE", old=cm))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2"}}
    await plugin.validate(Attributes("CREATE", "Namespace", "namespaces", "", "", "ns2", namespace, None,
                                     UserInfo("alice")))
    await ResourceQuota(None).validate(create(pod()))  # no objects (tests): no quotas
    assert objects.writes == []


async def test_a_conflicting_write_is_retried_against_the_newer_quota() -> None:
    objects = MemoryObjects(rq("pods", {"pods": "3"}, {"pods": "0"}))
    objects.interfere = [{"pods": "1"}]  # the controller recalculates just before the plugin writes
    plugin = ResourceQuota(objects)
    await plugin.validate(create(pod("a")))
    assert objects.used("pods") == {"pods": "2"}
    objects.interfere = [{"pods": "3"}]
    assert await refused(plugin, create(pod("b"))) == \
        'pods "b" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=3, limited: pods=3'


async def test_conflicts_that_never_end_fail_the_request() -> None:
    objects = MemoryObjects(rq("pods", {"pods": "30"}, {"pods": "0"}))
    objects.interfere = [{"pods": str(n)} for n in range(1, 10)]
    message = await refused(ResourceQuota(objects), create(pod()), errors.Conflict)
    assert message.startswith('Operation cannot be fulfilled on resourcequotas "pods"')
    assert len(objects.interfere) == 5  # the first attempt and upstream's three retries


async def test_concurrent_creates_never_overshoot_even_with_a_lagging_cache() -> None:
    objects = MemoryObjects(rq("pods", {"pods": "3"}, {"pods": "0"}), lagging=True)
    plugin = ResourceQuota(objects)
    results = await asyncio.gather(*(plugin.validate(create(pod(f"p{i}"))) for i in range(10)),
                                   return_exceptions=True)
    admitted = [r for r in results if r is None]
    assert len(admitted) == 3, results
    assert all(isinstance(r, errors.Forbidden) for r in results if r is not None)
    # the ten arrived together: one batch, checked in order, one write of the quota (as upstream batches)
    assert objects.used("pods") == {"pods": "3"} and len(objects.writes) == 1
    # One apiserver checks a namespace's requests on one worker and remembers what it wrote: it never conflicts
    # with itself.
    assert objects.conflicts == 0
    # Another apiserver, whose cache has seen only the first charge, conflicts, re-reads and is refused.
    other = ResourceQuota(objects)
    objects.snapshot[("ns", "pods")] = copy.deepcopy(objects.writes[0])
    assert await refused(other, create(pod("late"))) == \
        'pods "late" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=3, limited: pods=3'
    assert objects.used("pods") == {"pods": "3"}


LIMITED = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "ResourceQuotaConfiguration",
           "limitedResources": [{"resource": "pods", "matchContains": ["cpu"]},
                                {"resource": "pods", "matchScopes": [{"scopeName": "PriorityClass", "operator": "In",
                                                                      "values": ["cluster-services"]}]}]}


async def test_limited_resources_need_a_covering_quota() -> None:
    plugin = ResourceQuota(MemoryObjects(), LIMITED)
    await plugin.validate(create(pod()))  # consumes no cpu
    assert await refused(plugin, create(pod(requests={"cpu": "1"}, limits={"cpu": "1"}))) == \
        'pods "nginx" is forbidden: insufficient quota to consume: cpu,limits.cpu,requests.cpu'
    message = await refused(plugin, create(pod(priorityClassName="cluster-services")), errors.InternalError)
    assert message == "insufficient quota to match these scopes: [{PriorityClass In [cluster-services]}]"
    covered = MemoryObjects(rq("cpu", {"cpu": "2", "limits.cpu": "2", "requests.cpu": "2"},
                               {"cpu": "0", "limits.cpu": "0", "requests.cpu": "0"}),
                            rq("critical", {"pods": "10"}, {"pods": "0"}))
    covered.stored[("ns", "critical")]["spec"]["scopeSelector"] = {"matchExpressions": [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["cluster-services"]}]}
    plugin = ResourceQuota(covered, LIMITED)
    await plugin.validate(create(pod(requests={"cpu": "1"}, limits={"cpu": "1"})))
    await plugin.validate(create(pod(requests={"cpu": "1"}, limits={"cpu": "1"}, priorityClassName="cluster-services")))
    assert covered.used("cpu") == {"cpu": "2", "limits.cpu": "2", "requests.cpu": "2"}
    assert covered.used("critical") == {"pods": "1"}


def test_a_configuration_without_a_resource_is_refused() -> None:
    with pytest.raises(AdmissionConfigError, match=r"limitedResources\[0\].resource: Required value"):
        ResourceQuota(None, {"limitedResources": [{"matchContains": ["cpu"]}]})


async def test_the_plugin_is_on_by_default_and_built_from_the_context() -> None:
    assert "ResourceQuota" in DEFAULT_PLUGINS

    async def no_namespace(name: str) -> dict[str, Any] | None:
        return None

    objects = MemoryObjects(rq("pods", {"pods": "0"}, {"pods": "0"}))
    plugin = PLUGINS["ResourceQuota"](PluginContext(no_namespace, objects=objects,
                                                    configuration={"ResourceQuota": LIMITED}))
    assert isinstance(plugin, ResourceQuota) and len(plugin.config.limited) == 2
    with pytest.raises(errors.Forbidden):
        await plugin.validate(create(pod()))


async def test_a_batch_is_checked_in_order_with_dry_runs_uncharged_and_written_once() -> None:
    objects = MemoryObjects(rq("pods", {"pods": "2"}, {"pods": "0"}))
    plugin = ResourceQuota(objects)
    results = await asyncio.gather(plugin.validate(create(pod("dry"), dry_run=True)),
                                   *(plugin.validate(create(pod(n))) for n in ("a", "b", "c")),
                                   return_exceptions=True)
    assert results[:3] == [None, None, None], results
    assert isinstance(results[3], errors.Forbidden)
    assert results[3].message == \
        'pods "c" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2'
    assert objects.used("pods") == {"pods": "2"} and len(objects.writes) == 1
    # the worker is gone once its namespace has nothing waiting; the next request starts another
    assert plugin._workers == {} and plugin._pending == {}
    assert await refused(plugin, create(pod("d"))) == \
        'pods "d" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2'
