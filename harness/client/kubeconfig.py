"""Kubeconfig files: written for users and components, read by every component's client.

The format is kubectl's own (clusters, users, contexts, current-context), so the same file
serves real kubectl and harness components. A cluster may list several apiserver URLs for
failover: the first is `server`, the rest go in the `harness.dev/servers` extension,
which kubectl ignores.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.util import certreload
from harness.util.files import write_atomic

SERVERS_EXTENSION = "harness.dev/servers"


@dataclass
class KubeConfig:
    servers: list[str]
    cluster: str = "harness"
    user: str = "admin"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    token: str = ""
    namespace: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)


def ssl_context(cfg: KubeConfig) -> ssl.SSLContext | None:
    """The TLS context a client of these credentials uses: the cluster CA to trust, the client certificate to show
    (None for a plain-HTTP cluster without either)."""
    if not (cfg.ca_file or cfg.cert_file):
        return None
    ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        certreload.follow(ctx, cfg.cert_file, cfg.key_file)
    return ctx


def render(cfg: KubeConfig) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": cfg.servers[0]}
    if cfg.ca_file:
        cluster["certificate-authority"] = cfg.ca_file
    if len(cfg.servers) > 1:
        cluster["extensions"] = [{"name": SERVERS_EXTENSION,
                                  "extension": {"servers": cfg.servers}}]
    user: dict[str, Any] = {}
    if cfg.cert_file:
        user["client-certificate"] = cfg.cert_file
        user["client-key"] = cfg.key_file
    if cfg.token:
        user["token"] = cfg.token
    context = f"{cfg.user}@{cfg.cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cfg.cluster, "cluster": cluster}],
        "users": [{"name": cfg.user, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": cfg.cluster, "user": cfg.user,
                                                   "namespace": cfg.namespace}}],
        "current-context": context,
        "preferences": {},
    }


def write(path: Path, cfg: KubeConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(render(cfg), sort_keys=False), mode=0o600)


class KubeConfigError(Exception):
    """A kubeconfig file that cannot be used; the message says what to fix."""


def load(path: Path, context: str = "") -> KubeConfig:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path} is not a kubeconfig (expected a mapping)")
    name = context or doc.get("current-context") or ""
    ctx = _named(doc, "contexts", name, path).get("context") or {}
    cluster = _named(doc, "clusters", ctx.get("cluster", ""), path).get("cluster") or {}
    user = _named(doc, "users", ctx.get("user", ""), path).get("user") or {} if ctx.get("user") else {}
    servers = [cluster.get("server", "")]
    for ext in cluster.get("extensions") or []:
        if ext.get("name") == SERVERS_EXTENSION:
            servers = list((ext.get("extension") or {}).get("servers") or servers)
    if not servers or not servers[0]:
        raise KubeConfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server URL")
    base = path.parent

    def resolve(p: str) -> str:
        return str(base / p) if p and not os.path.isabs(p) else p

    return KubeConfig(servers=servers, cluster=ctx.get("cluster", ""), user=ctx.get("user", ""),
                      ca_file=resolve(cluster.get("certificate-authority", "")),
                      cert_file=resolve(user.get("client-certificate", "")),
                      key_file=resolve(user.get("client-key", "")), token=user.get("token", ""),
                      namespace=ctx.get("namespace") or "default")


def _named(doc: dict[str, Any], section: str, name: str, path: Path) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if entry.get("name") == name:
            return dict(entry)
    raise KubeConfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")
