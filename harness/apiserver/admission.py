"""The request chain every API call passes after authentication (`authn.py`): authorization, admission.

The authorizer is the union `authz.build` makes from `--authorization-mode` (harness.auth decides). Admission
plugins are found through one table, `PLUGINS`, and run in upstream's fixed order (`ORDER`): every plugin's
mutating `admit` before the object is validated, then every plugin's `validate` before it is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.api import errors
from harness.auth.authorizer import AlwaysAllow, Authorizer, RequestInfo, check
from harness.auth.user import UserInfo
from harness.util.files import UnreadableFile, read_yaml

if TYPE_CHECKING:
    from harness.apiserver.metrics import Metrics


@dataclass
class Attributes:
    """What an admission plugin sees of a write."""

    operation: str  # CREATE UPDATE DELETE CONNECT
    kind: str
    resource: str
    subresource: str
    namespace: str
    name: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    user: UserInfo
    dry_run: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


NamespaceLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


class Plugin(Protocol):
    """An admission plugin. Mutating plugins change `attrs.obj` in `admit`; validating ones check it in
    `validate`, which runs after the object's own validation (upstream's two phases). A plugin defines either or
    both; the other is a no-op."""

    name: str

    async def admit(self, attrs: Attributes) -> None:
        """Mutate `attrs.obj` or raise an ApiError to refuse the request."""
        ...

    async def validate(self, attrs: Attributes) -> None:
        """Raise an ApiError to refuse the request; change nothing."""
        ...


class Phases:
    """A plugin's base: both phases do nothing until the plugin overrides one."""

    async def admit(self, attrs: Attributes) -> None:
        return None

    async def validate(self, attrs: Attributes) -> None:
        return None


class Objects(Protocol):
    """What plugins may read and write of the cluster's objects (quota usage, limit ranges, namespaces).

    `resource` is the plural, `group` its API group ("" for core). Reads come from the watch cache when it
    has the object, so they may lag a write by a moment, as upstream's informer-backed plugins do.
    """

    async def get(self, resource: str, namespace: str, name: str, group: str = "") -> dict[str, Any] | None: ...

    async def list(self, resource: str, namespace: str, group: str = "") -> list[dict[str, Any]]: ...

    async def update_status(self, resource: str, obj: dict[str, Any], group: str = "") -> dict[str, Any]:
        """Write `obj`'s status with its resourceVersion as precondition: Conflict if it changed meanwhile."""
        ...


class NamespaceLifecycle(Phases):
    """No new content in a namespace that does not exist or is being deleted."""

    name = "NamespaceLifecycle"
    IMMORTAL = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

    def __init__(self, lookup: NamespaceLookup) -> None:
        self.lookup = lookup

    async def admit(self, attrs: Attributes) -> None:
        if attrs.kind == "Namespace":
            if attrs.operation == "DELETE" and attrs.name in self.IMMORTAL:
                raise errors.Forbidden(f'namespaces "{attrs.name}" is forbidden: this namespace may not be '
                                       "deleted", kind="namespaces", name=attrs.name)
            return
        if not attrs.namespace or attrs.operation != "CREATE":
            return
        ns = await self.lookup(attrs.namespace)
        if ns is None:
            raise errors.NotFound(f'namespaces "{attrs.namespace}" not found', kind="namespaces",
                                  name=attrs.namespace)
        terminating = ns.get("status", {}).get("phase") == "Terminating" or ns.get("metadata", {}).get(
            "deletionTimestamp")
        # Events may still be written while a namespace empties (as upstream allows).
        if terminating and attrs.kind != "Event":
            raise errors.Forbidden(
                f'{attrs.resource} "{attrs.name}" is forbidden: unable to create new content in namespace '
                f"{attrs.namespace} because it is being terminated", kind=attrs.resource, name=attrs.name)


class DefaultTolerationSeconds(Phases):
    """Every pod tolerates a not-ready or unreachable node for a while (300 s), then is evicted.

    As upstream: a pod that already tolerates the taint (its key, or any key, with effect
    NoExecute or any effect) is left as it is; the node lifecycle controller does the evicting.
    """

    name = "DefaultTolerationSeconds"
    NOT_READY = "node.kubernetes.io/not-ready"
    UNREACHABLE = "node.kubernetes.io/unreachable"

    def __init__(self, *, not_ready_seconds: int = 300, unreachable_seconds: int = 300) -> None:
        self.seconds = {self.NOT_READY: not_ready_seconds, self.UNREACHABLE: unreachable_seconds}

    async def admit(self, attrs: Attributes) -> None:
        if attrs.kind != "Pod" or attrs.subresource or attrs.operation not in ("CREATE", "UPDATE") \
                or not isinstance(attrs.obj, dict):
            return
        spec = attrs.obj.setdefault("spec", {})
        tolerations = list(spec.get("tolerations") or [])
        missing = [key for key in self.seconds if not any(_covers(t, key) for t in tolerations)]
        if missing:
            spec["tolerations"] = tolerations + [
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": self.seconds[key]}
                for key in missing]


def _covers(toleration: Any, key: str) -> bool:
    return isinstance(toleration, dict) and toleration.get("key", "") in ("", key) \
        and toleration.get("effect", "") in ("", "NoExecute")


PluginFactory = Callable[["PluginContext"], Plugin]


@dataclass(frozen=True)
class PluginContext:
    namespace_lookup: NamespaceLookup
    #: (namespace, name) -> the ServiceAccount, or None.
    service_account_lookup: Callable[[str, str], Awaitable[dict[str, Any] | None]] | None = None
    #: The cluster's objects, for plugins that read or keep other objects (LimitRanger, ResourceQuota).
    objects: Objects | None = None
    #: The apiserver's authorizer, for plugins that ask who may do what (certificate approval and signing).
    authorizer: Authorizer | None = None
    #: `--admission-control-config-file`'s plugin sections: plugin name -> its configuration.
    configuration: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The apiserver's metrics, for plugins that count what they decide (PodSecurity).
    metrics: Metrics | None = None
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300


# Plugins with modules of their own import this one (Attributes), so they are imported when asked for.
def _service_account(ctx: PluginContext) -> Plugin:
    from harness.apiserver.admission_serviceaccount import ServiceAccount

    async def nothing(namespace: str, name: str) -> dict[str, Any] | None:
        return None

    return ServiceAccount(ctx.service_account_lookup or nothing)


def _node_restriction() -> Plugin:
    from harness.apiserver.admission_noderestriction import NodeRestriction

    return NodeRestriction()


def _limit_ranger(ctx: PluginContext) -> Plugin:
    from harness.apiserver.admission_limitranger import LimitRanger

    return LimitRanger(ctx.objects)


def _pod_security(ctx: PluginContext) -> Plugin:
    from harness.apiserver.admission_podsecurity import PodSecurity

    return PodSecurity(ctx.namespace_lookup, ctx.objects, ctx.configuration.get("PodSecurity"), metrics=ctx.metrics)


def _resource_quota(ctx: PluginContext) -> Plugin:
    from harness.apiserver.admission_resourcequota import ResourceQuota

    return ResourceQuota(ctx.objects, ctx.configuration.get("ResourceQuota"))


def _certificates(name: str) -> PluginFactory:
    def make(ctx: PluginContext) -> Plugin:
        from harness.apiserver import admission_certificates as certificates

        if name == "CertificateSubjectRestriction":
            return certificates.CertificateSubjectRestriction()
        plugin: type[certificates.CertificateApproval | certificates.CertificateSigning] = \
            certificates.CertificateApproval if name == "CertificateApproval" else certificates.CertificateSigning
        return plugin(ctx.authorizer)

    return make


PLUGINS: dict[str, PluginFactory] = {
    "NamespaceLifecycle": lambda ctx: NamespaceLifecycle(ctx.namespace_lookup),
    "DefaultTolerationSeconds": lambda ctx: DefaultTolerationSeconds(
        not_ready_seconds=ctx.default_not_ready_toleration_seconds,
        unreachable_seconds=ctx.default_unreachable_toleration_seconds),
    "ServiceAccount": _service_account,
    "NodeRestriction": lambda ctx: _node_restriction(),
    "LimitRanger": _limit_ranger,
    "PodSecurity": _pod_security,
    "ResourceQuota": _resource_quota,
    "CertificateApproval": _certificates("CertificateApproval"),
    "CertificateSigning": _certificates("CertificateSigning"),
    "CertificateSubjectRestriction": _certificates("CertificateSubjectRestriction"),
}

#: On unless --disable-admission-plugins names them. Upstream's default set, less ServiceAccount, which needs the
#: controller-manager's service accounts (clusters enable it), and less the plugins not served here.
DEFAULT_PLUGINS = ("NamespaceLifecycle", "LimitRanger", "PodSecurity", "DefaultTolerationSeconds",
                   "CertificateApproval", "CertificateSigning", "CertificateSubjectRestriction", "ResourceQuota")

#: Upstream's fixed order of admission plugins (kube-apiserver's AllOrderedPlugins), for those served here.
#: Plugins run in this order whatever the order of --enable-admission-plugins, as upstream's do.
ORDER = ("NamespaceLifecycle", "LimitRanger", "ServiceAccount", "NodeRestriction", "PodSecurity",
         "DefaultTolerationSeconds", "CertificateApproval", "CertificateSigning", "CertificateSubjectRestriction",
         "ResourceQuota")


class AdmissionConfigError(ValueError):
    """Admission flags or the --admission-control-config-file are wrong."""


def enabled(enable: str, disable: str) -> tuple[str, ...]:
    """The plugins --enable-admission-plugins and --disable-admission-plugins leave on, in upstream's order.

    As upstream: the enabled set is the defaults plus those enabled, less those disabled; a name in both lists
    is an error, as is a name no plugin has.
    """
    on = [n.strip() for n in enable.split(",") if n.strip()]
    off = [n.strip() for n in disable.split(",") if n.strip()]
    for flag, names in (("enable-admission-plugins", on), ("disable-admission-plugins", off)):
        for n in names:
            if n not in PLUGINS:
                raise AdmissionConfigError(f'{flag} plugin "{n}" is unknown; known plugins: {", ".join(ORDER)}')
    both = sorted(set(on) & set(off))
    if both:
        raise AdmissionConfigError(f"{', '.join(both)} in enable-admission-plugins and disable-admission-plugins "
                                   "overlapped")
    chosen = [n for n in dict.fromkeys([*DEFAULT_PLUGINS, *on]) if n not in off]
    return tuple(sorted(chosen, key=_position))


def load_configuration(path: str) -> dict[str, dict[str, Any]]:
    """An AdmissionConfiguration (apiserver.config.k8s.io/v1): plugin name -> its configuration object, read
    inline or from the file its `path` names (relative to this file's directory)."""
    try:
        doc = read_yaml(Path(path))
    except UnreadableFile as exc:
        raise AdmissionConfigError(f"admission-control-config-file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionConfiguration":
        raise AdmissionConfigError(f"admission-control-config-file {path}: not an AdmissionConfiguration "
                                   "(apiserver.config.k8s.io/v1)")
    out: dict[str, dict[str, Any]] = {}
    for entry in doc.get("plugins") or []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in PLUGINS:
            raise AdmissionConfigError(f"admission-control-config-file {path}: unknown plugin {name!r}")
        config = entry.get("configuration")
        if config is None and entry.get("path"):
            try:
                config = read_yaml(Path(path).parent / entry["path"])
            except UnreadableFile as exc:
                raise AdmissionConfigError(f"admission-control-config-file: plugin {name}: {exc}") from None
        if not isinstance(config, dict):
            raise AdmissionConfigError(f"admission-control-config-file {path}: plugin {name} has no configuration")
        out[name] = config
    return out


def check_configuration(names: tuple[str, ...], configuration: dict[str, dict[str, Any]]) -> None:
    """Make each plugin once with its configuration, so that a bad one stops the apiserver at start with
    AdmissionConfigError (plugins check their configuration when made) instead of at its first request."""

    async def nothing(_name: str) -> dict[str, Any] | None:
        return None

    try:
        Chain.build(names, PluginContext(namespace_lookup=nothing, configuration=configuration))
    except AdmissionConfigError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise AdmissionConfigError(f"admission-control-config-file: {exc}") from None


def _position(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


class Chain:
    """Authorization and admission for one apiserver."""

    def __init__(self, *, authorizer: Authorizer, plugins: list[Plugin]) -> None:
        self.authorizer = authorizer
        self.plugins = plugins

    @classmethod
    def build(cls, names: tuple[str, ...], ctx: PluginContext, authorizer: Authorizer | None = None) -> Chain:
        unknown = [n for n in names if n not in PLUGINS]
        if unknown:
            raise ValueError(f"unknown admission plugin(s) {unknown}; known: {sorted(PLUGINS)}")
        ordered = sorted(dict.fromkeys(names), key=_position)
        return cls(authorizer=authorizer or AlwaysAllow(), plugins=[PLUGINS[n](ctx) for n in ordered])

    def authorize(self, user: UserInfo, info: RequestInfo) -> None:
        """Raise upstream's 403 unless the request is allowed."""
        check(self.authorizer, user, info)

    async def admit(self, attrs: Attributes) -> None:
        """The mutating phase: before the object's own validation."""
        for plugin in self.plugins:
            await plugin.admit(attrs)

    async def validate(self, attrs: Attributes) -> None:
        """The validating phase: after the object's own validation, just before it is stored."""
        for plugin in self.plugins:
            await plugin.validate(attrs)
