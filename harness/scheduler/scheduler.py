"""The scheduling loop: one pod at a time through the algorithm, binding in the background.

A scheduling cycle (pop → filter → score → assume → reserve) is synchronous and strictly
one after another, so each pod sees the resources of every pod placed before it, assumed or
bound. The binding cycle (the POST to pods/binding) then runs as its own task, concurrently
with the next scheduling cycles; if it fails, the pod is unreserved, forgotten by the cache
and requeued with backoff. A pod that fits nowhere gets `PodScheduled=False` (reason
Unschedulable) with the per-node reasons, and a FailedScheduling event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from harness.api import conditions, errors, meta, registry
from harness.client.events import NORMAL, WARNING, EventRecorder
from harness.client.rest import Client
from harness.scheduler import metrics as m
from harness.scheduler.algorithm import Algorithm, FitError, SchedulingError
from harness.scheduler.cache import SchedulerCache
from harness.scheduler.framework import CycleState, PodInfo, Status, succeeded
from harness.scheduler.queue import QueueClosed, QueuedPod, SchedulingQueue
from harness.scheduler.runtime import Framework

log = logging.getLogger(__name__)

PODS = registry.by_path("", "v1", "pods")
REASON_UNSCHEDULABLE, REASON_ERROR = "Unschedulable", "SchedulerError"

PodLister = Callable[[str], "dict[str, Any] | None"]


def assumed_pod(pod: dict[str, Any], node_name: str) -> dict[str, Any]:
    """The pod as it will be once bound; shallow copies, as the informer's object is shared."""
    return {**pod, "spec": {**(pod.get("spec") or {}), "nodeName": node_name}}


def _uid(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


class Scheduler:
    def __init__(self, *, client: Client, framework: Framework, cache: SchedulerCache, queue: SchedulingQueue,
                 pods: PodLister, recorder: EventRecorder, metrics: m.Metrics,
                 percentage_of_nodes_to_score: int = 0) -> None:
        self.client = client
        self.framework = framework
        self.profile = framework.profile.scheduler_name
        self.cache = cache
        self.queue = queue
        self.pods = pods
        self.recorder = recorder
        self.metrics = metrics
        self.algorithm = Algorithm(framework, percentage_of_nodes_to_score=percentage_of_nodes_to_score)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Schedule pods until cancelled (or the queue is closed); then wait out in-flight bindings."""
        try:
            while True:
                try:
                    qp = await self.queue.pop()
                except QueueClosed:
                    return
                self.schedule_one(qp)
                await asyncio.sleep(0)  # let informer events in between cycles
        finally:
            await self.drain()

    async def drain(self, within: float = 5.0) -> None:
        """Let binding and status tasks finish (for at most `within` seconds), then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=within)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- the scheduling cycle -------------------------------------------------------------------

    def schedule_one(self, qp: QueuedPod) -> None:
        pod = qp.pod
        start = time.perf_counter()
        state = CycleState()
        try:
            info = PodInfo(pod)
            # Terminating, bound, or assumed (a stale update re-queued it while its binding was in flight).
            if info.terminating or info.node_name or self.cache.has_pod(info.uid):
                self.queue.done(qp.key)
                return
            result = self.algorithm.schedule(state, info, self.cache.node_list())
        except FitError as err:
            self._failed(qp, start, REASON_UNSCHEDULABLE, err.message)
            return
        except SchedulingError as err:
            log.error("scheduling %s failed: %s", qp.key, err)
            self._failed(qp, start, REASON_ERROR, str(err))
            return
        except Exception as exc:  # a plugin bug, or a pod it cannot read: back off, keep scheduling others
            log.exception("scheduling %s failed", qp.key)
            self._failed(qp, start, REASON_ERROR, f"{type(exc).__name__}: {exc}")
            return
        node = result.node
        assumed = PodInfo(assumed_pod(pod, node))
        self.cache.assume(assumed, node)
        status = self.framework.run_reserve(state, assumed, node)
        if not succeeded(status):
            self.framework.run_unreserve(state, assumed, node)
            self.cache.forget(assumed)
            self._failed(qp, start, REASON_ERROR, f"running Reserve: {status.message if status else ''}")
            return
        log.debug("assumed %s on %s (%d nodes evaluated, %d feasible)", qp.key, node, result.evaluated,
                  result.feasible)
        self._spawn(self._bind(qp, state, assumed, node, start), f"bind-{qp.key}")

    # -- the binding cycle ----------------------------------------------------------------------

    async def _bind(self, qp: QueuedPod, state: CycleState, assumed: PodInfo, node: str, start: float) -> None:
        try:
            status = await self.framework.run_bind(state, assumed, node)
        except asyncio.CancelledError:
            self.framework.run_unreserve(state, assumed, node)
            self.cache.forget(assumed)
            raise
        except Exception as exc:
            log.exception("binding %s to %s failed", qp.key, node)
            status = Status.error(f"binding: {exc}")
        if not succeeded(status):
            self.framework.run_unreserve(state, assumed, node)
            self.cache.forget(assumed)
            message = status.message if status is not None else "binding failed"
            log.warning("binding %s to %s failed: %s", qp.key, node, message)
            self._failed(qp, start, REASON_ERROR, message)
            return
        self.cache.finish_binding(assumed)
        self.metrics.attempt(m.SCHEDULED, self.profile, time.perf_counter() - start)
        self.metrics.pod_scheduling_duration.labels(str(qp.attempts)).observe(
            self.queue.clock() - qp.first_queued)
        self.queue.done(qp.key)
        self.recorder.event(qp.pod, NORMAL, "Scheduled", f"Successfully assigned {qp.key} to {node}",
                            action="Binding", kind="Pod", api_version="v1")
        log.info("bound %s to %s", qp.key, node)

    # -- failures -------------------------------------------------------------------------------

    def _failed(self, qp: QueuedPod, start: float, reason: str, message: str) -> None:
        """Count the attempt, requeue the pod (if it still waits), tell the user why."""
        unschedulable = reason == REASON_UNSCHEDULABLE
        self.metrics.attempt(m.UNSCHEDULABLE if unschedulable else m.ERROR, self.profile,
                             time.perf_counter() - start)
        current = self.pods(qp.key)
        if current is None or _uid(current) != _uid(qp.pod) or (current.get("spec") or {}).get("nodeName"):
            self.queue.done(qp.key)  # deleted, replaced or bound meanwhile: nothing to retry
            return
        self.queue.requeue(qp, unschedulable=unschedulable)
        log.info("pod %s is %s: %s", qp.key, "unschedulable" if unschedulable else "not scheduled", message)
        self.recorder.event(current, WARNING, "FailedScheduling", message, action="Scheduling", kind="Pod",
                            api_version="v1")
        self._spawn(self._set_unscheduled(current, reason, message), f"status-{qp.key}")

    async def _set_unscheduled(self, pod: dict[str, Any], reason: str, message: str) -> None:
        """PodScheduled=False with the reason, through pods/status; skipped if already so."""
        cond = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                "lastProbeTime": None}
        old = conditions.get(pod, "PodScheduled")
        if old is not None and all(old.get(k) == cond[k] for k in ("status", "reason", "message")):
            return
        cond["lastTransitionTime"] = conditions.transition_time(old, "False", meta.now_rfc3339())
        patch = {"status": {"conditions": [cond]}}
        md = pod.get("metadata") or {}
        try:
            await self.client.patch(PODS, md.get("name", ""), patch, md.get("namespace", ""),
                                    patch_type="strategic", subresource="status")
        except errors.NotFound:
            pass
        except errors.ApiError as err:
            log.warning("could not set PodScheduled on %s/%s: %s", md.get("namespace"), md.get("name"), err)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cleanup_assumed(self, period: float = 1.0) -> None:
        """Expire assumed pods the watch never confirmed (upstream cleans every second)."""
        while True:
            await asyncio.sleep(period)
            try:
                self.cache.cleanup_expired()
            except Exception:
                log.exception("expiring assumed pods failed")
