"""Validation of API objects, per kind, with causes worded as the Kubernetes apiserver words them.

The apiserver calls `validate_create`, `validate_update` and `validate_status_update` after
defaulting; each raises `errors.invalid(...)` (422) listing every cause found. What each kind
checks is one row of `RULES`: its name format and its create, update and status checks. An
update is checked as a create of the new object, plus metadata that may not change, plus the
kind's own update rules; a status update checks metadata and the status only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from harness.api import errors
from harness.api.errors import Cause
from harness.api.registry import Kind
from harness.api.validation import certificates, formats, limitranges, misc, pod_updates, pods, services, workloads
from harness.api.validation import meta as vmeta
from harness.api.validation.formats import NameFn
from harness.api.validation.services import DEFAULT_NODE_PORT_RANGE


@dataclass(frozen=True)
class Options:
    """What validation depends on beyond the object itself."""

    #: NodePorts a Service may ask for (the apiserver's --service-node-port-range).
    node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE
    #: The subresource being written: "binding" lets the server set a pod's spec.nodeName.
    subresource: str = ""


DEFAULT_OPTIONS = Options()

Check = Callable[[dict[str, Any], Options], list[Cause]]
UpdateCheck = Callable[[dict[str, Any], dict[str, Any], Options], list[Cause]]


def _none(*_: Any) -> list[Cause]:
    return []


@dataclass(frozen=True)
class Rules:
    """How one kind is validated."""

    name: NameFn = formats.name_is_dns_subdomain
    create: Check = _none
    update: UpdateCheck = _none
    status: UpdateCheck = _none
    #: Checks of updates through other subresources (a CSR's `approval`), after the metadata checks.
    subresources: tuple[tuple[str, UpdateCheck], ...] = ()


def _obj(check: Callable[[dict[str, Any]], list[Cause]]) -> Check:
    return lambda obj, _opts: check(obj)


def _pair(check: Callable[[dict[str, Any], dict[str, Any]], list[Cause]]) -> UpdateCheck:
    return lambda new, old, _opts: check(new, old)


def _service(obj: dict[str, Any], opts: Options) -> list[Cause]:
    return services.validate_service(obj, node_port_range=opts.node_port_range)


def _pod_update(new: dict[str, Any], old: dict[str, Any], opts: Options) -> list[Cause]:
    return pod_updates.validate_pod_update(new, old, binding=opts.subresource == "binding")


_RBAC_NAME = formats.name_is_path_segment

RULES: dict[str, Rules] = {
    "Namespace": Rules(name=formats.name_is_dns_label, create=_obj(misc.validate_namespace),
                       status=_pair(misc.validate_namespace_status)),
    "Pod": Rules(create=_obj(pods.validate_pod), update=_pod_update,
                 status=_pair(pod_updates.validate_pod_status_update)),
    "Node": Rules(create=_obj(misc.validate_node), update=_pair(misc.validate_node_update),
                  status=_pair(misc.validate_node_status)),
    "Service": Rules(name=formats.name_is_dns1035_label, create=_service,
                     update=_pair(services.validate_service_update),
                     status=_pair(services.validate_service_status)),
    "Endpoints": Rules(create=_obj(services.validate_endpoints)),
    "ConfigMap": Rules(create=_obj(misc.validate_config_map), update=_pair(misc.validate_config_map_update)),
    "Secret": Rules(create=_obj(misc.validate_secret), update=_pair(misc.validate_secret_update)),
    "ServiceAccount": Rules(),
    "Event": Rules(create=_obj(misc.validate_event)),
    "ResourceQuota": Rules(create=_obj(misc.validate_resource_quota),
                           update=_pair(misc.validate_resource_quota_update),
                           status=_pair(misc.validate_resource_quota_status)),
    "LimitRange": Rules(create=_obj(limitranges.validate_limit_range)),
    "ReplicationController": Rules(create=_obj(workloads.validate_replication_controller),
                                   status=_pair(workloads.validate_replication_controller_status)),
    "Deployment": Rules(create=_obj(workloads.validate_deployment),
                        update=_pair(workloads.validate_deployment_update),
                        status=_pair(workloads.validate_deployment_status)),
    "ReplicaSet": Rules(create=_obj(workloads.validate_replica_set),
                        update=_pair(workloads.validate_replica_set_update),
                        status=_pair(workloads.validate_replica_set_status)),
    "DaemonSet": Rules(create=_obj(workloads.validate_daemon_set),
                       update=_pair(workloads.validate_daemon_set_update),
                       status=_pair(workloads.validate_daemon_set_status)),
    "ControllerRevision": Rules(create=_obj(misc.validate_controller_revision),
                                update=_pair(misc.validate_controller_revision_update)),
    "Lease": Rules(create=_obj(misc.validate_lease)),
    "Role": Rules(name=_RBAC_NAME, create=_obj(misc.validate_role)),
    "ClusterRole": Rules(name=_RBAC_NAME, create=_obj(misc.validate_cluster_role)),
    "RoleBinding": Rules(name=_RBAC_NAME, create=_obj(misc.validate_role_binding),
                         update=_pair(misc.validate_binding_update)),
    "ClusterRoleBinding": Rules(name=_RBAC_NAME, create=_obj(misc.validate_cluster_role_binding),
                                update=_pair(misc.validate_binding_update)),
    "CertificateSigningRequest": Rules(name=formats.name_is_path_segment, create=_obj(certificates.validate_csr),
                                       update=_pair(certificates.validate_csr_update),
                                       status=_pair(certificates.validate_csr_status),
                                       subresources=(("approval", _pair(certificates.validate_csr_approval)),)),
}


def rules_for(kind: Kind) -> Rules:
    return RULES.get(kind.kind, Rules())


def check_create(kind: Kind, obj: dict[str, Any], *, options: Options = DEFAULT_OPTIONS) -> list[Cause]:
    """Every cause that makes `obj` invalid to create (what `validate_create` raises)."""
    rules = rules_for(kind)
    causes = vmeta.validate_object_meta(obj, namespaced=kind.namespaced, name_fn=rules.name)
    return causes + rules.create(obj, options)


def check_update(kind: Kind, new: dict[str, Any], old: dict[str, Any], *, subresource: str = "",
                 options: Options = DEFAULT_OPTIONS) -> list[Cause]:
    rules, opts = rules_for(kind), replace(options, subresource=subresource)
    causes = vmeta.validate_object_meta_update(new, old)
    return causes + rules.create(new, opts) + rules.update(new, old, opts)


def check_status_update(kind: Kind, new: dict[str, Any], old: dict[str, Any], *,
                        options: Options = DEFAULT_OPTIONS) -> list[Cause]:
    return vmeta.validate_object_meta_update(new, old) + rules_for(kind).status(new, old, options)


def check_subresource_update(kind: Kind, subresource: str, new: dict[str, Any], old: dict[str, Any], *,
                             options: Options = DEFAULT_OPTIONS) -> list[Cause] | None:
    """Causes against an update through a subresource other than status; None when the kind has no check for it."""
    check = dict(rules_for(kind).subresources).get(subresource)
    if check is None:
        return None
    return vmeta.validate_object_meta_update(new, old) + check(new, old, options)


def validate_subresource_update(kind: Kind, subresource: str, new: dict[str, Any], old: dict[str, Any], *,
                                options: Options = DEFAULT_OPTIONS) -> None:
    """Raise `Invalid` if an update through `subresource` may not change `old` into `new` (status included)."""
    if subresource == "status":
        validate_status_update(kind, new, old, options=options)
        return
    causes = check_subresource_update(kind, subresource, new, old, options=options)
    if causes:
        _raise(kind, new, causes)


def validate_create(kind: Kind, obj: dict[str, Any], *, options: Options = DEFAULT_OPTIONS) -> None:
    """Raise `Invalid` (422) listing every cause if `obj` may not be created."""
    _raise(kind, obj, check_create(kind, obj, options=options))


def validate_update(kind: Kind, new: dict[str, Any], old: dict[str, Any], *, subresource: str = "",
                    options: Options = DEFAULT_OPTIONS) -> None:
    """Raise `Invalid` if `old` may not be replaced by `new` (through `subresource`, if any)."""
    _raise(kind, new, check_update(kind, new, old, subresource=subresource, options=options))


def validate_status_update(kind: Kind, new: dict[str, Any], old: dict[str, Any], *,
                           options: Options = DEFAULT_OPTIONS) -> None:
    """Raise `Invalid` if the status subresource may not change `old` into `new`."""
    _raise(kind, new, check_status_update(kind, new, old, options=options))


def _raise(kind: Kind, obj: dict[str, Any], causes: list[Cause]) -> None:
    if causes:
        md = obj.get("metadata")
        md = md if isinstance(md, dict) else {}
        name = str(md.get("name") or md.get("generateName") or "")
        raise errors.invalid(kind.kind, name, causes, group=kind.group)


__all__ = ["DEFAULT_OPTIONS", "RULES", "Options", "Rules", "check_create", "check_status_update",
           "check_subresource_update", "check_update", "validate_create", "validate_status_update",
           "validate_subresource_update", "validate_update"]
