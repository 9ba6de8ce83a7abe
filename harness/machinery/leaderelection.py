"""Leader election on a coordination.k8s.io/v1 Lease, after client-go's leaderelection.

The one idea: the Lease object is the lock, and the apiserver's optimistic concurrency is
what makes it safe. Every write is an update conditional on the resourceVersion just read,
so of two candidates that both see a free lease only one write succeeds; the other gets a
Conflict and stays a follower. The leader proves it is alive by renewing (`renewTime`) every
`retry_period`; others may take the lease once `renewTime + leaseDurationSeconds` has passed.
A leader that has not renewed within `renew_deadline` (shorter than the lease duration)
stops leading before anyone else can start, and `run()` returns so the process can exit, as
upstream components do. Cancelling `run()` is a clean shutdown: lead() is stopped first, then
the lease is released (empty holder, duration 1 s) so a successor need not wait it out.

The lease arithmetic is in pure functions (`is_free`, `claimed`, `released`) for testing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from harness.api import errors, meta, registry
from harness.client.rest import Client
from harness.util import rfc3339

log = logging.getLogger(__name__)

LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")
#: As upstream's JitterUntil with factor 1.2: followers retry every retry_period * [1, 2.2).
JITTER = 1.2


def format_micro_time(when: datetime) -> str:
    """`metav1.MicroTime` on the wire, e.g. `2026-01-02T03:04:05.123456Z`."""
    return rfc3339.format_time(when, digits=6)


def is_free(spec: dict[str, Any], *, now: datetime) -> bool:
    """Whether anyone may take a lease with this spec: released, never renewed, or expired."""
    holder = spec.get("holderIdentity") or ""
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not holder or not renewed:
        return True
    expires = meta.parse_time(renewed) + timedelta(seconds=float(spec.get("leaseDurationSeconds") or 0))
    return expires < now


def claimed(spec: dict[str, Any] | None, *, identity: str, duration: int, now: datetime) -> dict[str, Any]:
    """The spec with `identity` holding the lease: a renewal if it already did, else an acquisition."""
    stamp = format_micro_time(now)
    if spec is None:
        return {"holderIdentity": identity, "leaseDurationSeconds": duration, "acquireTime": stamp,
                "renewTime": stamp, "leaseTransitions": 0}
    if spec.get("holderIdentity") == identity:
        return {**spec, "leaseDurationSeconds": duration, "renewTime": stamp,
                "acquireTime": spec.get("acquireTime") or stamp}
    return {**spec, "holderIdentity": identity, "leaseDurationSeconds": duration, "acquireTime": stamp,
            "renewTime": stamp, "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1}


def released(spec: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """The spec a leader writes on a clean shutdown, as upstream's ReleaseOnCancel."""
    stamp = format_micro_time(now)
    return {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": stamp, "renewTime": stamp}


def holder_of(lease: dict[str, Any] | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


class LeaderElector:
    """One candidate for leadership of `namespace/name`; see the module docstring."""

    def __init__(self, client: Client, *, name: str, namespace: str = "kube-system", identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        if not lease_duration > renew_deadline > JITTER * retry_period:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period "
                             f"(got {lease_duration}, {renew_deadline}, {retry_period})")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._leader = False
        #: The lease as last read or written: its resourceVersion conditions the next write.
        self._observed: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<LeaderElector {self.identity} for {self.namespace}/{self.name}>"

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def leader(self) -> str:
        """The holder of the lease as last seen ("" if none)."""
        return holder_of(self._observed)

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Acquire, lead while renewing, and return when leadership is lost; see the module docstring."""
        lead_task: asyncio.Task[None] | None = None
        release = False  # on a clean end (cancelled, or lead() returned) but not when the lease was lost
        try:
            await self._acquire()
            lead_task = asyncio.create_task(_as_coroutine(lead), name=f"lead-{self.name}")
            release = await self._keep(lead_task)
        except asyncio.CancelledError:
            release = True
            raise
        finally:
            was_leader = self._leader
            self._set_leader(False)
            if lead_task is not None and not lead_task.done():
                lead_task.cancel()
                await asyncio.gather(lead_task, return_exceptions=True)
            if release and was_leader:
                await self._release()
        if release and lead_task is not None:
            await lead_task  # lead() ended by itself: re-raise what it raised

    # -- the loops -------------------------------------------------------------------------

    async def _acquire(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.renew_deadline):
                    if await self.try_acquire_or_renew():
                        self._set_leader(True)
                        return
            except (errors.ApiError, TimeoutError) as exc:
                log.info("%r: could not acquire the lease: %s", self, str(exc) or "timed out")
            await asyncio.sleep(self.retry_period * (1 + random.random() * JITTER))

    async def _keep(self, lead_task: asyncio.Task[None]) -> bool:
        """Renew every retry_period until lead() ends (True) or leadership is lost (False)."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.wait({lead_task}, timeout=self.retry_period)
            if lead_task.done():
                return True
            deadline = renewed + self.renew_deadline
            attempt = loop.time()  # renewTime is stamped before the request: count from here
            if await self._renew_before(deadline):
                renewed = attempt
            elif self.leader not in ("", self.identity):
                log.error("%r: lost the lease to %s", self, self.leader)
                return False
            elif loop.time() >= deadline:
                log.error("%r: failed to renew the lease within %.1fs", self, self.renew_deadline)
                return False

    async def _renew_before(self, deadline: float) -> bool:
        try:
            async with asyncio.timeout_at(deadline):
                return await self.try_acquire_or_renew()
        except (errors.ApiError, TimeoutError) as exc:
            log.warning("%r: renewing the lease failed: %s", self, str(exc) or "timed out")
            return False

    # -- one attempt -----------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One read and at most one conditional write; True if we hold the lease afterwards."""
        now = meta.now()
        duration = max(1, math.ceil(self.lease_duration))
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except errors.NotFound:
            return await self._create(claimed(None, identity=self.identity, duration=duration, now=now))
        self._observe(lease)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity and not is_free(spec, now=now):
            return False
        updated = {**lease, "spec": claimed(spec, identity=self.identity, duration=duration, now=now)}
        try:
            self._observe(await self.client.update(LEASES, updated))
        except errors.Conflict:
            return False
        return True

    async def _create(self, spec: dict[str, Any]) -> bool:
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        try:
            self._observe(await self.client.create(LEASES, body, self.namespace))
        except (errors.AlreadyExists, errors.Conflict):
            return False
        return True

    async def _release(self) -> None:
        lease = self._observed
        if lease is None or holder_of(lease) != self.identity:
            return
        body = {**lease, "spec": released(lease.get("spec") or {}, now=meta.now())}
        try:
            async with asyncio.timeout(self.renew_deadline):
                self._observe(await self.client.update(LEASES, body))
            log.info("%r: released the lease", self)
        except (errors.ApiError, TimeoutError) as exc:
            log.warning("%r: could not release the lease: %s", self, str(exc) or "timed out")

    def _observe(self, lease: dict[str, Any]) -> None:
        before, after = self.leader, holder_of(lease)
        self._observed = lease
        if after != before and after and after != self.identity:
            log.info("%r: new leader is %s", self, after)

    def _set_leader(self, leader: bool) -> None:
        if leader != self._leader:
            log.info("%r: %s", self, "became leader" if leader else "stopped leading")
        self._leader = leader


async def _as_coroutine(lead: Callable[[], Awaitable[None]]) -> None:
    await lead()
