"""The NodeRestriction admission plugin: a kubelet may change only its own Node, its own lease, and the pods bound to
it, and may ask tokens only for the pods bound to it, as upstream's plugin limits a node's credentials.

The Node authorizer has already decided a kubelet may write nodes and pods at all; this plugin looks at which
object, which only admission can see. Refusals are upstream's 403 words."""

from __future__ import annotations

from typing import Any

from harness.api import errors
from harness.apiserver.admission import Attributes, Phases
from harness.auth.user import node_name

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def _forbidden(attrs: Attributes, why: str) -> errors.Forbidden:
    name = f' "{attrs.name}"' if attrs.name else ""
    group = {"leases": "coordination.k8s.io"}.get(attrs.resource, "")
    what = f"{attrs.resource}.{group}" if group else attrs.resource
    return errors.Forbidden(f"{what}{name} is forbidden: {why}", kind=attrs.resource, name=attrs.name, group=group)


def _bound_to(pod: dict[str, Any] | None) -> str:
    return str(((pod or {}).get("spec") or {}).get("nodeName") or "")


class NodeRestriction(Phases):
    name = "NodeRestriction"

    async def admit(self, attrs: Attributes) -> None:
        node = node_name(attrs.user)
        if node is None:
            return
        if attrs.kind == "Node":
            self._node(node, attrs)
        elif attrs.kind == "Pod":
            self._pod(node, attrs)
        elif attrs.kind == "Lease" and attrs.namespace == "kube-node-lease":
            if attrs.name != node:
                raise _forbidden(attrs, f'node "{node}" is not allowed to modify lease "{attrs.name}"')
        elif attrs.resource == "serviceaccounts" and attrs.subresource == "token":
            self._token(node, attrs)

    def _node(self, node: str, attrs: Attributes) -> None:
        if attrs.name != node:
            raise _forbidden(attrs, f'node "{node}" is not allowed to modify node "{attrs.name}"')
        if attrs.operation == "UPDATE" and not attrs.subresource and attrs.obj is not None and attrs.old is not None:
            old_taints = (attrs.old.get("spec") or {}).get("taints") or []
            new_taints = (attrs.obj.get("spec") or {}).get("taints") or []
            if old_taints != new_taints:
                raise _forbidden(attrs, f'node "{node}" is not allowed to modify taints')

    def _pod(self, node: str, attrs: Attributes) -> None:
        if attrs.operation == "CREATE" and not attrs.subresource:
            annotations = ((attrs.obj or {}).get("metadata") or {}).get("annotations") or {}
            if MIRROR_ANNOTATION not in annotations:
                raise _forbidden(attrs, f'pod does not have "{MIRROR_ANNOTATION}" annotation, node "{node}" can '
                                        "only create mirror pods")
            if _bound_to(attrs.obj) != node:
                raise _forbidden(attrs, f'node "{node}" can only create pods with spec.nodeName set to itself')
            return
        if attrs.operation == "UPDATE" and attrs.subresource == "status":
            if _bound_to(attrs.old) != node:
                raise _forbidden(attrs, f'node "{node}" can only update pod status for pods with spec.nodeName '
                                        "set to itself")
            return
        if attrs.operation == "UPDATE":
            raise _forbidden(attrs, f'node "{node}" can only update pod status')
        if attrs.operation == "DELETE" and _bound_to(attrs.old) != node:
            raise _forbidden(attrs, f'node "{node}" can only delete pods with spec.nodeName set to itself')

    def _token(self, node: str, attrs: Attributes) -> None:
        ref = ((attrs.obj or {}).get("spec") or {}).get("boundObjectRef") or {}
        if ref.get("kind") != "Pod":
            raise _forbidden(attrs, f'node "{node}" can only create tokens bound to a pod')
        pod = (attrs.extra or {}).get("pod")
        if _bound_to(pod) != node:
            raise _forbidden(attrs, 'node requested token bound to a pod scheduled on a different node')
