"""ReplicaSet (and ReplicationController): keep `spec.replicas` pods matching the selector.

Pods belong to the set through a controller ownerReference: matching orphans are adopted,
owned pods that stop matching are released. Too few active pods → create from the template
(in growing batches, as upstream's slow start); too many → delete the least valuable first
(unscheduled before scheduled, pending before running, not ready before ready, newest
first). Expectations keep a lagging cache from causing double work. Status counts replicas,
ready and available pods.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import UTC, datetime
from typing import Any, ClassVar

from harness.api import errors, meta
from harness.api.pods import is_active, is_available, is_ready
from harness.api.registry import Kind
from harness.controllers.base import (
    PODS,
    REPLICASETS,
    REPLICATION_CONTROLLERS,
    Context,
    Controller,
    controller_of,
    owner_reference,
)
from harness.controllers.expectations import Expectations
from harness.controllers.ownership import OwnedPods, selector_of

log = logging.getLogger(__name__)

#: The most pods created or deleted for one set in one pass (upstream's burstReplicas).
BURST = 500
SLOW_START_INITIAL = 1


def deletion_rank(pod: dict[str, Any]) -> tuple[int, int, int, str]:
    """Sort key: the pods to delete first come first."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get((pod.get("status") or {}).get("phase", ""), 0)
    return (1 if pod.get("spec", {}).get("nodeName") else 0, phase_rank, 1 if is_ready(pod) else 0,
            # newer first: negate by sorting on the reversed timestamp string
            "".join(chr(255 - ord(ch)) for ch in pod["metadata"].get("creationTimestamp", "")))


class ReplicaSetController(Controller):
    name = "replicaset"
    workers = 4
    kind: ClassVar[Kind] = REPLICASETS

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.expectations = Expectations()
        self.pods = OwnedPods(ctx, self.kind, self.queue, self.expectations)

    def setup(self) -> None:
        owners = self.ctx.informers(self.kind)
        owners.add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                            on_delete=self._owner_deleted)
        self.pods.register()

    # -- handlers: pods -> owner keys (harness.controllers.ownership) -----------------------

    def _owner_deleted(self, owner: dict[str, Any]) -> None:
        self.expectations.forget(meta.key_of(owner))

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        owner = self.ctx.informers(self.kind).cache.get(key)
        if owner is None:
            self.expectations.forget(key)
            return
        pods = await self._claim(owner)
        active = [p for p in pods if is_active(p)]
        error: Exception | None = None
        if self.expectations.satisfied(key) and not meta.is_terminating(owner):
            try:
                await self._scale(key, owner, active)
            except errors.ApiError as exc:
                error = exc
        await self._update_status(owner, pods, error)
        if error is not None:
            raise error

    async def _claim(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """The pods this set owns, after adopting matching orphans and releasing non-matching pods."""
        ns, uid = owner["metadata"]["namespace"], owner["metadata"]["uid"]
        sel = selector_of(self.kind, owner)
        owned = []
        for pod in self.ctx.informers(PODS).cache.by_index("namespace", ns):
            ref = controller_of(pod)
            matches = sel is not None and not sel.empty and sel.matches(pod["metadata"].get("labels"))
            if ref is not None and ref.get("uid") == uid:
                if matches:
                    owned.append(pod)
                elif not meta.is_terminating(owner):
                    await self._set_owner(pod, None, uid)
            elif ref is None and matches and not meta.is_terminating(owner) and not meta.is_terminating(pod):
                adopted = await self._set_owner(pod, owner_reference(owner, self.kind), uid)
                if adopted is not None:
                    owned.append(adopted)
        return owned

    async def _set_owner(self, pod: dict[str, Any], ref: dict[str, Any] | None, uid: str) -> dict[str, Any] | None:
        refs = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if ref is not None:
            refs.append(ref)
        patch = {"metadata": {"ownerReferences": refs or None, "resourceVersion": pod["metadata"]["resourceVersion"]}}
        try:
            return await self.ctx.client.patch(PODS, pod["metadata"]["name"], patch, pod["metadata"]["namespace"])
        except (errors.NotFound, errors.Conflict):
            return None

    async def _scale(self, key: str, owner: dict[str, Any], active: list[dict[str, Any]]) -> None:
        want = int((owner.get("spec") or {}).get("replicas", 1))
        diff = len(active) - want
        if diff < 0:
            await self._create(key, owner, min(-diff, BURST))
        elif diff > 0:
            victims = sorted(active, key=deletion_rank)[:min(diff, BURST)]
            self.expectations.expect_deletions(key, [p["metadata"]["uid"] for p in victims])
            await asyncio.gather(*(self._delete(key, owner, p) for p in victims))

    async def _create(self, key: str, owner: dict[str, Any], count: int) -> None:
        """Create in batches of 1, 2, 4, ... so a failing template fails fast (upstream's slow start)."""
        template = (owner.get("spec") or {}).get("template") or {}
        ns, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**copy.deepcopy(template.get("metadata") or {}), "generateName": f"{name}-",
                            "namespace": ns, "ownerReferences": [owner_reference(owner, self.kind)]},
               "spec": copy.deepcopy(template.get("spec") or {})}
        self.expectations.expect_creations(key, count)
        done, batch = 0, SLOW_START_INITIAL
        while done < count:
            size = min(batch, count - done)
            results = await asyncio.gather(*(self.ctx.client.create(PODS, copy.deepcopy(pod), ns)
                                              for _ in range(size)), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            done += size
            if failed:
                for _ in range(len(failed) + count - done):  # these will never show up
                    self.expectations.created(key)
                self.ctx.recorder.event(owner, "Warning", "FailedCreate", f"Error creating: {failed[0]}")
                raise failed[0]
            names = [r["metadata"]["name"] for r in results if isinstance(r, dict)]
            self.ctx.recorder.event(owner, "Normal", "SuccessfulCreate", f"Created pod: {', '.join(names)}")
            batch *= 2

    async def _delete(self, key: str, owner: dict[str, Any], pod: dict[str, Any]) -> None:
        md = pod["metadata"]
        try:
            await self.ctx.client.delete(PODS, md["name"], md["namespace"], preconditions={"uid": md["uid"]})
            self.ctx.recorder.event(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {md['name']}")
        except errors.NotFound:
            self.expectations.deleted(key, md["uid"])

    async def _update_status(self, owner: dict[str, Any], pods: list[dict[str, Any]],
                             error: Exception | None) -> None:
        spec = owner.get("spec") or {}
        active = [p for p in pods if is_active(p)]
        template_labels = (spec.get("template") or {}).get("metadata", {}).get("labels") or {}
        now = datetime.now(UTC)
        min_ready = int(spec.get("minReadySeconds") or 0)
        status: dict[str, Any] = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(1 for p in active
                                        if template_labels.items() <= (p["metadata"].get("labels") or {}).items()),
            "readyReplicas": sum(1 for p in active if is_ready(p)),
            "availableReplicas": sum(1 for p in active if is_available(p, min_ready, now)),
            "observedGeneration": owner["metadata"].get("generation", 0),
        }
        if self.kind.kind == "ReplicaSet":
            status["terminatingReplicas"] = sum(1 for p in pods if meta.is_terminating(p))
        old = owner.get("status") or {}
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        if error is not None:
            conditions.append({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                               "message": str(error), "lastTransitionTime": meta.now_rfc3339()})
        if conditions:
            status["conditions"] = conditions
        if all(old.get(k, 0) == v for k, v in status.items() if k != "conditions") and \
                old.get("conditions", []) == status.get("conditions", []):
            return
        for zero in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas", "terminatingReplicas"):
            if not status.get(zero):
                status.pop(zero, None)
        try:
            await self.ctx.client.update_status(self.kind, {**owner, "status": status})
        except (errors.Conflict, errors.NotFound):
            self.queue.add_after(meta.key_of(owner), 0.1)
        if min_ready and status["readyReplicas"] > status["availableReplicas"]:
            self.queue.add_after(meta.key_of(owner), float(min_ready))


class ReplicationControllerController(ReplicaSetController):
    name = "replicationcontroller"
    kind = REPLICATION_CONTROLLERS
