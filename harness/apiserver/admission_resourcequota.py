"""The ResourceQuota admission plugin: a write that would take a namespace past one of its quotas is refused, and
one that is admitted is charged to the quotas before it is stored.

The one idea, as upstream's plugin: charging is a compare-and-swap on each quota's status.used (the quota's
resourceVersion is the precondition), so two creates can never both take the last unit of a quota. Within this
apiserver the requests to one namespace are checked in batches by one worker, each changed quota written once a
batch, and the quotas it wrote last are remembered until its watch cache catches up (upstream's look-aside
cache); a conflict with another writer (the resource quota controller, another apiserver) re-reads the quotas and
checks again, three times at most.

What an object uses, and which quotas select it, comes from `harness.api.quota`. The resource quota controller
keeps status.hard and status.used in step with the objects; a quota it has not seen yet (no status.hard) limits
nothing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from harness.api import errors, meta, quota, registry
from harness.api.quota import Evaluator, ResourceList
from harness.apiserver.admission import AdmissionConfigError, Attributes, Objects, Phases

log = logging.getLogger(__name__)

RESOURCE_QUOTAS = "resourcequotas"
#: Upstream's retries of a quota update that lost a race, after the first attempt.
RETRIES = 3
#: How long one evaluation may take before the request fails (as upstream).
EVALUATION_TIMEOUT = 10.0
#: How long to wait for the watch cache to show a quota newer than the one a write conflicted with.
CACHE_WAIT = 1.0
#: Quotas remembered after this apiserver wrote them (upstream's LRU of 100).
REMEMBERED = 100


@dataclass(frozen=True)
class LimitedResource:
    """A ResourceQuotaConfiguration entry: consuming these needs a quota that covers them."""

    group: str
    resource: str
    match_contains: tuple[str, ...] = ()
    match_scopes: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Configuration:
    limited: tuple[LimitedResource, ...] = field(default_factory=tuple)


def parse_configuration(doc: Mapping[str, Any] | None) -> Configuration:
    """A ResourceQuotaConfiguration (apiserver.config.k8s.io/v1, or resourcequota.admission.k8s.io/v1beta1)."""
    if not doc:
        return Configuration()
    entries = doc.get("limitedResources") or []
    if not isinstance(entries, list):
        raise AdmissionConfigError("ResourceQuota configuration: limitedResources must be a list")
    limited = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("resource"):
            raise AdmissionConfigError(f"ResourceQuota configuration: limitedResources[{i}].resource: Required value")
        limited.append(LimitedResource(str(entry.get("apiGroup") or ""), str(entry["resource"]),
                                       tuple(str(m) for m in entry.get("matchContains") or []),
                                       tuple(s for s in entry.get("matchScopes") or [] if isinstance(s, dict))))
    return Configuration(tuple(limited))


def _group_of(attrs: Attributes) -> str | None:
    for kind in registry.KINDS:
        if kind.kind == attrs.kind and kind.plural == attrs.resource:
            return kind.group
    return None


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def _scopes_text(scopes: list[Mapping[str, Any]]) -> str:
    """Go's %v of scope selector requirements, as upstream's message prints them."""
    return "[" + " ".join(f"{{{s.get('scopeName', '')} {s.get('operator', '')} "
                          f"[{' '.join(map(str, s.get('values') or []))}]}}" for s in scopes) + "]"


class Refusal:
    """Builds upstream's refusals of one request: `<resource> "<name>" is forbidden: <why>`."""

    def __init__(self, attrs: Attributes, group: str) -> None:
        obj_md = (attrs.obj or {}).get("metadata") or {}
        self.name = attrs.name or obj_md.get("name") or obj_md.get("generateName") or "Unknown"
        self.resource = f"{attrs.resource}.{group}" if group else attrs.resource
        self.attrs, self.group = attrs, group

    def __call__(self, why: str) -> errors.Forbidden:
        return errors.Forbidden(f'{self.resource} "{self.name}" is forbidden: {why}', kind=self.attrs.resource,
                                name=self.name, group=self.group)


def _limited_names(usage: ResourceList, limited: list[LimitedResource]) -> set[str]:
    """Resources consumed (positive usage) that a limitedResources entry names by substring."""
    return {name for entry in limited for name, amount in usage.items()
            if amount.value > 0 and any(m in name for m in entry.match_contains)}


def check_request(quotas: list[dict[str, Any]], attrs: Attributes, evaluator: Evaluator, config: Configuration,
                  now: datetime) -> list[dict[str, Any]]:
    """The quotas as they would be with the request charged to them (the same list if nothing changes), or the
    ApiError that refuses it (upstream's CheckRequest)."""
    obj: Mapping[str, Any] = attrs.obj or {}
    refuse = Refusal(attrs, evaluator.kind.group)
    limited_scopes = [s for entry in config.limited for s in evaluator.matching_scopes(obj, entry.match_scopes)]
    own_limits = [e for e in config.limited if (e.group, e.resource) == (evaluator.kind.group, evaluator.kind.plural)]
    limited_names = _limited_names(evaluator.usage(obj, now), own_limits) if own_limits else set()

    interesting: list[int] = []
    restricted: set[str] = set()
    restricted_scopes: list[Mapping[str, Any]] = []
    for i, q in enumerate(quotas):
        restricted_scopes += evaluator.matching_scopes(obj, quota.scope_selectors(q))
        if not quota.matches(evaluator, q, obj):
            continue
        name = meta.name_of(q)
        resources = evaluator.matching_resources(quota.hard_of(q))
        why = evaluator.constraints(resources, obj)
        if why:
            raise refuse(f"failed quota: {name}: {why}")
        used = quota.used_of(q)
        if any(r not in used for r in resources):
            raise refuse(f"status unknown for quota: {name}, resources: {','.join(sorted(resources))}")
        interesting.append(i)
        restricted.update(resources)

    usage = evaluator.usage(obj, now)
    below_zero = quota.negative(usage)
    if below_zero:
        raise refuse(f"quota usage is negative for resource(s): {','.join(below_zero)}")
    deltas = {i: usage for i in interesting}
    unclaimed = usage if attrs.operation == "CREATE" and not interesting else {}
    if attrs.operation == "UPDATE":
        if attrs.old is None:
            raise refuse("unable to get previous usage since prior version of object was not found")
        # Charge the difference, to the quotas that already counted the old object.
        if meta.resource_version_of(attrs.old):
            delta = quota.subtract_non_negative(usage, evaluator.usage(attrs.old, now))
            if not interesting:
                unclaimed = delta
            for i in interesting:
                if quota.matches(evaluator, quotas[i], attrs.old):
                    deltas[i] = delta
        elif not interesting:
            unclaimed = usage
    deltas = {i: nonzero for i, d in deltas.items() if (nonzero := quota.remove_zeros(d))}
    if (interesting and not deltas) or (not interesting and not quota.remove_zeros(unclaimed)):
        return quotas

    uncovered = sorted(limited_names - restricted)
    if uncovered:
        raise refuse(f"insufficient quota to consume: {','.join(uncovered)}")
    uncovered_scopes = evaluator.uncovered_scopes(limited_scopes, restricted_scopes)
    if uncovered_scopes:
        # Upstream returns this one as a plain error, which the apiserver serves as a 500.
        raise errors.InternalError(f"insufficient quota to match these scopes: {_scopes_text(uncovered_scopes)}")
    if not interesting:
        return quotas

    out = list(quotas)
    for i, delta in deltas.items():
        q = quotas[i]
        hard, used = quota.hard_of(q), quota.used_of(q)
        requested = quota.mask(delta, hard)
        new_used = quota.add(used, requested)
        over = quota.exceeding(quota.mask(new_used, requested), hard)
        if over:
            raise refuse(f"exceeded quota: {meta.name_of(q)}, requested: {quota.pretty(quota.mask(requested, over))}, "
                         f"used: {quota.pretty(quota.mask(used, over))}, "
                         f"limited: {quota.pretty(quota.mask(hard, over))}")
        charged = copy.deepcopy(q)
        charged.setdefault("status", {})["used"] = quota.to_raw(new_used)
        out[i] = charged
    return out


@dataclass
class _Waiter:
    """One request waiting for its namespace's quota check."""

    attrs: Attributes
    evaluator: Evaluator
    done: asyncio.Future[None]
    error: errors.ApiError | None = None


class ResourceQuota(Phases):
    """Refuses what would exceed a quota of its namespace and charges what it admits (validating phase).

    Requests for one namespace are checked in batches, as upstream's plugin does: whatever arrived while the last
    batch was being written is checked in order against the same quotas, each admitted request's charge counting
    for the next, and each changed quota is written once for the whole batch.
    """

    name = "ResourceQuota"

    def __init__(self, objects: Objects | None, configuration: Mapping[str, Any] | None = None) -> None:
        self.objects = objects
        self.config = parse_configuration(configuration)
        self.now = meta.now
        self._pending: dict[str, list[_Waiter]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        #: (namespace, name) -> the quota as this apiserver last wrote it.
        self._written: dict[tuple[str, str], dict[str, Any]] = {}

    async def validate(self, attrs: Attributes) -> None:
        # Subresources never change what an object uses; namespaces themselves are not in a namespace.
        if attrs.subresource or not attrs.namespace or attrs.operation not in ("CREATE", "UPDATE"):
            return
        group = _group_of(attrs)
        evaluator = quota.evaluator_for(group, attrs.resource) if group is not None else None
        if evaluator is None or not evaluator.handles(attrs.operation) or self.objects is None:
            return
        waiter = _Waiter(attrs, evaluator, asyncio.get_running_loop().create_future())
        self._pending.setdefault(attrs.namespace, []).append(waiter)
        if attrs.namespace not in self._workers:
            self._workers[attrs.namespace] = asyncio.create_task(self._drain(self.objects, attrs.namespace))
        try:
            async with asyncio.timeout(EVALUATION_TIMEOUT):
                await asyncio.shield(waiter.done)
        except TimeoutError:
            raise errors.InternalError("resource quota evaluation timed out") from None
        if waiter.error is not None:
            raise waiter.error

    async def _drain(self, objects: Objects, namespace: str) -> None:
        """Check the namespace's waiting requests, a batch at a time, until none is left."""
        try:
            while self._pending.get(namespace):
                batch = self._pending.pop(namespace)
                try:
                    await self._evaluate(objects, namespace, batch)
                except errors.ApiError as exc:
                    for w in batch:
                        w.error = w.error or exc
                except Exception as exc:  # every waiter must hear, whatever went wrong
                    log.exception("resource quota evaluation failed")
                    for w in batch:
                        w.error = w.error or errors.InternalError(f"resource quota evaluation failed: {exc}")
                for w in batch:
                    if not w.done.done():
                        w.done.set_result(None)
        finally:
            self._workers.pop(namespace, None)

    async def _evaluate(self, objects: Objects, namespace: str, batch: list[_Waiter]) -> None:
        quotas = await self._quotas(objects, namespace)
        if not quotas and not self.config.limited:
            return
        last: errors.ApiError | None = None
        for _ in range(1 + RETRIES):
            state, now = quotas, self.now()
            for w in batch:
                if w.error is not None:
                    continue
                try:
                    charged = check_request(state, w.attrs, w.evaluator, self.config, now)
                except errors.ApiError as exc:
                    w.error = exc
                    continue
                if not w.attrs.dry_run:
                    state = charged
            changed = [q for q, before in zip(state, quotas, strict=True)
                       if not quota.equals(quota.used_of(q), quota.used_of(before))]
            failed: dict[str, int] = {}
            for q in changed:
                try:
                    self._remember(await objects.update_status(RESOURCE_QUOTAS, q))
                except errors.ApiError as exc:
                    failed[meta.name_of(q)] = _rv(q)
                    last = exc
            if not failed:
                return
            # The quotas charged already stay charged; check the batch again against the ones that changed
            # meanwhile.
            fresh = await self._after(objects, namespace, failed)
            quotas = [q for q in fresh if meta.name_of(q) in failed]
        assert last is not None
        for w in batch:
            w.error = w.error or last

    async def _quotas(self, objects: Objects, namespace: str) -> list[dict[str, Any]]:
        """The namespace's quotas (copies), each the newer of the cache's and the one this apiserver wrote."""
        out = []
        for q in await objects.list(RESOURCE_QUOTAS, namespace):
            key = (namespace, meta.name_of(q))
            written = self._written.get(key)
            if written is not None and _rv(written) > _rv(q):
                q = written
            else:
                self._written.pop(key, None)
            out.append(copy.deepcopy(q))
        return sorted(out, key=meta.name_of)

    async def _after(self, objects: Objects, namespace: str, stale: dict[str, int]) -> list[dict[str, Any]]:
        """The namespace's quotas once the cache shows none of them at the versions that conflicted (or after
        CACHE_WAIT seconds: then the next attempt finds out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CACHE_WAIT
        while True:
            quotas = await self._quotas(objects, namespace)
            current = {meta.name_of(q): _rv(q) for q in quotas}
            if all(current.get(name) != rv for name, rv in stale.items()) or loop.time() >= deadline:
                return quotas
            await asyncio.sleep(0.01)

    def _remember(self, written: dict[str, Any]) -> None:
        self._written[(meta.namespace_of(written), meta.name_of(written))] = written
        while len(self._written) > REMEMBERED:
            del self._written[next(iter(self._written))]
