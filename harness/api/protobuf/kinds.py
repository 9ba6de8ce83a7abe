"""Which protobuf message an apiVersion and kind are: the registry's kinds and lists, and the bodies of subresources.

A kind of `registry.KINDS` in group `g` (or the core group), version `v` is upstream's message
`k8s.io.api.<first label of g, or core>.<v>.<Kind>`, and its list `...<Kind>List`; e.g. apps/v1 Deployment is
`k8s.io.api.apps.v1.Deployment`, rbac.authorization.k8s.io/v1 Role `k8s.io.api.rbac.v1.Role`. Beyond those:
autoscaling/v1 Scale, policy/v1 Eviction, v1 Binding and authentication.k8s.io/v1 TokenRequest (subresource
bodies), and meta/v1 Status and DeleteOptions, which clients send and receive under any group's apiVersion.
Kinds whose message is not in the data file are left out, so they are served as JSON.
"""

from __future__ import annotations

import functools

from harness.api import registry
from harness.api.protobuf.schema import META, Message, load_schema

#: Subresource bodies: (apiVersion, kind) -> message.
SUBRESOURCE_BODIES = {
    ("autoscaling/v1", "Scale"): "k8s.io.api.autoscaling.v1.Scale",
    ("policy/v1", "Eviction"): "k8s.io.api.policy.v1.Eviction",
    ("v1", "Binding"): "k8s.io.api.core.v1.Binding",
    ("authentication.k8s.io/v1", "TokenRequest"): "k8s.io.api.authentication.v1.TokenRequest",
}
#: Kinds of meta/v1 that come under every group version's apiVersion (a Status is "v1", a DeleteOptions sent by a
#: typed client carries the group version of its client).
META_KINDS = {"Status": f"{META}.Status", "DeleteOptions": f"{META}.DeleteOptions"}


def message_name(group: str, version: str, kind: str) -> str:
    package = group.split(".")[0] if group else "core"
    return f"k8s.io.api.{package}.{version}.{kind}"


@functools.cache
def table() -> dict[tuple[str, str], Message]:
    """(apiVersion, kind) -> message, for every type served as protobuf."""
    s = load_schema()
    names: dict[tuple[str, str], str] = {}
    for k in registry.KINDS:
        names[(k.api_version, k.kind)] = message_name(k.group, k.version, k.kind)
        names[(k.api_version, k.list_kind)] = message_name(k.group, k.version, k.list_kind)
    names.update(SUBRESOURCE_BODIES)
    return {key: msg for key, name in names.items() if (msg := s.get(name)) is not None}


def message_for(api_version: str, kind: str) -> Message | None:
    msg = table().get((api_version, kind))
    if msg is None and kind in META_KINDS:
        return load_schema().get(META_KINDS[kind])
    return msg


@functools.cache
def by_kind_name() -> dict[str, tuple[str, Message]]:
    """Kind name -> (apiVersion, message), for the kind names that are one type only (for bodies whose envelope
    names no type)."""
    seen: dict[str, list[tuple[str, Message]]] = {}
    for (api_version, kind), msg in table().items():
        seen.setdefault(kind, []).append((api_version, msg))
    out = {kind: found[0] for kind, found in seen.items() if len(found) == 1}
    for kind, name in META_KINDS.items():
        out[kind] = ("v1" if kind == "Status" else "meta.k8s.io/v1", load_schema()[name])
    return out
