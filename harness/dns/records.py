"""The records cluster DNS serves, computed from cached Services and Endpoints (no I/O here).

After the Kubernetes DNS specification (schema 1.1.0) and CoreDNS's kubernetes plugin, for a
cluster domain Z (default `cluster.local`):

- `<svc>.<ns>.svc.Z` A: the cluster IP of a ClusterIP, NodePort or LoadBalancer service; for a
  headless service (clusterIP None) every ready address of its Endpoints. An ExternalName
  service is a CNAME to its externalName (chased only when the target is inside Z).
- `<host>.<svc>.<ns>.svc.Z` A, for each ready address of a headless service: `<host>` is the
  address's hostname, or its IP with dashes (`10-244-1-5`) when it has none, as CoreDNS.
- `_<port>._<proto>.<svc>.<ns>.svc.Z` SRV for each named port: one record targeting
  `<svc>.<ns>.svc.Z` for a normal service, one per ready address (targeting `<host>.<svc>...`)
  for a headless one, with the targets' A records in the additional section.
- `<d>.<c>.<b>.<a>.in-addr.arpa` PTR: a cluster IP names its service, a headless address with
  a hostname names `<host>.<svc>.<ns>.svc.Z`.
- `<a-b-c-d>.<ns>.pod.Z` A `a.b.c.d` (CoreDNS's `pods insecure`, the kubeadm default), and
  `dns-version.Z` TXT "1.1.0"; the apex has the SOA and NS.

Every record has TTL 5 s (the kubernetes plugin's default); names match case-insensitively.
There is no IPv6: AAAA answers are NODATA. A name that exists (a service, a namespace with
services, an empty non-terminal such as `svc.Z`) but lacks the asked type is NOERROR with no
answer (NODATA); any other name in Z is NXDOMAIN; both carry Z's SOA in the authority section.

This server never forwards (there is no upstream): names outside Z, and reverse names of
addresses outside the configured reverse CIDRs that are not known addresses, are REFUSED, which
tells a resolver to ask its next nameserver rather than caching a negative answer.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dnslib import CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A

from harness.api import meta

#: CoreDNS's kubernetes plugin default TTL.
TTL = 5
SCHEMA_VERSION = "1.1.0"
DEFAULT_DOMAIN = "cluster.local"
#: The service network and pod network (docs/architecture.md, "Networks"): the reverse zones answered authoritatively.
DEFAULT_REVERSE_CIDRS = ("10.96.0.0/12", "10.244.0.0/16")
PROTOCOLS = ("tcp", "udp", "sctp")
#: CNAME chains inside the cluster domain are followed at most this far.
MAX_CNAME_CHAIN = 8

ANY = QTYPE.ANY


class Store(Protocol):
    """What the resolver reads: an informer cache (harness.machinery.informer.Cache) or a fake."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def list(self) -> list[dict[str, Any]]: ...


@dataclass
class Answer:
    """One response's content: rcode and the three record sections."""

    rcode: int = RCODE.NOERROR
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    #: False for REFUSED: not our zone, so not an authoritative answer.
    authoritative: bool = True


@dataclass(frozen=True)
class _Target:
    """A record set at a name: (qtype, rdata) pairs; `None` from a lookup means no such name."""

    records: tuple[tuple[int, Any], ...] = ()


_EMPTY = _Target()


class RecordError(ValueError):
    """A resolver configuration that cannot work (a bad domain or CIDR)."""


class Resolver:
    """Answers (qname, qtype) from Services and Endpoints stores; see the module docstring.

    The reverse (PTR) index is derived from the stores and rebuilt lazily: whoever changes the
    stores (the informers' handlers) calls `invalidate()`.
    """

    def __init__(self, services: Store, endpoints: Store, *, domain: str = DEFAULT_DOMAIN,
                 reverse_cidrs: Iterable[str] = DEFAULT_REVERSE_CIDRS, pods: bool = True) -> None:
        self.services = services
        self.endpoints = endpoints
        self.domain = domain.strip(".").lower()
        if not self.domain or any(not label for label in self.domain.split(".")):
            raise RecordError(f"invalid cluster domain {domain!r}")
        self._zone_labels = self.domain.split(".")
        try:
            self.reverse_cidrs = [ipaddress.IPv4Network(c) for c in reverse_cidrs]
        except ValueError as exc:
            raise RecordError(f"invalid reverse CIDR: {exc}") from None
        self.pods = pods
        self.apex = self.domain + "."
        self.soa = SOA(f"ns.dns.{self.apex}", f"hostmaster.{self.apex}",
                       (int(time.time()), 7200, 1800, 86400, TTL))
        self._generation = 0
        self._ptr_generation = -1
        self._ptr: dict[str, list[str]] = {}

    # -- the index -------------------------------------------------------------------------

    def invalidate(self) -> None:
        """The stores changed: rebuild derived indexes before the next reverse lookup."""
        self._generation += 1

    def _ptr_index(self) -> dict[str, list[str]]:
        if self._ptr_generation != self._generation:
            self._ptr_generation = self._generation
            self._ptr = self._build_ptr()
        return self._ptr

    def _build_ptr(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for svc in self.services.list():
            ns, name = _ns_name(svc)
            fqdn = f"{name}.{ns}.svc.{self.apex}"
            spec = svc.get("spec") or {}
            if _is_headless(spec):
                for host, ip, named in self._headless_hosts(ns, name):
                    if named:
                        index.setdefault(ip, []).append(f"{host}.{fqdn}")
            elif spec.get("type") != "ExternalName":
                for ip in _cluster_ips(spec):
                    index.setdefault(ip, []).append(fqdn)
        for names in index.values():
            names.sort()
        return index

    # -- lookups ---------------------------------------------------------------------------

    def owns(self, qname: str) -> bool:
        """Whether `qname` is inside the cluster domain or one of the reverse zones answered here."""
        labels = [label.lower() for label in qname.rstrip(".").split(".") if label]
        if labels[-2:] == ["in-addr", "arpa"]:
            octets = list(reversed(labels[:-2]))[:4]
            if not octets or not all(o.isdigit() and int(o) <= 255 for o in octets):
                return False
            network = ipaddress.IPv4Network((".".join(octets + ["0"] * (4 - len(octets))), 8 * len(octets)),
                                            strict=False)
            return self._reverse_zone(network) is not None
        return self._below_apex(qname) is not None

    def resolve(self, qname: str, qtype: int) -> Answer:
        """The answer to one question; `qname` as asked (any case, trailing dot optional)."""
        asked = qname if qname.endswith(".") else qname + "."
        labels = [label.lower() for label in asked.rstrip(".").split(".") if label]
        if labels[-2:] == ["in-addr", "arpa"]:
            return self._reverse(asked, labels[:-2], qtype)
        n = len(self._zone_labels)
        if len(labels) < n or labels[len(labels) - n:] != self._zone_labels:
            return Answer(rcode=RCODE.REFUSED, authoritative=False)
        answer = Answer()
        self._forward(answer, asked, list(reversed(labels[:len(labels) - n])), qtype, 0)
        if not answer.answer or answer.rcode == RCODE.NXDOMAIN:
            answer.authority.append(RR(self.apex, QTYPE.SOA, ttl=TTL, rdata=self.soa))
        return answer

    def _forward(self, answer: Answer, owner: str, path: list[str], qtype: int, depth: int) -> None:
        """Add the records of `path` (labels below the apex, outermost first) to `answer`."""
        target = self._lookup(path)
        if target is None:
            answer.rcode = RCODE.NXDOMAIN
            return
        cname = next((rdata for t, rdata in target.records if t == QTYPE.CNAME), None)
        if cname is not None and qtype not in (QTYPE.CNAME, ANY):
            answer.answer.append(RR(owner, QTYPE.CNAME, ttl=TTL, rdata=cname))
            inside = self._below_apex(str(cname.label))
            if inside is not None and depth < MAX_CNAME_CHAIN:
                self._forward(answer, str(cname.label), inside, qtype, depth + 1)
            return
        for rtype, rdata in target.records:
            if qtype in (rtype, ANY):
                answer.answer.append(RR(owner, rtype, ttl=TTL, rdata=rdata))
                if rtype == QTYPE.SRV:
                    self._add_glue(answer, str(rdata.target))

    def _add_glue(self, answer: Answer, name: str) -> None:
        path = self._below_apex(name)
        target = self._lookup(path) if path is not None else None
        for rtype, rdata in target.records if target else ():
            if rtype == QTYPE.A:
                rr = RR(name, QTYPE.A, ttl=TTL, rdata=rdata)
                if not any(r.rname == rr.rname and r.rdata == rr.rdata for r in answer.additional):
                    answer.additional.append(rr)

    def _below_apex(self, name: str) -> list[str] | None:
        labels = [label.lower() for label in name.rstrip(".").split(".") if label]
        n = len(self._zone_labels)
        if len(labels) < n or labels[len(labels) - n:] != self._zone_labels:
            return None
        return list(reversed(labels[:len(labels) - n]))

    def _lookup(self, path: list[str]) -> _Target | None:
        """The records at a name below the apex (path outermost first), or None if none exists."""
        if not path:
            return _Target(((QTYPE.SOA, self.soa), (QTYPE.NS, NS(f"ns.dns.{self.apex}"))))
        top = path[0]
        if top == "svc":
            return self._service_tree(path[1:])
        if top == "pod" and self.pods:
            return self._pod_tree(path[1:])
        if path == ["dns-version"]:
            return _Target(((QTYPE.TXT, TXT(SCHEMA_VERSION)),))
        if path == ["dns"]:
            return _EMPTY
        if path == ["dns", "ns"]:
            return self._nameserver()
        return None

    def _nameserver(self) -> _Target:
        """`ns.dns.Z`, the SOA's MNAME: the cluster DNS service (kube-system/kube-dns) if there is one."""
        svc = self.services.get("kube-system/kube-dns")
        ips = _cluster_ips(svc.get("spec") or {}) if svc else []
        return _Target(tuple((QTYPE.A, A(ip)) for ip in ips))

    def _service_tree(self, path: list[str]) -> _Target | None:
        if not path:
            return _EMPTY
        ns = path[0]
        if len(path) == 1:
            return _EMPTY if self._namespace_has_services(ns) else None
        svc = self.services.get(meta.object_key(ns, path[1]))
        if svc is None:
            return None
        spec = svc.get("spec") or {}
        rest = path[2:]
        if not rest:
            return self._service_records(ns, path[1], spec)
        if spec.get("type") == "ExternalName":
            return None
        if len(rest) == 1:
            if rest[0].startswith("_"):
                return _EMPTY if any(_proto(p) == rest[0][1:] for p in _ports(spec)) else None
            return self._host_records(ns, path[1], spec, rest[0])
        if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
            return self._srv_records(ns, path[1], spec, proto=rest[0][1:], port=rest[1][1:])
        return None

    def _namespace_has_services(self, ns: str) -> bool:
        by_index = getattr(self.services, "by_index", None)
        if by_index is not None:
            try:
                return bool(by_index("namespace", ns))
            except KeyError:  # a cache without the namespace index
                pass
        return any(_ns_name(s)[0] == ns for s in self.services.list())

    def _service_records(self, ns: str, name: str, spec: dict[str, Any]) -> _Target:
        if spec.get("type") == "ExternalName":
            external = str(spec.get("externalName") or "").rstrip(".")
            return _Target(((QTYPE.CNAME, CNAME(external + ".")),)) if external else _EMPTY
        if _is_headless(spec):
            ips = sorted({ip for _, ip, _ in self._headless_hosts(ns, name)}, key=_ip_key)
            return _Target(tuple((QTYPE.A, A(ip)) for ip in ips))
        return _Target(tuple((QTYPE.A, A(ip)) for ip in _cluster_ips(spec)))

    def _host_records(self, ns: str, name: str, spec: dict[str, Any], host: str) -> _Target | None:
        if not _is_headless(spec):
            return None
        ips = sorted({ip for h, ip, _ in self._headless_hosts(ns, name) if h == host}, key=_ip_key)
        return _Target(tuple((QTYPE.A, A(ip)) for ip in ips)) if ips else None

    def _srv_records(self, ns: str, name: str, spec: dict[str, Any], *, proto: str, port: str) -> _Target | None:
        if proto not in PROTOCOLS:
            return None
        fqdn = f"{name}.{ns}.svc.{self.apex}"
        if not _is_headless(spec):
            numbers = [int(p.get("port") or 0) for p in _ports(spec)
                       if str(p.get("name") or "").lower() == port and _proto(p) == proto]
            if not numbers:
                return None
            return _Target(tuple((QTYPE.SRV, SRV(0, 100, n, fqdn)) for n in numbers))
        declared = any(str(p.get("name") or "").lower() == port and _proto(p) == proto for p in _ports(spec))
        targets: set[tuple[int, str]] = set()
        for subset in _subsets(self.endpoints.get(meta.object_key(ns, name))):
            numbers = [int(p.get("port") or 0) for p in subset.get("ports") or []
                       if str(p.get("name") or "").lower() == port and _proto(p) == proto]
            for address in subset.get("addresses") or []:
                host = _host_label(address)
                if host:
                    targets.update((n, f"{host}.{fqdn}") for n in numbers)
        if not targets:
            return _EMPTY if declared else None
        weight = max(1, 100 // len(targets))
        return _Target(tuple((QTYPE.SRV, SRV(0, weight, n, t)) for n, t in sorted(targets, key=lambda x: x[1])))

    def _headless_hosts(self, ns: str, name: str) -> list[tuple[str, str, bool]]:
        """(host label, IP, whether the label is the address's own hostname) of each ready address."""
        out = []
        for subset in _subsets(self.endpoints.get(meta.object_key(ns, name))):
            for address in subset.get("addresses") or []:
                host = _host_label(address)
                if host:
                    out.append((host, str(address["ip"]), bool(address.get("hostname"))))
        return out

    def _pod_tree(self, path: list[str]) -> _Target | None:
        if len(path) <= 1:
            return _EMPTY
        if len(path) == 2:
            ip = path[1].replace("-", ".")
            return _Target(((QTYPE.A, A(ip)),)) if _is_ipv4(ip) else None
        return None

    # -- reverse ---------------------------------------------------------------------------

    def _reverse(self, asked: str, octets: list[str], qtype: int) -> Answer:
        if len(octets) == 4 and _is_ipv4(".".join(reversed(octets))):
            ip = ".".join(reversed(octets))
            names = self._ptr_index().get(ip)
            zone = self._reverse_zone(ipaddress.IPv4Network(ip + "/32"))
            if names:
                answer = Answer(answer=[RR(asked, QTYPE.PTR, ttl=TTL, rdata=PTR(n)) for n in names
                                        if qtype in (QTYPE.PTR, ANY)])
                if not answer.answer:
                    answer.authority.append(self._reverse_soa(zone or "in-addr.arpa."))
                return answer
            if zone is None:
                return Answer(rcode=RCODE.REFUSED, authoritative=False)
            return Answer(rcode=RCODE.NXDOMAIN, authority=[self._reverse_soa(zone)])
        try:
            if not 0 < len(octets) < 4:
                raise ValueError
            values = [int(o) for o in reversed(octets)]
            if any(not 0 <= v <= 255 or str(v) != o for v, o in zip(values, reversed(octets), strict=True)):
                raise ValueError
            network = ipaddress.IPv4Network((".".join(map(str, values + [0] * (4 - len(values)))), 8 * len(values)))
        except ValueError:
            return Answer(rcode=RCODE.REFUSED, authoritative=False)
        zone = self._reverse_zone(network)
        if zone is None:
            return Answer(rcode=RCODE.REFUSED, authoritative=False)
        return Answer(authority=[self._reverse_soa(zone)])  # an empty non-terminal of our reverse zone

    def _reverse_zone(self, network: ipaddress.IPv4Network) -> str | None:
        """The reverse zone (octet-aligned, e.g. 10.in-addr.arpa.) of ours that covers `network`."""
        for cidr in self.reverse_cidrs:
            if network.overlaps(cidr):
                octets = str(cidr.network_address).split(".")[:cidr.prefixlen // 8]
                return ".".join([*reversed(octets), "in-addr", "arpa"]) + "."
        return None

    def _reverse_soa(self, zone: str) -> RR:
        return RR(zone, QTYPE.SOA, ttl=TTL, rdata=self.soa)


# -- reading the API objects -------------------------------------------------------------------


def _ns_name(obj: dict[str, Any]) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or "default"), str(md.get("name") or "")


def _is_headless(spec: dict[str, Any]) -> bool:
    return spec.get("clusterIP") == "None"


def _cluster_ips(spec: dict[str, Any]) -> list[str]:
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if isinstance(ip, str) and _is_ipv4(ip)]


def _ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in spec.get("ports") or [] if isinstance(p, dict)]


def _proto(port: dict[str, Any]) -> str:
    return str(port.get("protocol") or "TCP").lower()


def _subsets(endpoints: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [s for s in (endpoints or {}).get("subsets") or [] if isinstance(s, dict)]


def _host_label(address: dict[str, Any]) -> str:
    ip = str(address.get("ip") or "")
    if not _is_ipv4(ip):
        return ""
    return str(address.get("hostname") or "").lower() or ip.replace(".", "-")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ip_key(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))
