"""Validation of Services and Endpoints.

A Service needs ports unless it is headless (clusterIP None) or an ExternalName; each port a
valid number, protocol and target, a name when there are several, and a nodePort only on
NodePort and LoadBalancer services, within the node-port range. Allocating the cluster IP is
the apiserver's job; validation only checks what the client sent and, on update, that an
assigned cluster IP stays.
"""

from __future__ import annotations

from typing import Any

from harness.api.errors import Cause
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.api.validation import meta as vmeta
from harness.api.validation.pods import PROTOCOLS, validate_port_num_or_name

DEFAULT_NODE_PORT_RANGE = (30000, 32767)
SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
MAX_CLIENT_IP_AFFINITY_SECONDS = 86400


def cluster_ips(spec: dict[str, Any]) -> list[Any]:
    """spec.clusterIPs, or [spec.clusterIP] as the v1 API fills it in."""
    ips = f.as_list(spec.get("clusterIPs"))
    if ips:
        return ips
    return [spec["clusterIP"]] if spec.get("clusterIP") else []


def is_headless(spec: dict[str, Any]) -> bool:
    ips = cluster_ips(spec)
    return bool(ips) and ips[0] == "None"


def externally_accessible(spec: dict[str, Any]) -> bool:
    kind = spec.get("type")
    return kind in ("NodePort", "LoadBalancer") or (kind == "ClusterIP" and bool(f.as_list(spec.get("externalIPs"))))


def validate_service(obj: dict[str, Any], *, node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    ports = f.as_dicts(spec.get("ports"))
    causes: list[Cause] = []
    if not ports and not is_headless(spec) and spec.get("type") != "ExternalName":
        causes.append(f.required("spec.ports"))
    causes += _by_type(spec)
    names: set[str] = set()
    for i, port in enumerate(ports):
        causes += _port(port, f"spec.ports[{i}]", require_name=len(ports) > 1, names=names)
    causes += vmeta.validate_labels(spec.get("selector"), "spec.selector")
    causes += _session_affinity(spec)
    causes += _cluster_ips(spec)
    for i, ip in enumerate(f.as_list(spec.get("externalIPs"))):
        causes += f.invalid_each(f"spec.externalIPs[{i}]", ip, formats.ip_address(f.as_str(ip)))
    causes += f.one_of("spec.type", spec.get("type"), SERVICE_TYPES)
    causes += _node_ports(spec, ports, node_port_range)
    causes += _duplicate_ports(ports)
    causes += _load_balancer_fields(spec)
    return causes + _traffic_policies(spec)


def _by_type(spec: dict[str, Any]) -> list[Cause]:
    kind = spec.get("type")
    if kind in ("LoadBalancer", "NodePort") and is_headless(spec):
        return [f.invalid("spec.clusterIPs[0]", "None", f"may not be set to 'None' for {kind} services")]
    if kind != "ExternalName":
        return []
    causes = []
    for name in ("clusterIPs", "ipFamilies"):
        if f.as_list(spec.get(name)) or (name == "clusterIPs" and spec.get("clusterIP")):
            causes.append(f.forbidden(f"spec.{name}", "may not be set for ExternalName services"))
    if spec.get("ipFamilyPolicy") is not None:
        causes.append(f.forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"))
    cname = f.as_str(spec.get("externalName")).removesuffix(".")
    if not cname:
        return [*causes, f.required("spec.externalName")]
    return causes + f.invalid_each("spec.externalName", cname, formats.dns1123_subdomain(cname))


def _port(port: dict[str, Any], path: str, *, require_name: bool, names: set[str]) -> list[Cause]:
    name = port.get("name")
    causes: list[Cause] = []
    if require_name and not name:
        causes.append(f.required(f"{path}.name"))
    elif name:
        causes += f.invalid_each(f"{path}.name", name, formats.dns1123_label(f.as_str(name)))
        if name in names:
            causes.append(f.duplicate(f"{path}.name", name))
        names.add(name)
    number = port.get("port")
    if not f.is_int(number):
        causes.append(f.invalid(f"{path}.port", number if number is not None else 0,
                                formats.inclusive_range_error(1, 65535)))
    else:
        causes += f.invalid_each(f"{path}.port", number, formats.port_num(number))
    causes += f.one_of(f"{path}.protocol", port.get("protocol"), PROTOCOLS)
    causes += validate_port_num_or_name(port.get("targetPort"), f"{path}.targetPort")
    app_protocol = port.get("appProtocol")
    if app_protocol is not None:
        causes += vmeta.validate_label_name(app_protocol, f"{path}.appProtocol")
    return causes


def _session_affinity(spec: dict[str, Any]) -> list[Cause]:
    affinity, config = spec.get("sessionAffinity"), spec.get("sessionAffinityConfig")
    causes = f.one_of("spec.sessionAffinity", affinity, SESSION_AFFINITIES)
    if affinity == "None" and config is not None:
        causes.append(f.forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"))
    if affinity != "ClientIP":
        return causes
    path, why = "spec.sessionAffinityConfig", "when session affinity type is ClientIP"
    client_ip = f.as_dict(config).get("clientIP")
    if not isinstance(config, dict):
        return [*causes, f.required(path, why)]
    if not isinstance(client_ip, dict):
        return [*causes, f.required(f"{path}.clientIP", why)]
    timeout = client_ip.get("timeoutSeconds")
    if timeout is None:
        return [*causes, f.required(f"{path}.clientIP.timeoutSeconds", why)]
    if not f.is_int(timeout) or not 0 < timeout <= MAX_CLIENT_IP_AFFINITY_SECONDS:
        causes.append(f.invalid(f"{path}.clientIP.timeoutSeconds", timeout,
                                f"must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"))
    return causes


def _cluster_ips(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for i, ip in enumerate(cluster_ips(spec)):
        if i == 0 and ip == "None":
            continue
        causes += f.invalid_each(f"spec.clusterIPs[{i}]", ip, formats.ip_address(f.as_str(ip)))
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        causes.append(f.not_supported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES))
    for i, family in enumerate(f.as_list(spec.get("ipFamilies"))):
        if family not in IP_FAMILIES:
            causes.append(f.not_supported(f"spec.ipFamilies[{i}]", family, IP_FAMILIES))
    return causes


def _node_ports(spec: dict[str, Any], ports: list[dict[str, Any]], node_port_range: tuple[int, int]) -> list[Cause]:
    low, high = node_port_range
    seen: set[tuple[Any, Any]] = set()
    causes: list[Cause] = []
    for i, port in enumerate(ports):
        node_port, path = port.get("nodePort"), f"spec.ports[{i}].nodePort"
        if not node_port:
            continue
        if spec.get("type") == "ClusterIP":
            causes.append(f.forbidden(path, "may not be used when `type` is 'ClusterIP'"))
        elif not f.is_int(node_port) or not low <= node_port <= high:
            causes.append(f.invalid(path, node_port, "provided port is not in the valid range. The range of valid "
                                                     f"ports is {low}-{high}"))
        key = (port.get("protocol"), node_port)
        if key in seen:
            causes.append(f.duplicate(path, node_port))
        seen.add(key)
    return causes


def _duplicate_ports(ports: list[dict[str, Any]]) -> list[Cause]:
    seen: set[tuple[Any, Any]] = set()
    causes = []
    for i, port in enumerate(ports):
        key = (port.get("protocol"), port.get("port"))
        if key in seen:
            causes.append(f.duplicate(f"spec.ports[{i}]", {"port": key[1], "protocol": key[0]}))
        seen.add(key)
    return causes


def _load_balancer_fields(spec: dict[str, Any]) -> list[Cause]:
    is_lb = spec.get("type") == "LoadBalancer"
    causes: list[Cause] = []
    ranges = f.as_list(spec.get("loadBalancerSourceRanges"))
    if ranges and not is_lb:
        causes.append(f.forbidden("spec.LoadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'"))
    for i, value in enumerate(ranges):
        text = f.as_str(value).strip()
        causes += f.invalid_each(f"spec.LoadBalancerSourceRanges[{i}]", text, formats.cidr(text))
    allocate = spec.get("allocateLoadBalancerNodePorts")
    if allocate is not None and not is_lb:
        causes.append(f.forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is "
                                                                        "'LoadBalancer'"))
    if is_lb and allocate is None:
        causes.append(f.required("allocateLoadBalancerNodePorts"))
    return causes


def _traffic_policies(spec: dict[str, Any]) -> list[Cause]:
    external = spec.get("externalTrafficPolicy")
    causes: list[Cause] = []
    if not externally_accessible(spec):
        if external:
            causes.append(f.invalid("spec.externalTrafficPolicy", external,
                                    "may only be set for externally-accessible services"))
    else:
        causes += f.one_of("spec.externalTrafficPolicy", external, TRAFFIC_POLICIES)
    internal = spec.get("internalTrafficPolicy")
    if internal is None and spec.get("type") in ("ClusterIP", "NodePort", "LoadBalancer"):
        causes.append(f.required("spec.internalTrafficPolicy"))
    elif internal is not None and internal not in TRAFFIC_POLICIES:
        causes.append(f.not_supported("spec.internalTrafficPolicy", internal, TRAFFIC_POLICIES))
    return causes


def validate_service_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """An assigned cluster IP stays, unless the service becomes or was an ExternalName.

    A new object without a cluster IP is not an error: the apiserver carries the assigned one
    over, as upstream's REST layer does before validating.
    """
    spec, old_spec = f.as_dict(new.get("spec")), f.as_dict(old.get("spec"))
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return []
    ips, old_ips = cluster_ips(spec), cluster_ips(old_spec)
    if old_ips and ips and ips[0] != old_ips[0]:
        return [f.invalid("spec.clusterIPs[0]", ips, "may not change once set")]
    return []


def validate_service_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    ingress = f.as_dicts(f.as_dict(f.as_dict(new.get("status")).get("loadBalancer")).get("ingress"))
    for i, entry in enumerate(ingress):
        path = f"status.loadBalancer.ingress[{i}]"
        if entry.get("ip"):
            causes += f.invalid_each(f"{path}.ip", entry["ip"], formats.ip_address(f.as_str(entry["ip"])))
        if entry.get("hostname"):
            causes += f.invalid_each(f"{path}.hostname", entry["hostname"],
                                     formats.dns1123_subdomain(f.as_str(entry["hostname"])))
    return causes


# -- Endpoints ------------------------------------------------------------------------------


def validate_endpoints(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for i, subset in enumerate(f.as_dicts(obj.get("subsets"))):
        path = f"subsets[{i}]"
        if not f.as_list(subset.get("addresses")) and not f.as_list(subset.get("notReadyAddresses")):
            causes.append(f.required(path, "must specify `addresses` or `notReadyAddresses`"))
        for group in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(f.as_dicts(subset.get(group))):
                causes += _endpoint_address(address, f"{path}.{group}[{j}]")
        ports = f.as_dicts(subset.get("ports"))
        for j, port in enumerate(ports):
            causes += _endpoint_port(port, f"{path}.ports[{j}]", require_name=len(ports) > 1)
    return causes


def _endpoint_address(address: dict[str, Any], path: str) -> list[Cause]:
    ip = f.as_str(address.get("ip"))
    causes = f.invalid_each(f"{path}.ip", ip, formats.ip_address(ip))
    if address.get("hostname"):
        causes += f.invalid_each(f"{path}.hostname", address["hostname"],
                                 formats.dns1123_label(f.as_str(address["hostname"])))
    if address.get("nodeName"):
        causes += f.invalid_each(f"{path}.nodeName", address["nodeName"],
                                 formats.dns1123_subdomain(f.as_str(address["nodeName"])))
    return causes


def _endpoint_port(port: dict[str, Any], path: str, *, require_name: bool) -> list[Cause]:
    name, number = port.get("name"), port.get("port")
    causes: list[Cause] = []
    if require_name and not name:
        causes.append(f.required(f"{path}.name"))
    elif name:
        causes += f.invalid_each(f"{path}.name", name, formats.dns1123_label(f.as_str(name)))
    causes += f.invalid_each(f"{path}.port", number, formats.port_num(number) if f.is_int(number)
                             else [formats.inclusive_range_error(1, 65535)])
    return causes + f.one_of(f"{path}.protocol", port.get("protocol"), PROTOCOLS)
