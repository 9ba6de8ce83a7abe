"""`harness apiserver`: serve the Kubernetes API from etcd."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from harness.api import registry
from harness.apiserver import admission, serving
from harness.apiserver.allocators import IPRange, PortRange, RangeError
from harness.apiserver.app import build_app
from harness.apiserver.audit import AuditConfigError
from harness.apiserver.authn import AuthnConfigError
from harness.apiserver.authz import AuthzConfigError, parse_modes
from harness.apiserver.state import Config
from harness.cli import logs
from harness.cli.flags import boolean, duration
from harness.cli.lifecycle import serve_until_signalled
from harness.storage import encryption
from harness.storage.backend import Backend
from harness.storage.etcd import EtcdBackend

log = logging.getLogger("harness.apiserver")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--etcd-servers", required=True,
                   help="comma-separated etcd client URLs, e.g. http://127.0.0.1:2379")
    p.add_argument("--bind-address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=6443,
                   help="plain-HTTP port, where every request is the cluster admin (default 6443; 0 for none). "
                        "It goes away once every client of a cluster speaks HTTPS")
    p.add_argument("--etcd-cafile", default="", help="the CA that signed etcd's serving certificate")
    p.add_argument("--etcd-certfile", default="", help="the client certificate to present to etcd")
    p.add_argument("--etcd-keyfile", default="", help="the key of --etcd-certfile")
    p.add_argument("--kubelet-client-certificate", default="", help="the client certificate shown to kubelets")
    p.add_argument("--kubelet-client-key", default="", help="the key of --kubelet-client-certificate")
    p.add_argument("--kubelet-certificate-authority", default="",
                   help="the CA kubelets' serving certificates must chain to (default: not verified)")
    p.add_argument("--secure-port", type=int, default=0,
                   help="HTTPS port; requests there are authenticated (default 0: none)")
    p.add_argument("--tls-cert-file", default="", help="the HTTPS serving certificate (PEM; the chain, leaf first)")
    p.add_argument("--tls-private-key-file", default="", help="the key of --tls-cert-file")
    p.add_argument("--cert-dir", default="/var/run/harness",
                   help="where a self-signed serving certificate is kept when --tls-cert-file is not given "
                        "(default /var/run/harness)")
    p.add_argument("--client-ca-file", default="",
                   help="client certificates signed by this CA authenticate: CN the user, O the groups")
    p.add_argument("--token-auth-file", default="",
                   help="static bearer tokens, a CSV line each: token,user,uid,\"group1,group2\"")
    p.add_argument("--enable-bootstrap-token-auth", type=boolean, nargs="?", const=True, default=False,
                   metavar="BOOL", help="bootstrap tokens (kube-system Secrets of type bootstrap.kubernetes.io/token) "
                                        "authenticate, as system:bootstrap:<id> in system:bootstrappers")
    p.add_argument("--service-account-signing-key-file", default="",
                   help="the RSA key service-account tokens are signed with (TokenRequest)")
    p.add_argument("--service-account-key-file", action="append", default=[],
                   help="PEM file of public keys (or keys) that verify service-account tokens; may be repeated "
                        "(default: the signing key's)")
    p.add_argument("--service-account-issuer", action="append", default=[],
                   help="issuer written into new tokens (the first) and accepted (all); may be repeated "
                        "(default https://kubernetes.default.svc.cluster.local)")
    p.add_argument("--api-audiences", default="",
                   help="comma-separated audiences tokens must name (default: the first issuer)")
    p.add_argument("--service-account-max-token-expiration", type=duration, default=0, metavar="DURATION",
                   help="the longest lifetime a TokenRequest gets (default: as asked)")
    p.add_argument("--encryption-provider-config", default="",
                   help="an apiserver.config.k8s.io/v1 EncryptionConfiguration: which resources are encrypted in "
                        "etcd, with which keys (aescbc, aesgcm, identity)")
    p.add_argument("--audit-policy-file", default="", help="an audit.k8s.io/v1 Policy: which requests are logged, "
                   "at which level")
    p.add_argument("--audit-log-path", default="", help="where audit events go, as JSON lines ('-': stdout)")
    p.add_argument("--audit-log-maxsize", type=int, default=0, metavar="MB", help="rotate the audit log at this size")
    p.add_argument("--audit-log-maxbackup", type=int, default=0, help="rotated audit logs kept (0: all)")
    p.add_argument("--audit-log-maxage", type=int, default=0, metavar="DAYS",
                   help="rotated audit logs older than this are removed (0: kept)")
    p.add_argument("--authorization-mode", default="AlwaysAllow",
                   help="comma-separated authorizers, asked in order: AlwaysAllow, AlwaysDeny, Node, RBAC "
                        "(default AlwaysAllow; clusters run Node,RBAC)")
    p.add_argument("--advertise-address", default="", help="address clients should use (default: bind address)")
    p.add_argument("--enable-admission-plugins", default="",
                   help="admission plugins to enable beyond the defaults (comma-separated); they run in upstream's "
                        "order whatever the order given. Default: " + ",".join(admission.DEFAULT_PLUGINS))
    p.add_argument("--disable-admission-plugins", default="",
                   help="admission plugins to turn off, default ones included (comma-separated)")
    p.add_argument("--admission-control-config-file", default="",
                   help="an AdmissionConfiguration (apiserver.config.k8s.io/v1) with plugins' configuration "
                        "(PodSecurity defaults and exemptions, ResourceQuota limitedResources)")
    p.add_argument("--default-not-ready-toleration-seconds", type=int, default=300, metavar="SECONDS",
                   help="tolerationSeconds DefaultTolerationSeconds gives pods for node.kubernetes.io/not-ready")
    p.add_argument("--default-unreachable-toleration-seconds", type=int, default=300, metavar="SECONDS",
                   help="tolerationSeconds DefaultTolerationSeconds gives pods for node.kubernetes.io/unreachable")
    p.add_argument("--event-ttl", type=duration, default=3600, metavar="DURATION",
                   help="how long Events are kept after their last update: seconds or 1h, 30m, 90s (default 1h)")
    p.add_argument("--compaction-interval", type=float, default=300.0,
                   help="seconds between etcd compactions (default 300)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12",
                   help="CIDR Services get cluster IPs from; the first address is the kubernetes Service's "
                        "(default 10.96.0.0/12)")
    p.add_argument("--service-node-port-range", default="30000-32767",
                   help="inclusive port range NodePort Services get node ports from (default 30000-32767)")
    p.add_argument("--identity-lease-duration-seconds", type=int, default=15, metavar="SECONDS",
                   help="duration of this apiserver's kube-system identity Lease; the kubernetes Endpoints list "
                        "apiservers whose lease has not expired (default 15)")
    p.add_argument("--identity-lease-renew-interval-seconds", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between renewals of the identity Lease (default 5)")
    p.add_argument("--log-level", default="info")


def config_from(args: argparse.Namespace) -> Config:
    servers = [s.strip() for s in args.etcd_servers.split(",") if s.strip()]
    if not servers:
        raise SystemExit("harness apiserver: --etcd-servers needs at least one URL, e.g. http://127.0.0.1:2379")
    try:
        IPRange(args.service_cluster_ip_range)
        PortRange(args.service_node_port_range)
    except RangeError as exc:
        raise SystemExit(f"harness apiserver: {exc}") from None
    if args.identity_lease_duration_seconds <= 0 or args.identity_lease_renew_interval_seconds <= 0:
        raise SystemExit("harness apiserver: identity lease duration and renew interval must be positive")
    try:
        plugins = admission.enabled(args.enable_admission_plugins, args.disable_admission_plugins)
        plugin_config = admission.load_configuration(args.admission_control_config_file) \
            if args.admission_control_config_file else {}
        admission.check_configuration(plugins, plugin_config)
    except admission.AdmissionConfigError as exc:
        raise SystemExit(f"harness apiserver: {exc}") from None
    try:
        modes = parse_modes(args.authorization_mode)
    except AuthzConfigError as exc:
        raise SystemExit(f"harness apiserver: {exc}") from None
    if bool(args.etcd_certfile) != bool(args.etcd_keyfile):
        raise SystemExit("harness apiserver: --etcd-certfile and --etcd-keyfile go together")
    return Config(etcd_servers=servers, etcd_cafile=args.etcd_cafile, etcd_certfile=args.etcd_certfile,
                  etcd_keyfile=args.etcd_keyfile, kubelet_client_certificate=args.kubelet_client_certificate,
                  kubelet_client_key=args.kubelet_client_key,
                  kubelet_certificate_authority=args.kubelet_certificate_authority,
                  bind_address=args.bind_address, port=args.port,
                  secure_port=args.secure_port, tls_cert_file=args.tls_cert_file,
                  tls_private_key_file=args.tls_private_key_file, cert_dir=args.cert_dir,
                  client_ca_file=args.client_ca_file, token_auth_file=args.token_auth_file,
                  enable_bootstrap_token_auth=args.enable_bootstrap_token_auth,
                  advertise_address=args.advertise_address or args.bind_address,
                  service_account_signing_key_file=args.service_account_signing_key_file,
                  service_account_key_files=tuple(args.service_account_key_file),
                  service_account_issuers=tuple(args.service_account_issuer),
                  api_audiences=[a.strip() for a in args.api_audiences.split(",") if a.strip()],
                  service_account_max_token_expiration=args.service_account_max_token_expiration,
                  audit_policy_file=args.audit_policy_file, audit_log_path=args.audit_log_path,
                  audit_log_maxsize=args.audit_log_maxsize, audit_log_maxbackup=args.audit_log_maxbackup,
                  audit_log_maxage=args.audit_log_maxage,
                  admission_plugins=plugins, admission_configuration=plugin_config, authorization_mode=modes,
                  compaction_interval=args.compaction_interval, event_ttl=args.event_ttl,
                  default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
                  default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
                  service_cluster_ip_range=args.service_cluster_ip_range,
                  service_node_port_range=args.service_node_port_range,
                  identity_lease_duration_seconds=args.identity_lease_duration_seconds,
                  identity_lease_renew_interval=args.identity_lease_renew_interval_seconds)


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.apiserver", args.log_level)
    config = config_from(args)

    try:
        rules = encryption.load_config(Path(args.encryption_provider_config)) if args.encryption_provider_config \
            else None
    except encryption.EncryptionConfigError as exc:
        raise SystemExit(f"harness apiserver: {exc}") from None

    async def connect() -> Backend:
        etcd = EtcdBackend(config.etcd_servers, ca_file=config.etcd_cafile or None,
                           cert_file=config.etcd_certfile or None, key_file=config.etcd_keyfile or None)
        await etcd.connect()
        if rules is None:
            return etcd
        return encryption.EncryptingBackend(etcd, rules, {k.plural: k.group for k in registry.KINDS})

    try:
        app = build_app(config, connect)
    except (AuthnConfigError, AuditConfigError, OSError, ValueError) as exc:
        raise SystemExit(f"harness apiserver: {exc}") from None

    async def main(stop: asyncio.Event) -> int:
        if config.port:
            log.info("serving plain HTTP on http://%s:%d", config.bind_address, config.port)
        if config.secure_port:
            log.info("serving HTTPS on https://%s:%d", config.bind_address, config.secure_port)
        try:
            await serving.serve(app, config, stop)
        except serving.ServingError as exc:
            log.error("%s", exc)
            return 1
        return 0

    return serve_until_signalled(main, log)
