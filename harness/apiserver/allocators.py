"""Cluster IPs and node ports for Services, claimed in etcd (after upstream's ipallocator/portallocator).

A range (`IPRange`, `PortRange`) maps its values to offsets 0..size-1. As upstream does, the
first `static_size` offsets are kept for values clients ask for (the `kubernetes` Service's
10.96.0.1, cluster DNS's 10.96.0.10): dynamic allocation picks at random from the upper part
and falls back to the lower part only when the upper part is full.

Each allocated value is one etcd key (`/registry/allocations/serviceips/<ip>`,
`/registry/allocations/servicenodeports/<port>`) holding its owner (namespace, name, uid),
written with create-if-absent, so that concurrent creates and several apiservers sharing etcd
never hand out a value twice. `ServiceAllocations` is the Service store's lifecycle: it claims
before a write, undoes the claims when the write fails, releases what an update or a delete
gave up, and `repair` reconciles the keys with the stored Services (upstream's repair loop).
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from harness.api import errors, meta
from harness.api.validation import field_errors as f
from harness.storage.backend import Backend, KeyExists, KeyNotFound, RevisionMismatch, StorageError

log = logging.getLogger(__name__)

ALLOCATIONS_PREFIX = "/registry/allocations/"
SERVICES_PREFIX = "/registry/services/"
#: Random probes into the dynamic band before falling back to reading every allocated key.
RANDOM_PROBES = 8
_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


class RangeError(ValueError):
    """A range flag that does not parse (bad CIDR or port range)."""


class RangeFull(Exception):
    """No free value is left in a range."""


def _band_offset(size: int, lower: int, upper: int, step: int) -> int:
    """Upstream's calculateRangeOffset: min(max(lower, size/step), upper); 0 for tiny ranges."""
    if size <= lower:
        return 0
    return min(max(lower, size // step), upper)


class IPRange:
    """The usable addresses of a service CIDR: no network address, no IPv4 broadcast."""

    def __init__(self, cidr: str) -> None:
        try:
            self.network = ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as exc:
            raise RangeError(f"invalid service cluster IP range {cidr!r}: {exc}") from None
        total = self.network.num_addresses
        # IPv4 loses its network and broadcast addresses; IPv6 its network address, and is capped as upstream's.
        ipv4_size = total - 2 if self.network.prefixlen < 31 else 0
        size = ipv4_size if self.network.version == 4 else min(total, 65536) - 1
        if size <= 0:
            raise RangeError(f"service cluster IP range {cidr!r} is too small")
        self.base = int(self.network.network_address) + 1
        self.size = size
        self.static_size = _band_offset(total, 16, 256, 16)

    def __str__(self) -> str:
        return str(self.network)

    def value_at(self, offset: int) -> str:
        return str(ipaddress.ip_address(self.base + offset))

    def offset_of(self, value: str) -> int | None:
        """The offset of an address, or None when it is not a usable address of the range."""
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return None
        offset = int(ip) - self.base
        return offset if ip.version == self.network.version and 0 <= offset < self.size else None

    def first(self) -> str:
        """The first usable address: the `kubernetes` Service's."""
        return self.value_at(0)

    def out_of_range(self) -> str:
        return f"provided IP is not in the valid range. The range of valid IPs is {self.network}"


class PortRange:
    """An inclusive port range such as 30000-32767."""

    def __init__(self, spec: str) -> None:
        text = spec.strip()
        low_text, sep, high_text = text.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if sep else low
        except ValueError:
            raise RangeError(f"invalid service node port range {spec!r}: want e.g. 30000-32767") from None
        if not 0 < low <= high <= 65535:
            raise RangeError(f"invalid service node port range {spec!r}: want 1 <= low <= high <= 65535")
        self.low, self.high = low, high
        self.size = high - low + 1
        self.static_size = _band_offset(self.size, 16, 128, 32)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def bounds(self) -> tuple[int, int]:
        return self.low, self.high

    def value_at(self, offset: int) -> str:
        return str(self.low + offset)

    def offset_of(self, value: str) -> int | None:
        try:
            port = int(value)
        except ValueError:
            return None
        return port - self.low if self.low <= port <= self.high else None

    def out_of_range(self) -> str:
        return f"provided port is not in the valid range. The range of valid ports is {self}"


Range = IPRange | PortRange


def candidate_offsets(size: int, static_size: int, taken: set[int], rng: random.Random) -> list[int]:
    """Free offsets in the order dynamic allocation tries them: upper band from a random start, then lower."""
    order: list[int] = []
    for lo, hi in ((static_size, size), (0, static_size)):
        if hi <= lo:
            continue
        start = rng.randrange(lo, hi)
        order += [o for o in range(start, hi) if o not in taken] + [o for o in range(lo, start) if o not in taken]
    return order


@dataclass(frozen=True)
class Owner:
    """Who holds an allocation: the Service, by name and uid."""

    namespace: str
    name: str
    uid: str

    def encode(self) -> bytes:
        return orjson.dumps({"namespace": self.namespace, "name": self.name, "uid": self.uid})

    @classmethod
    def decode(cls, value: bytes) -> Owner:
        try:
            doc = orjson.loads(value)
            return cls(str(doc.get("namespace", "")), str(doc.get("name", "")), str(doc.get("uid", "")))
        except (ValueError, AttributeError):
            return cls("", "", "")

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Owner:
        return cls(meta.namespace_of(obj), meta.name_of(obj), str(meta.metadata(obj).get("uid") or ""))


class KeyedAllocator:
    """Values of one range, each claimed as its own etcd key under `prefix`."""

    def __init__(self, backend: Backend, prefix: str, rng_: Range, *, seed: int | None = None) -> None:
        self.backend = backend
        self.prefix = prefix
        self.range = rng_
        self.rng = random.Random(seed)

    def key(self, value: str) -> str:
        return self.prefix + value

    async def claim(self, value: str, owner: Owner, *, dry_run: bool = False) -> bool:
        """Claim `value` for `owner`: True if it is now (or already was) the owner's."""
        if dry_run:
            rec = await self.backend.get(self.key(value))
            return rec is None or Owner.decode(rec.value).uid == owner.uid
        try:
            await self.backend.create(self.key(value), owner.encode())
            return True
        except KeyExists:
            rec = await self.backend.get(self.key(value))
            return rec is not None and Owner.decode(rec.value).uid == owner.uid

    async def claim_next(self, owner: Owner, *, dry_run: bool = False) -> str:
        """Claim a free value, preferring the dynamic band; RangeFull when there is none."""
        r = self.range
        tried: set[int] = set()
        lo = r.static_size if r.static_size < r.size else 0
        for _ in range(min(RANDOM_PROBES, r.size - lo)):
            offset = self.rng.randrange(lo, r.size)
            if offset in tried:
                continue
            tried.add(offset)
            if await self.claim(r.value_at(offset), owner, dry_run=dry_run):
                return r.value_at(offset)
        taken = {o for o in (r.offset_of(v) for v in await self.allocated()) if o is not None} | tried
        for offset in candidate_offsets(r.size, r.static_size, taken, self.rng):
            if await self.claim(r.value_at(offset), owner, dry_run=dry_run):
                return r.value_at(offset)
        raise RangeFull(f"range {r} is full")

    async def release(self, value: str, owner: Owner | None = None) -> bool:
        """Free `value` if `owner` (any owner when None) holds it. True if a key was deleted."""
        rec = await self.backend.get(self.key(value))
        if rec is None or (owner is not None and Owner.decode(rec.value).uid != owner.uid):
            return False
        try:
            await self.backend.delete(rec.key, revision=rec.revision)
            return True
        except (KeyNotFound, RevisionMismatch):
            return False

    async def allocated(self) -> dict[str, tuple[Owner, int]]:
        """Every claimed value with its owner and the key's mod revision."""
        page = await self.backend.list(self.prefix)
        return {rec.key[len(self.prefix):]: (Owner.decode(rec.value), rec.revision) for rec in page.records}


# -- what a Service holds -------------------------------------------------------------------------


def service_ip(obj: dict[str, Any] | None) -> str:
    """The allocated cluster IP of a Service ("" for none, headless or ExternalName)."""
    spec = (obj or {}).get("spec") or {}
    if spec.get("type") == "ExternalName":
        return ""
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ip = ips[0] if ips and isinstance(ips[0], str) else ""
    return "" if ip == "None" else ip


def needs_node_ports(spec: dict[str, Any]) -> bool:
    return spec.get("type") in _NODE_PORT_TYPES


def service_node_ports(obj: dict[str, Any] | None) -> set[str]:
    """The node ports a Service holds (its ports' nodePorts while its type has them)."""
    spec = (obj or {}).get("spec") or {}
    if not needs_node_ports(spec):
        return set()
    return {str(p["nodePort"]) for p in spec.get("ports") or [] if isinstance(p, dict) and
            isinstance(p.get("nodePort"), int) and p["nodePort"]}


@dataclass
class Claims:
    """The claims of one write: `revert` undoes them if the write fails; `commit` frees what it gave up."""

    owner: Owner
    dry_run: bool = False
    claimed: list[tuple[KeyedAllocator, str]] = field(default_factory=list)
    given_up: list[tuple[KeyedAllocator, str]] = field(default_factory=list)

    async def commit(self) -> None:
        for allocator, value in self.given_up:
            await _quiet_release(allocator, value, self.owner)
        self.claimed.clear()

    async def revert(self) -> None:
        if not self.dry_run:
            for allocator, value in self.claimed:
                await _quiet_release(allocator, value, self.owner)
        self.claimed.clear()


async def _quiet_release(allocator: KeyedAllocator, value: str, owner: Owner | None) -> None:
    try:
        await allocator.release(value, owner)
    except StorageError as exc:  # the repair loop frees it later
        log.warning("releasing %s%s failed: %s", allocator.prefix, value, exc)


class ServiceAllocations:
    """The Service store's lifecycle: cluster IPs and node ports claimed around each write."""

    def __init__(self, backend: Backend, ip_range: IPRange, port_range: PortRange, *, seed: int | None = None) -> None:
        self.backend = backend
        self.ip_range, self.port_range = ip_range, port_range
        self.ips = KeyedAllocator(backend, ALLOCATIONS_PREFIX + "serviceips/", ip_range, seed=seed)
        self.ports = KeyedAllocator(backend, ALLOCATIONS_PREFIX + "servicenodeports/", port_range, seed=seed)
        self._suspects: dict[str, int] = {}

    # -- the store's hooks ------------------------------------------------------------------------

    async def begin_create(self, obj: dict[str, Any], *, dry_run: bool = False) -> Claims:
        return await self._begin(obj, None, dry_run)

    async def begin_update(self, new: dict[str, Any], old: dict[str, Any], *, dry_run: bool = False) -> Claims:
        return await self._begin(new, old, dry_run)

    async def deleted(self, obj: dict[str, Any]) -> None:
        """The Service is gone from storage: free everything it held."""
        owner = Owner.of(obj)
        if ip := service_ip(obj):
            await _quiet_release(self.ips, ip, owner)
        for port in service_node_ports(obj):
            await _quiet_release(self.ports, port, owner)

    async def _begin(self, new: dict[str, Any], old: dict[str, Any] | None, dry_run: bool) -> Claims:
        claims = Claims(Owner.of(new), dry_run)
        try:
            await self._cluster_ip(new, old, claims)
            await self._node_ports(new, old, claims)
        except BaseException:
            await claims.revert()
            raise
        kept_ip, kept_ports = service_ip(new), service_node_ports(new)
        if (ip := service_ip(old)) and ip != kept_ip:
            claims.given_up.append((self.ips, ip))
        claims.given_up += [(self.ports, p) for p in service_node_ports(old) - kept_ports]
        return claims

    def _invalid(self, obj: dict[str, Any], path: str, value: Any, detail: str) -> errors.Invalid:
        return errors.invalid("Service", meta.name_of(obj), [f.invalid(path, value, detail)])

    async def _cluster_ip(self, new: dict[str, Any], old: dict[str, Any] | None, claims: Claims) -> None:
        spec = new.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            return
        ip, ips = spec.get("clusterIP") or "", list(spec.get("clusterIPs") or [])
        if ip and ips and ips[0] != ip:
            raise self._invalid(new, "spec.clusterIPs", ips, "element [0] must match clusterIP")
        ip = ip or (ips[0] if ips else "")
        if ip == "None":
            spec["clusterIP"], spec["clusterIPs"] = "None", ips or ["None"]
            return
        if not ip:
            try:
                ip = await self.ips.claim_next(claims.owner, dry_run=claims.dry_run)
            except RangeFull:
                raise errors.InternalError("failed to allocate a serviceIP: range is full") from None
            if not claims.dry_run:
                claims.claimed.append((self.ips, ip))
        elif ip != service_ip(old):
            if self.ips.range.offset_of(ip) is None:
                raise self._invalid(new, "spec.clusterIPs[0]", ip, self.ips.range.out_of_range())
            if not await self.ips.claim(ip, claims.owner, dry_run=claims.dry_run):
                raise self._invalid(new, "spec.clusterIPs[0]", ip, "provided IP is already allocated")
            if not claims.dry_run:
                claims.claimed.append((self.ips, ip))
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip, *ips[1:]]

    async def _node_ports(self, new: dict[str, Any], old: dict[str, Any] | None, claims: Claims) -> None:
        spec = new.get("spec") or {}
        if not needs_node_ports(spec):
            return
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
        held = service_node_ports(old)
        old_by_port = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                       for p in ((old or {}).get("spec") or {}).get("ports") or [] if isinstance(p, dict)} \
            if held else {}
        mine: set[str] = set()  # claimed or held for this service in this write
        for i, port in enumerate(ports):
            wanted = port.get("nodePort")
            if not wanted:
                if spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False:
                    continue
                reuse = old_by_port.get((port.get("port"), port.get("protocol")))
                if reuse and str(reuse) in held and str(reuse) not in mine:
                    port["nodePort"] = reuse
                    mine.add(str(reuse))
                    continue
                try:
                    value = await self.ports.claim_next(claims.owner, dry_run=claims.dry_run)
                except RangeFull:
                    raise errors.InternalError("failed to allocate a nodePort: range is full") from None
                if not claims.dry_run:
                    claims.claimed.append((self.ports, value))
                port["nodePort"] = int(value)
                mine.add(value)
                continue
            value = str(wanted)
            if value in mine or value in held:  # the same port for another protocol, or kept from before
                mine.add(value)
                continue
            if not isinstance(wanted, int) or self.ports.range.offset_of(value) is None:
                raise self._invalid(new, f"spec.ports[{i}].nodePort", wanted, self.ports.range.out_of_range())
            if not await self.ports.claim(value, claims.owner, dry_run=claims.dry_run):
                raise self._invalid(new, f"spec.ports[{i}].nodePort", wanted, "provided port is already allocated")
            if not claims.dry_run:
                claims.claimed.append((self.ports, value))
            mine.add(value)

    # -- repair ----------------------------------------------------------------------------------

    async def repair(self) -> tuple[int, int]:
        """Reconcile the keys with the stored Services (upstream's repair loops).

        A Service's value without a key gets its key back; a key whose owner no longer holds
        it is freed once it has been seen leaked, unchanged, on two runs in a row (a create in
        flight holds its keys before its Service is stored). Returns (restored, released).
        """
        page = await self.backend.list(SERVICES_PREFIX)
        held: dict[tuple[int, str], Owner] = {}
        for rec in page.records:
            try:
                obj = orjson.loads(rec.value)
            except ValueError:
                continue
            owner = Owner.of(obj)
            if ip := service_ip(obj):
                held[(0, ip)] = owner
            for port in service_node_ports(obj):
                held[(1, port)] = owner
        restored = released = 0
        suspects: dict[str, int] = {}
        for which, allocator in enumerate((self.ips, self.ports)):
            current = await allocator.allocated()
            for value, (owner, revision) in current.items():
                holder = held.get((which, value))
                if holder is not None and holder.uid == owner.uid:
                    continue
                key = allocator.key(value)
                if self._suspects.get(key) == revision:
                    log.info("repair: releasing leaked allocation %s (owner %s/%s)", key, owner.namespace,
                             owner.name)
                    released += await allocator.release(value, owner)
                else:
                    suspects[key] = revision
            for (w, value), holder in held.items():
                if w != which or value in current or allocator.range.offset_of(value) is None:
                    continue
                if await allocator.claim(value, holder):
                    log.info("repair: restored allocation %s for %s/%s", allocator.key(value), holder.namespace,
                             holder.name)
                    restored += 1
        self._suspects = suspects
        return restored, released


__all__ = ["ALLOCATIONS_PREFIX", "Claims", "IPRange", "KeyedAllocator", "Owner", "PortRange", "RangeError",
           "RangeFull", "ServiceAllocations", "candidate_offsets", "needs_node_ports", "service_ip",
           "service_node_ports"]
