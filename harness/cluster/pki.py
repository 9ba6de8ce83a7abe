"""The cluster's PKI as kubeadm lays it out: which CAs and certificates a cluster has, what each says, where it is
kept, and which machine gets which file.

`plan(...)` is pure: from the cluster's machines and service network it lists every certificate — the cluster CA
(`ca`), the etcd CA (`etcd/ca`), the front-proxy CA, the apiserver's serving certificate with every name clients use
for it, the apiserver's clients of the kubelets and of etcd, each component's client certificate (the user and
groups RBAC will see), and per machine the etcd server and peer certificates or the kubelet's client and serving
certificates. `ensure(...)` makes in `inventory/<cluster>/pki/` whatever the plan has and the directory lacks or holds
differently (a new master's name, a new CA), and keeps the rest: a second `harness up` changes nothing.
`files_for(...)` says which files go to a machine, under upstream's names, for Ansible to place in /etc/harness/pki.
Keys are 0600, directories 0700.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.auth import bootstraptoken
from harness.cluster.local import NodeSpec
from harness.util import x509
from harness.util.files import write_atomic

CA, ETCD_CA, FRONT_PROXY_CA = "ca", "etcd/ca", "front-proxy-ca"
CA_NAMES = {CA: "kubernetes", ETCD_CA: "etcd-ca", FRONT_PROXY_CA: "front-proxy-ca"}
SA_KEY, SA_PUB = "sa.key", "sa.pub"
#: The apiserver's --encryption-provider-config: Secrets encrypted in etcd with a key of the cluster's own.
ENCRYPTION_CONFIG = "encryption-config.yaml"
#: The Fluentd Forward handshake's shared key between the log agents and the aggregator (fluentd's <security>).
FORWARD_SHARED_KEY = "forward-shared-key"
#: The bootstrap token workers' kubelets join with (kubeadm join's --token): its Secret is made by the control_plane
#: role, and `bootstrap-kubelet.conf` carries it; the kubelet then gets its client certificate through a CSR.
BOOTSTRAP_TOKEN = "bootstrap-token"
MASTERS_GROUP = "system:masters"
NODES_GROUP = "system:nodes"
DNS_DOMAIN = "cluster.local"
#: Certificates this close to expiry are reported by `harness status` and renewed by `harness pki rotate`.
WARN_DAYS = 30


class PKIError(Exception):
    """The cluster's PKI cannot be made or read; the message names the file."""


@dataclass(frozen=True)
class Cert:
    """One certificate of the plan: its file stem under the PKI directory (`apiserver` -> apiserver.crt/.key), the CA
    that signs it, what it says, and the machines that get it (`masters`, `workers` or one machine's name)."""

    name: str
    ca: str
    request: x509.CertRequest
    machines: tuple[str, ...] = ()
    #: The ports where the machines that have it serve it (the apiserver's 6443, the kubelet's 10250, ...);
    #: `harness pki rotate` waits until each serves the renewed certificate.
    serves: tuple[int, ...] = ()

    @property
    def cert_file(self) -> str:
        return f"{self.name}.crt"

    @property
    def key_file(self) -> str:
        return f"{self.name}.key"


@dataclass(frozen=True)
class Plan:
    """Every certificate of a cluster, and which machines get the CAs."""

    certs: tuple[Cert, ...]
    ca_machines: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def by_name(self) -> dict[str, Cert]:
        return {c.name: c for c in self.certs}


def kubernetes_service_ip(service_cidr: str) -> str:
    """The `kubernetes` Service's ClusterIP: the first address of the service network (10.96.0.1)."""
    return str(next(ipaddress.ip_network(service_cidr).hosts()))


def apiserver_sans(masters: Iterable[NodeSpec], service_cidr: str) -> tuple[str, ...]:
    """Every name a client may use for an apiserver: each master's name and IP, the kubernetes Service's IP and DNS
    names, and loopback (as kubeadm's apiserver certificate, plus every master for HA)."""
    names: list[str] = []
    for master in masters:
        names += [master.name, master.ip]
    names += [kubernetes_service_ip(service_cidr), "kubernetes", "kubernetes.default", "kubernetes.default.svc",
              f"kubernetes.default.svc.{DNS_DOMAIN}", "localhost", "127.0.0.1"]
    return tuple(dict.fromkeys(names))


def plan(nodes: Iterable[NodeSpec], *, service_cidr: str, days: int = 365) -> Plan:
    """The certificates of a cluster with these machines (names, CNs, groups and SANs as kubeadm makes them)."""
    nodes = list(nodes)
    masters = [n for n in nodes if n.role == "master"]
    workers = [n for n in nodes if n.role == "worker"]
    server, client = x509.SERVER_AUTH, x509.CLIENT_AUTH

    def cert(name: str, ca: str, cn: str, *, orgs: tuple[str, ...] = (), sans: tuple[str, ...] = (),
             usages: tuple[str, ...] = (client,), machines: tuple[str, ...] = ("masters",),
             serves: tuple[int, ...] = ()) -> Cert:
        return Cert(name, ca, x509.CertRequest(cn, orgs, sans, usages, days), machines, serves)

    certs = [
        cert("apiserver", CA, "kube-apiserver", sans=apiserver_sans(masters, service_cidr), usages=(server,),
             serves=(6443,)),
        cert("apiserver-kubelet-client", CA, "kube-apiserver-kubelet-client", orgs=(MASTERS_GROUP,)),
        cert("apiserver-etcd-client", ETCD_CA, "kube-apiserver-etcd-client"),
        cert("front-proxy-client", FRONT_PROXY_CA, "front-proxy-client"),
        cert("etcd/healthcheck-client", ETCD_CA, "kube-etcd-healthcheck-client"),
        cert("admin", CA, "kubernetes-admin", orgs=(MASTERS_GROUP,)),
        cert("scheduler", CA, "system:kube-scheduler"),
        cert("controller-manager", CA, "system:kube-controller-manager"),
        cert("kube-proxy", CA, "system:kube-proxy", orgs=("system:node-proxier",), machines=("workers",)),
        # harness's own programs that upstream runs as pods with service accounts: cluster DNS, the masters'
        # host-gw routes, and Prometheus, which scrapes the apiserver's /metrics
        cert("dns", CA, "system:kube-dns"),
        cert("pod-routes", CA, "system:harness-pod-routes"),
        cert("prometheus", CA, "system:prometheus"),
    ]
    for m in masters:
        sans = (m.name, "localhost", m.ip, "127.0.0.1", "::1")
        # the scheduler's and controller-manager's secure ports (10259, 10257): serving certificates of the cluster
        # CA, as k3s issues them (kubeadm leaves them self-signed), so Prometheus and health checks verify them
        certs += [cert(f"machines/{m.name}/kube-scheduler-server", CA, "kube-scheduler", sans=sans,
                       usages=(server,), machines=(m.name,), serves=(10259,)),
                  cert(f"machines/{m.name}/kube-controller-manager-server", CA, "kube-controller-manager",
                       sans=sans, usages=(server,), machines=(m.name,), serves=(10257,))]
        certs += [cert(f"machines/{m.name}/etcd/server", ETCD_CA, m.name, sans=sans, usages=(server, client),
                       machines=(m.name,), serves=(2379,)),
                  cert(f"machines/{m.name}/etcd/peer", ETCD_CA, m.name, sans=sans, usages=(server, client),
                       machines=(m.name,), serves=(2380,))]
        # the log aggregator's Forward (TLS) and HTTPS ports; agents dial the master's IP. No `serves`: only the
        # first master runs the aggregator (the logging role's choice), so rotation cannot wait on every master
        certs.append(cert(f"machines/{m.name}/log-aggregator", CA, "harness-log-aggregator",
                          sans=(m.name, m.ip, "localhost", "127.0.0.1"), usages=(server,), machines=(m.name,)))
    for w in workers:
        # the kubelet's client certificate is not here: it asks for it with the bootstrap token (TLS bootstrap)
        certs += [cert(f"machines/{w.name}/kubelet", CA, f"system:node:{w.name}", orgs=(NODES_GROUP,),
                       sans=(w.name, w.ip), usages=(server,), machines=(w.name,), serves=(10250,))]
    return Plan(tuple(certs), ca_machines={CA: ("masters", "workers"), ETCD_CA: ("masters",),
                                           FRONT_PROXY_CA: ("masters",)})


#: The kubeconfig each component reads on its machines (/etc/harness/<name>.conf), and the certificate in it (a file
#: stem under /etc/harness/pki); the `common` role writes them from the inventory's `kubeconfigs`.
KUBECONFIGS: dict[str, dict[str, str]] = {
    "masters": {"admin": "admin", "scheduler": "scheduler", "controller-manager": "controller-manager",
                "dns": "dns", "pod-routes": "pod-routes"},
    "workers": {"kube-proxy": "kube-proxy"},
}
#: Kubeconfigs that carry a token instead: the kubelet's bootstrap kubeconfig (kubeadm's bootstrap-kubelet.conf),
#: with which it asks for its client certificate and writes kubelet.conf itself.
TOKEN_KUBECONFIGS: dict[str, dict[str, str]] = {"masters": {}, "workers": {"bootstrap-kubelet": BOOTSTRAP_TOKEN}}


def kubeconfigs_for(node: NodeSpec) -> list[dict[str, str]]:
    """The kubeconfigs a machine gets: [{name, cert}] (cert: the stem of its files under /etc/harness/pki) or
    [{name, token}] (token: the PKI directory's file holding the token)."""
    role = f"{node.role}s"
    return [*({"name": name, "cert": cert} for name, cert in KUBECONFIGS[role].items()),
            *({"name": name, "token": token} for name, token in TOKEN_KUBECONFIGS[role].items())]


# ---------------------------------------------------------------------------------------------- on disk


@dataclass(frozen=True)
class Changes:
    """What `ensure` made: names of the CAs and certificates (re)issued, and whether the SA key pair is new."""

    cas: tuple[str, ...] = ()
    certs: tuple[str, ...] = ()
    sa_key: bool = False
    encryption_key: bool = False
    forward_key: bool = False
    bootstrap_token: bool = False

    def __bool__(self) -> bool:
        return bool(self.cas or self.certs or self.sa_key or self.encryption_key or self.forward_key
                    or self.bootstrap_token)


def _load_ca(directory: Path, name: str) -> x509.Issued | None:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    if not crt.exists() and not key.exists():
        return None
    try:
        return x509.load(crt, key)
    except x509.X509Error as exc:
        raise PKIError(f"CA {name} in {directory} cannot be used ({exc}); remove both files to make a new one, "
                       "which reissues every certificate it signed") from None


def _current(directory: Path, cert: Cert, ca: x509.Issued, now: dt.datetime) -> bool:
    """Whether the certificate on disk is what the plan wants: signed by this CA, same subject, SANs and usages, and
    not within WARN_DAYS of expiry."""
    try:
        issued = x509.load(directory / cert.cert_file, directory / cert.key_file)
    except x509.X509Error:
        return False
    have, want = x509.describe(issued.cert), cert.request
    return (x509.verify_signed_by(issued.cert, ca.cert)
            and have.subject == x509.subject(want.common_name, want.organizations)
            and set(have.sans) == x509.normalized(want.sans)
            and set(have.usages) == set(want.usages)
            and have.days_left(now) > WARN_DAYS)


def ensure(directory: Path, the_plan: Plan, *, now: dt.datetime | None = None, key_kind: str = "rsa") -> Changes:
    """Make in `directory` what the plan has and the directory lacks or holds differently; keep the rest. Keys are
    RSA 2048 (kubeadm's default) or ECDSA P-256 (`key_kind="ecdsa"`, kubeadm's `ECDSA-P256`)."""
    now = now or dt.datetime.now(dt.UTC)
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
    directory.chmod(0o700)
    cas: dict[str, x509.Issued] = {}
    made_cas: list[str] = []
    for name, common_name in CA_NAMES.items():
        ca = _load_ca(directory, name)
        if ca is None:
            ca = x509.new_ca(common_name, now=now, key_kind=key_kind)
            x509.save(ca, directory / f"{name}.crt", directory / f"{name}.key")
            made_cas.append(name)
        cas[name] = ca
    made: list[str] = []
    for cert in the_plan.certs:
        ca = cas[cert.ca]
        if not _current(directory, cert, ca, now):
            x509.save(x509.sign(ca, cert.request, now=now, key_kind=key_kind), directory / cert.cert_file,
                      directory / cert.key_file)
            made.append(cert.name)
    sa_made = False
    if not (directory / SA_KEY).exists():
        key = x509.new_key()  # RSA always: service-account tokens are RS256
        write_atomic(directory / SA_KEY, x509.key_pem(key), mode=0o600)
        write_atomic(directory / SA_PUB, x509.public_key_pem(key), mode=0o644)
        sa_made = True
    elif not (directory / SA_PUB).exists():
        write_atomic(directory / SA_PUB, x509.public_key_pem(x509.load_key(directory / SA_KEY)), mode=0o644)
    encryption_made = False
    if not (directory / ENCRYPTION_CONFIG).exists():
        write_atomic(directory / ENCRYPTION_CONFIG, encryption_config(os.urandom(32)), mode=0o600)
        encryption_made = True
    forward_made = False
    if not (directory / FORWARD_SHARED_KEY).exists():
        write_atomic(directory / FORWARD_SHARED_KEY, (os.urandom(32).hex() + "\n").encode(), mode=0o600)
        forward_made = True
    token_made = False
    if not (directory / BOOTSTRAP_TOKEN).exists():
        write_atomic(directory / BOOTSTRAP_TOKEN, (bootstraptoken.new_token() + "\n").encode(), mode=0o600)
        token_made = True
    return Changes(tuple(made_cas), tuple(made), sa_made, encryption_made, forward_made, token_made)


def bootstrap_token(directory: Path) -> str:
    """The cluster's bootstrap token (made by `ensure`)."""
    try:
        return (directory / BOOTSTRAP_TOKEN).read_text().strip()
    except OSError as exc:
        raise PKIError(f"no bootstrap token in {directory}: {exc.strerror or exc}") from None


def renew(directory: Path, the_plan: Plan, names: Iterable[str] = (), *, now: dt.datetime | None = None,
          key_kind: str = "rsa") -> list[Cert]:
    """Reissue leaf certificates (the named ones, or every one) with new keys from the CAs in `directory`, as
    `kubeadm certs renew`: same subject, SANs and usages, a new validity period. CAs, the service-account key pair
    and the encryption key are kept. Each pair is written certificate last, so a reader that sees the new
    certificate finds its key."""
    now = now or dt.datetime.now(dt.UTC)
    by_name = the_plan.by_name()
    wanted = list(dict.fromkeys(names)) or list(by_name)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise PKIError(f"no certificate {', '.join(unknown)} in this cluster's PKI; its certificates: "
                       f"{', '.join(by_name)}")
    cas: dict[str, x509.Issued] = {}
    renewed: list[Cert] = []
    for name in wanted:
        cert = by_name[name]
        if cert.ca not in cas:
            ca = _load_ca(directory, cert.ca)
            if ca is None:
                raise PKIError(f"CA {cert.ca} is missing from {directory}; `harness up` makes the cluster's PKI")
            cas[cert.ca] = ca
        issued = x509.sign(cas[cert.ca], cert.request, now=now, key_kind=key_kind)
        write_atomic(directory / cert.key_file, x509.key_pem(issued.key), mode=0o600)
        write_atomic(directory / cert.cert_file, issued.cert_pem, mode=0o644)
        renewed.append(cert)
    return renewed


def encryption_config(key: bytes) -> bytes:
    """An EncryptionConfiguration as Kubernetes the Hard Way writes one: Secrets with aescbc (this key), and plain
    values still readable (identity) for what was written before."""
    secret = base64.b64encode(key).decode()
    return (f"apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
            f"  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n"
            f"            - name: key1\n              secret: {secret}\n      - identity: {{}}\n").encode()


def _for(machines: tuple[str, ...], node: NodeSpec) -> bool:
    return f"{node.role}s" in machines or node.name in machines


def files_for(the_plan: Plan, node: NodeSpec) -> list[tuple[str, str, int]]:
    """(file under the PKI directory, path under the machine's /etc/harness/pki, mode) for everything one machine
    gets: the CAs' certificates it trusts (and, on masters, the CA keys the controller-manager signs with), its
    certificates under upstream's file names."""
    files: list[tuple[str, str, int]] = []
    for ca, machines in the_plan.ca_machines.items():
        if _for(machines, node):
            files.append((f"{ca}.crt", f"{ca}.crt", 0o644))
            if node.role == "master":
                files.append((f"{ca}.key", f"{ca}.key", 0o600))
    if node.role == "master":
        files += [(SA_KEY, SA_KEY, 0o600), (SA_PUB, SA_PUB, 0o644), (ENCRYPTION_CONFIG, ENCRYPTION_CONFIG, 0o600)]
    files.append((FORWARD_SHARED_KEY, FORWARD_SHARED_KEY, 0o600))  # every log agent and the aggregator
    prefix = f"machines/{node.name}/"
    for cert in the_plan.certs:
        if _for(cert.machines, node):
            target = cert.name.removeprefix(prefix)
            files += [(cert.cert_file, f"{target}.crt", 0o644), (cert.key_file, f"{target}.key", 0o600)]
    return files


@dataclass(frozen=True)
class Listed:
    """One certificate of a PKI directory, for `harness pki show`."""

    name: str
    description: x509.Description


def listing(directory: Path) -> Iterator[Listed]:
    """Every certificate under the directory, CAs first, then by name."""
    paths = sorted(directory.rglob("*.crt"), key=lambda p: (p.stem != "ca" and not p.stem.endswith("-ca"),
                                                           str(p.relative_to(directory))))
    for path in paths:
        try:
            yield Listed(str(path.relative_to(directory).with_suffix("")), x509.describe(x509.load_cert(path)))
        except x509.X509Error as exc:
            raise PKIError(str(exc)) from None


def expiring(directory: Path, *, within_days: float = WARN_DAYS, now: dt.datetime | None = None) -> list[Listed]:
    """The certificates that expire within `within_days` (or have expired)."""
    return [c for c in listing(directory) if c.description.days_left(now) <= within_days]


__all__ = ["CA", "CA_NAMES", "ETCD_CA", "FRONT_PROXY_CA", "KUBECONFIGS", "WARN_DAYS", "Cert", "Changes", "Listed",
           "PKIError", "Plan", "apiserver_sans", "ensure", "expiring", "files_for", "kubeconfigs_for",
           "kubernetes_service_ip", "listing", "plan", "renew"]
