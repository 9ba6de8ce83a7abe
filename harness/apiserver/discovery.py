"""Discovery documents: `/version`, `/api`, `/apis`, `/apis/<group>`, the resource lists, and
the aggregated (`apidiscovery.k8s.io/v2`) form kubectl 1.37 asks for first.

Everything is derived from the registry's `KINDS`; the one idea a reader needs is that a
subresource is advertised as its own entry (`pods/status`) whose kind and verbs come from
the `SUBRESOURCES` table below, because that is how kubectl learns it can `scale`, `logs`
or `exec`.
"""

from __future__ import annotations

import base64
import hashlib
import platform
from dataclasses import dataclass
from typing import Any

from harness.api import errors
from harness.api.registry import Kind, group_versions, kinds_in

MAJOR = "1"
MINOR = "37"
GIT_VERSION = f"v{MAJOR}.{MINOR}.0-harness"

#: The media type of an aggregated discovery response; kubectl only trusts the body as
#: aggregated when the response's Content-Type says so.
AGGREGATED_MEDIA_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Subresource:
    """What a subresource returns and accepts; `kind` "" means the parent's kind."""

    verbs: tuple[str, ...]
    kind: str = ""
    group: str | None = None  # None: the parent's group and version
    version: str = ""


_GET_UPDATE = ("get", "patch", "update")
_CONNECT = ("create", "get")
_PROXY = ("create", "delete", "get", "patch", "update")

#: Subresource name -> how upstream advertises it. `{kind}` is replaced by the parent kind.
SUBRESOURCES: dict[str, Subresource] = {
    "status": Subresource(_GET_UPDATE),
    "scale": Subresource(_GET_UPDATE, "Scale", "autoscaling", "v1"),
    "binding": Subresource(("create",), "Binding"),
    "eviction": Subresource(("create",), "Eviction", "policy", "v1"),
    "log": Subresource(("get",)),
    "exec": Subresource(_CONNECT, "PodExecOptions"),
    "attach": Subresource(_CONNECT, "PodAttachOptions"),
    "portforward": Subresource(_CONNECT, "PodPortForwardOptions"),
    "proxy": Subresource(_PROXY, "{kind}ProxyOptions"),
    "finalize": Subresource(("update",)),
    "approval": Subresource(_GET_UPDATE),
    "token": Subresource(("create",), "TokenRequest", "authentication.k8s.io", "v1"),
    "ephemeralcontainers": Subresource(_GET_UPDATE),
    "resize": Subresource(_GET_UPDATE),
}


def subresource(kind: Kind, name: str) -> Subresource:
    """The resolved entry of `name` under `kind` (kind, group and version filled in)."""
    sub = SUBRESOURCES.get(name, Subresource(("get",)))
    return Subresource(
        verbs=sub.verbs,
        kind=sub.kind.replace("{kind}", kind.kind) if sub.kind else kind.kind,
        group=kind.group if sub.group is None else sub.group,
        version=sub.version or kind.version,
    )


# -- /version, /api, /apis ------------------------------------------------------------------


def version_info() -> dict[str, str]:
    """The body of `/version`."""
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "major": MAJOR,
        "minor": MINOR,
        "emulationMajor": MAJOR,
        "emulationMinor": MINOR,
        "minCompatibilityMajor": MAJOR,
        "minCompatibilityMinor": str(int(MINOR) - 1),
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "harness",
        "platform": f"{platform.system().lower()}/{machine}",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    """The body of `/api` (legacy discovery): the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": [v for g, v in group_versions() if g == ""],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _groups() -> dict[str, list[str]]:
    """Named groups (not core) -> their versions, preferred first, in table order."""
    out: dict[str, list[str]] = {}
    for group, version in group_versions():
        if group:
            out.setdefault(group, []).append(version)
    return out


def _group_body(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list() -> dict[str, Any]:
    """The body of `/apis`: every named group with its versions."""
    groups = [_group_body(g, vs) for g, vs in _groups().items()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any]:
    """The body of `/apis/<group>`; NotFound for a group we do not serve."""
    versions = _groups().get(group)
    if not versions:
        raise errors.NotFound("the server could not find the requested resource")
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_body(group, versions)}


# -- resource lists -------------------------------------------------------------------------


def storage_version_hash(group: str, version: str, kind: str) -> str:
    """As upstream: the first 8 bytes of sha256("group/version/kind"), base64-encoded."""
    digest = hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _resource_entry(kind: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": list(kind.verbs),
    }
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    if kind.stored:
        entry["storageVersionHash"] = storage_version_hash(kind.group, kind.version, kind.kind)
    return entry


def _subresource_entry(kind: Kind, name: str) -> dict[str, Any]:
    sub = subresource(kind, name)
    entry: dict[str, Any] = {"name": f"{kind.plural}/{name}", "singularName": "",
                             "namespaced": kind.namespaced}
    if (sub.group, sub.version) != (kind.group, kind.version):
        entry["group"], entry["version"] = sub.group, sub.version
    entry["kind"] = sub.kind
    entry["verbs"] = list(sub.verbs)
    return entry


def _resource_list(group: str, version: str) -> dict[str, Any]:
    kinds = kinds_in(group, version)
    if not kinds:
        gv = f"{group}/{version}" if group else version
        raise errors.NotFound(f"the server could not find the requested resource ({gv})")
    resources: list[dict[str, Any]] = []
    for kind in sorted(kinds, key=lambda k: k.plural):
        resources.append(_resource_entry(kind))
        resources.extend(_subresource_entry(kind, s) for s in sorted(kind.subresources))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    """The body of `/api/v1` (group "") or `/apis/<group>/<version>`; NotFound otherwise."""
    return _resource_list(group, version)


# -- aggregated discovery (apidiscovery.k8s.io/v2) ------------------------------------------


def wants_aggregated(accept: str) -> bool:
    """Whether an Accept header asks for `APIGroupDiscoveryList` before anything else."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media not in ("application/json", "*/*"):
            continue
        values = dict(p.partition("=")[::2] for p in params)
        if not values.get("as"):
            return False  # plain JSON preferred over the aggregated form
        if (values.get("g"), values.get("v"), values.get("as")) == (
                "apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList"):
            return True
    return False


def _gvk(group: str | None, version: str, kind: str) -> dict[str, str]:
    return {"group": group or "", "version": version, "kind": kind}


def _aggregated_resource(kind: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": kind.plural,
        "responseKind": _gvk(kind.group, kind.version, kind.kind),
        "scope": "Namespaced" if kind.namespaced else "Cluster",
        "singularResource": kind.singular,
        "verbs": list(kind.verbs),
    }
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    subs = []
    for name in sorted(kind.subresources):
        sub = subresource(kind, name)
        subs.append({"subresource": name, "responseKind": _gvk(sub.group, sub.version, sub.kind),
                     "verbs": list(sub.verbs)})
    if subs:
        entry["subresources"] = subs
    return entry


def _aggregated_group(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": group} if group else {},
        "versions": [
            {
                "version": v,
                "resources": [_aggregated_resource(k) for k in sorted(kinds_in(group, v), key=lambda k: k.plural)],
                "freshness": "Current",
            }
            for v in versions
        ],
    }


def _aggregated(legacy: bool) -> dict[str, Any]:
    if legacy:
        items = [_aggregated_group("", [v for g, v in group_versions() if g == ""])]
    else:
        items = [_aggregated_group(g, vs) for g, vs in _groups().items()]
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}


def aggregated_discovery(legacy: bool) -> dict[str, Any]:
    """`APIGroupDiscoveryList` for `/api` (legacy=True: the core group) or `/apis`."""
    return _aggregated(legacy)
