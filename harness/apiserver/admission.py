"""The request chain every API call passes after authentication (`authn.py`): authorization, admission.

The authorizer is the union `authz.build` makes from `--authorization-mode` (harness.auth decides). Admission
plugins are found through one table, `PLUGINS`, and run in the order the apiserver is configured with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.api import errors
from harness.auth.authorizer import AlwaysAllow, Authorizer, RequestInfo, check
from harness.auth.user import UserInfo


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
    name: str

    async def admit(self, attrs: Attributes) -> None:
        """Mutate `attrs.obj` or raise an ApiError to refuse the request."""
        ...


class NamespaceLifecycle:
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


class DefaultTolerationSeconds:
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


PLUGINS: dict[str, PluginFactory] = {
    "NamespaceLifecycle": lambda ctx: NamespaceLifecycle(ctx.namespace_lookup),
    "DefaultTolerationSeconds": lambda ctx: DefaultTolerationSeconds(
        not_ready_seconds=ctx.default_not_ready_toleration_seconds,
        unreachable_seconds=ctx.default_unreachable_toleration_seconds),
    "ServiceAccount": _service_account,
    "NodeRestriction": lambda ctx: _node_restriction(),
}

DEFAULT_PLUGINS = ("NamespaceLifecycle", "DefaultTolerationSeconds")


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
        return cls(authorizer=authorizer or AlwaysAllow(), plugins=[PLUGINS[n](ctx) for n in names])

    def authorize(self, user: UserInfo, info: RequestInfo) -> None:
        """Raise upstream's 403 unless the request is allowed."""
        check(self.authorizer, user, info)

    async def admit(self, attrs: Attributes) -> None:
        for plugin in self.plugins:
            await plugin.admit(attrs)
