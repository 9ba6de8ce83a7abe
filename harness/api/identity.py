"""Services that point at the processes serving them, kept by those processes themselves.

`default/kubernetes` lists the live apiservers and `kube-system/kube-dns` the live DNS servers.
Each such process holds an identity Lease (in kube-system, labelled with what it is, its
address and port in annotations) and renews it; the Endpoints are the addresses of the
unexpired leases. Pure functions over Lease and Endpoints objects, shared by the apiserver
(which writes through its own stores) and the client-side registrar in machinery.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime, timedelta
from typing import Any

from harness.api import meta
from harness.api.nodes import micro_time

LEASE_NAMESPACE = "kube-system"
ADDRESS_ANNOTATION = "harness.io/advertise-address"
PORT_ANNOTATION = "harness.io/advertise-port"

#: One port of the Endpoints: (name, protocol); the port number is the process's own.
PortSpec = tuple[str, str]


def advertised_address(address: str, bind_address: str) -> str:
    """The address a process is reached at: its advertise address, else a specific bind address."""
    for candidate in (address, bind_address):
        try:
            if candidate and not ipaddress.ip_address(candidate).is_unspecified:
                return candidate
        except ValueError:
            continue
    return "127.0.0.1"


def lease_name(prefix: str, address: str, port: int) -> str:
    """A stable name per endpoint, so a restarted process takes its own lease back."""
    return f"{prefix}-" + hashlib.sha256(f"{address}:{port}".encode()).hexdigest()[:24]


def identity_lease(name: str, label: tuple[str, str], address: str, port: int, holder: str, duration: int,
                   now: datetime) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "labels": {label[0]: label[1]},
                         "annotations": {ADDRESS_ANNOTATION: address, PORT_ANNOTATION: str(port)}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": micro_time(now), "renewTime": micro_time(now)}}


def renewed(lease: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """`lease` as read, renewed to `wanted` (labels and annotations merged; acquireTime kept for the same holder)."""
    md = lease["metadata"]
    md["labels"] = {**(md.get("labels") or {}), **wanted["metadata"]["labels"]}
    md["annotations"] = {**(md.get("annotations") or {}), **wanted["metadata"]["annotations"]}
    spec, new = lease.setdefault("spec", {}), wanted["spec"]
    if spec.get("holderIdentity") != new["holderIdentity"]:
        spec["acquireTime"] = new["acquireTime"]
    spec.update(holderIdentity=new["holderIdentity"], leaseDurationSeconds=new["leaseDurationSeconds"],
                renewTime=new["renewTime"])
    return lease


def lease_expired(lease: dict[str, Any], now: datetime) -> bool:
    spec = lease.get("spec") or {}
    renewed_at = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed_at:
        return True
    try:
        until = meta.parse_time(str(renewed_at)) + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    except ValueError:
        return True
    return until < now


def carries(lease: dict[str, Any], label: tuple[str, str]) -> bool:
    return ((lease.get("metadata") or {}).get("labels") or {}).get(label[0]) == label[1]


def live_endpoints(leases: list[dict[str, Any]], now: datetime, label: tuple[str, str]) -> list[tuple[str, int]]:
    """(address, port) of every unexpired identity lease with this label that says where it serves."""
    live = set()
    for lease in leases:
        if not carries(lease, label) or lease_expired(lease, now):
            continue
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        try:
            live.add((str(annotations[ADDRESS_ANNOTATION]), int(annotations[PORT_ANNOTATION])))
        except (KeyError, ValueError):
            continue
    return sorted(live)


def endpoint_subsets(endpoints: list[tuple[str, int]], ports: list[PortSpec]) -> list[dict[str, Any]]:
    """One subset per port number, addresses sorted, each port spec (name, protocol) on that number."""
    by_port: dict[int, list[str]] = {}
    for address, port in endpoints:
        by_port.setdefault(port, []).append(address)
    return [{"addresses": [{"ip": ip} for ip in sorted(set(ips))],
             "ports": [{"name": name, "port": port, "protocol": protocol} for name, protocol in ports]}
            for port, ips in sorted(by_port.items())]
