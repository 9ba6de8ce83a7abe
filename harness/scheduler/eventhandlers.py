"""Informer events into the scheduler: bound pods feed the cache, pending pods the queue.

One pod informer sees every pod; a pod is "assigned" once spec.nodeName is set. Its first
update with a nodeName is the binding coming back (it leaves the queue and confirms the
cache's assumption). Changes that can make a waiting pod fit — a node added, or changed in
what scheduling reads (not a kubelet heartbeat), a bound pod gone or changed — move the
unschedulable pods back to be tried again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.api import meta
from harness.api.meta import Obj
from harness.api.pods import is_terminal
from harness.scheduler import queue as q
from harness.scheduler.cache import SchedulerCache


def assigned(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def node_scheduling_changed(old: Obj, new: Obj) -> bool:
    """Upstream's nodeSchedulingPropertiesChange: what a kubelet heartbeat does not touch."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    old_status, new_status = old.get("status") or {}, new.get("status") or {}

    def conditions(status: dict[str, Any]) -> list[tuple[Any, Any]]:
        return [(c.get("type"), c.get("status")) for c in status.get("conditions") or ()]

    return (bool(old_spec.get("unschedulable")) != bool(new_spec.get("unschedulable"))
            or old_spec.get("taints") != new_spec.get("taints")
            or meta.labels_of(old) != meta.labels_of(new)
            or old_status.get("allocatable") != new_status.get("allocatable")
            or conditions(old_status) != conditions(new_status))


class EventHandlers:
    """The callbacks for the pod and node informers (plain functions, called on the loop)."""

    def __init__(self, cache: SchedulerCache, queue: q.SchedulingQueue, *, scheduler_name: str) -> None:
        self.cache = cache
        self.queue = queue
        self.scheduler_name = scheduler_name

    def responsible_for(self, pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        return spec.get("schedulerName", "default-scheduler") == self.scheduler_name

    def _pending(self, pod: Obj) -> bool:
        return not meta.is_terminating(pod) and not is_terminal(pod) and self.responsible_for(pod)

    # -- pods -----------------------------------------------------------------------------------

    def on_pod_add(self, pod: Obj) -> None:
        if assigned(pod):
            self.cache.add_pod(pod)
        elif self._pending(pod):
            self.queue.add(pod)

    def on_pod_update(self, old: Obj, new: Obj) -> None:
        if assigned(new):
            if not assigned(old):
                self.queue.delete(old)  # the binding came back
                self.cache.add_pod(new)
                return
            self.cache.update_pod(new)
            if is_terminal(new) and not is_terminal(old):
                self.queue.move_all_to_active_or_backoff(q.ASSIGNED_POD_DELETE)
            elif q.pod_changed(old, new):
                self.queue.move_all_to_active_or_backoff(q.ASSIGNED_POD_UPDATE)
        elif self._pending(new):
            self.queue.update(old, new)
        else:
            self.queue.delete(new)

    def on_pod_delete(self, pod: Obj) -> None:
        if assigned(pod):
            self.cache.remove_pod(pod)
            self.queue.move_all_to_active_or_backoff(q.ASSIGNED_POD_DELETE)
        else:
            self.queue.delete(pod)

    # -- nodes ----------------------------------------------------------------------------------

    def on_node_add(self, node: Obj) -> None:
        self.cache.add_node(node)
        self.queue.move_all_to_active_or_backoff(q.NODE_ADD)

    def on_node_update(self, old: Obj, new: Obj) -> None:
        self.cache.update_node(new)
        if node_scheduling_changed(old, new):
            self.queue.move_all_to_active_or_backoff(q.NODE_UPDATE)

    def on_node_delete(self, node: Obj) -> None:
        self.cache.remove_node(node)

    def pod_callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_add": self.on_pod_add, "on_update": self.on_pod_update, "on_delete": self.on_pod_delete}

    def node_callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_add": self.on_node_add, "on_update": self.on_node_update, "on_delete": self.on_node_delete}
