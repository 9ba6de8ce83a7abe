"""The LimitRanger admission plugin: a namespace's LimitRanges default and bound what its pods ask for.

As upstream's plugin/pkg/admission/limitranger: on a pod's create, `admit` gives every container and init
container the `default` limits and `defaultRequest` requests of each Container item it does not set itself,
and says so in the `kubernetes.io/limit-ranger` annotation; `validate` then checks each LimitRange's min, max
and maxLimitRequestRatio per Container and per Pod (the pod's effective requests and limits, init containers
and sidecars included), and a PersistentVolumeClaim's storage request. The first LimitRange broken refuses the
request with a 403 listing what it breaks. Pod updates are not checked: a pod's resources cannot change.

Quantities are compared the way upstream compares them, in thousandths of a unit (whole units past what an
int64 can hold in thousandths), and quoted in upstream's canonical form ("500m", "1Gi").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from harness.api import errors
from harness.api.defaults import default_limit_range_item
from harness.api.quantity import DECIMAL_SI, format_quantity, int_value, milli_value, parse_quantity, quantity_format
from harness.apiserver.admission import Attributes, Objects, Phases

ANNOTATION = "kubernetes.io/limit-ranger"
#: Upstream's resource.MaxMilliValue: past it, quantities are compared in whole units.
MAX_MILLI_VALUE = (2**63 - 1) // 1000
#: The resources a pod's own `spec.resources` may set (upstream's supportedPodLevelResources).
POD_LEVEL_RESOURCES = ("cpu", "memory")


@dataclass(frozen=True)
class Amount:
    """A quantity and the format upstream would print it in."""

    value: Decimal
    fmt: str = DECIMAL_SI

    def __str__(self) -> str:
        return format_quantity(self.value, self.fmt)


ResourceList = dict[str, Amount]


class LimitRanger(Phases):
    name = "LimitRanger"

    def __init__(self, objects: Objects | None) -> None:
        self.objects = objects

    async def admit(self, attrs: Attributes) -> None:
        if not _supports(attrs) or attrs.kind != "Pod" or not isinstance(attrs.obj, dict):
            return
        for limit_range in await self._limit_ranges(attrs):
            set_defaults(attrs.obj, limit_range)

    async def validate(self, attrs: Attributes) -> None:
        if not _supports(attrs) or not isinstance(attrs.obj, dict):
            return
        for limit_range in await self._limit_ranges(attrs):
            check = check_pod if attrs.kind == "Pod" else check_claim
            problems = check(attrs.obj, limit_range)
            if problems:
                raise _forbidden(attrs, aggregate(problems))

    async def _limit_ranges(self, attrs: Attributes) -> list[dict[str, Any]]:
        """The namespace's LimitRanges (from the watch cache), by name, each with upstream's defaults."""
        if self.objects is None:
            return []
        try:
            found = await self.objects.list("limitranges", attrs.namespace)
        except errors.ApiError:
            raise _forbidden(attrs, f"unable to {attrs.operation} /v1, Resource={attrs.resource} at this time "
                                    "because there was an error enforcing limit ranges") from None
        out = []
        for obj in sorted(found, key=lambda o: str(_dict(o.get("metadata")).get("name", ""))):
            limit_range = copy.deepcopy(obj)  # cached objects are shared
            for item in _items(limit_range):
                default_limit_range_item(item)
            out.append(limit_range)
        return out


def _supports(attrs: Attributes) -> bool:
    """Pod creates and PersistentVolumeClaim writes, not subresources nor objects being deleted."""
    if attrs.subresource or attrs.operation not in ("CREATE", "UPDATE"):
        return False
    if attrs.kind == "Pod" and attrs.operation == "UPDATE":
        return False
    if attrs.kind not in ("Pod", "PersistentVolumeClaim"):
        return False
    return not (isinstance(attrs.old, dict) and _dict(attrs.old.get("metadata")).get("deletionTimestamp"))


def _forbidden(attrs: Attributes, why: str) -> errors.Forbidden:
    md = _dict(_dict(attrs.obj).get("metadata"))
    name = attrs.name or md.get("name") or md.get("generateName") or "Unknown"
    return errors.Forbidden(f'{attrs.resource} "{name}" is forbidden: {why}', kind=attrs.resource, name=name)


def aggregate(messages: list[str]) -> str:
    """Several errors as upstream's aggregate prints them: each message once, bracketed when more than one."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# -- reading objects ------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(limit_range: dict[str, Any]) -> list[dict[str, Any]]:
    limits = _dict(limit_range.get("spec")).get("limits")
    return [item for item in limits if isinstance(item, dict)] if isinstance(limits, list) else []


def _containers(pod: dict[str, Any], field: str) -> list[dict[str, Any]]:
    found = _dict(pod.get("spec")).get(field)
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def _resources(owner: dict[str, Any]) -> dict[str, Any]:
    return _dict(owner.get("resources"))


def amounts(given: Any) -> ResourceList:
    """A resource list of quantities; entries that are not quantities (validation refuses them) are left out."""
    out: ResourceList = {}
    for name, value in (given.items() if isinstance(given, dict) else ()):
        try:
            out[name] = Amount(parse_quantity(value), quantity_format(value))
        except ValueError:
            continue
    return out


# -- admit: defaults ------------------------------------------------------------------------


def set_defaults(pod: dict[str, Any], limit_range: dict[str, Any]) -> None:
    """Give each container the Container items' defaults it lacks, and say what was set in the annotation."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    for item in _items(limit_range):
        if item.get("type") == "Container":
            requests.update(_dict(item.get("defaultRequest")))
            limits.update(_dict(item.get("default")))
    notes: list[str] = []
    for field, label in (("containers", "container"), ("initContainers", "init container")):
        for ctr in _containers(pod, field):
            notes += _default_container(ctr, requests, limits, f"{label} {ctr.get('name', '')}")
    if notes:
        md = pod.setdefault("metadata", {})
        if isinstance(md, dict) and md.get("annotations") is None:
            md["annotations"] = {}
        annotations = _dict(md).get("annotations")
        if isinstance(annotations, dict):  # anything else, validation refuses
            annotations[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)


def _default_container(ctr: dict[str, Any], requests: dict[str, Any], limits: dict[str, Any],
                       who: str) -> list[str]:
    resources = ctr.get("resources")
    if resources is None:
        resources = ctr["resources"] = {}
    if not isinstance(resources, dict):
        return []
    notes: list[str] = []
    for key, defaults, what in (("requests", requests, "request"), ("limits", limits, "limit")):
        have = resources.get(key) or {}
        if not isinstance(have, dict):
            continue  # validation refuses it
        missing = sorted(name for name in defaults if name not in have)
        if missing:
            resources[key] = {**have, **{name: defaults[name] for name in missing}}
            notes.append(f"{', '.join(missing)} {what} for {who}")
    return notes


# -- validate: constraints ------------------------------------------------------------------


def check_pod(pod: dict[str, Any], limit_range: dict[str, Any]) -> list[str]:
    """What of `limit_range` the pod breaks, per container and init container, then for the whole pod."""
    problems: list[str] = []
    for item in _items(limit_range):
        kind = item.get("type")
        if kind == "Container":
            for ctr in (*_containers(pod, "containers"), *_containers(pod, "initContainers")):
                resources = _resources(ctr)
                problems += _bounds(item, "Container", amounts(resources.get("requests")),
                                    amounts(resources.get("limits")))
        elif kind == "Pod":
            problems += _bounds(item, "Pod", pod_requests(pod), pod_limits(pod))
    return problems


def check_claim(claim: dict[str, Any], limit_range: dict[str, Any]) -> list[str]:
    """A claim's storage requests within its PersistentVolumeClaim items' min and max (limits are not read)."""
    problems: list[str] = []
    requests = amounts(_resources(_dict(claim.get("spec"))).get("requests"))
    for item in _items(limit_range):
        if item.get("type") != "PersistentVolumeClaim":
            continue
        for name, bound in sorted(amounts(item.get("min")).items()):
            problems += _min(name, "PersistentVolumeClaim", bound, requests, {})
        for name, bound in sorted(amounts(item.get("max")).items()):
            problems += _max_request(name, "PersistentVolumeClaim", bound, requests)
    return problems


def _bounds(item: dict[str, Any], kind: str, requests: ResourceList, limits: ResourceList) -> list[str]:
    problems: list[str] = []
    for name, bound in sorted(amounts(item.get("min")).items()):
        problems += _min(name, kind, bound, requests, limits)
    for name, bound in sorted(amounts(item.get("max")).items()):
        problems += _max(name, kind, bound, requests, limits)
    for name, bound in sorted(amounts(item.get("maxLimitRequestRatio")).items()):
        problems += _ratio(name, kind, bound, requests, limits)
    return problems


def _comparable(*quantities: Amount | None) -> list[int]:
    """Upstream's requestLimitEnforcedValues: thousandths when none overflows them, else whole units."""
    values = [q.value if q is not None else Decimal(0) for q in quantities]
    if all(int_value(v) <= MAX_MILLI_VALUE for v in values):
        return [milli_value(v) for v in values]
    return [int_value(v) for v in values]


def _min(name: str, kind: str, bound: Amount, requests: ResourceList, limits: ResourceList) -> list[str]:
    request, limit = requests.get(name), limits.get(name)
    req, lim, enforced = _comparable(request, limit, bound)
    if request is None:
        return [f"minimum {name} usage per {kind} is {bound}.  No request is specified"]
    if req < enforced:
        return [f"minimum {name} usage per {kind} is {bound}, but request is {request}"]
    if limit is not None and lim < enforced:
        return [f"minimum {name} usage per {kind} is {bound}, but limit is {limit}"]
    return []


def _max(name: str, kind: str, bound: Amount, requests: ResourceList, limits: ResourceList) -> list[str]:
    request, limit = requests.get(name), limits.get(name)
    req, lim, enforced = _comparable(request, limit, bound)
    if limit is None:
        return [f"maximum {name} usage per {kind} is {bound}.  No limit is specified"]
    if lim > enforced:
        return [f"maximum {name} usage per {kind} is {bound}, but limit is {limit}"]
    if request is not None and req > enforced:
        return [f"maximum {name} usage per {kind} is {bound}, but request is {request}"]
    return []


def _max_request(name: str, kind: str, bound: Amount, requests: ResourceList) -> list[str]:
    """The max of a kind whose limits mean nothing (claims): the request alone is bounded."""
    request = requests.get(name)
    req, _, enforced = _comparable(request, None, bound)
    if request is None:
        return [f"maximum {name} usage per {kind} is {bound}.  No request is specified"]
    if req > enforced:
        return [f"maximum {name} usage per {kind} is {bound}, but request is {request}"]
    return []


def _ratio(name: str, kind: str, bound: Amount, requests: ResourceList, limits: ResourceList) -> list[str]:
    request, limit = requests.get(name), limits.get(name)
    req, lim, _ = _comparable(request, limit, bound)
    if request is None or req == 0:
        return [f"{name} max limit to request ratio per {kind} is {bound}, but no request is specified or "
                "request is 0"]
    if limit is None or lim == 0:
        return [f"{name} max limit to request ratio per {kind} is {bound}, but no limit is specified or "
                "limit is 0"]
    # Floats, as upstream divides: the ratio shown is the one compared, before scaling to thousandths.
    observed = shown = float(lim) / float(req)
    allowed = float(int_value(bound.value))
    if int_value(bound.value) <= MAX_MILLI_VALUE:
        observed, allowed = observed * 1000, float(milli_value(bound.value))
    if observed > allowed:
        return [f"{name} max limit to request ratio per {kind} is {bound}, but provided ratio is {shown:f}"]
    return []


# -- a pod's effective requests and limits --------------------------------------------------


def pod_requests(pod: dict[str, Any]) -> ResourceList:
    return _pod_total(pod, "requests")


def pod_limits(pod: dict[str, Any]) -> ResourceList:
    return _pod_total(pod, "limits")


def _pod_total(pod: dict[str, Any], key: str) -> ResourceList:
    """Upstream's podRequests/podLimits: the containers' sum, raised to what any init container needs while it
    runs (itself plus the sidecars started before it; sidecars also add to the sum), then the pod-level
    `spec.resources` for cpu and memory in place of the containers' figures."""
    total: ResourceList = {}
    for ctr in _containers(pod, "containers"):
        _add(total, amounts(_resources(ctr).get(key)))
    sidecars: ResourceList = {}
    init_peak: ResourceList = {}
    for ctr in _containers(pod, "initContainers"):
        own = amounts(_resources(ctr).get(key))
        if ctr.get("restartPolicy") == "Always":
            _add(total, own)
            _add(sidecars, own)
            running = dict(sidecars)
        else:
            running = {}
            _add(running, own)
            _add(running, sidecars)
        _max_into(init_peak, running)
    _max_into(total, init_peak)
    pod_level = amounts(_resources(_dict(pod.get("spec"))).get(key))
    for name in POD_LEVEL_RESOURCES:
        if name in pod_level:
            total[name] = pod_level[name]
    return total


def _add(into: ResourceList, more: ResourceList) -> None:
    for name, amount in more.items():
        have = into.get(name)
        if have is None:
            into[name] = amount
        else:  # the sum keeps the first addend's format, unless that one was zero (as Quantity.Add)
            into[name] = Amount(have.value + amount.value, amount.fmt if have.value == 0 else have.fmt)


def _max_into(into: ResourceList, other: ResourceList) -> None:
    for name, amount in other.items():
        if name not in into or amount.value > into[name].value:
            into[name] = amount
