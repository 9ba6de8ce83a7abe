"""Host-local IP address management over the node's podCIDR, kept as one file per allocated address.

Like the CNI `host-local` plugin: `<root>/<cidr with / as _>/<ip>` holds the owner (a pod uid) of that address, and
`last_reserved_ip` remembers where the previous allocation stopped, so the search goes round the range and an
address that was just freed is not handed out again at once. A file appears under its final name only with its
content, through `link(2)`, which fails if the name exists: two processes (or threads) can never take the same
address, and nobody ever reads a half-written owner.

The gateway is the first host address of the range (`.1` of a /24, on the node bridge); the network address, the
gateway and the broadcast address are never handed out. IPv4 only, at least a /30.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from pathlib import Path

from harness.kubelet.errors import KubeletError

DEFAULT_IPAM_DIR = Path("/var/lib/harness/ipam")
LAST_RESERVED = "last_reserved_ip"


class IPAMError(KubeletError):
    """The address range is unusable or its state cannot be read or written."""


class IPAMExhausted(IPAMError):
    """Every address of the range is taken."""


def _network(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise IPAMError(f"invalid pod CIDR {cidr!r}: {exc}") from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise IPAMError(f"pod CIDR {cidr!r} is not IPv4: only IPv4 pod networks are supported")
    if net.prefixlen > 30:
        raise IPAMError(f"pod CIDR {cidr!r} is too small: a /30 or larger is needed (network, gateway, broadcast)")
    return net


def dir_name(cidr: str) -> str:
    """The directory name of a range: `10.244.1.0/24` -> `10.244.1.0_24`."""
    return str(_network(cidr)).replace("/", "_")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _read_owner(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IPAMError(f"cannot read {path}: {exc.strerror}") from exc


class HostLocalIPAM:
    """Allocations in one range (the node's podCIDR); every method reads and writes the files, nothing is cached."""

    def __init__(self, cidr: str, *, root: Path = DEFAULT_IPAM_DIR) -> None:
        self.network = _network(cidr)
        self.cidr = str(self.network)
        self.root = Path(root)
        self.dir = self.root / dir_name(self.cidr)
        self._first = int(self.network.network_address) + 2        # after the network address and the gateway
        self._last = int(self.network.broadcast_address) - 1

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def prefix_len(self) -> int:
        return self.network.prefixlen

    @property
    def size(self) -> int:
        """How many addresses can be handed out."""
        return self._last - self._first + 1

    def allocate(self, owner: str) -> str:
        """An address for `owner`: the one it already holds in this range, else the next free one after the last
        reserved. Raises IPAMExhausted when none is free."""
        if not owner or "\n" in owner:
            raise IPAMError(f"invalid owner {owner!r}")
        held = self.ip_of(owner)
        if held is not None:
            return held
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            scratch = self.dir / f".new-{uuid.uuid4().hex}"
            scratch.write_text(owner + "\n")
        except OSError as exc:
            raise IPAMError(f"cannot write under {self.dir}: {exc.strerror}") from exc
        try:
            start = self._next_after_last_reserved()
            for step in range(self.size):
                candidate = str(ipaddress.IPv4Address(self._first + (start - self._first + step) % self.size))
                try:
                    os.link(scratch, self.dir / candidate)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise IPAMError(f"cannot reserve {candidate} in {self.dir}: {exc.strerror}") from exc
                self._remember(candidate)
                return candidate
        finally:
            scratch.unlink(missing_ok=True)
        raise IPAMExhausted(f"no IP address left in {self.cidr}: all {self.size} addresses are allocated")

    def ip_of(self, owner: str) -> str | None:
        """The address `owner` holds in this range, if any."""
        for ip, holder in self.allocated().items():
            if holder == owner:
                return ip
        return None

    def release(self, owner: str) -> list[str]:
        """Free every address `owner` holds in this range; returns them."""
        freed = [ip for ip, holder in self.allocated().items() if holder == owner]
        for ip in freed:
            (self.dir / ip).unlink(missing_ok=True)
        return freed

    def release_ip(self, ip: str, *, owner: str | None = None) -> bool:
        """Free one address (only if `owner` holds it, when given); True if it was allocated."""
        if not _is_ip(ip):
            raise IPAMError(f"invalid IP address {ip!r}")
        path = self.dir / ip
        if owner is not None and _read_owner(path) != owner:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise IPAMError(f"cannot release {ip}: {exc.strerror}") from exc
        return True

    def allocated(self) -> dict[str, str]:
        """Every allocated address of this range and its owner."""
        return _allocations_in(self.dir)

    def _next_after_last_reserved(self) -> int:
        try:
            last = int(ipaddress.IPv4Address((self.dir / LAST_RESERVED).read_text().strip()))
        except (OSError, ValueError):
            return self._first
        if not self._first <= last <= self._last:
            return self._first
        return self._first + (last - self._first + 1) % self.size

    def _remember(self, ip: str) -> None:
        """Overwritten in place, padded to a fixed width, never truncated nor renamed over: either would make ext4
        flush it to disk (auto_da_alloc) on every allocation. It is only a hint where to search next."""
        try:
            fd = os.open(self.dir / LAST_RESERVED, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.pwrite(fd, f"{ip:<15}\n".encode(), 0)
            finally:
                os.close(fd)
        except OSError:  # losing the hint costs nothing but round-robin order
            pass


def _allocations_in(directory: Path) -> dict[str, str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise IPAMError(f"cannot list {directory}: {exc.strerror}") from exc
    found: dict[str, str] = {}
    for name in names:
        if _is_ip(name):
            owner = _read_owner(directory / name)
            if owner is not None:
                found[name] = owner
    return found


def all_allocations(root: Path = DEFAULT_IPAM_DIR) -> dict[str, dict[str, str]]:
    """Allocations of every range under `root` (ranges of earlier podCIDRs included): {cidr: {ip: owner}}."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return {}
    result: dict[str, dict[str, str]] = {}
    for name in sorted(names):
        cidr = name.replace("_", "/")
        try:
            _network(cidr)
        except IPAMError:
            continue
        result[cidr] = _allocations_in(Path(root) / name)
    return result


def release_everywhere(owner: str, *, root: Path = DEFAULT_IPAM_DIR) -> list[str]:
    """Free what `owner` holds in every range under `root` (for garbage collection after a podCIDR change)."""
    freed: list[str] = []
    for cidr, allocations in all_allocations(root).items():
        if owner in allocations.values():
            freed += HostLocalIPAM(cidr, root=root).release(owner)
    return freed


__all__ = ["DEFAULT_IPAM_DIR", "HostLocalIPAM", "IPAMError", "IPAMExhausted", "all_allocations", "dir_name",
           "release_everywhere"]
