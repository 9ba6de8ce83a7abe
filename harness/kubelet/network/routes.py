"""host-gw: a route to every other node's podCIDR via that node's IP, in this (the node's) network namespace.

The routes this module makes carry their own routing protocol number (`proto 75`, 0x4B, shown by `ip route` as
`proto 75`), and it only ever changes or removes routes carrying it: routes made by anyone else — the kernel's
connected routes, a default route, an administrator's — are never touched, even for a CIDR it is asked to route.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.kubelet.errors import KubeletError
from harness.kubelet.network.netns import off_event_loop

log = logging.getLogger(__name__)

HARNESS_ROUTE_PROTO = 0x4B
RT_TABLE_MAIN = 254


class RouteError(KubeletError):
    """Some host-gw routes could not be programmed; the others were."""


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise RouteError(f"invalid pod CIDR {value!r}: {exc}") from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise RouteError(f"pod CIDR {value!r} is not IPv4")
    return str(net)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise RouteError(f"invalid node IP {value!r}: {exc}") from exc


def _dst(route: Any) -> str:
    return f"{route.get_attr('RTA_DST') or '0.0.0.0'}/{route['dst_len']}"


class HostGwRoutes:
    """Keeps `podCIDR -> via nodeIP` routes of the main table equal to what `sync` was last given."""

    def __init__(self, *, own_cidr: str | None = None, proto: int = HARNESS_ROUTE_PROTO,
                 table: int = RT_TABLE_MAIN) -> None:
        self.own_cidr = _cidr(own_cidr) if own_cidr else None
        self.proto = proto
        self.table = table

    def sync(self, routes: dict[str, str]) -> None:
        """Make our routes exactly `routes` ({podCIDR: nodeIP}), skipping our own CIDR (the `own_cidr`, one that is
        directly connected here, or one whose node IP is ours). Raises RouteError naming what failed, after doing
        everything else."""
        wanted = {_cidr(cidr): _ip(ip) for cidr, ip in routes.items()}
        off_event_loop(lambda: self._sync(wanted))

    def current(self) -> dict[str, str]:
        """Our routes as they are now: {podCIDR: nodeIP}."""

        def read() -> dict[str, str]:
            with IPRoute(groups=0) as ipr:
                return {_dst(r): r.get_attr("RTA_GATEWAY") for r in self._ours(ipr)}

        return off_event_loop(read)

    def clear(self) -> None:
        """Remove every route of ours."""
        self.sync({})

    def _ours(self, ipr: Any) -> list[Any]:
        return [r for r in ipr.route("dump", family=socket.AF_INET)
                if r["proto"] == self.proto and (r.get_attr("RTA_TABLE") or r["table"]) == self.table]

    def _sync(self, wanted: dict[str, str]) -> None:
        failures: list[str] = []
        with IPRoute(groups=0) as ipr:
            local_ips = {a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
                         for a in ipr.addr("dump", family=socket.AF_INET)}
            connected = {_dst(r) for r in ipr.route("dump", family=socket.AF_INET)
                         if r["proto"] != self.proto and r["scope"] == 253}  # RT_SCOPE_LINK: on a local interface
            for cidr, via in list(wanted.items()):
                if cidr == self.own_cidr or cidr in connected or via in local_ips:
                    del wanted[cidr]
            ours = {_dst(r): r.get_attr("RTA_GATEWAY") for r in self._ours(ipr)}
            for cidr, via in ours.items():
                if cidr not in wanted:
                    self._apply(ipr, "del", cidr, via, failures)
            for cidr, via in wanted.items():
                if ours.get(cidr) != via:
                    self._apply(ipr, "replace" if cidr in ours else "add", cidr, via, failures)
        if failures:
            raise RouteError("host-gw routes: " + "; ".join(failures))

    def _apply(self, ipr: Any, verb: str, cidr: str, via: str, failures: list[str]) -> None:
        try:
            ipr.route(verb, dst=cidr, gateway=via, proto=self.proto, table=self.table)
        except NetlinkError as exc:
            if verb == "del" and exc.code == errno.ESRCH:
                return
            why = "a route made by someone else is in the way" if exc.code == errno.EEXIST else os.strerror(exc.code)
            failures.append(f"{verb} {cidr} via {via}: {why}")
            return
        log.debug("host-gw: %s %s via %s", verb, cidr, via)


__all__ = ["HARNESS_ROUTE_PROTO", "HostGwRoutes", "RouteError"]
