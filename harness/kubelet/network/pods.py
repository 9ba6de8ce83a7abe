"""Pod networking on one node: a network namespace per pod, a veth from it to the node bridge, an IP from the podCIDR.

Everything happens in the kubelet's own network namespace (the node's), except the pod side of each veth, which is
configured through a netlink socket opened inside the pod's namespace (see `netns.open_socket`). Netlink is spoken
through pyroute2's synchronous `IPRoute`, one short-lived socket per call, so calls from several threads at once are
safe; the calls are made off any running asyncio loop (pyroute2 runs a loop of its own).

What was done for each pod is written to `<ipam_dir>/pods/<uid>.json` before any link is made, so that `teardown`
and `list` work after a kubelet restart; `teardown` also works from the uid alone (the netns file is named after the
uid, the host veth after a hash of it, and the IPAM files name their owner).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import json
import logging
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.kubelet.errors import KubeletError
from harness.kubelet.network.ipam import DEFAULT_IPAM_DIR, HostLocalIPAM, IPAMError, release_everywhere
from harness.kubelet.network.netns import (
    DEFAULT_NETNS_DIR,
    NetnsError,
    NetnsStore,
    is_netns,
    off_event_loop,
    open_socket,
)

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806

POD_IFNAME = "eth0"
DEFAULT_MTU = 1500
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RT_TABLE_MAIN = 254
BRPORT_MODE_HAIRPIN = 1


class NetworkError(KubeletError):
    """The pod network could not be configured, set up or torn down."""


class NetworkNotReady(NetworkError):
    """No podCIDR has been configured on this node yet."""


@dataclass(frozen=True)
class PodInterface:
    """A pod's network as the kubelet needs it: where its namespace is and which address it has."""

    pod_uid: str
    ip: str
    prefix_len: int
    gateway: str
    netns_path: str
    host_veth: str


def host_veth_name(pod_uid: str) -> str:
    """The node side of a pod's veth: `veth` and 8 hex digits of a hash of the uid (interface names are <= 15)."""
    return "veth" + hashlib.sha256(pod_uid.encode()).hexdigest()[:8]


@contextlib.contextmanager
def _iproute(sock: socket.socket | None = None) -> Iterator[Any]:
    """An IPRoute on a socket of this thread's namespace, or on `sock` (opened in another namespace)."""
    if sock is None:
        ipr = IPRoute(groups=0)
    else:
        fd = sock.detach()
        try:
            ipr = IPRoute(groups=0, fileno=fd)
        except BaseException:
            os.close(fd)
            raise
    try:
        yield ipr
    finally:
        ipr.close()


def _link(ipr: Any, name: str) -> Any | None:
    """The link named `name`, or None."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise


def _flags(link: Any) -> int:
    return int(link["flags"])


class PodNetwork:
    """The node bridge with the podCIDR's gateway address, and one namespace + veth + IP per pod."""

    def __init__(self, *, bridge: str = "cni0", netns_dir: Path = DEFAULT_NETNS_DIR,
                 ipam_dir: Path = DEFAULT_IPAM_DIR, mtu: int | None = None) -> None:
        self.bridge = bridge
        self.netns = NetnsStore(Path(netns_dir))
        self.ipam_dir = Path(ipam_dir)
        self.records_dir = self.ipam_dir / "pods"
        self._mtu: int | None = mtu
        self._cidr: str | None = None
        self._locks = [threading.Lock() for _ in range(64)]

    @property
    def pod_cidr(self) -> str | None:
        """The podCIDR given to the last successful `configure`."""
        return self._cidr

    @property
    def mtu(self) -> int | None:
        """The MTU of the bridge and of the pods' veths (known after `configure`)."""
        return self._mtu

    # -- the node -----------------------------------------------------------------------------------

    def configure(self, pod_cidr: str) -> None:
        """Make sure the bridge exists, is up and holds the gateway address, and that this namespace forwards."""
        try:
            off_event_loop(lambda: self._configure(pod_cidr))
        except (NetlinkError, OSError, IPAMError) as exc:
            raise NetworkError(f"cannot configure the pod network for {pod_cidr} on bridge {self.bridge}: "
                               f"{_why(exc)}") from exc

    def _configure(self, pod_cidr: str) -> None:
        ipam = HostLocalIPAM(pod_cidr, root=self.ipam_dir)
        with _iproute() as ipr:
            mtu = self._mtu if self._mtu is not None else self._detect_mtu(ipr)
            link = _link(ipr, self.bridge)
            if link is None:
                try:
                    ipr.link("add", ifname=self.bridge, kind="bridge", mtu=mtu)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
                link = _link(ipr, self.bridge)
                if link is None:
                    raise NetworkError(f"bridge {self.bridge} vanished right after it was created")
            kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if kind != "bridge":
                raise NetworkError(f"{self.bridge} exists and is a {kind or 'plain'} interface, not a bridge")
            index = link["index"]
            if link.get_attr("IFLA_MTU") != mtu:
                ipr.link("set", index=index, mtu=mtu)
            have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.addr("dump", family=socket.AF_INET)
                    if a["index"] == index}
            wanted = (ipam.gateway, ipam.prefix_len)
            if wanted not in have:
                ipr.addr("add", index=index, address=ipam.gateway, prefixlen=ipam.prefix_len)
            for address, prefix in have - {wanted}:  # the gateway of an earlier podCIDR
                log.info("removing %s/%s from %s: the podCIDR is now %s", address, prefix, self.bridge, ipam.cidr)
                ipr.addr("del", index=index, address=address, prefixlen=prefix)
            if not _flags(link) & IFF_UP:
                ipr.link("set", index=index, state="up")
        _sysctl("net/ipv4/ip_forward", "1")
        self._mtu = mtu
        self._cidr = ipam.cidr

    def _detect_mtu(self, ipr: Any) -> int:
        """The MTU of the interface holding the default route, else of the node's main interface, else 1500."""
        links = {link["index"]: link for link in ipr.link("dump")}
        for route in ipr.route("dump", family=socket.AF_INET):
            table = route.get_attr("RTA_TABLE") or route["table"]
            if table == RT_TABLE_MAIN and route["dst_len"] == 0:
                oif = route.get_attr("RTA_OIF")
                if oif in links:
                    return int(links[oif].get_attr("IFLA_MTU"))
        bridge = next((i for i, link in links.items() if link.get_attr("IFLA_IFNAME") == self.bridge), None)
        with_ipv4 = {a["index"] for a in ipr.addr("dump", family=socket.AF_INET) if a["scope"] == 0}
        for index in sorted(links):
            link = links[index]
            if (index in with_ipv4 and _flags(link) & IFF_UP and not _flags(link) & IFF_LOOPBACK
                    and index != bridge and (bridge is None or link.get_attr("IFLA_MASTER") != bridge)):
                return int(link.get_attr("IFLA_MTU"))
        return DEFAULT_MTU

    # -- pods ---------------------------------------------------------------------------------------

    def setup(self, pod_uid: str, namespace: str, name: str) -> PodInterface:
        """The pod's network, made if it is not there yet (idempotent; repairs a half-made or lost one)."""
        with self._lock(pod_uid):
            try:
                return off_event_loop(lambda: self._setup(pod_uid, namespace, name))
            except (NetlinkError, OSError, IPAMError, NetnsError) as exc:
                raise NetworkError(f"cannot set up the network of pod {namespace}/{name}: {_why(exc)}") from exc

    def _setup(self, pod_uid: str, namespace: str, name: str) -> PodInterface:
        record = self._load(pod_uid)
        if record is not None and self._intact(record):
            return record
        if self._cidr is None:
            raise NetworkNotReady("the pod network is not configured: the node has no podCIDR yet")
        ipam = HostLocalIPAM(self._cidr, root=self.ipam_dir)
        if record is not None and ipaddress.ip_address(record.ip) not in ipam.network:
            release_everywhere(pod_uid, root=self.ipam_dir)  # made under an earlier podCIDR: start afresh
        ip = ipam.allocate(pod_uid)
        iface = PodInterface(pod_uid=pod_uid, ip=ip, prefix_len=ipam.prefix_len, gateway=ipam.gateway,
                             netns_path=str(self.netns.path(pod_uid)), host_veth=host_veth_name(pod_uid))
        if iface != record:
            self._save(iface, namespace=namespace, name=name, cidr=ipam.cidr)
        try:
            self._build(iface)
        except BaseException:
            with contextlib.suppress(Exception):
                self._teardown(pod_uid)
            raise
        return iface

    def _intact(self, iface: PodInterface) -> bool:
        """Whether the pod's network is all there: its namespace, and its host veth, up — the last step of `_build`,
        so a veth that is down is a setup that did not finish. A veth the bridge lost is attached again."""
        if not is_netns(iface.netns_path):
            return False
        with _iproute() as ipr:
            veth = _link(ipr, iface.host_veth)
            if veth is None or not _flags(veth) & IFF_UP:
                return False
            bridge = _link(ipr, self.bridge)
            if bridge is not None and veth.get_attr("IFLA_MASTER") != bridge["index"]:
                ipr.link("set", index=veth["index"], master=bridge["index"])
                ipr.brport("set", index=veth["index"], mode=BRPORT_MODE_HAIRPIN)
        return True

    def _build(self, iface: PodInterface) -> None:
        """Namespace, veth (host side on the bridge, pod side as eth0 in the namespace), addresses, routes; the host
        side goes up last, marking the pod's network complete."""
        path = self.netns.create(iface.pod_uid, exist_ok=True)
        with _iproute() as ipr:
            bridge = _link(ipr, self.bridge)
            if bridge is None and self._cidr is not None:  # deleted behind our back: make it again
                self._configure(self._cidr)
                bridge = _link(ipr, self.bridge)
            if bridge is None:
                raise NetworkError(f"bridge {self.bridge} does not exist (was the node's network configured?)")
            mtu = self._mtu or int(bridge.get_attr("IFLA_MTU"))
            stale = _link(ipr, iface.host_veth)
            if stale is not None:
                ipr.link("del", index=stale["index"])
            netns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("add", ifname=iface.host_veth, kind="veth", mtu=mtu, master=bridge["index"],
                         peer={"ifname": POD_IFNAME, "net_ns_fd": netns_fd, "mtu": mtu})
            finally:
                os.close(netns_fd)
            veth = _link(ipr, iface.host_veth)
            if veth is None:
                raise NetworkError(f"veth {iface.host_veth} vanished right after it was created")
            ipr.brport("set", index=veth["index"], mode=BRPORT_MODE_HAIRPIN)
            with _iproute(open_socket(path)) as pod:
                lo = _link(pod, "lo")
                eth0 = _link(pod, POD_IFNAME)
                if lo is None or eth0 is None:
                    raise NetworkError(f"lo or {POD_IFNAME} missing in {path}")
                pod.link("set", index=lo["index"], state="up")
                pod.addr("replace", index=eth0["index"], address=iface.ip, prefixlen=iface.prefix_len)
                pod.link("set", index=eth0["index"], state="up")
                pod.route("replace", dst="0.0.0.0/0", gateway=iface.gateway, oif=eth0["index"])
                mac = eth0.get_attr("IFLA_ADDRESS")
            ipr.link("set", index=veth["index"], state="up")
            forget_neighbour(ipr, bridge["index"], iface.ip)
        announce(path, iface.ip, mac)

    def teardown(self, pod_uid: str) -> None:
        """Remove the pod's veth (its peer goes with it), namespace file and address. Idempotent: works after a
        restart, without a record, and when some of it is already gone."""
        with self._lock(pod_uid):
            try:
                off_event_loop(lambda: self._teardown(pod_uid))
            except (NetlinkError, OSError, IPAMError, NetnsError) as exc:
                raise NetworkError(f"cannot tear down the network of pod {pod_uid}: {_why(exc)}") from exc

    def _teardown(self, pod_uid: str) -> None:
        record = self._load(pod_uid)
        veths = {host_veth_name(pod_uid)} | ({record.host_veth} if record else set())
        with _iproute() as ipr:
            for veth in veths:
                link = _link(ipr, veth)
                if link is not None:
                    try:
                        ipr.link("del", index=link["index"])
                    except NetlinkError as exc:
                        if exc.code != errno.ENODEV:
                            raise
        self.netns.delete(pod_uid)
        if record is not None and Path(record.netns_path) != self.netns.path(pod_uid):
            recorded = Path(record.netns_path)
            NetnsStore(recorded.parent).delete(recorded.name)
        release_everywhere(pod_uid, root=self.ipam_dir)
        self._record_path(pod_uid).unlink(missing_ok=True)

    def list(self) -> dict[str, PodInterface]:
        """Pods whose network was set up (from the records, so it survives a restart), by uid."""
        try:
            names = os.listdir(self.records_dir)
        except FileNotFoundError:
            return {}
        found: dict[str, PodInterface] = {}
        for file in names:
            if file.endswith(".json") and not file.startswith("."):
                iface = self._load(file[: -len(".json")])
                if iface is not None:
                    found[iface.pod_uid] = iface
        return found

    # -- records ------------------------------------------------------------------------------------

    def _lock(self, pod_uid: str) -> threading.Lock:
        return self._locks[zlib.crc32(pod_uid.encode()) % len(self._locks)]

    def _record_path(self, pod_uid: str) -> Path:
        if not pod_uid or "/" in pod_uid or pod_uid.startswith("."):
            raise NetworkError(f"invalid pod uid {pod_uid!r}")
        return self.records_dir / f"{pod_uid}.json"

    def _save(self, iface: PodInterface, *, namespace: str, name: str, cidr: str) -> None:
        """Written before any link is made, so that a crash half-way leaves a trace for `list` and `teardown`.

        Written in place, not renamed over: on ext4 a rename over an existing file forces its data to disk
        (auto_da_alloc), which costs milliseconds; a torn record is ignored by `_load` and rebuilt by `setup`."""
        data = {**asdict(iface), "namespace": namespace, "name": name, "cidr": cidr, "bridge": self.bridge}
        path = self._record_path(iface.pod_uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")

    def _load(self, pod_uid: str) -> PodInterface | None:
        path = self._record_path(pod_uid)
        try:
            data = json.loads(path.read_text())
            iface = PodInterface(pod_uid=data["pod_uid"], ip=data["ip"], prefix_len=int(data["prefix_len"]),
                                 gateway=data["gateway"], netns_path=data["netns_path"], host_veth=data["host_veth"])
            ipaddress.ip_address(iface.ip)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable pod network record %s: %s", path, exc)
            return None
        return iface


def forget_neighbour(ipr: Any, index: int, ip: str) -> None:
    """Drop the node's ARP entry for `ip` on the bridge: a pod that had the address before had another MAC, and a
    REACHABLE entry would send its traffic there for up to ~45 s."""
    with contextlib.suppress(NetlinkError):
        ipr.neigh("del", dst=ip, ifindex=index)


def gratuitous_arp(mac: str, ip: str) -> bytes:
    """An Ethernet broadcast ARP request for `ip` from `ip` itself (a gratuitous ARP)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    ethernet = b"\xff" * 6 + hw + ETH_P_ARP.to_bytes(2, "big")
    arp = (b"\x00\x01\x08\x00\x06\x04\x00\x01" + hw + addr + b"\x00" * 6 + addr)
    return ethernet + arp


def announce(netns_path: Path, ip: str, mac: str | None) -> None:
    """Tell the pod's neighbours (other pods on the bridge, the node) that `ip` is now at `mac`, as the CNI bridge
    plugin does: addresses are reused after a pod goes, and caches would still hold the old pod's MAC."""
    if not mac:
        return
    try:
        sock = open_socket(netns_path, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except NetnsError as exc:
        log.warning("gratuitous ARP for %s: %s", ip, exc)
        return
    with sock:
        try:
            sock.bind((POD_IFNAME, ETH_P_ARP))
            frame = gratuitous_arp(mac, ip)
            for _ in range(2):
                sock.send(frame)
        except OSError as exc:
            log.warning("gratuitous ARP for %s: %s", ip, exc.strerror or exc)


def _sysctl(key: str, value: str) -> None:
    """Set a sysctl of this thread's network namespace (/proc/sys/net is per namespace), if it differs."""
    path = Path("/proc/sys") / key
    if path.read_text().strip() != value:
        path.write_text(value)


def _why(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        return f"netlink: {os.strerror(exc.code)}" if exc.code else f"netlink: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


__all__ = ["NetworkError", "NetworkNotReady", "PodInterface", "PodNetwork", "host_veth_name"]
