"""The LimitRanger admission plugin, called the way the apiserver calls it: pod defaulting, `admit`, `validate`.

Expected wording is upstream's (plugin/pkg/admission/limitranger/admission.go)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest

from harness.api import errors, registry
from harness.api.defaults import apply_defaults
from harness.apiserver.admission import DEFAULT_PLUGINS, ORDER, PLUGINS, Attributes, PluginContext, UserInfo
from harness.apiserver.admission_limitranger import ANNOTATION, LimitRanger, aggregate, pod_limits, pod_requests

POD = registry.by_kind("v1", "Pod")


class FakeObjects:
    """`admission.Objects` holding LimitRanges, by namespace."""

    def __init__(self, *ranges: dict[str, Any], namespace: str = "ns") -> None:
        self.ranges = {namespace: list(ranges)}
        self.listed: list[tuple[str, str]] = []

    async def get(self, resource: str, namespace: str, name: str, group: str = "") -> dict[str, Any] | None:
        return None

    async def list(self, resource: str, namespace: str, group: str = "") -> list[dict[str, Any]]:
        self.listed.append((resource, namespace))
        assert resource == "limitranges" and group == ""
        return self.ranges.get(namespace, [])

    async def update_status(self, resource: str, obj: dict[str, Any], group: str = "") -> dict[str, Any]:
        raise AssertionError("LimitRanger writes nothing")


def ctr(name: str = "c", *, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
        **extra: Any) -> dict[str, Any]:
    resources = {key: value for key, value in (("requests", requests), ("limits", limits)) if value is not None}
    return {"name": name, "image": "nginx", "resources": resources, **extra}


def pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), name: str = "x",
        **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns"},
                           "spec": {"containers": list(containers) or [ctr()], **spec}}
    if init:
        obj["spec"]["initContainers"] = list(init)
    apply_defaults(POD, obj)  # as the apiserver does before admission: a lone limit is also the request
    return obj


def limit_range(name: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"limits": list(items)}}


def container_item(**bounds: dict[str, str]) -> dict[str, Any]:
    return {"type": "Container", **bounds}


def pod_item(**bounds: dict[str, str]) -> dict[str, Any]:
    return {"type": "Pod", **bounds}


def attrs(obj: dict[str, Any], *, kind: str = "Pod", resource: str = "pods", operation: str = "CREATE",
          subresource: str = "", old: dict[str, Any] | None = None, name: str | None = None) -> Attributes:
    md = obj.get("metadata") or {}
    return Attributes(operation, kind, resource, subresource, "ns", md.get("name", "") if name is None else name,
                      obj, old, UserInfo("u"))


async def admitted(obj: dict[str, Any], *ranges: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Both phases, as the chain runs them; the (mutated) object, or the 403 raised."""
    plugin, a = LimitRanger(FakeObjects(*ranges)), attrs(obj, **kw)
    await plugin.admit(a)
    await plugin.validate(a)
    return obj


async def refused(obj: dict[str, Any], *ranges: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(errors.Forbidden) as caught:
        await admitted(obj, *ranges, **kw)
    assert caught.value.code == 403 and caught.value.to_status()["reason"] == "Forbidden"
    return caught.value.message


def resources(obj: dict[str, Any], index: int = 0, field: str = "containers") -> dict[str, Any]:
    return dict(obj["spec"][field][index]["resources"])


# -- admit: defaults --------------------------------------------------------------------------------------


DEFAULTS = container_item(default={"cpu": "500m", "memory": "256Mi"}, defaultRequest={"cpu": "250m",
                                                                                      "memory": "128Mi"})


@pytest.mark.parametrize(("container", "items", "want", "note"), [
    # Nothing set: both defaults, upstream's annotation wording.
    (ctr("nginx"), [DEFAULTS],
     {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
     "LimitRanger plugin set: cpu, memory request for container nginx; cpu, memory limit for container nginx"),
    # A limit of its own is also its request (pod defaulting); only memory is defaulted.
    (ctr("nginx", limits={"cpu": "1"}), [DEFAULTS],
     {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
     "LimitRanger plugin set: memory request for container nginx; memory limit for container nginx"),
    # A request of its own keeps it; the default limit is still set (even below the request, as upstream).
    (ctr("web", requests={"cpu": "2"}), [container_item(default={"cpu": "1"}, defaultRequest={"cpu": "100m"})],
     {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
     "LimitRanger plugin set: cpu limit for container web"),
    # Only a default limit: the LimitRange's own defaulting makes it the default request too.
    (ctr("web"), [container_item(default={"memory": "64Mi"})],
     {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}},
     "LimitRanger plugin set: memory request for container web; memory limit for container web"),
    # Only max and min: the default limit is max, and so is the default request (min comes last).
    (ctr("web"), [container_item(max={"cpu": "2"}, min={"cpu": "100m"})],
     {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}},
     "LimitRanger plugin set: cpu request for container web; cpu limit for container web"),
    # Only min: the default request is min, and there is no default limit.
    (ctr("web"), [container_item(min={"memory": "32Mi"})], {"requests": {"memory": "32Mi"}},
     "LimitRanger plugin set: memory request for container web"),
    # Everything set already: nothing changes and no annotation.
    (ctr("web", requests={"cpu": "300m", "memory": "200Mi"}, limits={"cpu": "400m", "memory": "200Mi"}),
     [DEFAULTS], {"requests": {"cpu": "300m", "memory": "200Mi"}, "limits": {"cpu": "400m", "memory": "200Mi"}},
     None),
    # Pod items give no defaults.
    (ctr("web"), [pod_item(max={"cpu": "4"})], {}, None),
])
async def test_admit_applies_container_defaults(container: dict[str, Any], items: list[dict[str, Any]],
                                                want: dict[str, Any], note: str | None) -> None:
    obj = pod(container)
    with contextlib.suppress(errors.Forbidden):  # some break the range's bounds; only defaults are looked at here
        await admitted(obj, limit_range("defaults", *items))
    assert resources(obj) == want
    assert obj["metadata"].get("annotations", {}).get(ANNOTATION) == note


async def test_init_containers_get_defaults_and_are_named_as_such() -> None:
    obj = pod(ctr("app"), init=(ctr("setup", limits={"memory": "64Mi"}),))
    await admitted(obj, limit_range("defaults", DEFAULTS))
    assert resources(obj, field="initContainers") == {"requests": {"cpu": "250m", "memory": "64Mi"},
                                                      "limits": {"cpu": "500m", "memory": "64Mi"}}
    assert obj["metadata"]["annotations"][ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app; "
        "cpu request for init container setup; cpu limit for init container setup")


async def test_several_limit_ranges_the_first_default_wins_and_the_last_note_stays() -> None:
    first = limit_range("a", container_item(default={"cpu": "100m"}))
    second = limit_range("b", container_item(default={"cpu": "200m", "memory": "64Mi"}))
    obj = pod(ctr("c"))
    await admitted(obj, second, first)  # looked at by name, whatever order the cache lists them in
    assert resources(obj) == {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "100m", "memory": "64Mi"}}
    # Each LimitRange writes the annotation anew, as upstream's per-range mutation does.
    assert obj["metadata"]["annotations"][ANNOTATION] == (
        "LimitRanger plugin set: memory request for container c; memory limit for container c")


async def test_existing_annotations_are_kept() -> None:
    obj = pod(ctr("c"))
    obj["metadata"]["annotations"] = {"team": "web"}
    await admitted(obj, limit_range("d", DEFAULTS))
    assert obj["metadata"]["annotations"]["team"] == "web" and ANNOTATION in obj["metadata"]["annotations"]


@pytest.mark.parametrize("objects", [None, FakeObjects(), FakeObjects(limit_range("elsewhere", DEFAULTS),
                                                                      namespace="other")],
                         ids=["no-objects", "none-in-namespace", "only-in-another-namespace"])
async def test_no_limit_ranges_change_nothing(objects: FakeObjects | None) -> None:
    obj = pod(ctr("c", limits={"cpu": "8"}))
    before = copy.deepcopy(obj)
    plugin = LimitRanger(objects)
    await plugin.admit(attrs(obj))
    await plugin.validate(attrs(obj))
    assert obj == before


@pytest.mark.parametrize(("kind", "operation", "subresource"), [
    ("Pod", "UPDATE", ""), ("Pod", "CREATE", "binding"), ("Pod", "UPDATE", "status"), ("Pod", "DELETE", ""),
    ("ConfigMap", "CREATE", ""),
])
async def test_only_pod_creates_are_defaulted_and_checked(kind: str, operation: str, subresource: str) -> None:
    obj = pod(ctr("c", limits={"cpu": "8"}))
    before = copy.deepcopy(obj)
    objects = FakeObjects(limit_range("d", container_item(max={"cpu": "1"}, default={"memory": "1Gi"})))
    plugin, a = LimitRanger(objects), attrs(obj, kind=kind, operation=operation, subresource=subresource)
    await plugin.admit(a)
    await plugin.validate(a)
    assert obj == before and objects.listed == []


# -- validate: min, max, ratio --------------------------------------------------------------------------


@pytest.mark.parametrize(("containers", "items", "message"), [
    ([ctr(requests={"cpu": "50m"}, limits={"cpu": "200m"})], [container_item(min={"cpu": "100m"})],
     "minimum cpu usage per Container is 100m, but request is 50m"),
    ([ctr(requests={"cpu": "150m"}, limits={"cpu": "200m"})], [container_item(min={"cpu": "300m"})],
     "minimum cpu usage per Container is 300m, but request is 150m"),
    ([ctr(limits={"cpu": "2"})], [container_item(max={"cpu": "1"})],
     "maximum cpu usage per Container is 1, but limit is 2"),
    ([ctr(requests={"memory": "2Gi"}, limits={"memory": "2Gi"})], [container_item(max={"memory": "1024Mi"})],
     "maximum memory usage per Container is 1Gi, but limit is 2Gi"),
    # Both broken: min before max, in brackets, as upstream's aggregate.
    ([ctr(requests={"cpu": "50m", "memory": "1Gi"}, limits={"cpu": "100m", "memory": "2Gi"})],
     [container_item(min={"cpu": "100m"}, max={"memory": "1Gi"})],
     "[minimum cpu usage per Container is 100m, but request is 50m, "
     "maximum memory usage per Container is 1Gi, but limit is 2Gi]"),
    ([ctr(requests={"cpu": "100m"}, limits={"cpu": "400m"})], [container_item(maxLimitRequestRatio={"cpu": "2"})],
     "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"),
    ([ctr(requests={"memory": "300Mi"}, limits={"memory": "1Gi"})],
     [container_item(maxLimitRequestRatio={"memory": "1500m"})],
     "memory max limit to request ratio per Container is 1500m, but provided ratio is 3.413333"),
    ([ctr(requests={"cpu": "0"}, limits={"cpu": "1"})], [container_item(maxLimitRequestRatio={"cpu": "2"})],
     "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0"),
    # Quantities are quoted in canonical form.
    ([ctr(limits={"cpu": "1.5"})], [container_item(max={"cpu": "1000m"})],
     "maximum cpu usage per Container is 1, but limit is 1500m"),
    # The same broken bound in two containers is said once.
    ([ctr("a", limits={"cpu": "2"}), ctr("b", limits={"cpu": "2"})], [container_item(max={"cpu": "1"})],
     "maximum cpu usage per Container is 1, but limit is 2"),
    # Init containers are held to the Container bounds too.
    ([ctr("app", limits={"cpu": "1"}), {"init": ctr("setup", limits={"cpu": "3"})}],
     [container_item(max={"cpu": "2"})], "maximum cpu usage per Container is 2, but limit is 3"),
    # Per Pod: the containers' sum.
    ([ctr("a", limits={"cpu": "600m"}), ctr("b", limits={"cpu": "600m"})], [pod_item(max={"cpu": "1"})],
     "maximum cpu usage per Pod is 1, but limit is 1200m"),
    ([ctr("a", requests={"memory": "10Mi"}, limits={"memory": "20Mi"})], [pod_item(min={"memory": "64Mi"})],
     "minimum memory usage per Pod is 64Mi, but request is 10Mi"),
    ([ctr("a")], [pod_item(min={"memory": "64Mi"})],
     "minimum memory usage per Pod is 64Mi.  No request is specified"),
    ([ctr("a", requests={"cpu": "1"})], [pod_item(max={"cpu": "2"})],
     "maximum cpu usage per Pod is 2.  No limit is specified"),
    ([ctr("a", requests={"cpu": "100m"}, limits={"cpu": "200m"}),
      ctr("b", requests={"cpu": "100m"}, limits={"cpu": "1"})], [pod_item(maxLimitRequestRatio={"cpu": "5"})],
     "cpu max limit to request ratio per Pod is 5, but provided ratio is 6.000000"),
    # Per Pod, an init container's needs count while it runs alone...
    ([ctr("app", limits={"cpu": "500m"}), {"init": ctr("setup", limits={"cpu": "2"})}],
     [pod_item(max={"cpu": "1"})], "maximum cpu usage per Pod is 1, but limit is 2"),
    # ... and a sidecar's (restartPolicy Always) add to everything after it.
    ([ctr("app", limits={"cpu": "800m"}), {"init": ctr("proxy", limits={"cpu": "300m"}, restartPolicy="Always")}],
     [pod_item(max={"cpu": "1"})], "maximum cpu usage per Pod is 1, but limit is 1100m"),
])
async def test_validate_refuses_with_upstreams_words(containers: list[dict[str, Any]], items: list[dict[str, Any]],
                                                     message: str) -> None:
    main = [c for c in containers if "init" not in c]
    init = tuple(c["init"] for c in containers if "init" in c)
    assert await refused(pod(*main, init=init), limit_range("limits", *items)) == \
        f'pods "x" is forbidden: {message}'


@pytest.mark.parametrize(("containers", "items"), [
    ([ctr(requests={"cpu": "100m"}, limits={"cpu": "1"})], [container_item(min={"cpu": "100m"}, max={"cpu": "1"})]),
    ([ctr(requests={"cpu": "100m"}, limits={"cpu": "200m"})], [container_item(maxLimitRequestRatio={"cpu": "2"})]),
    ([ctr("a", limits={"cpu": "500m"}), ctr("b", limits={"cpu": "500m"})], [pod_item(max={"cpu": "1"})]),
    ([ctr()], [DEFAULTS, pod_item(max={"memory": "1Gi"})]),  # the defaults themselves are within bounds
])
async def test_validate_admits_what_is_within_bounds(containers: list[dict[str, Any]],
                                                     items: list[dict[str, Any]]) -> None:
    await admitted(pod(*containers), limit_range("limits", *items))


async def test_pod_level_resources_replace_the_containers_sum_for_cpu_and_memory() -> None:
    obj = pod(ctr("a", limits={"cpu": "600m"}), ctr("b", limits={"cpu": "600m"}),
              resources={"requests": {"cpu": "1"}, "limits": {"cpu": "1"}})
    assert pod_limits(obj)["cpu"].value == 1 and pod_requests(obj)["cpu"].value == 1
    await admitted(obj, limit_range("limits", pod_item(max={"cpu": "1"})))


async def test_the_first_limit_range_broken_is_the_one_reported() -> None:
    cpu = limit_range("a-cpu", container_item(max={"cpu": "4"}))
    memory = limit_range("b-memory", container_item(max={"memory": "1Gi"}))
    obj = pod(ctr("c", limits={"cpu": "8", "memory": "2Gi"}))
    assert await refused(obj, memory, cpu) == 'pods "x" is forbidden: maximum cpu usage per Container is 4, but ' \
                                              "limit is 8"
    ok = pod(ctr("c", limits={"cpu": "2", "memory": "2Gi"}))
    assert await refused(ok, memory, cpu) == 'pods "x" is forbidden: maximum memory usage per Container is 1Gi, ' \
                                             "but limit is 2Gi"


async def test_a_pod_without_a_name_is_called_by_its_generate_name() -> None:
    obj = pod(ctr("c", limits={"cpu": "2"}), name="")
    obj["metadata"]["generateName"] = "web-"
    message = await refused(obj, limit_range("l", container_item(max={"cpu": "1"})), name="")
    assert message.startswith('pods "web-" is forbidden: ')


# -- PersistentVolumeClaims ------------------------------------------------------------------------------


def claim(storage: str | None) -> dict[str, Any]:
    requests = {"storage": storage} if storage else {}
    return {"metadata": {"name": "data", "namespace": "ns"}, "spec": {"resources": {"requests": requests}}}


CLAIMS = {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}


@pytest.mark.parametrize(("storage", "message"), [
    ("500Mi", "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"),
    ("20Gi", "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"),
    (None, "[minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified, "
           "maximum storage usage per PersistentVolumeClaim is 10Gi.  No request is specified]"),
])
async def test_claims_are_held_to_their_storage_bounds(storage: str | None, message: str) -> None:
    got = await refused(claim(storage), limit_range("storage", CLAIMS), kind="PersistentVolumeClaim",
                        resource="persistentvolumeclaims")
    assert got == f'persistentvolumeclaims "data" is forbidden: {message}'


async def test_claims_within_bounds_and_claims_being_deleted_pass() -> None:
    ranges = limit_range("storage", CLAIMS)
    await admitted(claim("5Gi"), ranges, kind="PersistentVolumeClaim", resource="persistentvolumeclaims")
    old = claim("20Gi")
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await admitted(claim("20Gi"), ranges, kind="PersistentVolumeClaim", resource="persistentvolumeclaims",
                   operation="UPDATE", old=old)


# -- wiring ---------------------------------------------------------------------------------------------


def test_aggregate_brackets_only_several_distinct_messages() -> None:
    assert aggregate(["a"]) == "a" and aggregate(["a", "a"]) == "a"
    assert aggregate(["a", "b", "a"]) == "[a, b]"


async def test_limit_ranger_is_a_default_plugin_built_from_the_contexts_objects() -> None:
    assert "LimitRanger" in DEFAULT_PLUGINS and ORDER.index("LimitRanger") < ORDER.index("ResourceQuota")

    async def no_namespace(name: str) -> dict[str, Any] | None:
        return None

    objects = FakeObjects(limit_range("d", DEFAULTS))
    plugin = PLUGINS["LimitRanger"](PluginContext(no_namespace, objects=objects))
    obj = pod(ctr("c"))
    await plugin.admit(attrs(obj))
    assert objects.listed == [("limitranges", "ns")] and ANNOTATION in obj["metadata"]["annotations"]


async def test_the_cached_limit_ranges_are_not_changed() -> None:
    cached = limit_range("d", container_item(max={"cpu": "1"}))
    before = copy.deepcopy(cached)
    await admitted(pod(ctr("c")), cached)
    assert cached == before


@pytest.mark.parametrize("garbage", [
    {"metadata": {"name": "x"}, "spec": "x"},
    {"metadata": {"name": "x", "annotations": "x"},
     "spec": {"containers": [None, 3, {"name": "c", "resources": 5}, {"name": "d", "resources": {"limits": []}}],
              "initContainers": "x", "resources": []}},
])
async def test_malformed_pods_are_left_to_validation(garbage: dict[str, Any]) -> None:
    """Admission runs before the object's validation: it may refuse, but must not crash on what validation will."""
    with contextlib.suppress(errors.Forbidden):
        await admitted(garbage, limit_range("d", DEFAULTS, pod_item(max={"cpu": "1"})),
                       limit_range("e", None, "x", {"type": "Container", "max": "x"}))  # type: ignore[arg-type]
