"""What kube-proxy programs, as plain data: one `ServicePort` per port of each Service, with its ready endpoints.

Pure functions of Service and Endpoints objects (dicts as the API returns them), after upstream's
ServicePortName / servicePortInfo / endpointsInfo: a service port is `namespace/name:portname`
(just `namespace/name` when the port has no name) and its endpoints are the Endpoints subsets'
ready `addresses` paired with the subset port of the same name and protocol. Headless services
(clusterIP None) and ExternalName services get no ServicePort: DNS serves them, not the proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.api import meta

#: Upstream's default ClientIP affinity timeout (3 hours), used when the Service does not give one.
DEFAULT_AFFINITY_TIMEOUT = 10800
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, and where its traffic goes."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP | UDP | SCTP
    cluster_ip: str
    port: int
    node_port: int = 0  # 0: none
    affinity_timeout: int = 0  # seconds of ClientIP affinity; 0: none
    external_ips: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = field(default=())

    @property
    def key(self) -> str:
        """Upstream's ServicePortName.String(): `ns/name:port`, or `ns/name` for an unnamed port."""
        base = meta.object_key(self.namespace, self.name)
        return f"{base}:{self.port_name}" if self.port_name else base


def _is_ipv4(value: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
    except ValueError:
        return False


def service_ports(service: Mapping[str, Any], endpoints: Mapping[str, Any] | None) -> list[ServicePort]:
    """The ServicePorts of one Service, with the ready endpoints from its Endpoints object (if any)."""
    md = service.get("metadata") or {}
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return []
    cluster_ip = spec.get("clusterIP") or ""
    if not cluster_ip or cluster_ip == "None" or not _is_ipv4(cluster_ip):
        return []  # headless, not yet allocated, or IPv6 (this proxier programs IPv4 only)
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    external = tuple(sorted(ip for ip in spec.get("externalIPs") or [] if _is_ipv4(ip)))
    ns, name = md.get("namespace") or "default", md.get("name") or ""
    result = []
    for port in spec.get("ports") or []:
        protocol = port.get("protocol") or "TCP"
        if protocol not in PROTOCOLS or not port.get("port"):
            continue
        port_name = port.get("name") or ""
        result.append(ServicePort(
            namespace=ns, name=name, port_name=port_name, protocol=protocol, cluster_ip=cluster_ip,
            port=int(port["port"]), node_port=int(port.get("nodePort") or 0) if node_ports else 0,
            affinity_timeout=affinity, external_ips=external,
            endpoints=ready_endpoints(endpoints, port_name, protocol)))
    return result


def ready_endpoints(endpoints: Mapping[str, Any] | None, port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """The ready (ip, port) pairs of an Endpoints object for the subset port named `port_name`, sorted."""
    found: set[Endpoint] = set()
    for subset in (endpoints or {}).get("subsets") or []:
        ports = [p for p in subset.get("ports") or []
                 if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol and p.get("port")]
        for port in ports:
            for address in subset.get("addresses") or []:
                ip = address.get("ip") or ""
                if _is_ipv4(ip):
                    found.add(Endpoint(ip, int(port["port"])))
    return tuple(sorted(found, key=lambda e: (ipaddress.ip_address(e.ip), e.port)))


def build(services: Iterable[Mapping[str, Any]], endpoints: Mapping[str, Mapping[str, Any]]) -> list[ServicePort]:
    """Every ServicePort of `services`, sorted by key; `endpoints` maps `ns/name` to the Endpoints object."""
    result: list[ServicePort] = []
    for service in services:
        result.extend(service_ports(service, endpoints.get(meta.key_of(service))))
    return sorted(result, key=lambda sp: (sp.key, sp.protocol))
