"""ResourceQuota: each quota's status says what it enforces (status.hard = spec.hard) and what its namespace uses.

The one idea, as upstream's resource quota controller: usage is always recalculated whole, from the informer
caches of every kind quota can count (`harness.api.quota.sync_status`), and written only when it differs. A
quota is recalculated when it is created or its spec.hard changes; when an object it may count goes away or
stops counting (a deleted object, a pod that finished, a Service no longer a NodePort or LoadBalancer: upstream's
replenishment), which gives back what the admission plugin charged; and every
`--resource-quota-sync-period` (5 minutes), which catches what no event tells of (a pod past its deletion grace
period, a create that was charged but never stored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from harness.api import meta, quota, registry
from harness.api.quota import Evaluator
from harness.controllers.base import Context, Controller

log = logging.getLogger(__name__)

RESOURCE_QUOTAS = registry.by_path("", "v1", "resourcequotas")


def stopped_counting(evaluator: Evaluator, old: Mapping[str, Any], new: Mapping[str, Any], now: datetime) -> bool:
    """An update that gives usage back: a pod that finished, a Service whose quota type changed."""
    if evaluator.kind.group == "" and evaluator.kind.plural == "pods":
        return quota.counts_against_quota(old, now) and not quota.counts_against_quota(new, now)
    if evaluator.kind.group == "" and evaluator.kind.plural == "services":
        return quota.quota_service_type(old) != quota.quota_service_type(new)
    return False


class ResourceQuotaController(Controller):
    name = "resourcequota"
    event_source = "resource-quota-controller"
    #: Upstream's --concurrent-resource-quota-syncs.
    workers = 5

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.now: Callable[[], datetime] = meta.now

    def setup(self) -> None:
        self.ctx.informers(RESOURCE_QUOTAS).add_handlers(on_add=self.enqueue, on_update=self._quota_updated,
                                                         on_delete=self.enqueue)
        for evaluator in quota.EVALUATORS.values():
            self.ctx.informers(evaluator.kind).add_handlers(**self._replenishment(evaluator))

    def _quota_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        # Status changes are this controller's and the admission plugin's own: only a new spec.hard (or a status
        # that lost what it must say) needs a recalculation; everything else waits for the periodic one.
        spec_changed = not quota.equals(quota.resource_list((old.get("spec") or {}).get("hard")),
                                        quota.resource_list((new.get("spec") or {}).get("hard")))
        status = new.get("status") or {}
        if spec_changed or status.get("hard") is None or status.get("used") is None:
            self.enqueue(new)

    def _replenishment(self, evaluator: Evaluator) -> dict[str, Callable[..., None]]:
        """Handlers of one counted kind: what went away, or stopped counting, is given back."""
        def updated(old: dict[str, Any], new: dict[str, Any]) -> None:
            if stopped_counting(evaluator, old, new, self.now()):
                self._replenish(evaluator, meta.namespace_of(new))

        def deleted(obj: dict[str, Any]) -> None:
            self._replenish(evaluator, meta.namespace_of(obj))

        return {"on_update": updated, "on_delete": deleted}

    def _replenish(self, evaluator: Evaluator, namespace: str) -> None:
        """Recalculate the namespace's quotas that limit something this kind is charged for."""
        for q in self.ctx.informers(RESOURCE_QUOTAS).cache.by_index("namespace", namespace):
            if evaluator.matching_resources(quota.hard_of(q)):
                self.enqueue(q)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(super().run())
            group.create_task(self._resync())

    async def _resync(self) -> None:
        while not self.queue.shutting_down:
            await asyncio.sleep(self.ctx.options.resource_quota_sync_period)
            for q in self.ctx.informers(RESOURCE_QUOTAS).cache.list():
                self.enqueue(q)

    def _objects(self, namespace: str) -> Callable[[Evaluator], Iterable[dict[str, Any]]]:
        def objects_of(evaluator: Evaluator) -> Iterable[dict[str, Any]]:
            return self.ctx.informers(evaluator.kind).cache.by_index("namespace", namespace)
        return objects_of

    async def reconcile(self, key: str) -> None:
        current = self.ctx.informers(RESOURCE_QUOTAS).cache.get(key)
        if current is None:
            return
        status = quota.sync_status(current, self._objects(meta.namespace_of(current)), self.now())
        if status is None:
            return
        # With the cached resourceVersion: a quota the admission plugin charged meanwhile is a conflict, and
        # the key is retried against the newer quota.
        await self.ctx.client.update_status(RESOURCE_QUOTAS, {**current, "status": status})
        log.debug("resourcequota %s: used %s", key, status["used"])
