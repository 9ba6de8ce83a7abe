"""The Node and Lease objects a kubelet writes (the real one and hollow ones), built as upstream's kubelet does.

Pure functions from a node's shape and the time to JSON bodies. The one idea: a condition's
`lastHeartbeatTime` moves on every status post, but its `lastTransitionTime` only moves when
its status changes, so each builder takes the conditions the apiserver holds now.
`ready_status` and `address_of` are how everyone else reads a Node's readiness and addresses.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from harness.api import conditions
from harness.util import rfc3339

KUBELET_PORT = 10250
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40

#: `status.nodeInfo` of a hollow node; a real kubelet reads its own from the machine.
HOLLOW_INFO: dict[str, str] = {
    "kernelVersion": "6.1.0-hollow", "osImage": "Hollow Linux 1.0", "containerRuntimeVersion": "hollow://1.0",
    "kubeletVersion": "v1.37.0-hollow", "kubeProxyVersion": "v1.37.0-hollow", "operatingSystem": "linux",
    "architecture": "amd64"}

#: (type, status, reason, message) of the conditions a healthy kubelet reports, in upstream's order.
CONDITIONS: tuple[tuple[str, str, str, str], ...] = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


@dataclass(frozen=True)
class NodeShape:
    """What every hollow node of a cluster looks like: its resources, labels and taints."""

    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 110
    ephemeral_storage: str = "100Gi"
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=lambda: dict(HOLLOW_INFO))
    kubelet_port: int = KUBELET_PORT

    def resources(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods),
                "ephemeral-storage": self.ephemeral_storage}


def micro_time(when: datetime) -> str:
    """A `metav1.MicroTime`: `2026-01-02T03:04:05.123456Z`."""
    return rfc3339.format_time(when, digits=6)


def node_labels(name: str, shape: NodeShape) -> dict[str, str]:
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            **shape.labels}


def node_conditions(now: str, current: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The healthy conditions, stamped `now`; a condition already in that status keeps its transition time."""
    held = {c.get("type"): c for c in current or []}
    out = []
    for ctype, status, reason, message in CONDITIONS:
        out.append({"type": ctype, "status": status, "lastHeartbeatTime": now,
                    "lastTransitionTime": conditions.transition_time(held.get(ctype), status, now),
                    "reason": reason, "message": message})
    return out


def _machine_id(name: str) -> str:
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


def node_status(name: str, ip: str, shape: NodeShape, *, now: str,
                current: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole `status` of a node; `current` is the conditions the apiserver holds."""
    machine = _machine_id(name)
    uuid_like = f"{machine[:8]}-{machine[8:12]}-{machine[12:16]}-{machine[16:20]}-{machine[20:]}"
    return {
        "capacity": shape.resources(),
        "allocatable": shape.resources(),
        "conditions": node_conditions(now, current),
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": shape.kubelet_port}},
        "nodeInfo": {"machineID": machine, "systemUUID": uuid_like, "bootID": uuid_like, **shape.info},
    }


def node_object(name: str, ip: str, shape: NodeShape, *, now: str) -> dict[str, Any]:
    """A new Node as a kubelet registers it (status included: Node keeps it on create)."""
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node",
                            "metadata": {"name": name, "labels": node_labels(name, shape)},
                            "spec": {},
                            "status": node_status(name, ip, shape, now=now)}
    if shape.taints:
        node["spec"]["taints"] = copy.deepcopy(shape.taints)
    return node


def adopted(existing: dict[str, Any], shape: NodeShape) -> dict[str, Any] | None:
    """The existing Node with our labels added, or None if it already carries them."""
    name = existing["metadata"]["name"]
    labels = existing["metadata"].get("labels") or {}
    wanted = {**labels, **node_labels(name, shape)}
    if wanted == labels:
        return None
    node = copy.deepcopy(existing)
    node["metadata"]["labels"] = wanted
    return node


def status_outdated(node: dict[str, Any], ip: str) -> bool:
    """Whether the apiserver's view of the node's health or address differs from what this kubelet reports.

    Capacity is left out on purpose: the apiserver may print a quantity differently from how
    it was given, and a difference that never goes away would make the node post forever.
    """
    status = node.get("status") or {}
    held = {c.get("type"): (c.get("status"), c.get("reason")) for c in status.get("conditions") or []}
    if any(held.get(ctype) != (st, reason) for ctype, st, reason, _ in CONDITIONS):
        return True
    return {"type": "InternalIP", "address": ip} not in (status.get("addresses") or [])


def status_patch(name: str, ip: str, shape: NodeShape, *, now: str,
                 current: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A strategic merge patch of the status subresource: conditions merge by type, as the kubelet's."""
    return {"status": node_status(name, ip, shape, now=now, current=current)}


def node_owner(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}


def lease_object(name: str, node_uid: str, *, renew_time: str) -> dict[str, Any]:
    """A node's Lease in kube-node-lease, held by the node, owned by its Node."""
    md: dict[str, Any] = {"name": name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        md["ownerReferences"] = [node_owner(name, node_uid)]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": md,
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": renew_time}}


def renewed_lease(lease: dict[str, Any], name: str, node_uid: str, *, renew_time: str) -> dict[str, Any]:
    """The lease as read, renewed: holder, duration and renewTime set; owner set to the current Node."""
    out = copy.deepcopy(lease)
    out.setdefault("spec", {}).update(holderIdentity=name, leaseDurationSeconds=LEASE_DURATION_SECONDS,
                                      renewTime=renew_time)
    if node_uid:
        md = out.setdefault("metadata", {})
        others = [r for r in md.get("ownerReferences") or [] if r.get("kind") != "Node"]
        md["ownerReferences"] = [*others, node_owner(name, node_uid)]
    return out


def ready_status(node: dict[str, Any]) -> str | None:
    """The status of the node's Ready condition (Unknown if it gives none); None before the kubelet reported it."""
    ready = conditions.get(node, "Ready")
    return None if ready is None else str(ready.get("status") or conditions.UNKNOWN)


def address_of(node: dict[str, Any], kind: str = "InternalIP") -> str | None:
    """The node's first address of `kind` (InternalIP, ExternalIP, Hostname, ...), or None."""
    return next((str(a.get("address") or "") for a in (node.get("status") or {}).get("addresses") or []
                 if a.get("type") == kind), None)
