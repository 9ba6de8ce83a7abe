"""The files the kubelet manages for every pod and bind-mounts into each container:
`/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, written as upstream writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.util.files import write_atomic

MAX_SEARCH = 6


def hostname_of(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("hostname") or pod["metadata"]["name"])[:63]


def hosts_file(pod: dict[str, Any], pod_ip: str, cluster_domain: str) -> str:
    """The kubelet-managed hosts file: loopback entries, the pod's own name, then spec.hostAliases."""
    spec = pod.get("spec") or {}
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
    if pod_ip:
        hostname = hostname_of(pod)
        subdomain = spec.get("subdomain")
        if subdomain:
            ns = pod["metadata"].get("namespace", "default")
            fqdn = f"{hostname}.{subdomain}.{ns}.svc.{cluster_domain}"
            lines.append(f"{pod_ip}\t{fqdn}\t{hostname}")
        else:
            lines.append(f"{pod_ip}\t{hostname}")
    aliases = spec.get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in aliases:
            names = "\t".join(alias.get("hostnames") or [])
            lines.append(f"{alias.get('ip', '')}\t{names}")
    return "\n".join(lines) + "\n"


def _node_resolv_conf(path: Path = Path("/etc/resolv.conf")) -> tuple[list[str], list[str], list[str]]:
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    try:
        text = path.read_text()
    except OSError:
        return nameservers, searches, options
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            nameservers.append(fields[1])
        elif fields[0] == "search":
            searches = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return nameservers, searches, options


def resolv_conf(pod: dict[str, Any], cluster_dns: list[str], cluster_domain: str,
                node_resolv: Path = Path("/etc/resolv.conf")) -> str:
    """resolv.conf for the pod's dnsPolicy: ClusterFirst (default), Default, None; plus spec.dnsConfig."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirstWithHostNet" and not spec.get("hostNetwork"):
        policy = "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        ns = pod["metadata"].get("namespace", "default")
        nameservers = list(cluster_dns)
        searches = [f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        _, host_search, _ = _node_resolv_conf(node_resolv)
        searches += [s for s in host_search if s not in searches]
        options = ["ndots:5"]
    elif policy == "Default":
        nameservers, searches, options = _node_resolv_conf(node_resolv)
    config = spec.get("dnsConfig") or {}
    nameservers += [n for n in config.get("nameservers") or [] if n not in nameservers]
    searches += [s for s in config.get("searches") or [] if s not in searches]
    merged: dict[str, str | None] = {}
    for opt in options:
        name, _, value = opt.partition(":")
        merged[name] = value or None
    for opt in config.get("options") or []:
        merged[opt.get("name", "")] = opt.get("value")
    lines = []
    if searches:
        lines.append("search " + " ".join(searches[:MAX_SEARCH]))
    lines += [f"nameserver {n}" for n in nameservers[:3]]
    if merged:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in merged.items() if k))
    return "\n".join(lines) + "\n"


def write_pod_files(pod_dir: Path, pod: dict[str, Any], *, pod_ip: str, cluster_dns: list[str],
                    cluster_domain: str) -> dict[str, Path]:
    """Write hosts, resolv.conf and hostname under `pod_dir`; returns container path -> file."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    files = {"/etc/hosts": ("etc-hosts", hosts_file(pod, pod_ip, cluster_domain)),
             "/etc/resolv.conf": ("resolv.conf", resolv_conf(pod, cluster_dns, cluster_domain)),
             "/etc/hostname": ("hostname", hostname_of(pod) + "\n")}
    out: dict[str, Path] = {}
    for target, (name, text) in files.items():
        path = pod_dir / name
        if not path.exists() or path.read_text() != text:
            write_atomic(path, text)
        out[target] = path
    return out
