"""The proxier: Services and Endpoints from informers, turned into rules by a `Proxier` at a bounded rate.

`ProxyLoop` is the mode-independent part, after upstream's BoundedFrequencyRunner and
proxier.syncProxyRules: informer handlers only note that something changed (and an Endpoints'
`endpoints.kubernetes.io/last-change-trigger-time`); the loop rebuilds the model from the
caches and hands it to the proxier, at most once per `min_sync_period` (a change after a quiet
spell is synced at once), and at least every `sync_period` as a full resync that rewrites
everything and repairs whatever someone else changed.

`IptablesProxier` is the iptables mode: it renders the model (harness.proxy.iptables) and, when
the text differs from what it last wrote, runs one `iptables-restore --noflush` for both tables.
A full sync also deletes stale KUBE-SVC-/KUBE-SEP- chains (found with iptables-save) and makes
sure the jumps from the built-in chains exist (`-C`, else `-I`). A second mode (userspace)
implements the same `Proxier` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from harness.api import meta
from harness.machinery.health import component_registry
from harness.proxy import iptables
from harness.proxy.model import ServicePort, build

log = logging.getLogger("harness.proxy")

TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"


class ProxyError(Exception):
    """kube-proxy could not program the node (a missing tool, a refused rule set)."""


class Proxier(Protocol):
    """One proxy mode: programs the node for a set of service ports."""

    async def setup(self) -> None:
        """Check tools and set the kernel parameters this mode needs."""

    async def sync(self, ports: Sequence[ServicePort], *, full: bool) -> bool:
        """Make the node match `ports`; True if anything was written. `full` rewrites everything."""

    async def cleanup(self) -> None:
        """Remove everything this mode ever made (`harness proxy --cleanup`)."""


# -- metrics --------------------------------------------------------------------------------------


def _buckets() -> tuple[float, ...]:
    """Upstream's network programming buckets: 0.25 s steps to 1 s, 1 s to 60 s, 5 s to 2 min, 30 s to 7.5 min."""
    return (0.25, 0.5, *range(1, 60), *range(60, 120, 5), *range(120, 420, 30))


class Metrics:
    """kube-proxy's metrics with upstream names, each proxier owning its registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or component_registry()
        r = self.registry
        self.sync_duration = Histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                                       "SyncProxyRules latency in seconds", registry=r,
                                       buckets=tuple(0.001 * 2**i for i in range(15)))
        self.network_programming = Histogram("kubeproxy_network_programming_duration_seconds",
                                             "In Cluster Network Programming Latency in seconds", registry=r,
                                             buckets=tuple(float(b) for b in _buckets()))
        self.last_sync = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                               "The last time proxy rules were successfully synced", registry=r)
        self.restore_failures = Counter("kubeproxy_sync_proxy_rules_iptables_restore_failures",
                                        "Cumulative proxy iptables restore failures", registry=r)
        self.endpoint_changes = Counter("kubeproxy_sync_proxy_rules_endpoint_changes",
                                        "Cumulative proxy rules Endpoint changes", registry=r)
        self.service_changes = Counter("kubeproxy_sync_proxy_rules_service_changes",
                                       "Cumulative proxy rules Service changes", registry=r)
        self.rules = Gauge("kubeproxy_sync_proxy_rules_iptables_total", "Number of proxy iptables rules programmed",
                           ["table"], registry=r)
        self.restores = Counter("harness_proxy_iptables_restores", "iptables-restore runs that wrote rules",
                                registry=r)


# -- running iptables -----------------------------------------------------------------------------


class Runner:
    """Runs iptables commands, optionally prefixed (e.g. `nsenter --net=...`, for tests and benchmarks)."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = tuple(prefix)

    async def run(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def restore(self, text: str) -> None:
        code, _, err = await self.run("iptables-restore", "-w", "5", "--noflush", stdin=text)
        if code:
            raise ProxyError(f"iptables-restore failed (exit {code}): {err.strip()}")

    async def save(self, table: str) -> str:
        code, out, err = await self.run("iptables-save", "-t", table)
        if code:
            raise ProxyError(f"iptables-save -t {table} failed (exit {code}): {err.strip()}")
        return out

    async def has(self, jump: iptables.Jump) -> bool:
        code, _, _ = await self.run("iptables", "-w", "5", "-t", jump.table, "-C", jump.chain, *jump.args)
        return code == 0

    async def insert(self, jump: iptables.Jump) -> None:
        code, _, err = await self.run("iptables", "-w", "5", "-t", jump.table, "-I", jump.chain, *jump.args)
        if code:
            raise ProxyError(f"iptables -t {jump.table} -I {jump.chain} failed: {err.strip()}")

    async def delete(self, jump: iptables.Jump) -> bool:
        code, _, _ = await self.run("iptables", "-w", "5", "-t", jump.table, "-D", jump.chain, *jump.args)
        return code == 0

    async def version(self) -> str:
        code, out, err = await self.run("iptables", "-V")
        if code:
            raise ProxyError(f"iptables -V failed: {err.strip()}")
        return out.strip()


def check_tools() -> None:
    """Fail with a clear message if the iptables tools are not installed."""
    missing = [t for t in ("iptables", "iptables-restore", "iptables-save") if shutil.which(t) is None]
    if missing:
        raise ProxyError(f"{', '.join(missing)} not found: kube-proxy's iptables mode needs them "
                         "(Debian: apt-get install iptables)")


# -- kernel parameters ----------------------------------------------------------------------------


def set_sysctl(name: str, value: str, proc_sys: Path = Path("/proc/sys")) -> bool:
    """Set a sysctl (in this process's network namespace for net.*); False if it does not exist here."""
    path = proc_sys / name.replace(".", "/")
    if not path.exists():
        return False
    if path.read_text().strip() != value:
        path.write_text(value + "\n")
        log.info("set sysctl %s=%s", name, value)
    return True


def ensure_sysctls(proc_sys: Path = Path("/proc/sys")) -> None:
    """What kube-proxy needs: forwarding on, and bridged traffic seen by iptables if br_netfilter is there."""
    set_sysctl("net.ipv4.ip_forward", "1", proc_sys)
    if not set_sysctl("net.bridge.bridge-nf-call-iptables", "1", proc_sys):
        log.warning("br_netfilter is not loaded (no /proc/sys/net/bridge): traffic between pods on the same bridge "
                    "bypasses iptables, so a pod reaching a service whose endpoint is on its own node's bridge may "
                    "get replies from the pod IP instead of the service IP; run `modprobe br_netfilter` to fix")


# -- the iptables proxier -------------------------------------------------------------------------


class IptablesProxier:
    """The iptables mode; see the module docstring."""

    def __init__(self, *, cluster_cidr: str = iptables.DEFAULT_CLUSTER_CIDR, runner: Runner | None = None,
                 metrics: Metrics | None = None, proc_sys: Path | None = Path("/proc/sys")) -> None:
        self.cluster_cidr = cluster_cidr
        self.runner = runner or Runner()
        self.metrics = metrics or Metrics()
        self.proc_sys = proc_sys
        self.restores = 0  #: iptables-restore runs that wrote rules
        self._written = ""  # the rules text last written ("" = never)
        self._nat_chains: set[str] | None = None  # our nat chains as last written (None: unknown, read them)

    async def setup(self) -> None:
        if not self.runner.prefix:
            check_tools()
        log.info("using %s", await self.runner.version())
        if self.proc_sys is not None:
            ensure_sysctls(self.proc_sys)

    async def sync(self, ports: Sequence[ServicePort], *, full: bool) -> bool:
        rules = iptables.render(ports, cluster_cidr=self.cluster_cidr)
        if not full and rules.text == self._written:
            return False
        if full or self._nat_chains is None:
            existing = iptables.chains_in(await self.runner.save("nat")).get("nat", set())
            self._nat_chains = iptables.ours(existing, "nat")
        stale = {c for c in self._nat_chains - set(rules.nat_chains) if c.startswith(iptables.SERVICE_CHAIN_PREFIXES)}
        try:
            await self.runner.restore(rules.with_deletions(stale))
        except ProxyError:
            self.metrics.restore_failures.inc()
            self._written, self._nat_chains = "", None  # unknown state: the next sync is a full one
            raise
        self.restores += 1
        self.metrics.restores.inc()
        if full or not self._written:
            await self.ensure_jumps()
        self._written, self._nat_chains = rules.text, set(rules.nat_chains)
        for table, text in (("nat", rules.nat), ("filter", rules.filter)):
            self.metrics.rules.labels(table).set(sum(line.startswith("-A ") for line in text.splitlines()))
        if stale:
            log.info("deleted %d stale chains", len(stale))
        return True

    async def ensure_jumps(self) -> None:
        for jump in iptables.JUMPS:
            if not await self.runner.has(jump):
                await self.runner.insert(jump)

    async def cleanup(self) -> None:
        for jump in iptables.JUMPS:
            while await self.runner.delete(jump):  # twice-installed rules, too
                pass
        found = {t: iptables.chains_in(await self.runner.save(t)).get(t, set()) for t in ("nat", "filter")}
        text = iptables.cleanup_text(iptables.ours(found["nat"], "nat"), iptables.ours(found["filter"], "filter"))
        if text:
            await self.runner.restore(text)
        self._written, self._nat_chains = "", None
        log.info("removed %d chains and the jumps to them", len(iptables.ours(found["nat"], "nat"))
                 + len(iptables.ours(found["filter"], "filter")))


# -- the loop -------------------------------------------------------------------------------------


def parse_time(value: str) -> float | None:
    """An RFC 3339 timestamp as a Unix time, or None."""
    try:
        return meta.parse_time(value).timestamp()
    except ValueError:
        return None


class ProxyLoop:
    """Feeds a `Proxier` from the Service and Endpoints caches; see the module docstring."""

    def __init__(self, proxier: Proxier, *, services: Callable[[], list[dict[str, Any]]],
                 endpoints: Callable[[str], dict[str, Any] | None], metrics: Metrics,
                 min_sync_period: float = 1.0, sync_period: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proxier = proxier
        self.services = services
        self.endpoints = endpoints
        self.metrics = metrics
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        self.clock = clock
        self.syncs = 0  #: completed syncs, written or not
        self._wanted = asyncio.Event()
        self._triggers: list[float] = []  # trigger times of Endpoints changes not yet synced
        self._last_sync = -1e18
        self._last_full = -1e18
        self.synced = asyncio.Event()  #: set after the first successful sync

    # -- informer handlers: note and wake up -------------------------------------------------------

    def service_handlers(self) -> dict[str, Callable[..., None]]:
        return {"on_add": lambda o: self._service_changed(), "on_update": self._service_updated,
                "on_delete": lambda o: self._service_changed()}

    def endpoints_handlers(self) -> dict[str, Callable[..., None]]:
        return {"on_add": self._endpoints_changed, "on_update": lambda old, new: self._endpoints_updated(old, new),
                "on_delete": lambda o: self._endpoints_deleted()}

    def _service_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old is not new and old.get("spec") != new.get("spec"):
            self._service_changed()

    def _service_changed(self) -> None:
        self.metrics.service_changes.inc()
        self._wanted.set()

    def _endpoints_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old is not new and old.get("subsets") != new.get("subsets"):
            self._endpoints_changed(new)

    def _endpoints_changed(self, obj: dict[str, Any]) -> None:
        self.metrics.endpoint_changes.inc()
        trigger = ((obj.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_TIME)
        when = parse_time(trigger) if isinstance(trigger, str) else None
        if when is not None:
            self._triggers.append(when)
        self._wanted.set()

    def _endpoints_deleted(self) -> None:
        self.metrics.endpoint_changes.inc()
        self._wanted.set()

    def request(self) -> None:
        """Ask for a sync (it happens once min_sync_period has passed since the last one)."""
        self._wanted.set()

    # -- syncing ---------------------------------------------------------------------------------

    def model(self) -> list[ServicePort]:
        services = self.services()
        endpoints: dict[str, dict[str, Any]] = {}
        for svc in services:
            key = meta.key_of(svc)
            found = self.endpoints(key)
            if found is not None:
                endpoints[key] = found
        return build(services, endpoints)

    async def sync_once(self, *, full: bool = False) -> bool:
        """One sync now: rebuild the model and hand it to the proxier."""
        self._wanted.clear()
        triggers, self._triggers = self._triggers, []
        started = time.perf_counter()
        now = self.clock()
        try:
            wrote = await self.proxier.sync(self.model(), full=full)
        except Exception:
            self._triggers = triggers + self._triggers
            raise
        finally:
            self._last_sync = now
        self.metrics.sync_duration.observe(time.perf_counter() - started)
        wall = time.time()
        self.metrics.last_sync.set(wall)
        for when in triggers:
            self.metrics.network_programming.observe(max(0.0, wall - when))
        if full:
            self._last_full = now
        self.syncs += 1
        self.synced.set()
        return wrote

    async def run(self) -> None:
        """Sync on changes (bounded by min_sync_period) and fully every sync_period, until cancelled."""
        self._wanted.set()
        while True:
            next_full = self._last_full + self.sync_period
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_full - self.clock())):
                    await self._wanted.wait()
            wait = self._last_sync + self.min_sync_period - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            full = self.clock() >= self._last_full + self.sync_period
            try:
                await self.sync_once(full=full)
            except Exception as exc:
                log.error("sync failed: %s; retrying", exc)
                self._last_full = -1e18  # the next sync rewrites everything
                await asyncio.sleep(max(self.min_sync_period, 1.0))
                self._wanted.set()


def default_hostname() -> str:
    return os.uname().nodename
