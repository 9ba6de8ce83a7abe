"""`harness kubelet`: the node agent. Registers the Node, runs the pods bound to it with runc."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
from pathlib import Path

from harness.cli import lifecycle, logs
from harness.cli.flags import boolean
from harness.cli.hollow import parse_labels
from harness.client import rest
from harness.kubelet import certificate, server
from harness.kubelet.auth import kubelet_auth
from harness.kubelet.config import KubeletConfig
from harness.kubelet.kubelet import Kubelet

log = logging.getLogger("harness.kubelet")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster to join (written by TLS "
                                                       "bootstrap when --bootstrap-kubeconfig is given)")
    p.add_argument("--bootstrap-kubeconfig", default="",
                   help="credentials (a bootstrap token) to ask for a client certificate with when --kubeconfig "
                        "does not exist: TLS bootstrap, as kubeadm join does it")
    p.add_argument("--cert-dir", default="",
                   help="where TLS bootstrap and rotation keep the client certificate "
                        "(kubelet-client-current.pem; default <root-dir>/pki)")
    p.add_argument("--rotate-certificates", type=boolean, nargs="?", const=True, default=False, metavar="BOOL",
                   help="renew the client certificate through a CertificateSigningRequest as it nears expiry")
    p.add_argument("--node-name", default=socket.gethostname(), help="name of the Node (default: hostname)")
    p.add_argument("--node-ip", required=True, help="the node's InternalIP, where the apiserver reaches port 10250")
    p.add_argument("--root-dir", default="/var/lib/harness", help="images, containers, IPAM, pod volumes")
    p.add_argument("--run-dir", default="/run/harness", help="runc state and pod network namespaces")
    p.add_argument("--pod-log-dir", default="/var/log/pods", help="container logs in CRI format")
    p.add_argument("--address", default="0.0.0.0", help="address of the kubelet API (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=10250, help="port of the kubelet API (default 10250)")
    p.add_argument("--tls-cert-file", default="", help="serve the kubelet API over HTTPS with this certificate")
    p.add_argument("--tls-private-key-file", default="")
    p.add_argument("--client-ca-file", default="", help="client certificates of this CA authenticate: CN the user")
    p.add_argument("--authentication-token-webhook", type=boolean, nargs="?", const=True, default=False,
                   metavar="BOOL", help="bearer tokens authenticate through the apiserver's TokenReview")
    p.add_argument("--anonymous-auth", type=boolean, nargs="?", const=True, default=True, metavar="BOOL",
                   help="requests without credentials are system:anonymous (default true, as upstream's flag)")
    p.add_argument("--authorization-mode", choices=("AlwaysAllow", "Webhook"), default="AlwaysAllow",
                   help="Webhook: every request is a SubjectAccessReview of nodes/<subresource>")
    p.add_argument("--read-only-port", type=int, default=0,
                   help="harness has no read-only port: only 0 is accepted (CIS 4.2.4)")
    p.add_argument("--healthz-bind-address", default="127.0.0.1")
    p.add_argument("--healthz-port", type=int, default=10248, help="plain-HTTP /healthz (0: none; default 10248)")
    p.add_argument("--cpu", default=None, help="CPU capacity to report (default: the machine's)")
    p.add_argument("--memory", default=None, help="memory capacity to report, e.g. 4Gi (default: the machine's)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--node-labels", default="", help="labels to register the node with, k=v,k2=v2")
    p.add_argument("--register-with-taints", default="", help="taints, key=value:Effect,...")
    p.add_argument("--pod-cidr", default="", help="pod CIDR to use until the Node has spec.podCIDR (standalone use)")
    p.add_argument("--cluster-dns", default="10.96.0.10", help="DNS server(s) for pods, comma separated")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--node-status-update-frequency", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--node-lease-renew-interval", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--relist-period", type=float, default=1.0, metavar="SECONDS",
                   help="how often the runtime is relisted for container state changes")
    p.add_argument("--sync-frequency", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--crash-loop-backoff", type=float, default=10.0, metavar="SECONDS",
                   help="first restart back-off (doubles up to --crash-loop-backoff-max)")
    p.add_argument("--crash-loop-backoff-max", type=float, default=300.0, metavar="SECONDS")
    p.add_argument("--crash-loop-backoff-reset", type=float, default=600.0, metavar="SECONDS")
    p.add_argument("--container-log-max-size", type=int, default=10 * 1024 * 1024, metavar="BYTES")
    p.add_argument("--container-log-max-files", type=int, default=5)
    p.add_argument("--runc", default="runc", help="the OCI runtime binary (default runc)")
    p.add_argument("--cgroup-root", default="", help="cgroup under which pods run (default /harness/<node>)")
    p.add_argument("--log-level", default="info")


def parse_taints(text: str) -> list[dict[str, str]]:
    taints = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kv, sep, effect = item.rpartition(":")
        key, _, value = kv.partition("=")
        if not sep or not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise SystemExit(f"harness kubelet: --register-with-taints wants key[=value]:Effect with Effect one of "
                             f"NoSchedule, PreferNoSchedule, NoExecute; not {item!r}")
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        taints.append(taint)
    return taints


def config_from(args: argparse.Namespace) -> KubeletConfig:
    return KubeletConfig(
        node_name=args.node_name, node_ip=args.node_ip, root_dir=Path(args.root_dir), run_dir=Path(args.run_dir),
        pod_log_dir=Path(args.pod_log_dir), address=args.address, port=args.port,
        tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_private_key_file, client_ca_file=args.client_ca_file,
        authentication_token_webhook=args.authentication_token_webhook, anonymous_auth=args.anonymous_auth,
        authorization_mode=args.authorization_mode, healthz_bind_address=args.healthz_bind_address,
        healthz_port=args.healthz_port, cpu=args.cpu, memory=args.memory,
        max_pods=args.max_pods, labels=parse_labels(args.node_labels), taints=parse_taints(args.register_with_taints),
        pod_cidr=args.pod_cidr, heartbeat=args.node_lease_renew_interval,
        status_interval=args.node_status_update_frequency, relist_period=args.relist_period,
        sync_period=args.sync_frequency, backoff_initial=args.crash_loop_backoff,
        backoff_max=args.crash_loop_backoff_max, backoff_reset=args.crash_loop_backoff_reset,
        cluster_dns=[s.strip() for s in args.cluster_dns.split(",") if s.strip()],
        cluster_domain=args.cluster_domain, runc=args.runc, cgroup_root=args.cgroup_root,
        container_log_max_size=args.container_log_max_size, container_log_max_files=args.container_log_max_files)


def preflight(config: KubeletConfig) -> None:
    """What the kubelet cannot work without, said plainly."""
    if os.geteuid() != 0:
        raise SystemExit("harness kubelet: must run as root (it creates network namespaces and runs runc)")
    if shutil.which(config.runc) is None:
        raise SystemExit(f"harness kubelet: {config.runc!r} not found; install it (apt-get install runc)")


async def main(config: KubeletConfig, kubeconfig: str, files: certificate.Files | None = None,
               rotate: bool = False) -> int:
    stop = lifecycle.stop_on_signals()
    if files is not None and files.bootstrap_kubeconfig is not None:
        try:
            await certificate.bootstrap(files, config.node_name)
        except certificate.CertificateError as exc:
            raise SystemExit(f"harness kubelet: TLS bootstrap: {exc}") from None
    async with rest.Client.from_kubeconfig(kubeconfig, user_agent=f"harness-kubelet/{config.node_name}") as client:
        await rest.wait_until_ready(client)
        rotation = asyncio.create_task(certificate.keep_rotated(client, files, config.node_name, stop)) \
            if rotate and files is not None else None
        kubelet = Kubelet(client, config)
        auth = None
        if (config.authorization_mode == "Webhook" or config.authentication_token_webhook
                or not config.anonymous_auth):
            auth = kubelet_auth(client, config.node_name, anonymous=config.anonymous_auth,
                                tokens=config.authentication_token_webhook,
                                webhook_authorization=config.authorization_mode == "Webhook")
        async with server.serve(kubelet, host=config.address, port=config.port, cert=config.tls_cert_file,
                                key=config.tls_key_file, client_ca=config.client_ca_file, auth=auth,
                                healthz_host=config.healthz_bind_address, healthz_port=config.healthz_port):
            log.info("kubelet API on %s:%d", config.address, config.port)
            await kubelet.run(stop)
        if rotation is not None:
            rotation.cancel()
    log.info("kubelet stopped; its containers keep running")
    return 0


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.kubelet", args.log_level)
    if args.read_only_port:
        raise SystemExit("harness kubelet: --read-only-port: harness serves no unauthenticated read-only port; "
                         "give 0 (upstream's recommended value) or leave it out")
    config = config_from(args)
    preflight(config)
    files = certificate.Files(Path(args.kubeconfig), Path(args.bootstrap_kubeconfig) if args.bootstrap_kubeconfig
                              else None,
                              Path(args.cert_dir or Path(args.root_dir) / "pki"))
    return lifecycle.run(main(config, args.kubeconfig, files, args.rotate_certificates))
