"""What objects use of the resources a ResourceQuota limits, measured the way upstream's quota evaluators do.

The one idea (upstream's `pkg/quota/v1`): every quotable kind has an `Evaluator` that says which quota resources
it is charged for (`matching_resources`), what one object uses of them (`usage`), whether a quota's scopes
select it (`matches_scope`), and which operations can change usage (`handles`). Pods are charged for compute
resources while they run, Services for node ports and load balancers, every kind for its count
(`count/<resource>.<group>`). The ResourceQuota admission plugin charges quotas as objects are created
(`matches`, `usage`); the resource quota controller recalculates them from the objects (`sync_status`).

Amounts keep the format they were written in, as upstream's `Quantity` does, so "1Gi" + "512Mi" is "1536Mi"
and a refusal quotes amounts the way a user wrote them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from harness.api import meta
from harness.api.quantity import DECIMAL_SI, Quantity, format_quantity, parse_quantity, quantity_format
from harness.api.registry import STORED_KINDS, Kind


class Amount(NamedTuple):
    """A quantity and the format it prints in (upstream's `resource.Quantity`)."""

    value: Decimal
    fmt: str = DECIMAL_SI

    @classmethod
    def of(cls, raw: Quantity) -> Amount:
        return cls(parse_quantity(raw), quantity_format(raw))

    def plus(self, other: Amount) -> Amount:
        """As upstream's `Quantity.Add`: the sum keeps this amount's format unless this amount is zero."""
        return Amount(self.value + other.value, self.fmt if self.value else other.fmt)

    def minus(self, other: Amount) -> Amount:
        return Amount(self.value - other.value, self.fmt if self.value else other.fmt)

    def __str__(self) -> str:
        return format_quantity(self.value, self.fmt)


ZERO = Amount(Decimal(0))
ONE = Amount(Decimal(1))

#: Resource name -> amount (upstream's `corev1.ResourceList`).
ResourceList = dict[str, Amount]


# -- resource lists (upstream's quota/v1/resources.go) -------------------------------------


def resource_list(raw: Mapping[str, Any] | None) -> ResourceList:
    """A ResourceList of an object (`{"cpu": "500m"}`); what does not parse is left out."""
    out: ResourceList = {}
    for name, value in (raw or {}).items():
        try:
            out[str(name)] = Amount.of(value)
        except ValueError:
            continue
    return out


def to_raw(amounts: ResourceList) -> dict[str, str]:
    """The ResourceList as the API writes it: each amount in its canonical form."""
    return {name: str(amount) for name, amount in sorted(amounts.items())}


def add(a: ResourceList, b: ResourceList) -> ResourceList:
    out = dict(a)
    for name, amount in b.items():
        out[name] = out[name].plus(amount) if name in out else amount
    return out


def subtract_non_negative(a: ResourceList, b: ResourceList) -> ResourceList:
    """a - b per resource, never below zero; a resource only in b is zero (upstream's
    SubtractWithNonNegativeResult)."""
    out: ResourceList = {}
    for name, amount in a.items():
        left = amount.minus(b[name]) if name in b else amount
        out[name] = left if left.value > 0 else ZERO
    for name in b:
        out.setdefault(name, ZERO)
    return out


def mask(amounts: ResourceList, names: Iterable[str]) -> ResourceList:
    keep = set(names)
    return {name: amount for name, amount in amounts.items() if name in keep}


def remove_zeros(amounts: ResourceList) -> ResourceList:
    return {name: amount for name, amount in amounts.items() if amount.value != 0}


def negative(amounts: ResourceList) -> list[str]:
    return sorted(name for name, amount in amounts.items() if amount.value < 0)


def exceeding(a: ResourceList, b: ResourceList) -> list[str]:
    """The resources of b that a has more of (upstream's LessThanOrEqual, its failing names)."""
    return sorted(name for name, limit in b.items() if name in a and a[name].value > limit.value)


def equals(a: ResourceList, b: ResourceList) -> bool:
    return a.keys() == b.keys() and all(a[name].value == b[name].value for name in a)


def max_into(a: ResourceList, b: ResourceList) -> ResourceList:
    """Per resource the larger of a and b (upstream's maxResourceList)."""
    out = dict(a)
    for name, amount in b.items():
        if name not in out or amount.value > out[name].value:
            out[name] = amount
    return out


def pretty(amounts: ResourceList) -> str:
    """`requests.cpu=2,requests.memory=1Gi`: how refusals quote amounts, sorted by name."""
    return ",".join(f"{name}={amounts[name]}" for name in sorted(amounts))


def object_count_name(kind: Kind) -> str:
    """`count/<resource>` for the core group, `count/<resource>.<group>` otherwise."""
    return f"count/{kind.plural}.{kind.group}" if kind.group else f"count/{kind.plural}"


# -- pods (upstream's evaluator/core/pods.go and component-helpers' PodRequests/PodLimits) ----------------


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def _is_extended(name: str) -> bool:
    """An extended resource a container may ask for (charged as `requests.<name>`)."""
    return not _is_native(name) and not name.startswith("requests.")


def _pod_level_supported(name: str) -> bool:
    return name in ("cpu", "memory") or name.startswith("hugepages-")


def _aggregate(spec: Mapping[str, Any], field: str) -> ResourceList:
    """Containers summed; each init container runs with the sidecars started before it, so the pod needs the
    larger of the two; sidecars (restartPolicy Always) also run alongside the containers."""
    def of(ctr: Mapping[str, Any]) -> ResourceList:
        return resource_list((ctr.get("resources") or {}).get(field))

    total: ResourceList = {}
    for ctr in spec.get("containers") or ():
        total = add(total, of(ctr))
    sidecars: ResourceList = {}
    init_peak: ResourceList = {}
    for ctr in spec.get("initContainers") or ():
        if ctr.get("restartPolicy") == "Always":
            total = add(total, of(ctr))
            sidecars = add(sidecars, of(ctr))
            running = sidecars
        else:
            running = add(of(ctr), sidecars)
        init_peak = max_into(init_peak, running)
    return max_into(total, init_peak)


def _pod_level(spec: Mapping[str, Any], field: str) -> ResourceList:
    level = resource_list((spec.get("resources") or {}).get(field))
    return {name: amount for name, amount in level.items() if _pod_level_supported(name)}


def pod_requests(pod: Mapping[str, Any]) -> ResourceList:
    """What a pod requests: its containers' requests (or its pod-level ones) plus its overhead."""
    spec = _spec(pod)
    requests = {**_aggregate(spec, "requests"), **_pod_level(spec, "requests")}
    return add(requests, resource_list(spec.get("overhead")))


def pod_limits(pod: Mapping[str, Any]) -> ResourceList:
    """What a pod is limited to; overhead is added only to limits that are set and non-zero."""
    spec = _spec(pod)
    limits = {**_aggregate(spec, "limits"), **_pod_level(spec, "limits")}
    for name, amount in resource_list(spec.get("overhead")).items():
        if name in limits and limits[name].value != 0:
            limits[name] = limits[name].plus(amount)
    return limits


def compute_usage(requests: ResourceList, limits: ResourceList) -> ResourceList:
    """The quota resources requests and limits are charged to (upstream's podComputeUsageHelper)."""
    out: ResourceList = {"pods": ONE}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            out[name] = out[f"requests.{name}"] = requests[name]
        if name in limits:
            out[f"limits.{name}"] = limits[name]
    for name, amount in requests.items():
        if name.startswith("hugepages-"):
            out[name] = out[f"requests.{name}"] = amount
        if _is_extended(name):
            out[f"requests.{name}"] = amount
    return out


def counts_against_quota(pod: Mapping[str, Any], now: datetime) -> bool:
    """Not finished (Succeeded, Failed), and not being deleted past its grace period (upstream's QuotaV1Pod)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    md = pod.get("metadata") or {}
    grace = md.get("deletionGracePeriodSeconds")
    if md.get("deletionTimestamp") and grace is not None:
        try:
            deadline = meta.parse_time(str(md["deletionTimestamp"])) + timedelta(seconds=int(grace))
        except ValueError:
            return True
        return now <= deadline
    return True


def is_best_effort(pod: Mapping[str, Any]) -> bool:
    """No container (nor the pod) requests or limits cpu or memory (upstream's BestEffort QoS class)."""
    spec = _spec(pod)
    lists = [spec.get("resources") or {}]
    lists += [ctr.get("resources") or {} for ctr in (*(spec.get("containers") or ()),
                                                       *(spec.get("initContainers") or ()))]
    for resources in lists:
        for field in ("requests", "limits"):
            amounts = resource_list(resources.get(field))
            if any(amounts[n].value > 0 for n in ("cpu", "memory") if n in amounts):
                return False
    return True


def is_terminating(pod: Mapping[str, Any]) -> bool:
    """Has an active deadline (the Terminating scope)."""
    deadline = _spec(pod).get("activeDeadlineSeconds")
    return isinstance(deadline, int) and not isinstance(deadline, bool) and deadline >= 0


def _cross_namespace_affinity(pod: Mapping[str, Any]) -> bool:
    affinity = _spec(pod).get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = affinity.get(kind) or {}
        terms = list(rules.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        terms += [(t or {}).get("podAffinityTerm") or {}
                  for t in rules.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
        if any(t.get("namespaces") or t.get("namespaceSelector") is not None for t in terms):
            return True
    return False


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A scope selector requirement as a label selector over `labels` (upstream's
    ScopedResourceSelectorRequirementsAsSelector); an unknown operator matches nothing."""
    key, operator = str(selector.get("scopeName") or ""), selector.get("operator")
    values = [str(v) for v in selector.get("values") or []]
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def pod_matches_scope(selector: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    scope = selector.get("scopeName")
    if scope == "Terminating":
        return is_terminating(pod)
    if scope == "NotTerminating":
        return not is_terminating(pod)
    if scope == "BestEffort":
        return is_best_effort(pod)
    if scope == "NotBestEffort":
        return not is_best_effort(pod)
    if scope == "PriorityClass":
        priority_class = str(_spec(pod).get("priorityClassName") or "")
        if selector.get("operator") == "Exists":
            return bool(priority_class)
        return _selector_matches(selector, {"PriorityClass": priority_class} if priority_class else {})
    if scope == "CrossNamespacePodAffinity":
        return _cross_namespace_affinity(pod)
    return False


# -- evaluators --------------------------------------------------------------------------


class Evaluator:
    """How one kind is charged to quota; this base counts objects (upstream's objectCountEvaluator)."""

    #: The admission operations that can change what an object of this kind uses.
    operations: ClassVar[tuple[str, ...]] = ("CREATE",)

    def __init__(self, kind: Kind, names: tuple[str, ...]) -> None:
        self.kind = kind
        self.names = names

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.resource})"

    def handles(self, operation: str) -> bool:
        return operation in self.operations

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        """The quota resources among `names` this kind is charged for, in the order given."""
        return [name for name in names if name in self.names]

    def matches_scope(self, selector: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
        """Whether a quota scope selects the object; only pods are in any scope."""
        return False

    def matching_scopes(self, obj: Mapping[str, Any], selectors: Iterable[Mapping[str, Any]]) \
            -> list[Mapping[str, Any]]:
        return [s for s in selectors if self.matches_scope(s, obj)]

    def uncovered_scopes(self, limited: list[Mapping[str, Any]], matched: list[Mapping[str, Any]]) \
            -> list[Mapping[str, Any]]:
        """The limited scopes no matching quota covers (admission's limitedResources matchScopes)."""
        return []

    def constraints(self, required: list[str], obj: Mapping[str, Any]) -> str:
        """Why the object cannot be charged to a quota constraining `required` ("" if it can)."""
        return ""

    def usage(self, obj: Mapping[str, Any], now: datetime) -> ResourceList:
        return {name: ONE for name in self.names}


#: Quota resources pods are charged for, beyond hugepages and extended resources.
POD_RESOURCES = ("count/pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
                 "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage", "pods")
#: Upstream's backward-compatibility mistake: a quota on these needs every container to state them.
_MUST_SPECIFY = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})


class PodEvaluator(Evaluator):
    def matching_resources(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        out = [n for n in names if n in POD_RESOURCES]
        out += [n for n in names if n.startswith(("hugepages-", "requests.hugepages-"))
                or (not _is_native(n) and n.startswith("requests."))]
        return out

    def matches_scope(self, selector: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
        return pod_matches_scope(selector, obj)

    def uncovered_scopes(self, limited: list[Mapping[str, Any]], matched: list[Mapping[str, Any]]) \
            -> list[Mapping[str, Any]]:
        covered = {m.get("scopeName") for m in matched}
        return [s for s in limited if s.get("scopeName") not in covered]

    def constraints(self, required: list[str], obj: Mapping[str, Any]) -> str:
        needed = set(required) & _MUST_SPECIFY
        missing: dict[str, set[str]] = {}
        spec = _spec(obj)
        for ctr in (*(spec.get("containers") or ()), *(spec.get("initContainers") or ())):
            resources = ctr.get("resources") or {}
            has = compute_usage(resource_list(resources.get("requests")), resource_list(resources.get("limits")))
            for name in needed - has.keys():
                missing.setdefault(name, set()).add(str(ctr.get("name") or ""))
        if not missing:
            return ""
        return "must specify " + "; ".join(f"{name} for: {','.join(sorted(missing[name]))}"
                                           for name in sorted(missing))

    def usage(self, obj: Mapping[str, Any], now: datetime) -> ResourceList:
        # Every stored pod counts for count/pods; only pods still running count for compute resources.
        out: ResourceList = {"count/pods": ONE}
        if not counts_against_quota(obj, now):
            return out
        return add(out, compute_usage(pod_requests(obj), pod_limits(obj)))


class ServiceEvaluator(Evaluator):
    # A Service's type may change, and with it the node ports and load balancers it holds.
    operations = ("CREATE", "UPDATE")

    def usage(self, obj: Mapping[str, Any], now: datetime) -> ResourceList:
        spec = _spec(obj)
        ports = list(spec.get("ports") or [])
        out: ResourceList = {"count/services": ONE, "services": ONE, "services.loadbalancers": ZERO,
                             "services.nodeports": ZERO}
        if spec.get("type") == "NodePort":
            out["services.nodeports"] = Amount(Decimal(len(ports)))
        elif spec.get("type") == "LoadBalancer":
            # Without node ports allocated for it, a load balancer holds only those asked for by number.
            held = [p for p in ports if (p or {}).get("nodePort")] \
                if spec.get("allocateLoadBalancerNodePorts") is False else ports
            out["services.nodeports"] = Amount(Decimal(len(held)))
            out["services.loadbalancers"] = ONE
        return out


def quota_service_type(service: Mapping[str, Any]) -> str:
    """The Service type as quota sees it: NodePort, LoadBalancer or "" (upstream's GetQuotaServiceType)."""
    kind = _spec(service).get("type")
    return str(kind) if kind in ("NodePort", "LoadBalancer") else ""


#: Kinds quota never counts (upstream's default ignored resources).
IGNORED = frozenset({("", "events")})
#: The names core kinds were counted by before count/<resource> (upstream's legacy aliases).
_ALIASES = {"configmaps": "configmaps", "resourcequotas": "resourcequotas",
            "replicationcontrollers": "replicationcontrollers", "secrets": "secrets"}
_QUOTABLE_VERBS = frozenset({"create", "list", "watch", "delete"})


def quotable(kind: Kind) -> bool:
    """Namespaced, created, listed, watched and deleted, and not ignored: what quota can count."""
    return kind.namespaced and set(kind.verbs) >= _QUOTABLE_VERBS and (kind.group, kind.plural) not in IGNORED


def _evaluator(kind: Kind) -> Evaluator:
    names: tuple[str, ...] = (object_count_name(kind),)
    if kind.group == "" and kind.plural == "pods":
        return PodEvaluator(kind, POD_RESOURCES)
    if kind.group == "" and kind.plural == "services":
        return ServiceEvaluator(kind, ("count/services", "services", "services.nodeports", "services.loadbalancers"))
    if kind.group == "" and kind.plural in _ALIASES:
        names += (_ALIASES[kind.plural],)
    return Evaluator(kind, names)


EVALUATORS: dict[tuple[str, str], Evaluator] = {(k.group, k.plural): _evaluator(k)
                                                for k in STORED_KINDS if quotable(k)}


def evaluator_for(group: str, resource: str) -> Evaluator | None:
    return EVALUATORS.get((group, resource))


# -- quotas ------------------------------------------------------------------------------


def hard_of(quota: Mapping[str, Any]) -> ResourceList:
    """What the quota enforces: its status.hard (its spec once the controller has copied it)."""
    return resource_list((quota.get("status") or {}).get("hard"))


def used_of(quota: Mapping[str, Any]) -> ResourceList:
    return resource_list((quota.get("status") or {}).get("used"))


def scope_selectors(quota: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """spec.scopes (each as an Exists requirement) and spec.scopeSelector's requirements."""
    spec = quota.get("spec") or {}
    out: list[Mapping[str, Any]] = [{"scopeName": s, "operator": "Exists"} for s in spec.get("scopes") or []]
    return out + list((spec.get("scopeSelector") or {}).get("matchExpressions") or [])


def matches(evaluator: Evaluator, quota: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    """The quota limits something this kind is charged for, and its scopes all select the object."""
    if not evaluator.matching_resources(hard_of(quota)):
        return False
    return all(evaluator.matches_scope(s, obj) for s in scope_selectors(quota))


def usage_stats(evaluator: Evaluator, objects: Iterable[Mapping[str, Any]], resources: list[str],
                quota: Mapping[str, Any], now: datetime) -> ResourceList:
    """What the objects the quota's scopes select use, each of `resources` at least zero."""
    spec = quota.get("spec") or {}
    # As upstream, spec.scopes are matched by name alone here.
    selectors = [{"scopeName": s} for s in spec.get("scopes") or []]
    selectors += list((spec.get("scopeSelector") or {}).get("matchExpressions") or [])
    used: ResourceList = {name: ZERO for name in resources}
    for obj in objects:
        if all(evaluator.matches_scope(s, obj) for s in selectors):
            used = add(used, evaluator.usage(obj, now))
    return used


ObjectsOf = Callable[[Evaluator], Iterable[Mapping[str, Any]]]


def calculate_usage(quota: Mapping[str, Any], objects_of: ObjectsOf, now: datetime) -> ResourceList:
    """What the quota's namespace uses of each resource its spec limits that some kind is charged for.

    `objects_of(evaluator)` gives the objects of the evaluator's kind in the quota's namespace.
    """
    hard = list(resource_list((quota.get("spec") or {}).get("hard")))
    matched = [name for name in hard if any(e.matching_resources([name]) for e in EVALUATORS.values())]
    used: ResourceList = {}
    for evaluator in EVALUATORS.values():
        resources = evaluator.matching_resources(matched)
        if resources:
            used = add(used, usage_stats(evaluator, objects_of(evaluator), resources, quota, now))
    return mask(used, matched)


def sync_status(quota: Mapping[str, Any], objects_of: ObjectsOf, now: datetime) -> dict[str, Any] | None:
    """The status the quota should have (hard = spec.hard, used recalculated), or None if it has it already.

    As upstream's controller: usage of resources no kind is charged for is kept as observed, and only resources
    the spec limits are reported.
    """
    status = quota.get("status") or {}
    hard = resource_list((quota.get("spec") or {}).get("hard"))
    first = status.get("hard") is None or status.get("used") is None
    dirty = first or not equals(hard, resource_list(status.get("hard")))
    old_used = resource_list(status.get("used"))
    used = mask({**old_used, **calculate_usage(quota, objects_of, now)}, hard)
    if not dirty and equals(used, old_used):
        return None
    return {"hard": to_raw(hard), "used": to_raw(used)}


__all__ = ["EVALUATORS", "IGNORED", "ONE", "ZERO", "Amount", "Evaluator", "PodEvaluator", "ResourceList",
           "ServiceEvaluator", "add", "calculate_usage", "compute_usage", "counts_against_quota", "equals",
           "evaluator_for", "exceeding", "hard_of", "is_best_effort", "is_terminating", "mask", "matches",
           "negative", "object_count_name", "pod_limits", "pod_matches_scope", "pod_requests", "pretty",
           "quota_service_type", "quotable", "remove_zeros", "resource_list", "scope_selectors",
           "subtract_non_negative", "sync_status", "to_raw", "usage_stats", "used_of"]
