"""What scheduling knows about a node and a pod, kept ready so Filter and Score are cheap.

`PodInfo` is computed once per pod (requests by upstream's init-container rule, host ports,
tolerations, controller). `NodeInfo` is updated incrementally as pods are added to and
removed from a node — requested resources, ports in use, pods per controller — so no plugin
ever walks a node's pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.api import meta
from harness.api.quantity import int_value, milli_value

# What a container without a request counts as when scoring (upstream schedutil defaults).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
ALL_IPS = "0.0.0.0"
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")


class Resource:
    """cpu in millicores, memory and ephemeral storage in bytes, other (extended) resources by name."""

    __slots__ = ("ephemeral_storage", "memory", "milli_cpu", "scalar")

    def __init__(self, milli_cpu: int = 0, memory: int = 0, ephemeral_storage: int = 0,
                 scalar: dict[str, int] | None = None) -> None:
        self.milli_cpu = milli_cpu
        self.memory = memory
        self.ephemeral_storage = ephemeral_storage
        self.scalar: dict[str, int] = scalar if scalar is not None else {}

    @classmethod
    def from_list(cls, values: Mapping[str, Any] | None, *, skip: tuple[str, ...] = ("pods",)) -> Resource:
        """A ResourceList (`{"cpu": "500m", "memory": "1Gi"}`); unparsable values count as 0."""
        res = cls()
        for name, value in (values or {}).items():
            if name in skip:
                continue
            try:
                amount = milli_value(value) if name == "cpu" else int_value(value)
            except ValueError:
                continue
            res._set(name, amount)
        return res

    def _set(self, name: str, amount: int) -> None:
        if name == "cpu":
            self.milli_cpu = amount
        elif name == "memory":
            self.memory = amount
        elif name == "ephemeral-storage":
            self.ephemeral_storage = amount
        else:
            self.scalar[name] = amount

    def add(self, other: Resource, sign: int = 1) -> None:
        self.milli_cpu += sign * other.milli_cpu
        self.memory += sign * other.memory
        self.ephemeral_storage += sign * other.ephemeral_storage
        for name, amount in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + sign * amount

    def set_max(self, other: Resource) -> None:
        self.milli_cpu = max(self.milli_cpu, other.milli_cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral_storage = max(self.ephemeral_storage, other.ephemeral_storage)
        for name, amount in other.scalar.items():
            self.scalar[name] = max(self.scalar.get(name, 0), amount)

    def copy(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.ephemeral_storage, dict(self.scalar))

    def __repr__(self) -> str:
        return f"Resource(cpu={self.milli_cpu}m, memory={self.memory}, scalar={self.scalar})"


def pod_requests(spec: Mapping[str, Any], *, non_missing: bool = False) -> Resource:
    """What a pod asks for, as upstream `resource.PodRequests` adds it up.

    Containers are summed; an init container runs alone (with the sidecars started before it),
    so the pod needs the larger of the two; sidecars (init containers with restartPolicy
    Always) also run alongside the containers. `non_missing` counts a container with no cpu or
    memory request as 100m / 200Mi: what scoring uses, so that best-effort pods still spread.
    """
    total = Resource()
    for ctr in spec.get("containers") or ():
        total.add(_container_requests(ctr, non_missing))
    init_max, sidecars = Resource(), Resource()
    for ctr in spec.get("initContainers") or ():
        req = _container_requests(ctr, non_missing)
        if ctr.get("restartPolicy") == "Always":
            total.add(req)
            sidecars.add(req)
            req = sidecars.copy()
        else:
            req.add(sidecars)
        init_max.set_max(req)
    total.set_max(init_max)
    if spec.get("overhead"):
        total.add(Resource.from_list(spec["overhead"]))
    return total


def _container_requests(ctr: Mapping[str, Any], non_missing: bool) -> Resource:
    requests = (ctr.get("resources") or {}).get("requests") or {}
    res = Resource.from_list(requests)
    if non_missing:
        if "cpu" not in requests:
            res.milli_cpu = DEFAULT_MILLI_CPU_REQUEST
        if "memory" not in requests:
            res.memory = DEFAULT_MEMORY_REQUEST
    return res


def controller_uid(pod: Mapping[str, Any]) -> str:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


class PodInfo:
    """A pod plus everything scheduling derives from it, computed once."""

    __slots__ = ("host_ports", "key", "name", "namespace", "non_zero", "owner", "pod", "priority", "requests",
                 "terminating", "tolerations", "uid")

    def __init__(self, pod: dict[str, Any]) -> None:
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.namespace: str = md.get("namespace") or ""
        self.name: str = md.get("name") or ""
        self.key = meta.object_key(self.namespace, self.name)
        self.uid: str = md.get("uid") or self.key
        self.priority: int = int(spec.get("priority") or 0)
        self.terminating = meta.is_terminating(pod)
        self.requests = pod_requests(spec)
        self.non_zero = pod_requests(spec, non_missing=True)
        self.tolerations: list[dict[str, Any]] = spec.get("tolerations") or []
        self.owner = controller_uid(pod)
        self.host_ports: tuple[tuple[str, str, int], ...] = tuple(
            (p.get("hostIP") or ALL_IPS, p.get("protocol") or "TCP", int(p["hostPort"]))
            for ctr in spec.get("containers") or () for p in ctr.get("ports") or () if p.get("hostPort"))

    @property
    def node_name(self) -> str:
        return str((self.pod.get("spec") or {}).get("nodeName") or "")

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


class NodeInfo:
    """A node and the pods the scheduler counts on it (bound, and assumed while binding)."""

    __slots__ = ("allocatable", "allocatable_pods", "labels", "name", "node", "non_zero", "owner_counts", "pods",
                 "requested", "taints", "unschedulable", "used_ports", "zone")

    def __init__(self, name: str, node: dict[str, Any] | None = None) -> None:
        self.name = name
        self.node: dict[str, Any] | None = None
        self.labels: dict[str, str] = {}
        self.taints: list[dict[str, Any]] = []
        self.unschedulable = False
        self.zone = ""
        self.allocatable = Resource()
        self.allocatable_pods = 0
        self.pods: dict[str, PodInfo] = {}
        self.requested = Resource()
        self.non_zero = Resource()  # requests as scoring counts them (see pod_requests)
        self.used_ports: dict[tuple[str, int], dict[str, int]] = {}  # (protocol, port) -> {ip: users}
        self.owner_counts: dict[str, int] = {}  # controller uid -> running pods it owns here
        if node is not None:
            self.set_node(node)

    def set_node(self, node: dict[str, Any]) -> None:
        spec, status = node.get("spec") or {}, node.get("status") or {}
        self.node = node
        self.labels = (node.get("metadata") or {}).get("labels") or {}
        self.taints = spec.get("taints") or []
        self.unschedulable = bool(spec.get("unschedulable"))
        self.zone = zone_key(self.labels)
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        self.allocatable = Resource.from_list(allocatable)
        try:
            self.allocatable_pods = int_value(allocatable.get("pods", 0))
        except ValueError:
            self.allocatable_pods = 0

    def add_pod(self, pi: PodInfo) -> None:
        if pi.uid in self.pods:
            self.remove_pod(self.pods[pi.uid])
        self.pods[pi.uid] = pi
        self.requested.add(pi.requests)
        self.non_zero.add(pi.non_zero)
        for ip, protocol, port in pi.host_ports:
            users = self.used_ports.setdefault((protocol, port), {})
            users[ip] = users.get(ip, 0) + 1
        if pi.owner and not pi.terminating:
            self.owner_counts[pi.owner] = self.owner_counts.get(pi.owner, 0) + 1

    def remove_pod(self, pi: PodInfo) -> bool:
        counted = self.pods.pop(pi.uid, None)
        if counted is None:
            return False
        self.requested.add(counted.requests, -1)
        self.non_zero.add(counted.non_zero, -1)
        for ip, protocol, port in counted.host_ports:
            users = self.used_ports.get((protocol, port), {})
            users[ip] = users.get(ip, 1) - 1
            if users[ip] <= 0:
                users.pop(ip, None)
            if not users:
                self.used_ports.pop((protocol, port), None)
        if counted.owner and not counted.terminating:
            left = self.owner_counts.get(counted.owner, 1) - 1
            if left > 0:
                self.owner_counts[counted.owner] = left
            else:
                self.owner_counts.pop(counted.owner, None)
        return True

    def port_in_use(self, ip: str, protocol: str, port: int) -> bool:
        """Upstream HostPortInfo.CheckConflict: 0.0.0.0 clashes with every IP on that port."""
        users = self.used_ports.get((protocol, port))
        if not users:
            return False
        return ip == ALL_IPS or ALL_IPS in users or ip in users

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)}, requested={self.requested})"


def zone_key(labels: Mapping[str, str]) -> str:
    """Region and zone of a node, as upstream `utilnode.GetZoneKey` joins them ("" when unlabelled)."""
    region = next((labels[k] for k in REGION_LABELS if k in labels), "")
    zone = next((labels[k] for k in ZONE_LABELS if k in labels), "")
    return f"{region}:\x00:{zone}" if region or zone else ""
