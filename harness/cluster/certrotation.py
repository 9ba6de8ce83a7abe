"""`harness pki rotate`: renew a running cluster's leaf certificates and roll them out without a restart.

The steps: read the cluster's machines and service network from its inventory (so the plan is the one `harness
up` made), reissue the certificates (`pki.renew`), place them with the playbook's `pki`-tagged tasks, then wait
until every port that serves one of them presents the new certificate. Components load changed certificate files
into their live TLS contexts (`harness.util.certreload`, etcd on every handshake), so nothing restarts and no
connection is refused; clients present their renewed certificates on their next connections.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509 as cx509

from harness.cluster import pki
from harness.cluster.local import NodeSpec
from harness.util import x509

#: The client certificate a probe shows to ports that ask for one (etcd's client and peer ports insist).
_PROBE_CLIENT = {pki.ETCD_CA: "etcd/healthcheck-client", pki.CA: "admin"}


class RotationError(Exception):
    """The cluster cannot be rotated (no inventory, no PKI) or a port kept its old certificate."""


@dataclass(frozen=True)
class Endpoint:
    """A port that serves a certificate: where, and the serial number it should present once rotated."""

    cert: str
    machine: str
    ip: str
    port: int
    ca: str
    serial: int = 0

    def __str__(self) -> str:
        return f"{self.cert} on {self.machine}:{self.port}"


def cluster_from_inventory(hosts: Path) -> tuple[list[NodeSpec], str]:
    """The machines (name, role, IP) and service network `harness up` wrote into `inventory/<cluster>/hosts.yml`."""
    try:
        doc: dict[str, Any] = yaml.safe_load(hosts.read_text())["all"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise RotationError(f"cannot read the inventory {hosts}: {exc}") from None
    nodes: list[NodeSpec] = []
    for group, role in (("masters", "master"), ("workers", "worker")):
        for name, host in ((doc.get("children", {}).get(group) or {}).get("hosts") or {}).items():
            nodes.append(NodeSpec(name, role, str((host or {}).get("node_ip") or (host or {}).get("ansible_host"))))
    cidr = (doc.get("vars") or {}).get("service_cidr")
    if not nodes or not cidr:
        raise RotationError(f"{hosts} names no machines or no service_cidr: is it an inventory `harness up` wrote?")
    return nodes, str(cidr)


def endpoints(the_plan: pki.Plan, nodes: Iterable[NodeSpec], renewed: Iterable[pki.Cert],
              directory: Path) -> list[Endpoint]:
    """Every (machine, port) that serves one of the renewed certificates, with the serial it should present."""
    nodes = list(nodes)
    out: list[Endpoint] = []
    for cert in renewed:
        if not cert.serves:
            continue
        serial = x509.load_cert(directory / cert.cert_file).serial_number
        for node in nodes:
            if f"{node.role}s" in cert.machines or node.name in cert.machines:
                out += [Endpoint(cert.name, node.name, node.ip, port, cert.ca, serial) for port in cert.serves]
    return out


def served_serial(endpoint: Endpoint, directory: Path, timeout: float = 3.0) -> int | None:
    """The serial number of the certificate the port presents now (None when it does not answer)."""
    context = ssl.create_default_context(cafile=str(directory / f"{endpoint.ca}.crt"))
    context.check_hostname = False
    client = _PROBE_CLIENT.get(endpoint.ca)
    if client:
        context.load_cert_chain(directory / f"{client}.crt", directory / f"{client}.key")
    try:
        with socket.create_connection((endpoint.ip, endpoint.port), timeout=timeout) as raw, \
                context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return cx509.load_der_x509_certificate(der).serial_number if der else None


def wait_served(pending: list[Endpoint], directory: Path, *, timeout: float, interval: float = 1.0,
                progress: Callable[[str], None] = lambda _m: None) -> list[Endpoint]:
    """Wait until each endpoint presents its new certificate; the endpoints that did not within `timeout`."""
    deadline = time.monotonic() + timeout
    left = list(pending)
    while left:
        for ep in list(left):
            if served_serial(ep, directory) == ep.serial:
                left.remove(ep)
                progress(f"{ep}: serving the renewed certificate")
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return left


def check_pair(directory: Path, cert: pki.Cert) -> None:
    """Refuse a renewed pair that does not load as a TLS pair (caught before it is placed on any machine)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(directory / cert.cert_file, directory / cert.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise RotationError(f"renewed {cert.name} does not load: {exc}") from None


__all__ = ["Endpoint", "RotationError", "check_pair", "cluster_from_inventory", "endpoints", "served_serial",
           "wait_served"]
