"""Addresses of hollow nodes and their pods: data for the API objects, never routed to.

A hollow node's InternalIP comes from 10.250.0.0/16 by the node's index. Its pods take IPs
from the node's `spec.podCIDR` once the controller-manager has set one, else from a /24 of
the shared address space 100.64.0.0/10 picked by the same index. `PodIPs` hands them out
sequentially per range, skipping the network address and the gateway (the first host), the
way a bridge CNI plugin does, and remembers which pod holds which address so that a pod
keeps its IP across retries and an address is reused only after its pod is gone.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

#: Where hollow nodes' InternalIPs come from (only ever written into Node objects).
NODE_NETWORK = IPv4Network("10.250.0.0/16")
#: Where pods of a hollow node without a podCIDR get their IPs, one /24 per node.
FAKE_POD_NETWORK = IPv4Network("100.64.0.0/10")
#: Host numbers per /24 row of NODE_NETWORK we use (.1 to .254: no .0 or .255 look-alikes).
_HOSTS_PER_ROW = 254

MAX_NODES = _HOSTS_PER_ROW * 256


class PoolExhausted(Exception):
    """Every address of a pod range is taken."""


def node_ip(index: int) -> str:
    """The InternalIP of the hollow node with this index: 0 -> 10.250.0.1, 254 -> 10.250.1.1."""
    if not 0 <= index < MAX_NODES:
        raise ValueError(f"hollow node index {index} is outside 0..{MAX_NODES - 1}")
    row, host = divmod(index, _HOSTS_PER_ROW)
    return str(NODE_NETWORK.network_address + row * 256 + host + 1)


def fake_pod_cidr(index: int) -> str:
    """The /24 the pods of node `index` use while it has no spec.podCIDR: 0 -> 100.64.0.0/24."""
    count = 2 ** (24 - FAKE_POD_NETWORK.prefixlen)
    if not 0 <= index < count:
        raise ValueError(f"hollow node index {index} is outside 0..{count - 1}")
    return str(IPv4Network((int(FAKE_POD_NETWORK.network_address) + index * 256, 24)))


class PodIPs:
    """Sequential pod IPs from one CIDR, each held by an owner (a pod uid) until released."""

    def __init__(self, cidr: str) -> None:
        self.network: IPv4Network | IPv6Network = ip_network(cidr, strict=False)
        self._first = int(self.network.network_address) + 2  # skip the network address and the gateway
        last = int(self.network.broadcast_address)
        self._last = last - 1 if self.network.version == 4 else last  # IPv4 keeps its broadcast address
        if self._last < self._first:
            raise ValueError(f"pod CIDR {cidr} has no room for pods")
        self._next = self._first
        self._by_owner: dict[str, int] = {}
        self._owner_of: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._by_owner)

    @property
    def size(self) -> int:
        return self._last - self._first + 1

    def holds(self, ip: str) -> bool:
        """Whether `ip` lies inside this range (taken or not)."""
        try:
            return ip_address(ip) in self.network
        except ValueError:
            return False

    def allocate(self, owner: str) -> str:
        """The owner's address, picking the next free one if it has none yet."""
        if owner in self._by_owner:
            return self._text(self._by_owner[owner])
        size = self.size
        for step in range(size):
            candidate = self._first + (self._next - self._first + step) % size
            if candidate not in self._owner_of:
                self._take(owner, candidate)
                self._next = candidate + 1 if candidate < self._last else self._first
                return self._text(candidate)
        raise PoolExhausted(f"all {size} pod IPs of {self.network} are in use")

    def claim(self, owner: str, ip: str) -> bool:
        """Record that `owner` already has `ip` (seen in a pod's status); False if not ours to give."""
        if not self.holds(ip):
            return False
        value = int(ip_address(ip))
        if not self._first <= value <= self._last or self._owner_of.get(value, owner) != owner:
            return False
        self.release(owner)
        self._take(owner, value)
        return True

    def release(self, owner: str) -> None:
        value = self._by_owner.pop(owner, None)
        if value is not None:
            self._owner_of.pop(value, None)

    def _take(self, owner: str, value: int) -> None:
        self._by_owner[owner] = value
        self._owner_of[value] = owner

    def _text(self, value: int) -> str:
        return str(self.network.network_address + (value - int(self.network.network_address)))
