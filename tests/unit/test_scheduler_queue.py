"""The scheduling queue (priority, backoff, moves on cluster events) and the informer handlers feeding it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.scheduler import queue as q
from harness.scheduler.cache import SchedulerCache
from harness.scheduler.eventhandlers import EventHandlers
from harness.scheduler.framework import PodInfo
from harness.scheduler.queue import SchedulingQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pod(name: str, *, priority: int | None = None, created: str = "2026-01-01T00:00:00Z",
        node_name: str = "", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"schedulerName": "default-scheduler", "containers": [{"name": "c", "image": "i"}],
                            **spec}
    if priority is not None:
        body["priority"] = priority
    if node_name:
        body["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": body}


def queue(clock: Clock, **kw: Any) -> SchedulingQueue:
    return SchedulingQueue(clock=clock, **kw)


def popped(sq: SchedulingQueue) -> list[str]:
    names = []
    while (qp := sq.try_pop()) is not None:
        names.append(qp.pod["metadata"]["name"])
    return names


def test_active_queue_orders_by_priority_then_creation_then_arrival() -> None:
    sq = queue(Clock())
    sq.add(pod("late", created="2026-01-01T00:00:05Z"))
    sq.add(pod("early", created="2026-01-01T00:00:01Z"))
    sq.add(pod("urgent", priority=1000, created="2026-01-01T00:00:09Z"))
    sq.add(pod("late-twin", created="2026-01-01T00:00:05Z"))
    sq.add(pod("low", priority=-5, created="2026-01-01T00:00:00Z"))
    assert popped(sq) == ["urgent", "early", "late", "late-twin", "low"]


def test_priority_change_resorts_a_waiting_pod() -> None:
    sq = queue(Clock())
    sq.add(pod("a", created="2026-01-01T00:00:01Z"))
    sq.add(pod("b", created="2026-01-01T00:00:02Z"))
    sq.update(pod("b", created="2026-01-01T00:00:02Z"), pod("b", priority=10, created="2026-01-01T00:00:02Z"))
    assert popped(sq) == ["b", "a"]
    assert sq.pending() == {"active": 0, "backoff": 0, "unschedulable": 0}


def test_backoff_starts_at_one_second_and_doubles_to_ten() -> None:
    sq = queue(Clock())
    assert [sq.backoff_duration(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_failed_pod_waits_out_its_backoff() -> None:
    clock = Clock()
    sq = queue(clock)
    sq.add(pod("a"))
    for attempt, wait in ((1, 1.0), (2, 2.0), (3, 4.0)):
        qp = sq.try_pop()
        assert qp is not None and qp.attempts == attempt
        sq.requeue(qp, unschedulable=False)  # an error: straight to backoffQ
        assert sq.where("ns/a") == q.BACKOFF
        clock.now += wait - 0.01
        assert sq.try_pop() is None
        clock.now += 0.01
    assert popped(sq) == ["a"]


def test_unschedulable_pod_waits_for_a_cluster_event() -> None:
    clock = Clock()
    sq = queue(clock)
    sq.add(pod("a"))
    qp = sq.try_pop()
    assert qp is not None
    sq.requeue(qp, unschedulable=True)
    assert sq.pending() == {"active": 0, "backoff": 0, "unschedulable": 1}
    clock.now += 30
    assert sq.try_pop() is None  # backoff is long over, but nothing changed
    sq.move_all_to_active_or_backoff(q.NODE_ADD)
    assert popped(sq) == ["a"]


def test_moved_pod_still_backing_off_goes_to_backoff() -> None:
    clock = Clock()
    sq = queue(clock)
    sq.add(pod("a"))
    qp = sq.try_pop()
    assert qp is not None
    sq.requeue(qp, unschedulable=True)
    clock.now += 0.5
    sq.move_all_to_active_or_backoff(q.ASSIGNED_POD_DELETE)
    assert sq.where("ns/a") == q.BACKOFF
    assert sq.try_pop() is None
    clock.now += 0.5
    assert popped(sq) == ["a"]


def test_event_during_an_attempt_sends_the_failed_pod_to_backoff_not_unschedulable() -> None:
    clock = Clock()
    sq = queue(clock)
    sq.add(pod("a"))
    qp = sq.try_pop()
    assert qp is not None
    sq.move_all_to_active_or_backoff(q.NODE_ADD)  # e.g. a node joined while we were filtering
    sq.requeue(qp, unschedulable=True)
    assert sq.where("ns/a") == q.BACKOFF
    clock.now += 1
    assert popped(sq) == ["a"]


def test_unschedulable_pods_are_retried_after_the_timeout() -> None:
    clock = Clock()
    sq = queue(clock, unschedulable_timeout=60.0)
    sq.add(pod("a"))
    sq.add(pod("b"))
    first = sq.try_pop()
    assert first is not None
    sq.requeue(first, unschedulable=True)
    clock.now += 20
    second = sq.try_pop()
    assert second is not None
    sq.requeue(second, unschedulable=True)
    clock.now += 40
    assert popped(sq) == ["a"]
    clock.now += 20
    assert popped(sq) == ["b"]


def test_unschedulable_pod_updated_in_spec_is_retried_but_not_for_status() -> None:
    clock = Clock()
    sq = queue(clock)
    sq.add(pod("a"))
    qp = sq.try_pop()
    assert qp is not None
    sq.requeue(qp, unschedulable=True)
    clock.now += 5
    with_status = {**pod("a"), "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}}
    sq.update(pod("a"), with_status)
    assert sq.where("ns/a") == q.UNSCHEDULABLE
    sq.update(with_status, pod("a", nodeSelector={"disk": "hdd"}))
    assert popped(sq) == ["a"]


def test_deleted_pod_leaves_every_queue() -> None:
    clock = Clock()
    sq = queue(clock)
    sq.add(pod("a"))
    sq.add(pod("b"))
    sq.delete(pod("a"))
    qp = sq.try_pop()
    assert qp is not None and qp.key == "ns/b"
    sq.delete(pod("b"))
    sq.requeue(qp, unschedulable=True)  # the attempt ends after the delete: nothing to requeue
    assert len(sq) == 0 and sq.pending() == {"active": 0, "backoff": 0, "unschedulable": 0}


async def test_pop_waits_for_an_add_and_for_a_backoff_to_end() -> None:
    sq = SchedulingQueue(initial_backoff=0.05)
    waiter = asyncio.create_task(sq.pop())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    sq.add(pod("a"))
    qp = await asyncio.wait_for(waiter, 1)
    sq.requeue(qp, unschedulable=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    again = await asyncio.wait_for(sq.pop(), 1)
    assert again.key == "ns/a" and loop.time() - started >= 0.04


async def test_closed_queue_ends_pop() -> None:
    sq = SchedulingQueue()
    waiter = asyncio.create_task(sq.pop())
    await asyncio.sleep(0)
    sq.close()
    with pytest.raises(q.QueueClosed):
        await asyncio.wait_for(waiter, 1)


# -- informer events -----------------------------------------------------------------------------


def node(name: str, *, labels: dict[str, str] | None = None, heartbeat: str = "t0") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {}, "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
                                   "conditions": [{"type": "Ready", "status": "True",
                                                   "lastHeartbeatTime": heartbeat}]}}


def handlers(clock: Clock) -> tuple[EventHandlers, SchedulingQueue, SchedulerCache]:
    sq = queue(clock)
    cache = SchedulerCache()
    return EventHandlers(cache, sq, scheduler_name="default-scheduler"), sq, cache


def unschedulable(sq: SchedulingQueue, clock: Clock, name: str) -> None:
    sq.add(pod(name))
    qp = sq.try_pop()
    assert qp is not None
    sq.requeue(qp, unschedulable=True)
    clock.now += 20


def test_heartbeats_do_not_move_unschedulable_pods_but_label_changes_do() -> None:
    clock = Clock()
    h, sq, _ = handlers(clock)
    h.on_node_add(node("n"))
    unschedulable(sq, clock, "a")
    h.on_node_update(node("n"), node("n", heartbeat="t1"))
    assert sq.where("ns/a") == q.UNSCHEDULABLE
    h.on_node_update(node("n", heartbeat="t1"), node("n", labels={"disk": "ssd"}, heartbeat="t1"))
    assert sq.where("ns/a") == q.ACTIVE


def test_only_pods_for_this_scheduler_are_queued() -> None:
    h, sq, _ = handlers(Clock())
    h.on_pod_add(pod("mine"))
    h.on_pod_add(pod("theirs", schedulerName="other-scheduler"))
    h.on_pod_add({**pod("leaving"), "metadata": {**pod("leaving")["metadata"], "deletionTimestamp": "x"}})
    h.on_pod_add(pod("bound", node_name="n"))
    assert popped(sq) == ["mine"]


def test_binding_coming_back_leaves_the_queue_and_confirms_the_assumption() -> None:
    clock = Clock()
    h, sq, cache = handlers(clock)
    h.on_node_add(node("n"))
    h.on_pod_add(pod("a"))
    qp = sq.try_pop()
    assert qp is not None
    cache.assume(PodInfo(pod("a", node_name="n")), "n")
    h.on_pod_update(pod("a"), pod("a", node_name="n"))
    assert sq.where("ns/a") == "" and not cache.is_assumed("uid-a") and cache.pod_count() == 1


def test_deleting_a_bound_pod_retries_unschedulable_ones() -> None:
    clock = Clock()
    h, sq, cache = handlers(clock)
    h.on_pod_add(pod("running", node_name="n"))
    unschedulable(sq, clock, "a")
    h.on_pod_delete(pod("running", node_name="n"))
    assert cache.pod_count() == 0
    assert sq.where("ns/a") == q.ACTIVE
