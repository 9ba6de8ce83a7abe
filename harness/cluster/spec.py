"""The cluster spec: node counts, addresses and VM sizes, read from `cluster.yaml`.

The same file is read by the `Vagrantfile` (with Ruby's YAML), so `harness up` and `vagrant up`
build the same machines: `master-1..` from `network.first_master` on, `worker-1..` from
`network.first_worker` on. Everything here is pure: no processes, no network.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The spec at the repository root: the default cluster shape.
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[2] / "cluster.yaml"

MASTER_COUNTS = (1, 3)
MAX_WORKERS = 20
MIN_MEMORY_MIB = 512
ROLES = ("masters", "workers")


class SpecError(ValueError):
    """An invalid cluster spec; `field` is the dotted path of the offending field (e.g. `network.gateway`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"cluster spec: {field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Node:
    """One machine of the cluster: `master-1`, `worker-2`, ...; role `master` or `worker`; ip as text.

    The same shape as local.NodeSpec and inventory.InventoryNode, so nodes() feeds both directly.
    """

    name: str
    role: str
    ip: str

    @property
    def group(self) -> str:
        """The node's inventory group: `masters` or `workers`."""
        return f"{self.role}s"


@dataclass(frozen=True)
class VMSize:
    """A Vagrant VM's size: virtual CPUs and memory in MiB."""

    cpus: int
    memory: int


@dataclass(frozen=True)
class NodeNetwork:
    """A node network: its subnet, the host side's address on it, and where masters' and workers' addresses start."""

    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    first_master: ipaddress.IPv4Address
    first_worker: ipaddress.IPv4Address


@dataclass(frozen=True)
class ClusterSpec:
    """The shape of a cluster. Build it with `load_spec` or `parse_spec`; the constructor does not validate."""

    masters: int
    workers: int
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    first_master: ipaddress.IPv4Address
    first_worker: ipaddress.IPv4Address
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    cluster_dns: ipaddress.IPv4Address
    box: str = "debian/bookworm64"
    sizes: Mapping[str, VMSize] = field(
        default_factory=lambda: {"masters": VMSize(2, 2048), "workers": VMSize(2, 2048)}
    )
    #: The VMs' node network (`vagrant.network`), its own so that VMs and a local cluster can run side by side;
    #: None: the VMs use `network`.
    vagrant_network: NodeNetwork | None = None
    #: The VMs' node counts (`vagrant.masters`, `vagrant.workers`); None: the top-level counts.
    vagrant_masters: int | None = None
    vagrant_workers: int | None = None

    def for_vms(self) -> ClusterSpec:
        """The spec the Vagrant provider builds: `vagrant.network` in place of `network`, when it has one."""
        n = self.vagrant_network
        spec = dataclasses.replace(
            self, vagrant_network=None, vagrant_masters=None, vagrant_workers=None,
            masters=self.masters if self.vagrant_masters is None else self.vagrant_masters,
            workers=self.workers if self.vagrant_workers is None else self.vagrant_workers)
        if n is not None:
            spec = dataclasses.replace(spec, network=n.cidr, gateway=n.gateway, first_master=n.first_master,
                                       first_worker=n.first_worker)
        spec.validate()
        return spec

    def with_overrides(self, masters: int | None = None, workers: int | None = None) -> ClusterSpec:
        """A copy with other node counts (None keeps the current one), validated like a loaded spec."""
        spec = dataclasses.replace(
            self,
            masters=self.masters if masters is None else masters,
            workers=self.workers if workers is None else workers,
        )
        spec.validate()
        return spec

    def cluster_vars(self) -> dict[str, str]:
        """The cluster-wide playbook variables (inventory `all` vars), as the Vagrantfile's `cluster_vars`."""
        return {"node_network": str(self.network), "node_gateway": str(self.gateway), "pod_cidr": str(self.pod_cidr),
                "service_cidr": str(self.service_cidr), "cluster_dns": str(self.cluster_dns)}

    def master_ips(self) -> list[ipaddress.IPv4Address]:
        """Addresses of master-1.., in order."""
        return [self.first_master + i for i in range(self.masters)]

    def worker_ips(self) -> list[ipaddress.IPv4Address]:
        """Addresses of worker-1.., in order."""
        return [self.first_worker + i for i in range(self.workers)]

    def nodes(self) -> list[Node]:
        """Every machine, masters first: `master-1` at first_master, `worker-1` at first_worker, and so on."""
        masters = [Node(f"master-{i + 1}", "master", str(ip)) for i, ip in enumerate(self.master_ips())]
        workers = [Node(f"worker-{i + 1}", "worker", str(ip)) for i, ip in enumerate(self.worker_ips())]
        return masters + workers

    @property
    def kubernetes_service_ip(self) -> ipaddress.IPv4Address:
        """The ClusterIP of the `kubernetes` service: the first address of the service network."""
        return self.service_cidr.network_address + 1

    def validate(self) -> None:
        """Raise SpecError naming the first invalid field."""
        _check_int("masters", self.masters)
        if self.masters not in MASTER_COUNTS:
            raise SpecError("masters", f"must be 1 or 3, got {self.masters}")
        _check_int("workers", self.workers)
        if not 0 <= self.workers <= MAX_WORKERS:
            raise SpecError("workers", f"must be between 0 and {MAX_WORKERS}, got {self.workers}")
        self._validate_network()
        self._validate_service_network()
        if not self.box:
            raise SpecError("vagrant.box", "must not be empty")
        for role in ROLES:
            if role not in self.sizes:
                raise SpecError(f"vagrant.sizes.{role}", "is required")
            size = self.sizes[role]
            _check_int(f"vagrant.sizes.{role}.cpus", size.cpus)
            if size.cpus < 1:
                raise SpecError(f"vagrant.sizes.{role}.cpus", f"must be at least 1, got {size.cpus}")
            _check_int(f"vagrant.sizes.{role}.memory", size.memory)
            if size.memory < MIN_MEMORY_MIB:
                raise SpecError(
                    f"vagrant.sizes.{role}.memory", f"must be at least {MIN_MEMORY_MIB} (MiB), got {size.memory}"
                )

    def _validate_network(self) -> None:
        net = self.network
        if net.num_addresses < 4:
            raise SpecError("network.cidr", f"{net} is too small for a node network")
        usable = f"a host address of {net} (not its network or broadcast address)"
        if not _is_host(net, self.gateway):
            raise SpecError("network.gateway", f"{self.gateway} must be {usable}")
        taken: dict[ipaddress.IPv4Address, str] = {self.gateway: "network.gateway"}
        try:
            nodes = self.nodes()
        except ipaddress.AddressValueError as exc:
            raise SpecError("network", f"node addresses run past 255.255.255.255: {exc}") from exc
        for node in nodes:
            fld = f"network.first_{node.role}"
            ip = ipaddress.IPv4Address(node.ip)
            if not _is_host(net, ip):
                raise SpecError(fld, f"{node.name} would get {ip}, which is not {usable}")
            if ip in taken:
                raise SpecError(fld, f"{node.name} would get {ip}, already used by {taken[ip]}")
            taken[ip] = node.name

    def _validate_service_network(self) -> None:
        for name, cidr in (("pod_cidr", self.pod_cidr), ("service_cidr", self.service_cidr)):
            if cidr.overlaps(self.network):
                raise SpecError(name, f"{cidr} overlaps the node network {self.network}")
        if self.pod_cidr.overlaps(self.service_cidr):
            raise SpecError("service_cidr", f"{self.service_cidr} overlaps pod_cidr {self.pod_cidr}")
        if self.pod_cidr.prefixlen > 24:
            raise SpecError("pod_cidr", f"{self.pod_cidr} must be /24 or larger (one /24 per node)")
        if not _is_host(self.service_cidr, self.cluster_dns):
            raise SpecError("cluster_dns", f"{self.cluster_dns} must be a host address of {self.service_cidr}")
        if self.cluster_dns == self.kubernetes_service_ip:
            raise SpecError("cluster_dns", f"{self.cluster_dns} is the `kubernetes` service's ClusterIP")


def load_spec(path: str | Path = DEFAULT_SPEC_PATH) -> ClusterSpec:
    """Read and validate a cluster spec file; SpecError (field `<file>`) when it is unreadable or not YAML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), f"not valid YAML: {exc}") from exc
    return parse_spec(data)


def parse_spec(data: Any) -> ClusterSpec:
    """Build and validate a ClusterSpec from parsed YAML (the layout of `cluster.yaml`)."""
    top = _mapping("(top level)", data)
    _known("", top, {"masters", "workers", "network", "pod_cidr", "service_cidr", "cluster_dns", "vagrant"})
    network = _node_network("network", _required("", top, "network"))
    vagrant = _mapping("vagrant", top.get("vagrant", {}))
    _known("vagrant.", vagrant, {"box", "sizes", "network", "masters", "workers"})
    vagrant_network = _node_network("vagrant.network", vagrant["network"]) if "network" in vagrant else None
    sizes_raw = _mapping("vagrant.sizes", vagrant.get("sizes", {}))
    _known("vagrant.sizes.", sizes_raw, set(ROLES))
    sizes: dict[str, VMSize] = {}
    for role in ROLES:
        raw = _mapping(f"vagrant.sizes.{role}", _required("vagrant.sizes.", sizes_raw, role))
        _known(f"vagrant.sizes.{role}.", raw, {"cpus", "memory"})
        sizes[role] = VMSize(
            cpus=_required(f"vagrant.sizes.{role}.", raw, "cpus"),
            memory=_required(f"vagrant.sizes.{role}.", raw, "memory"),
        )
    box = vagrant.get("box", "debian/bookworm64")
    if not isinstance(box, str):
        raise SpecError("vagrant.box", f"must be a string, got {box!r}")
    spec = ClusterSpec(
        masters=_required("", top, "masters"),
        workers=_required("", top, "workers"),
        network=network.cidr,
        gateway=network.gateway,
        first_master=network.first_master,
        first_worker=network.first_worker,
        pod_cidr=_net("pod_cidr", _required("", top, "pod_cidr")),
        service_cidr=_net("service_cidr", _required("", top, "service_cidr")),
        cluster_dns=_ip("cluster_dns", _required("", top, "cluster_dns")),
        box=box,
        sizes=sizes,
        vagrant_network=vagrant_network,
        vagrant_masters=vagrant.get("masters"),
        vagrant_workers=vagrant.get("workers"),
    )
    spec.validate()
    try:
        spec.for_vms()
    except SpecError as exc:  # the same checks, named by the section they are about
        raise SpecError(f"vagrant.{exc.field}", exc.message) from exc
    return spec


def _node_network(name: str, value: object) -> NodeNetwork:
    raw = _mapping(name, value)
    _known(f"{name}.", raw, {"cidr", "gateway", "first_master", "first_worker"})
    return NodeNetwork(
        cidr=_net(f"{name}.cidr", _required(f"{name}.", raw, "cidr")),
        gateway=_ip(f"{name}.gateway", _required(f"{name}.", raw, "gateway")),
        first_master=_ip(f"{name}.first_master", _required(f"{name}.", raw, "first_master")),
        first_worker=_ip(f"{name}.first_worker", _required(f"{name}.", raw, "first_worker")),
    )


def _is_host(net: ipaddress.IPv4Network, ip: ipaddress.IPv4Address) -> bool:
    return ip in net and ip not in (net.network_address, net.broadcast_address)


def _check_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(name, f"must be an integer, got {value!r}")


def _mapping(name: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(name, f"must be a mapping, got {type(value).__name__}")
    return value


def _required(prefix: str, data: Mapping[str, Any], key: str) -> Any:
    if key not in data or data[key] is None:
        raise SpecError(prefix + key, "is required")
    return data[key]


def _known(prefix: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(prefix + str(key), f"unknown field (known: {', '.join(sorted(allowed))})")


def _ip(name: str, value: object) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError as exc:
        raise SpecError(name, f"not an IPv4 address: {value!r}") from exc


def _net(name: str, value: object) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value))
    except ValueError as exc:
        raise SpecError(name, f"not an IPv4 network (CIDR with no host bits set): {value!r}") from exc
