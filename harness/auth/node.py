"""The Node authorizer: a kubelet may read only what the pods bound to its node use, and only its own lease.

Upstream keeps a graph of pods, nodes and the secrets, config maps, service accounts, claims and volumes they use;
here the edges are computed from the pods bound to the node (`NodeGraph.pods_on`), which the apiserver's pod cache
indexes. Requests the graph does not subdivide are checked against the `system:node` rules. Reasons are upstream's
words, so a denied kubelet's log reads as a real kubelet's would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from harness.auth import rbac
from harness.auth.authorizer import NO_OPINION, Answer, Decision, RequestInfo
from harness.auth.user import UserInfo, node_name

NODE_LEASE_NAMESPACE = "kube-node-lease"


class NodeGraph(Protocol):
    def pods_on(self, node: str) -> Iterable[dict[str, Any]]: ...

    def persistent_volume_claim(self, namespace: str, name: str) -> dict[str, Any] | None: ...


# -- what a pod uses -------------------------------------------------------------------------


def _volume_sources(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if not isinstance(volume, dict):
            continue
        yield volume
        for source in (volume.get("projected") or {}).get("sources") or []:
            if isinstance(source, dict):
                yield source


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from (c for c in spec.get(key) or [] if isinstance(c, dict))


#: How a pod names a secret or config map: (volume source key, its name fields, env `valueFrom` key, `envFrom` key).
_REFERENCES = {
    "secrets": ("secret", ("secretName", "name"), "secretKeyRef", "secretRef"),
    "configmaps": ("configMap", ("name",), "configMapKeyRef", "configMapRef"),
}


def _referenced(pod: dict[str, Any], resource: str) -> set[str]:
    source_key, name_keys, env_key, env_from_key = _REFERENCES[resource]
    names: set[str] = set()
    for source in _volume_sources(pod):
        ref = source.get(source_key) or {}
        names.update(str(ref.get(k) or "") for k in name_keys)
    for container in _containers(pod):
        for env in container.get("env") or []:
            names.add(((env.get("valueFrom") or {}).get(env_key) or {}).get("name", ""))
        for env_from in container.get("envFrom") or []:
            names.add((env_from.get(env_from_key) or {}).get("name", ""))
    names.discard("")
    return names


def secrets_of(pod: dict[str, Any]) -> set[str]:
    pulls = {ref.get("name", "") for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []
             if isinstance(ref, dict)}
    return (_referenced(pod, "secrets") | pulls) - {""}


def config_maps_of(pod: dict[str, Any]) -> set[str]:
    return _referenced(pod, "configmaps")


def claims_of(pod: dict[str, Any]) -> set[str]:
    names = {(source.get("persistentVolumeClaim") or {}).get("claimName", "") for source in _volume_sources(pod)}
    names.discard("")
    return names


def service_account_of(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or ""


_USES = {
    "secrets": secrets_of,
    "configmaps": config_maps_of,
    "persistentvolumeclaims": claims_of,
    "serviceaccounts": lambda pod: {service_account_of(pod)} - {""},
}


# -- the authorizer --------------------------------------------------------------------------


class NodeAuthorizer:
    """`--authorization-mode=Node`: no opinion on anyone but nodes."""

    def __init__(self, graph: NodeGraph, node_rules: list[dict[str, Any]]) -> None:
        self.graph = graph
        self.node_rules = node_rules

    def authorize(self, user: UserInfo, info: RequestInfo) -> Answer:
        if "system:nodes" not in user.groups or not user.name.startswith("system:node:"):
            return NO_OPINION
        node = node_name(user)
        if node is None:
            return Answer(Decision.NO_OPINION, f'unknown node for user "{user.name}"')
        if info.resource_request:
            if info.group == "" and info.resource in ("secrets", "configmaps"):
                return self._read_namespaced(node, info)
            if info.group == "" and info.resource == "persistentvolumeclaims":
                if info.subresource == "status":
                    return self._related(node, info, verbs=("update", "patch"),
                                         refusal="can only get or update persistentvolumeclaim status")
                return self._get(node, info)
            if info.group == "" and info.resource == "persistentvolumes":
                return self._volume(node, info)
            if info.group == "" and info.resource == "serviceaccounts":
                return self._token(node, info)
            if info.group == "coordination.k8s.io" and info.resource == "leases":
                return self._lease(node, info)
        if any(rbac.rule_allows(rule, info) for rule in self.node_rules):
            return Answer(Decision.ALLOW)
        return NO_OPINION

    def _read_namespaced(self, node: str, info: RequestInfo) -> Answer:
        if info.verb not in ("get", "list", "watch"):
            return Answer(Decision.NO_OPINION, "can only read resources of this type")
        if info.subresource:
            return Answer(Decision.NO_OPINION, "cannot read subresource")
        if not info.namespace:
            return Answer(Decision.NO_OPINION, "can only read namespaced object of this type")
        return self._path(node, info)

    def _related(self, node: str, info: RequestInfo, *, verbs: tuple[str, ...], refusal: str) -> Answer:
        if info.verb not in verbs:
            return Answer(Decision.NO_OPINION, refusal)
        return self._path(node, info)

    def _path(self, node: str, info: RequestInfo) -> Answer:
        if not info.name:
            return Answer(Decision.NO_OPINION, "No Object name found")
        uses = _USES[info.resource]
        for pod in self.graph.pods_on(node):
            if (pod.get("metadata") or {}).get("namespace") == info.namespace and info.name in uses(pod):
                return Answer(Decision.ALLOW)
        return Answer(Decision.NO_OPINION, f"no relationship found between node '{node}' and this object")

    def _get(self, node: str, info: RequestInfo) -> Answer:
        if info.verb != "get":
            return Answer(Decision.NO_OPINION, "can only get individual resources of this type")
        if info.subresource:
            return Answer(Decision.NO_OPINION, "cannot get subresource")
        return self._path(node, info)

    def _volume(self, node: str, info: RequestInfo) -> Answer:
        if info.verb != "get":
            return Answer(Decision.NO_OPINION, "can only get individual resources of this type")
        if info.subresource:
            return Answer(Decision.NO_OPINION, "cannot get subresource")
        if not info.name:
            return Answer(Decision.NO_OPINION, "No Object name found")
        for pod in self.graph.pods_on(node):
            namespace = (pod.get("metadata") or {}).get("namespace", "")
            for claim in claims_of(pod):
                pvc = self.graph.persistent_volume_claim(namespace, claim)
                if pvc is not None and (pvc.get("spec") or {}).get("volumeName") == info.name:
                    return Answer(Decision.ALLOW)
        return Answer(Decision.NO_OPINION, f"no relationship found between node '{node}' and this object")

    def _token(self, node: str, info: RequestInfo) -> Answer:
        if info.verb != "create" or not info.name:
            return Answer(Decision.NO_OPINION, "can only create tokens for individual service accounts")
        if info.subresource != "token":
            return Answer(Decision.NO_OPINION, "can only create token subresource of serviceaccount")
        return self._path(node, info)

    def _lease(self, node: str, info: RequestInfo) -> Answer:
        if info.verb not in ("get", "create", "update", "patch", "delete"):
            return Answer(Decision.NO_OPINION, "can only get, create, update, patch, or delete a node lease")
        if info.namespace != NODE_LEASE_NAMESPACE:
            return Answer(Decision.NO_OPINION, f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system '
                                               "namespace")
        if info.verb != "create" and info.name != node:
            return Answer(Decision.NO_OPINION, "can only access node lease with the same name as the requesting "
                                               "node")
        return Answer(Decision.ALLOW)
