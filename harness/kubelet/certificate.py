"""The kubelet's client certificate, as upstream's kubelet manages it: TLS bootstrap (`--bootstrap-kubeconfig`)
and rotation (`--rotate-certificates`).

Bootstrap: when `--kubeconfig` does not exist (or its certificate has expired), the kubelet makes an ECDSA P-256
key, asks with the bootstrap kubeconfig's credentials (a bootstrap token) for a `kubernetes.io/kube-apiserver-
client-kubelet` certificate for `system:node:<name>` in `system:nodes` through a CertificateSigningRequest, waits
until it is issued (csrapproving and csrsigning do that when the token's group may), writes certificate and key to
`<cert-dir>/kubelet-client-<time>.pem`, points `kubelet-client-current.pem` at it, and writes `--kubeconfig` with the
bootstrap kubeconfig's server and CA and that file.

Rotation: at a jittered 70-90 % of the certificate's life (upstream's deadline) the kubelet asks again, as itself
(a `selfnodeclient` request), and swaps the link; its client's TLS context follows the file (certreload).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509 as cx509

from harness.api import certificates as certs
from harness.api import errors, registry
from harness.client import kubeconfig, rest
from harness.util import csr, x509
from harness.util.files import write_atomic

log = logging.getLogger(__name__)

CSRS = registry.by_path("certificates.k8s.io", "v1", "certificatesigningrequests")
CURRENT = "kubelet-client-current.pem"
USAGES = ["digital signature", "client auth"]  # an ECDSA key: no key encipherment, as upstream's kubelet asks


class CertificateError(Exception):
    """The kubelet cannot get its certificate: the message says what to fix."""


@dataclass(frozen=True)
class Files:
    kubeconfig: Path
    bootstrap_kubeconfig: Path | None
    cert_dir: Path

    @property
    def current(self) -> Path:
        return self.cert_dir / CURRENT


def request_name(pem: bytes) -> str:
    """`node-csr-<digest>`: named after the request, so asking twice for the same key finds the first request."""
    return "node-csr-" + base64.urlsafe_b64encode(hashlib.sha512(pem).digest()[:32]).decode().rstrip("=")


def rotation_deadline(cert: cx509.Certificate, rand: random.Random | None = None) -> dt.datetime:
    """When to renew: 70 % to 90 % of the way through the certificate's life (upstream's jitter)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    fraction = 0.7 + 0.2 * (rand or random).random()
    return start + (end - start) * fraction


def current_certificate(files: Files) -> cx509.Certificate | None:
    try:
        return cx509.load_pem_x509_certificate(files.current.read_bytes())
    except (OSError, ValueError):
        return None


def needs_bootstrap(files: Files, now: dt.datetime) -> bool:
    if not files.kubeconfig.exists():
        return True
    try:
        cfg = kubeconfig.load(files.kubeconfig)
    except kubeconfig.KubeConfigError:
        return True  # an unreadable kubeconfig is bootstrapped again, as upstream's kubelet does
    cert = current_certificate(files)
    return cfg.cert_file == str(files.current) and (cert is None or cert.not_valid_after_utc <= now)


async def request_certificate(client: rest.Client, node_name: str, *, wait_seconds: float = 900.0,
                              interval: float = 1.0) -> tuple[bytes, bytes]:
    """Ask for a client certificate for this node and wait until it is issued: (certificate PEM, key PEM)."""
    key = x509.new_key("ecdsa")
    pem = csr.make(key, f"{certs.NODE_PREFIX}{node_name}", (certs.NODES_GROUP,))
    name = request_name(pem)
    body = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {"request": base64.b64encode(pem).decode(), "signerName": certs.KUBE_APISERVER_CLIENT_KUBELET,
                     "usages": USAGES}}
    with contextlib.suppress(errors.AlreadyExists):
        await client.create(CSRS, body)
    log.info("asked for a client certificate: CertificateSigningRequest %s", name)
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        obj: dict[str, Any] = await client.get(CSRS, name)
        if certs.has_condition(obj, certs.DENIED) or certs.has_condition(obj, certs.FAILED):
            why = next((c.get("message", "") for c in certs.conditions(obj)
                        if c.get("type") in (certs.DENIED, certs.FAILED)), "")
            raise CertificateError(f"CertificateSigningRequest {name} was {certs.state(obj).lower()}: {why}")
        issued = certs.certificate_pem(obj)
        if issued:
            return issued, x509.key_pem(key)
        if asyncio.get_running_loop().time() > deadline:
            raise CertificateError(f"CertificateSigningRequest {name} was not approved and issued within "
                                   f"{wait_seconds:.0f}s: approve it (`kubectl certificate approve {name}`) or let "
                                   "the token's group be auto-approved")
        await asyncio.sleep(interval)


def store(files: Files, cert_pem: bytes, key_pem: bytes, now: dt.datetime) -> Path:
    """Write the pair to a new dated file and point `kubelet-client-current.pem` at it (atomically)."""
    files.cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = files.cert_dir / f"kubelet-client-{now:%Y-%m-%d-%H-%M-%S}.pem"
    write_atomic(path, cert_pem + key_pem, mode=0o600)
    link = files.cert_dir / f".{CURRENT}.new"
    link.unlink(missing_ok=True)
    link.symlink_to(path.name)
    os.replace(link, files.current)
    return path


async def bootstrap(files: Files, node_name: str, *, wait_seconds: float = 900.0) -> bool:
    """Make `--kubeconfig` through TLS bootstrap when it is missing or its certificate expired; True if it did."""
    now = dt.datetime.now(dt.UTC)
    if files.bootstrap_kubeconfig is None or not needs_bootstrap(files, now):
        return False
    try:
        boot = kubeconfig.load(files.bootstrap_kubeconfig)
    except kubeconfig.KubeConfigError as exc:
        raise CertificateError(f"--bootstrap-kubeconfig: {exc}") from None
    log.info("no usable client certificate: bootstrapping with %s", files.bootstrap_kubeconfig)
    async with rest.Client.from_kubeconfig(str(files.bootstrap_kubeconfig),
                                           user_agent=f"harness-kubelet/{node_name}") as client:
        cert_pem, key_pem = await request_certificate(client, node_name, wait_seconds=wait_seconds)
    store(files, cert_pem, key_pem, now)
    kubeconfig.write(files.kubeconfig, kubeconfig.KubeConfig(
        servers=boot.servers, cluster=boot.cluster, user=f"system:node:{node_name}", ca_file=boot.ca_file,
        cert_file=str(files.current), key_file=str(files.current)))
    log.info("wrote %s with the issued certificate %s", files.kubeconfig, files.current)
    return True


async def keep_rotated(client: rest.Client, files: Files, node_name: str, stop: asyncio.Event) -> None:
    """Renew the client certificate at its rotation deadline, until `stop` is set."""
    while not stop.is_set():
        cert = current_certificate(files)
        if cert is None:
            log.warning("--rotate-certificates: no certificate at %s; nothing to rotate", files.current)
            return
        wait = (rotation_deadline(cert) - dt.datetime.now(dt.UTC)).total_seconds()
        log.info("client certificate valid until %s; renewing in %.0fs", cert.not_valid_after_utc, max(wait, 0))
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.0))
            return
        except TimeoutError:
            pass
        try:
            cert_pem, key_pem = await request_certificate(client, node_name)
        except (CertificateError, errors.ApiError, OSError) as exc:
            log.error("renewing the client certificate failed: %s; trying again in 60s", exc)
            await asyncio.sleep(60)
            continue
        store(files, cert_pem, key_pem, dt.datetime.now(dt.UTC))
        log.info("rotated the client certificate: %s", files.current)
