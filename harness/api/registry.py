"""The one table of resource kinds.

Routes, storage keys, discovery, OpenAPI and the per-kind strategies (defaulting,
validation, printing) are all looked up from `KINDS`. Adding a kind is one row here plus its
validation in `harness.api.validation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from harness.api import errors

#: The verbs every stored kind supports.
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    """One resource kind served by the apiserver."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: Subresources beyond the object itself, e.g. "status", "scale", "binding".
    subresources: tuple[str, ...] = ()
    #: Class name of this kind in the official `kubernetes` client's models (for OpenAPI).
    model: str = ""
    #: Whether spec changes bump metadata.generation (workloads and pods, as upstream).
    tracks_generation: bool = False
    #: The verbs served. A kind that only takes `create` (TokenReview, SubjectAccessReview, ...) is a question put
    #: to the apiserver: it is answered, never stored or watched.
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def stored(self) -> bool:
        return "get" in self.verbs

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def resource(self) -> str:
        """`plural.group`, the way RBAC and error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def model_name(self) -> str:
        return self.model or f"V1{self.kind}"

    @property
    def definition(self) -> str:
        """The OpenAPI definition name upstream uses, e.g. `io.k8s.api.apps.v1.Deployment`."""
        package = self.group.split(".")[0] if self.group else "core"
        return f"io.k8s.api.{package}.{self.version}.{self.kind}"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def base_path(self, namespace: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def key_prefix(self, namespace: str | None = None) -> str:
        """The etcd key prefix of this kind, or of one namespace of it (trailing slash)."""
        if self.namespaced and namespace:
            return f"/registry/{self.plural}/{namespace}/"
        return f"/registry/{self.plural}/"

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"/registry/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.plural}/{name}"


def _k(group: str, version: str, kind: str, plural: str, namespaced: bool = True, **kw: object) -> Kind:
    return Kind(group=group, version=version, kind=kind, plural=plural, namespaced=namespaced, **kw)  # type: ignore[arg-type]


KINDS: tuple[Kind, ...] = (
    # core/v1
    _k("", "v1", "Namespace", "namespaces", False, short_names=("ns",),
       subresources=("status", "finalize")),
    _k("", "v1", "Pod", "pods", short_names=("po",), categories=("all",),
       tracks_generation=True, subresources=("status", "binding", "log", "eviction", "exec", "attach", "portforward")),
    _k("", "v1", "Node", "nodes", False, short_names=("no",), subresources=("status", "proxy")),
    _k("", "v1", "Service", "services", short_names=("svc",), categories=("all",),
       subresources=("status", "proxy")),
    _k("", "v1", "Endpoints", "endpoints", short_names=("ep",)),
    _k("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    _k("", "v1", "Secret", "secrets"),
    _k("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",),
       subresources=("token",)),
    _k("", "v1", "Event", "events", short_names=("ev",), model="CoreV1Event"),
    _k("", "v1", "ResourceQuota", "resourcequotas", short_names=("quota",), subresources=("status",)),
    _k("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
    _k("", "v1", "ReplicationController", "replicationcontrollers", short_names=("rc",),
       categories=("all",), tracks_generation=True, subresources=("status", "scale")),
    # apps/v1
    _k("apps", "v1", "Deployment", "deployments", short_names=("deploy",), categories=("all",),
       tracks_generation=True, subresources=("status", "scale")),
    _k("apps", "v1", "ReplicaSet", "replicasets", short_names=("rs",), categories=("all",),
       tracks_generation=True, subresources=("status", "scale")),
    _k("apps", "v1", "DaemonSet", "daemonsets", short_names=("ds",), categories=("all",),
       tracks_generation=True, subresources=("status",)),
    _k("apps", "v1", "ControllerRevision", "controllerrevisions"),
    # coordination.k8s.io/v1
    _k("coordination.k8s.io", "v1", "Lease", "leases"),
    # rbac.authorization.k8s.io/v1
    _k("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _k("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _k("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _k("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    # certificates.k8s.io/v1
    _k("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", False,
       short_names=("csr",), subresources=("status", "approval")),
    # authentication.k8s.io/v1 and authorization.k8s.io/v1: questions, answered in the response's status
    _k("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False, verbs=("create",)),
    _k("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False, verbs=("create",)),
    _k("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False, verbs=("create",)),
    _k("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
       verbs=("create",)),
    _k("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", verbs=("create",)),
    _k("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False,
       verbs=("create",)),
)

#: The kinds kept in etcd, watched and listed: every kind but the create-only questions.
STORED_KINDS: tuple[Kind, ...] = tuple(k for k in KINDS if k.stored)

_BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.plural): k for k in KINDS}
_BY_KIND: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in KINDS}


def by_path(group: str, version: str, plural: str) -> Kind:
    """The kind served at `/api[s]/<group>/<version>/<plural>`; NotFound otherwise."""
    try:
        return _BY_PATH[(group, version, plural)]
    except KeyError:
        gv = f"{group}/{version}" if group else version
        raise errors.NotFound(f"the server could not find the requested resource ({plural} in {gv})",
                              kind=plural, group=group) from None


def by_kind(api_version: str, kind: str) -> Kind:
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise errors.NotFound(f'no kind "{kind}" is registered for version "{api_version}"') from None


def group_versions() -> Iterator[tuple[str, str]]:
    """Each (group, version) served, core first, in table order."""
    seen: list[tuple[str, str]] = []
    for k in KINDS:
        if (k.group, k.version) not in seen:
            seen.append((k.group, k.version))
    yield from seen


def kinds_in(group: str, version: str) -> list[Kind]:
    return [k for k in KINDS if k.group == group and k.version == version]
