"""The apiserver's state, kept in the aiohttp app under one typed key (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness.api.registry import Kind
from harness.apiserver.admission import DEFAULT_PLUGINS, Chain
from harness.apiserver.authn import Authentication
from harness.apiserver.authz import Authorization
from harness.apiserver.genericregistry import Store
from harness.apiserver.metrics import Metrics
from harness.apiserver.watchcache import WatchCache
from harness.auth.authorizer import AlwaysAllow
from harness.auth.serviceaccount import TokenIssuer
from harness.storage.backend import Backend


@dataclass
class Config:
    etcd_servers: list[str]
    #: TLS to etcd (--etcd-cafile, --etcd-certfile, --etcd-keyfile); https:// servers use it.
    etcd_cafile: str = ""
    etcd_certfile: str = ""
    etcd_keyfile: str = ""
    bind_address: str = "127.0.0.1"
    #: The plain-HTTP port, where every request is the cluster admin; 0 for none. It goes away once every
    #: client of a cluster speaks HTTPS (the security work's next step).
    port: int = 6443
    #: The HTTPS port (--secure-port), 0 for none; requests there are authenticated (authn.py).
    secure_port: int = 0
    #: The serving certificate and key; without them a self-signed pair is made in cert_dir, as upstream.
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    cert_dir: str = "/var/run/harness"
    #: Client certificates signed by this CA authenticate (x509); a static token file (token,user,uid,"groups").
    client_ca_file: str = ""
    token_auth_file: str = ""
    #: Bootstrap tokens (kube-system Secrets `bootstrap-token-<id>`) authenticate (--enable-bootstrap-token-auth).
    enable_bootstrap_token_auth: bool = False
    #: Service-account tokens: the key that signs them, the public keys that verify them, the issuers accepted
    #: (the first is written into new tokens), the audiences accepted (default: the first issuer), and the longest
    #: lifetime a TokenRequest gets (0: as asked).
    service_account_signing_key_file: str = ""
    service_account_key_files: tuple[str, ...] = ()
    service_account_issuers: tuple[str, ...] = ()
    api_audiences: list[str] = field(default_factory=list)
    service_account_max_token_expiration: int = 0
    advertise_address: str = ""
    admission_plugins: tuple[str, ...] = DEFAULT_PLUGINS
    #: Plugin name -> its section of --admission-control-config-file.
    admission_configuration: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The audit log (audit.py): the policy, where events go ("-": standard output), rotation in MB and copies kept.
    audit_policy_file: str = ""
    audit_log_path: str = ""
    audit_log_maxsize: int = 0
    audit_log_maxbackup: int = 0
    audit_log_maxage: int = 0
    #: --authorization-mode, in order (authz.MODES); upstream's default is AlwaysAllow, clusters use Node,RBAC.
    authorization_mode: tuple[str, ...] = ("AlwaysAllow",)
    #: DefaultTolerationSeconds: how long pods tolerate a not-ready / unreachable node by default.
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300
    #: Seconds between watch bookmarks; how long a watch lasts when the client gives no timeout.
    bookmark_interval: float = 10.0
    min_request_timeout: int = 1800
    compaction_interval: float = 300.0
    #: How long Events are kept (--event-ttl): etcd removes them this long after their last write.
    event_ttl: int = 3600
    #: How the apiserver reaches kubelets (logs, exec): its client certificate (--kubelet-client-certificate,
    #: --kubelet-client-key) and the CA their serving certificates must chain to (--kubelet-certificate-authority;
    #: without it they are not verified, as upstream). Any of them means HTTPS.
    kubelet_client_certificate: str = ""
    kubelet_client_key: str = ""
    kubelet_certificate_authority: str = ""
    #: Where Services get cluster IPs and node ports (--service-cluster-ip-range, --service-node-port-range).
    service_cluster_ip_range: str = "10.96.0.0/12"
    service_node_port_range: str = "30000-32767"
    #: Seconds between runs of the allocation repair loop.
    allocation_repair_interval: float = 60.0
    #: This apiserver's identity Lease (kube-system/apiserver-<id>): how long it lasts, how often it is renewed.
    identity_lease_duration_seconds: int = 15
    identity_lease_renew_interval: float = 5.0

    @property
    def kubelet_scheme(self) -> str:
        tls = self.kubelet_client_certificate or self.kubelet_certificate_authority
        return "https" if tls else "http"

    @property
    def advertised_port(self) -> int:
        """The port the `kubernetes` Service and Endpoints send clients to: the secure one when there is one."""
        return self.secure_port or self.port


@dataclass
class ApiServer:
    config: Config
    backend: Backend
    chain: Chain
    metrics: Metrics
    #: The secure port's authentication (None while there is no secure port).
    authentication: Authentication | None = None
    #: Signs service-account tokens (TokenRequest); None without --service-account-signing-key-file.
    token_issuer: TokenIssuer | None = None
    #: The authorizer of --authorization-mode, set up with the caches it reads.
    authorization: Authorization = field(default_factory=lambda: Authorization(("AlwaysAllow",), AlwaysAllow()))
    caches: dict[Kind, WatchCache] = field(default_factory=dict)
    stores: dict[Kind, Store] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("harness_apiserver", ApiServer)
