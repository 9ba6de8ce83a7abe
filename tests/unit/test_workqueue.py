"""The workqueue: de-duplication, one worker per key, backoff, delays, shutdown, metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from harness.machinery.workqueue import WorkQueue, run_workers


async def take(q: WorkQueue) -> str:
    key = await asyncio.wait_for(q.get(), 2)
    assert key is not None
    return key


async def test_adds_of_a_queued_key_coalesce_in_fifo_order() -> None:
    q = WorkQueue("t")
    for key in ["a", "b", "a", "c", "b"]:
        q.add(key)
    assert len(q) == 3
    assert [await take(q) for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_added_while_processing_waits_for_done() -> None:
    q = WorkQueue("t")
    q.add("a")
    assert await take(q) == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a key being processed must not be handed out again"
    q.done("a")
    assert len(q) == 1
    assert await take(q) == "a"
    q.done("a")
    assert len(q) == 0


async def test_no_key_is_processed_by_two_workers_at_once() -> None:
    q = WorkQueue("t")
    active: set[str] = set()
    overlaps: list[str] = []
    runs: dict[str, int] = {}
    finished = asyncio.Event()

    async def reconcile(key: str) -> None:
        if key in active:
            overlaps.append(key)
        active.add(key)
        runs[key] = runs.get(key, 0) + 1
        await asyncio.sleep(0.01)
        if runs[key] < 3:
            q.add(key)  # a change arrives while we work
        active.discard(key)
        if all(runs.get(k) == 3 for k in "abcd"):
            finished.set()

    for key in "abcd":
        q.add(key)
    workers = asyncio.create_task(run_workers(q, reconcile, workers=4))
    await asyncio.wait_for(finished.wait(), 5)
    q.shutdown()
    await asyncio.wait_for(workers, 5)
    assert overlaps == []
    assert runs == dict.fromkeys("abcd", 3)


async def test_backoff_doubles_per_failure_up_to_the_cap_and_forget_resets() -> None:
    q = WorkQueue("t", base_delay=0.01, max_delay=0.05)
    assert [q.backoff(n) for n in range(5)] == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])
    assert q.backoff(10_000) == 0.05
    for _ in range(3):
        q.add_rate_limited("k")
    assert q.num_requeues("k") == 3
    q.forget("k")
    assert q.num_requeues("k") == 0


async def test_rate_limited_key_comes_back_after_its_delay() -> None:
    q = WorkQueue("t", base_delay=0.3)
    loop = asyncio.get_running_loop()
    q.add_rate_limited("k")  # after 0.3 s
    q.add_rate_limited("k")  # after 0.6 s, but the earlier pending add wins
    start = loop.time()
    assert len(q) == 0
    assert await take(q) == "k"
    waited = loop.time() - start
    assert 0.28 <= waited < 0.55, f"came back after {waited:.3f}s, not 0.3s"


async def test_add_after_keeps_the_earliest_delay_and_zero_adds_now() -> None:
    q = WorkQueue("t")
    loop = asyncio.get_running_loop()
    q.add_after("late", 3)
    q.add_after("late", 0.05)
    q.add_after("now", 0)
    assert len(q) == 1
    assert await take(q) == "now"
    start = loop.time()
    assert await take(q) == "late"
    assert loop.time() - start < 2, "the earlier of two delays must win"


async def test_failed_reconcile_is_retried_with_backoff_then_forgotten() -> None:
    q = WorkQueue("t", base_delay=0.01)
    calls: list[str] = []
    done = asyncio.Event()

    async def reconcile(key: str) -> None:
        calls.append(key)
        if len(calls) < 3:
            raise RuntimeError("transient")
        done.set()

    q.add("x")
    workers = asyncio.create_task(run_workers(q, reconcile))
    await asyncio.wait_for(done.wait(), 5)
    q.shutdown()
    await asyncio.wait_for(workers, 5)
    assert calls == ["x", "x", "x"]
    assert q.num_requeues("x") == 0, "success must forget the failures"


async def test_shutdown_drains_what_is_queued_then_returns_none() -> None:
    q = WorkQueue("t")
    q.add("a")
    q.add("b")
    q.add_after("later", 10)
    q.shutdown()
    q.add("c")  # refused
    assert await take(q) == "a"
    assert await take(q) == "b"
    assert await asyncio.wait_for(q.get(), 1) is None


async def test_shutdown_wakes_idle_workers() -> None:
    q = WorkQueue("t")
    seen: list[str] = []

    async def reconcile(key: str) -> None:
        seen.append(key)

    workers = asyncio.create_task(run_workers(q, reconcile, workers=3))
    q.add("a")
    await asyncio.sleep(0)
    q.shutdown()
    await asyncio.wait_for(workers, 2)
    assert seen == ["a"]


async def test_a_cancelled_getter_does_not_swallow_a_key() -> None:
    q = WorkQueue("t")
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("a")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "a"


async def test_metrics_have_upstream_names_and_a_name_label() -> None:
    registry = CollectorRegistry()
    q = WorkQueue("pods", registry=registry, base_delay=0.001)
    WorkQueue("nodes", registry=registry)  # a second queue in the same registry is fine

    def value(metric: str) -> float | None:
        return registry.get_sample_value(metric, {"name": "pods"})

    q.add("a")
    q.add("b")
    q.add("a")
    assert value("workqueue_adds_total") == 2
    assert value("workqueue_depth") == 2
    key = await take(q)
    assert value("workqueue_queue_duration_seconds_count") == 1
    assert value("workqueue_depth") == 1
    assert (value("workqueue_unfinished_work_seconds") or 0) >= 0
    assert (value("workqueue_longest_running_processor_seconds") or 0) >= 0
    q.add_rate_limited(key)
    q.done(key)
    assert value("workqueue_retries_total") == 1
    assert value("workqueue_work_duration_seconds_count") == 1
    assert registry.get_sample_value("workqueue_depth", {"name": "nodes"}) == 0
