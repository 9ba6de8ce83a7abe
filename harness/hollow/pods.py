"""The pod side of many hollow kubelets: one cluster-wide watch, a queue of keys, a few workers.

Pods bound to a hollow node are kept in a cache (fed by the pod watch); a pod that needs
something — to be started, or to be finished because it is being deleted — has its key
queued, and a worker writes its status through the pods/status subresource, conditional on
the resourceVersion it read: on 409 Conflict it reads the pod again and redoes the change
on top of what is there now, so nothing the scheduler or anyone else wrote is lost. A pod
being deleted is finished as a kubelet does: containers terminated, then DELETE with grace
period 0 and the pod's uid as precondition. A paused node leaves its pods alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from harness.api import errors, meta, registry
from harness.client.rest import Client
from harness.hollow import podstatus
from harness.hollow.addresses import PoolExhausted
from harness.hollow.nodes import HollowNode
from harness.hollow.watching import KeyQueue

log = logging.getLogger(__name__)

PODS = registry.by_path("", "v1", "pods")
#: Every bound pod; which of them are ours is decided here, by node name.
BOUND = "spec.nodeName!="
ATTEMPTS = 5


def _node_name(pod: dict[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _uid(pod: dict[str, Any]) -> str:
    return str(pod["metadata"].get("uid") or "")


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether `a` is a later version of the same pod than `b` (resourceVersions are etcd revisions)."""
    try:
        return _uid(a) == _uid(b) and int(meta.resource_version_of(a)) > int(meta.resource_version_of(b))
    except ValueError:
        return False


class PodAgent:
    """Starts and finishes the pods bound to hollow nodes."""

    def __init__(self, client: Client, nodes: dict[str, HollowNode], *, limit: asyncio.Semaphore,
                 workers: int = 32) -> None:
        self.client = client
        self.nodes = nodes
        self.limit = limit
        self.workers = workers
        self.cache: dict[str, dict[str, Any]] = {}
        self.queue = KeyQueue()
        self._failures: dict[str, int] = defaultdict(int)

    # -- what the pod watch shows --------------------------------------------------------

    def on_list(self, items: list[dict[str, Any]]) -> None:
        present = {meta.key_of(p) for p in items}
        for key in [k for k in self.cache if k not in present]:
            self._forget(key)
        for pod in items:
            self.on_event("ADDED", pod)

    def on_event(self, kind: str, pod: dict[str, Any]) -> None:
        key = meta.key_of(pod)
        node = self.nodes.get(_node_name(pod))
        if kind == "DELETED" or node is None:
            self._forget(key)
            return
        old = self.cache.get(key)
        if old is not None and _uid(old) != _uid(pod):
            self._forget(key)
        elif old is not None and _newer(old, pod):
            return  # we already hold what our own write returned
        self.remember(pod)
        if meta.is_terminating(pod) or podstatus.needs_running(pod):
            self.queue.add(key)

    def remember(self, pod: dict[str, Any]) -> None:
        self.cache[meta.key_of(pod)] = pod
        ip = (pod.get("status") or {}).get("podIP")
        node = self.nodes.get(_node_name(pod))
        if ip and node is not None:
            node.claim(_uid(pod), ip)

    def _forget(self, key: str) -> None:
        pod = self.cache.pop(key, None)
        if pod is not None and (node := self.nodes.get(_node_name(pod))) is not None:
            node.release(_uid(pod))

    def resync_node(self, name: str) -> None:
        """Queue every pod of a node again (after it was paused)."""
        for key, pod in self.cache.items():
            if _node_name(pod) == name:
                self.queue.add(key)

    def pods_on(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.cache.values() if _node_name(p) == name]

    # -- workers -------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.sync(key)
                self._failures.pop(key, None)
            except (errors.ApiError, PoolExhausted) as exc:
                self._retry(key, exc)
            except Exception as exc:
                log.exception("hollow pod %s: sync failed", key)
                self._retry(key, exc)
            finally:
                self.queue.done(key)

    def _retry(self, key: str, exc: Exception) -> None:
        self._failures[key] += 1
        delay = min(0.05 * 2 ** self._failures[key], 10.0)
        log.warning("hollow pod %s: %s; retrying in %.2fs", key, exc, delay)
        self.queue.add_after(key, delay)

    async def sync(self, key: str) -> None:
        """Bring one pod to where its kubelet would have it: Running, or finished and deleted."""
        pod = self.cache.get(key)
        if pod is None:
            return
        node = self.nodes.get(_node_name(pod))
        if node is None or node.paused:
            return
        async with self.limit:
            for _ in range(ATTEMPTS):
                try:
                    if meta.is_terminating(pod):
                        await self._finish(pod)
                    elif podstatus.needs_running(pod):
                        await self._start(pod, node)
                    return
                except errors.Conflict:
                    pod = await self._reread(pod)
                    if pod is None:
                        return
                except errors.NotFound:
                    return
        raise errors.Conflict(f"pod {key} kept changing under its status writes")

    async def _reread(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        try:
            fresh = await self.client.get(PODS, meta.name_of(pod), meta.namespace_of(pod))
        except errors.NotFound:
            return None
        if _uid(fresh) != _uid(pod):
            return None  # another pod of that name now; its own events bring it here
        self.remember(fresh)
        return fresh

    async def _start(self, pod: dict[str, Any], node: HollowNode) -> None:
        ip = (pod.get("status") or {}).get("podIP") or node.pool().allocate(_uid(pod))
        new = {**pod, "status": podstatus.running_status(pod, host_ip=node.ip, pod_ip=ip,
                                                         now=meta.now_rfc3339())}
        self.remember(await self.client.update_status(PODS, new))

    async def _finish(self, pod: dict[str, Any]) -> None:
        if not podstatus.all_terminated(pod):
            new = {**pod, "status": podstatus.terminated_status(pod, now=meta.now_rfc3339())}
            pod = await self.client.update_status(PODS, new)
            self.remember(pod)
        # NotFound: gone already; Conflict: the uid precondition failed, another pod of that name now.
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.client.delete(PODS, meta.name_of(pod), meta.namespace_of(pod), grace_period=0,
                                     preconditions={"uid": _uid(pod)})
