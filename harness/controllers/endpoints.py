"""Endpoints: for each Service with a selector, an Endpoints object of the same name listing its pods.

The one idea, as upstream's endpoints controller: recompute the whole object from the caches
(the service, and the pods its selector matches) and write only when it differs. Each pod
with an IP contributes one address per service port it resolves (targetPort as a number, or
a name looked up in the pod's container ports) — in `addresses` if ready (or the service
publishes not-ready addresses), in `notReadyAddresses` otherwise. Then, as upstream's
RepackSubsets, ports offered by the same set of addresses share one subset. Finished pods
are left out, and terminating ones unless publishNotReadyAddresses. A Service without a
selector keeps whatever Endpoints its user wrote; a deleted Service takes its Endpoints along.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from harness.api import errors, meta, registry
from harness.api.pods import is_ready, is_terminal
from harness.controllers.base import PODS, Context, Controller

log = logging.getLogger(__name__)

SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
MANAGED_BY = "endpoints.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpoint-controller"
HEADLESS = "service.kubernetes.io/headless"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"

PortKey = tuple[str, int, str, str]
AddressKey = tuple[str, str, bool]  # ip, pod uid, ready


def selector_of(service: dict[str, Any]) -> dict[str, str]:
    return dict((service.get("spec") or {}).get("selector") or {})


def selects(service: dict[str, Any], pod: dict[str, Any]) -> bool:
    selector, labels = selector_of(service), meta.labels_of(pod)
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def publishable(pod: dict[str, Any], publish_not_ready: bool) -> bool:
    """Upstream's ShouldPodBeInEndpoints."""
    if is_terminal(pod) or not (pod.get("status") or {}).get("podIP"):
        return False
    return publish_not_ready or not meta.is_terminating(pod)


def find_port(pod: dict[str, Any], service_port: dict[str, Any]) -> int | None:
    """The pod's port for a service port: targetPort as a number, or the container port of that name."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def endpoint_address(pod: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    md, spec = pod["metadata"], pod.get("spec") or {}
    address: dict[str, Any] = {"ip": pod["status"]["podIP"]}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        address["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        address["nodeName"] = spec["nodeName"]
    address["targetRef"] = {"kind": "Pod", "namespace": md["namespace"], "name": md["name"], "uid": md.get("uid", "")}
    return address


def endpoint_port(key: PortKey) -> dict[str, Any]:
    name, number, protocol, app_protocol = key
    port: dict[str, Any] = {"port": number, "protocol": protocol}
    if name:
        port["name"] = name
    if app_protocol:
        port["appProtocol"] = app_protocol
    return port


def port_key(service_port: dict[str, Any], number: int) -> PortKey:
    return (str(service_port.get("name") or ""), number, str(service_port.get("protocol") or "TCP"),
            str(service_port.get("appProtocol") or ""))


def subsets_for(service: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Endpoints subsets of a service, packed and sorted as upstream's RepackSubsets does."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    addresses: dict[AddressKey, dict[str, Any]] = {}
    by_port: dict[PortKey | None, set[AddressKey]] = {}  # None: a headless service without ports
    for pod in pods:
        if not publishable(pod, publish):
            continue
        address = endpoint_address(pod, service)
        key = (address["ip"], address["targetRef"]["uid"], publish or is_ready(pod))
        addresses[key] = address
        ports: list[PortKey | None] = []
        if not spec.get("ports"):
            ports = [None] if spec.get("clusterIP") == "None" else []
        for service_port in spec.get("ports") or []:
            number = find_port(pod, service_port)
            if number is not None:
                ports.append(port_key(service_port, number))
        for port in ports:
            by_port.setdefault(port, set()).add(key)
    by_addresses: dict[frozenset[AddressKey], list[PortKey]] = {}
    for port, keys in by_port.items():
        by_addresses.setdefault(frozenset(keys), []).extend([port] if port is not None else [])
    subsets = [_subset(keys, ports, addresses) for keys, ports in by_addresses.items()]
    return sorted(subsets, key=lambda s: [str(s.get(f)) for f in ("ports", "addresses", "notReadyAddresses")])


def _subset(keys: frozenset[AddressKey], ports: list[PortKey], addresses: dict[AddressKey, dict[str, Any]]) \
        -> dict[str, Any]:
    subset: dict[str, Any] = {}
    ready = [addresses[k] for k in sorted(keys) if k[2]]
    not_ready = [addresses[k] for k in sorted(keys) if not k[2]]
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    if ports:
        subset["ports"] = [endpoint_port(p) for p in sorted(ports)]
    return subset


def labels_for(service: dict[str, Any]) -> dict[str, str]:
    labels = {**meta.labels_of(service), MANAGED_BY: CONTROLLER_NAME}
    if (service.get("spec") or {}).get("clusterIP") in (None, "", "None"):
        labels[HEADLESS] = ""
    return labels


def endpoint_view(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod can change its service's Endpoints."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return (meta.labels_of(pod), status.get("podIP"), status.get("phase"), is_ready(pod), meta.is_terminating(pod),
            spec.get("nodeName"), spec.get("hostname"), spec.get("subdomain"),
            [c.get("ports") for c in spec.get("containers") or []])


class EndpointsController(Controller):
    name = "endpoints"
    event_source = "endpoint-controller"
    workers = 4

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.now: Callable[[], datetime] = meta.now

    def setup(self) -> None:
        self.ctx.informers(SERVICES).add_handlers(**self.enqueue_handlers())
        # Only deletions: Endpoints someone else wrote without a Service are not ours to remove.
        self.ctx.informers(ENDPOINTS).add_handlers(on_delete=self.enqueue)
        self.ctx.informers(PODS).add_handlers(on_add=self._pod_changed, on_update=self._pod_updated,
                                              on_delete=self._pod_changed)

    def _services_of(self, pod: dict[str, Any]) -> set[str]:
        ns = meta.namespace_of(pod)
        services = self.ctx.informers(SERVICES).cache.by_index("namespace", ns)
        return {meta.key_of(s) for s in services if selects(s, pod)}

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        for key in self._services_of(pod):
            self.queue.add(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if endpoint_view(old) != endpoint_view(new):
            for key in self._services_of(old) | self._services_of(new):
                self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        service = self.ctx.informers(SERVICES).cache.get(key)
        current = self.ctx.informers(ENDPOINTS).cache.get(key)
        if service is None:
            if current is not None:
                await self._delete(current)
            return
        if (service.get("spec") or {}).get("type") == "ExternalName" or not selector_of(service):
            return  # no endpoints from us: a user may write them
        ns = meta.namespace_of(service)
        pods = [p for p in self.ctx.informers(PODS).cache.by_index("namespace", ns) if selects(service, p)]
        subsets, labels = subsets_for(service, pods), labels_for(service)
        if current is not None and (current.get("subsets") or []) == subsets and meta.labels_of(current) == labels:
            return
        annotations = {**((current or {}).get("metadata") or {}).get("annotations", {}),
                       TRIGGER_TIME: meta.format_time(self.now())}
        if current is None:
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": meta.name_of(service), "namespace": ns, "labels": labels,
                                 "annotations": annotations}, "subsets": subsets}
            await self.ctx.client.create(ENDPOINTS, body, ns)
        else:
            body = {**current, "metadata": {**current["metadata"], "labels": labels, "annotations": annotations},
                    "subsets": subsets}
            await self.ctx.client.update(ENDPOINTS, body)
        log.debug("endpoints %s: %d subsets", key, len(subsets))

    async def _delete(self, endpoints: dict[str, Any]) -> None:
        md = endpoints["metadata"]
        preconditions = {"uid": md["uid"]} if md.get("uid") else None
        with contextlib.suppress(errors.NotFound, errors.Conflict):  # gone, or replaced by a newer one
            await self.ctx.client.delete(ENDPOINTS, md["name"], md["namespace"], preconditions=preconditions)
