"""What differs per kind in the object lifecycle, beyond defaulting and validation.

The generic registry (`harness.apiserver.genericregistry.Store`) runs every verb the same way
and calls its kind's `Strategy` at the points where kinds differ, as upstream's registry Store
calls its create/update/delete strategies: what a new object's status is, what an update may
change, how long a deletion is graceful, and what keeps a deleted object stored. One table,
`STRATEGIES`; a kind without an entry gets `Strategy()`, whose hooks change nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from harness.api import meta
from harness.api.registry import Kind
from harness.auth.user import UserInfo


@dataclass(frozen=True)
class Strategy:
    """A kind's hooks into the generic store; a kind overrides only what differs.

    Create: `keep_status_on_create`, `initial_status`. Update: `prepare_update`,
    `prepare_subresource_update`. Delete: `grace_period`, `kind_finalizers`, `mark_terminating`,
    `return_deleted_object`. Hooks may change only the object they are given.
    """

    #: Whether the status a client sends on create is kept (Node registration sends it).
    keep_status_on_create: bool = False
    #: Whether DELETE answers with the deleted object instead of a success Status.
    return_deleted_object: bool = False

    # -- create ---------------------------------------------------------------------------

    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The status a new object starts with (None: no status field)."""
        return None

    def prepare_create_by(self, obj: dict[str, Any], user: UserInfo) -> None:
        """Record who creates the object, where the kind keeps that (a CSR's spec.username and groups)."""

    # -- update ---------------------------------------------------------------------------

    def prepare_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        """Kind-specific carrying over on an update of the object itself."""

    def prepare_subresource_update(self, subresource: str, new: dict[str, Any], sent: dict[str, Any]) -> None:
        """Take from `sent` (the body, less metadata) what an update through `subresource` may change.

        `new` is the old object with the update's metadata. The status subresource changes
        status only; through any other subresource nothing is taken.
        """
        if subresource != "status":
            return
        if sent.get("status") is None:
            new.pop("status", None)
        else:
            new["status"] = sent["status"]

    # -- delete ---------------------------------------------------------------------------

    def grace_period(self, obj: dict[str, Any], requested: int | None) -> int:
        """Seconds of graceful deletion for this object (0: no graceful phase)."""
        return 0

    def kind_finalizers(self, obj: dict[str, Any]) -> list[str]:
        """Finalizers of the kind's own that keep a deleted object stored, as metadata.finalizers do.

        A deletion with none of either (and no grace period) removes the object at once; an
        update that leaves none of either on a deleted object removes it.
        """
        return []

    def mark_terminating(self, obj: dict[str, Any]) -> None:
        """Mark an object whose deletion has just begun and which stays stored until it ends.

        Called once, on the copy that gets the deletionTimestamp; not for a deletion that
        removes the object at once.
        """


def _qos_class(obj: dict[str, Any]) -> str:
    containers = [*obj.get("spec", {}).get("containers", []), *obj.get("spec", {}).get("initContainers", [])]
    requests_any = limits_all = False
    guaranteed = bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                guaranteed = False
        limits_all = limits_all or bool(lim)
    if guaranteed and limits_all:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"


@dataclass(frozen=True)
class PodStrategy(Strategy):
    return_deleted_object: bool = True

    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return {"phase": "Pending", "qosClass": _qos_class(obj)}

    def grace_period(self, obj: dict[str, Any], requested: int | None) -> int:
        spec, status = obj.get("spec", {}), obj.get("status", {})
        # An unscheduled or finished pod has no kubelet to wait for: it goes at once.
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(0, requested)
        default = spec.get("terminationGracePeriodSeconds")
        return 30 if default is None else max(0, int(default))


@dataclass(frozen=True)
class NamespaceStrategy(Strategy):
    """A deleted namespace stays, phase Terminating, until its spec.finalizers are gone.

    As upstream's namespace storage overrides Delete: the namespace controller deletes what
    the namespace holds, then removes its `kubernetes` finalizer through the `finalize`
    subresource, and that update, leaving no finalizer, removes the namespace.
    """

    return_deleted_object: bool = True

    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return {"phase": "Active"}

    def prepare_subresource_update(self, subresource: str, new: dict[str, Any], sent: dict[str, Any]) -> None:
        if subresource == "finalize":  # spec.finalizers only
            new.setdefault("spec", {})["finalizers"] = (sent.get("spec") or {}).get("finalizers") or []
        else:
            super().prepare_subresource_update(subresource, new, sent)

    def kind_finalizers(self, obj: dict[str, Any]) -> list[str]:
        return list((obj.get("spec") or {}).get("finalizers") or [])

    def mark_terminating(self, obj: dict[str, Any]) -> None:
        obj.setdefault("status", {})["phase"] = "Terminating"


_EXTERNAL_SERVICE_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True)
class ServiceStrategy(Strategy):
    return_deleted_object: bool = True

    def prepare_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
        # A client that leaves out the allocated IP keeps it (as upstream's service REST does).
        if not spec.get("clusterIP") and old_spec.get("clusterIP") and spec.get("type") != "ExternalName":
            spec["clusterIP"] = old_spec["clusterIP"]
            if old_spec.get("clusterIPs"):
                spec["clusterIPs"] = list(old_spec["clusterIPs"])
        # Changing the type drops what only the old type had (upstream's dropTypeDependentFields).
        if spec.get("type", "ClusterIP") not in _EXTERNAL_SERVICE_TYPES and \
                old_spec.get("type", "ClusterIP") in _EXTERNAL_SERVICE_TYPES:
            old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                if port.get("nodePort") and port.get("nodePort") == old_ports.get(port.get("port")):
                    del port["nodePort"]
            for field in ("externalTrafficPolicy", "healthCheckNodePort"):
                if spec.get(field) == old_spec.get(field):
                    spec.pop(field, None)


def _condition_times(conditions: list[Any], old_conditions: list[Any], now: str) -> list[Any]:
    """Conditions with lastUpdateTime set where missing, and lastTransitionTime kept while the status stays (upstream
    populates both on CSR conditions)."""
    before = {c.get("type"): c for c in old_conditions if isinstance(c, dict)}
    out = []
    for c in conditions:
        if not isinstance(c, dict):
            out.append(c)
            continue
        c = dict(c)
        c.setdefault("lastUpdateTime", now)
        if not c.get("lastTransitionTime"):
            prior = before.get(c.get("type"))
            same = prior is not None and prior.get("status") == c.get("status") and prior.get("lastTransitionTime")
            c["lastTransitionTime"] = prior["lastTransitionTime"] if same and prior else now
        out.append(c)
    return out


@dataclass(frozen=True)
class CertificateSigningRequestStrategy(Strategy):
    """A CSR says who asked (spec.username, uid, groups, extra: the requester, whatever the client sent); its status
    is the approval subresource's conditions and the status subresource's certificate, as upstream's strategies."""

    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return {}

    def prepare_create_by(self, obj: dict[str, Any], user: UserInfo) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        for key in ("username", "uid", "groups", "extra"):
            spec.pop(key, None)
        spec["username"] = user.name
        if user.uid:
            spec["uid"] = user.uid
        if user.groups:
            spec["groups"] = list(user.groups)
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}

    def prepare_subresource_update(self, subresource: str, new: dict[str, Any], sent: dict[str, Any]) -> None:
        status = dict(new.get("status") or {})
        given = sent.get("status")
        sent_status: dict[str, Any] = given if isinstance(given, dict) else {}
        old_conditions = list(status.get("conditions") or [])
        if subresource == "approval":  # conditions only
            conditions = list(sent_status.get("conditions") or [])
        elif subresource == "status":  # conditions and the certificate
            conditions = list(sent_status.get("conditions") or [])
            if sent_status.get("certificate"):
                status["certificate"] = sent_status["certificate"]
            else:
                status.pop("certificate", None)
        else:
            return
        if conditions:
            status["conditions"] = _condition_times(conditions, old_conditions, meta.now_rfc3339())
        else:
            status.pop("conditions", None)
        new["status"] = status


@dataclass(frozen=True)
class EmptyStatusStrategy(Strategy):
    def initial_status(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return {}


STRATEGIES: dict[str, Strategy] = {
    "Pod": PodStrategy(),
    "Namespace": NamespaceStrategy(),
    "Node": Strategy(keep_status_on_create=True),
    "Service": ServiceStrategy(),
    "Deployment": EmptyStatusStrategy(),
    "ReplicaSet": EmptyStatusStrategy(),
    "DaemonSet": EmptyStatusStrategy(),
    "ReplicationController": EmptyStatusStrategy(),
    "ResourceQuota": EmptyStatusStrategy(),
    "CertificateSigningRequest": CertificateSigningRequestStrategy(),
}


def strategy_for(kind: Kind) -> Strategy:
    return STRATEGIES.get(kind.kind, Strategy())


def prepare_for_create(kind: Kind, obj: dict[str, Any], *, namespace: str) -> None:
    """Stamp the server-owned metadata and reset what a client may not set on create."""
    md = meta.metadata(obj)
    for f in meta.SYSTEM_FIELDS:
        md.pop(f, None)
    if kind.namespaced:
        md["namespace"] = namespace
    else:
        md.pop("namespace", None)
    if not md.get("name") and md.get("generateName"):
        md["name"] = meta.generate_name(md["generateName"])
    md["uid"] = meta.new_uid()
    md["creationTimestamp"] = meta.now_rfc3339()
    if kind.tracks_generation:
        md["generation"] = 1
    strategy = strategy_for(kind)
    if kind.has_status and not strategy.keep_status_on_create:
        status = strategy.initial_status(obj)
        if status is None:
            obj.pop("status", None)
        else:
            obj["status"] = status


def prepare_for_update(kind: Kind, new: dict[str, Any], old: dict[str, Any], *, subresource: str) -> None:
    """Carry over what this update may not change, and bump generation on a spec change.

    `subresource` is "" for the object itself, "binding" (a server-made change), or one
    through which the kind's strategy says what may change ("status": status; a
    namespace's "finalize": spec.finalizers).
    """
    md, old_md = meta.metadata(new), old.get("metadata", {})
    for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
              "generation", "namespace", "name"):
        if f in old_md:
            md[f] = old_md[f]
        else:
            md.pop(f, None)
    md.pop("selfLink", None)
    if subresource == "binding":
        return
    strategy = strategy_for(kind)
    if subresource:
        sent = {key: new.pop(key) for key in list(new) if key not in ("metadata", "kind", "apiVersion")}
        for key, value in old.items():
            if key != "metadata":
                new[key] = copy.deepcopy(value)
        strategy.prepare_subresource_update(subresource, new, sent)
        return
    strategy.prepare_update(new, old)
    if kind.has_status and "status" in old:
        new["status"] = copy.deepcopy(old["status"])
    elif kind.has_status:
        new.pop("status", None)
    if kind.tracks_generation and new.get("spec") != old.get("spec"):
        md["generation"] = int(old_md.get("generation") or 0) + 1
