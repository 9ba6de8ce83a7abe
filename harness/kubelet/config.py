"""The kubelet's settings and the node-private directories they imply.

Every path hangs off three roots (docs/architecture.md, "The local provider"): `root_dir` (/var/lib/harness), `run_dir`
(/run/harness) and `pod_log_dir` (/var/log/pods). On a namespace node the first two are
bind-mounted per node, so two kubelets on one machine never share state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class KubeletConfig:
    node_name: str
    node_ip: str
    root_dir: Path = Path("/var/lib/harness")
    run_dir: Path = Path("/run/harness")
    pod_log_dir: Path = Path("/var/log/pods")
    address: str = "0.0.0.0"
    port: int = 10250
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: Who may use the kubelet API: client certificates of this CA, bearer tokens through TokenReview, anonymous
    #: requests; and what they may do: everything (AlwaysAllow) or what SubjectAccessReview says (Webhook).
    client_ca_file: str = ""
    authentication_token_webhook: bool = False
    anonymous_auth: bool = True
    authorization_mode: str = "AlwaysAllow"
    #: /healthz alone in plain HTTP (upstream's 10248 on 127.0.0.1); 0 for none.
    healthz_bind_address: str = "127.0.0.1"
    healthz_port: int = 0
    # what the node reports; None = read from the machine
    cpu: str | None = None
    memory: str | None = None
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    # heartbeats, as upstream: a lease renewal every 10 s, a status post on change or every minute
    heartbeat: float = 10.0
    status_interval: float = 60.0
    # how often the pod lifecycle event generator relists the runtime (upstream: 1 s)
    relist_period: float = 1.0
    # how often every pod is synced even when nothing changed
    sync_period: float = 10.0
    # crash-loop back-off: first delay, cap, and clean running time after which it resets
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    workers: int = 8
    pod_cidr: str = ""  # used until the Node has spec.podCIDR (standalone use)
    cluster_dns: list[str] = field(default_factory=lambda: ["10.96.0.10"])
    cluster_domain: str = "cluster.local"
    bridge: str = "cni0"
    runc: str = "runc"
    cgroup_root: str = ""  # default /harness/<node-name>
    container_log_max_size: int = 10 * 1024 * 1024
    container_log_max_files: int = 5

    def __post_init__(self) -> None:
        if not self.cgroup_root:
            self.cgroup_root = f"/harness/{self.node_name}"

    @property
    def images_dir(self) -> Path:
        return self.root_dir / "images"

    @property
    def containers_dir(self) -> Path:
        return self.root_dir / "containers"

    @property
    def pods_dir(self) -> Path:
        return self.root_dir / "kubelet" / "pods"

    @property
    def ipam_dir(self) -> Path:
        return self.root_dir / "ipam"

    @property
    def netns_dir(self) -> Path:
        return self.run_dir / "netns"

    @property
    def runc_root(self) -> Path:
        return self.run_dir / "runc"
