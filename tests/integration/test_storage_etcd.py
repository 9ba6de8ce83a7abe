"""EtcdBackend against a real etcd: conditional writes, consistent paging, watch, compaction,
failover; and LocalEtcd's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from harness.storage.backend import (
    Compacted,
    Event,
    KeyExists,
    KeyNotFound,
    Page,
    Record,
    RevisionMismatch,
    Unavailable,
)
from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd, free_port

DEADLINE = 10.0


async def collect(events: AsyncIterator[Event], count: int, within: float = DEADLINE) -> list[Event]:
    """The next `count` events, or a failure naming what arrived before the deadline."""
    got: list[Event] = []

    async def run() -> None:
        async for ev in events:
            got.append(ev)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(run(), within)
    except TimeoutError:
        raise AssertionError(f"expected {count} events within {within}s, got {got}") from None
    return got


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = DEADLINE) -> None:
    """Poll `check` (a reading of etcd's state, which cannot notify us) until true or the deadline."""
    async def poll() -> None:
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), within)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


async def etcd_watchers(server: LocalEtcd) -> int:
    """How many watches etcd itself has open (its own metric)."""
    def read() -> int:
        with urllib.request.urlopen(server.endpoint + "/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("etcd_debugging_mvcc_watcher_total "):
                    return int(float(line.split()[1]))
        raise AssertionError("etcd exports no etcd_debugging_mvcc_watcher_total")

    return await asyncio.to_thread(read)


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


# -- create / get / update / delete ------------------------------------------------------------


async def test_create_stores_a_record_at_the_returned_revision_and_a_second_create_raises_key_exists(
        backend: EtcdBackend, prefix: str) -> None:
    key = prefix + "a"
    revision = await backend.create(key, b"one")
    assert await backend.get(key) == Record(key, b"one", revision, revision)
    with pytest.raises(KeyExists) as exc:
        await backend.create(key, b"two")
    assert exc.value.key == key
    assert await backend.get(key) == Record(key, b"one", revision, revision)
    assert await backend.get(prefix + "missing") is None


async def test_update_with_a_stale_revision_raises_revision_mismatch_carrying_the_current_record(
        backend: EtcdBackend, prefix: str) -> None:
    key = prefix + "a"
    created = await backend.create(key, b"1")
    updated = await backend.update(key, b"2", revision=created)
    assert updated > created
    assert await backend.get(key) == Record(key, b"2", updated, created)

    with pytest.raises(RevisionMismatch) as exc:
        await backend.update(key, b"3", revision=created)
    assert exc.value.current == Record(key, b"2", updated, created)
    assert (await backend.get(key)) == Record(key, b"2", updated, created)

    await backend.delete(key)
    with pytest.raises(RevisionMismatch) as exc:
        await backend.update(key, b"4", revision=updated)
    assert exc.value.current is None
    assert await backend.get(key) is None


async def test_concurrent_read_modify_writes_count_exactly_the_successful_updates(
        backend: EtcdBackend, prefix: str) -> None:
    key = prefix + "counter"
    await backend.create(key, b"0")

    async def increment() -> int:
        rec = await backend.get(key)
        assert rec is not None
        return await backend.update(key, str(int(rec.value) + 1).encode(), revision=rec.revision)

    results = await asyncio.gather(*(increment() for _ in range(100)), return_exceptions=True)
    wins = [r for r in results if isinstance(r, int)]
    losses = [r for r in results if not isinstance(r, int)]
    assert wins, "no update succeeded"
    assert all(isinstance(e, RevisionMismatch) and e.current is not None for e in losses), losses
    final = await backend.get(key)
    assert final is not None
    assert int(final.value) == len(wins), f"counter {final.value!r} after {len(wins)} successful updates"
    assert len(set(wins)) == len(wins) and final.revision == max(wins)


async def test_delete_unconditionally_or_at_a_revision(backend: EtcdBackend, prefix: str) -> None:
    a, b = prefix + "a", prefix + "b"
    created = await backend.create(a, b"x")
    deleted = await backend.delete(a)
    assert deleted > created
    assert await backend.get(a) is None
    with pytest.raises(KeyNotFound):
        await backend.delete(a)

    created = await backend.create(b, b"1")
    updated = await backend.update(b, b"2", revision=created)
    with pytest.raises(RevisionMismatch) as exc:
        await backend.delete(b, revision=created)
    assert exc.value.current == Record(b, b"2", updated, created)
    deleted = await backend.delete(b, revision=updated)
    assert deleted > updated
    assert await backend.get(b) is None
    with pytest.raises(KeyNotFound):
        await backend.delete(b, revision=updated)
    assert await backend.current_revision() >= deleted


# -- list ---------------------------------------------------------------------------------------


async def test_list_pages_read_at_one_revision_never_show_later_writes(backend: EtcdBackend, prefix: str) -> None:
    keys = [f"{prefix}k{i:02d}" for i in range(10)]
    for key in keys:
        await backend.create(key, b"v0")
    await backend.create(prefix.rstrip("/") + "-sibling/k", b"not under the prefix")

    page = await backend.list(prefix, limit=3)
    snapshot = page.revision
    assert [r.key for r in page.records] == keys[:3]
    assert (page.more, page.remaining) == (True, 7)
    seen = list(page.records)
    written = 0
    while page.more:
        # Writes between pages: in the range still to read a new key, a changed value and a
        # deletion; and a change to a key already read.
        written += 1
        await backend.create(f"{prefix}k08-{written}", b"new")
        for key in (keys[-1], keys[0]):
            rec = await backend.get(key)
            assert rec is not None
            await backend.update(key, f"v{written}".encode(), revision=rec.revision)
        await backend.delete(keys[-2 - written])
        page = await backend.list(prefix, revision=snapshot, limit=3, start=page.records[-1].key + "\0")
        assert page.revision == snapshot
        seen.extend(page.records)

    assert written == 3
    assert [r.key for r in seen] == keys
    assert all(r.value == b"v0" and r.revision <= snapshot for r in seen)
    assert page.remaining == 0

    now = await backend.list(prefix)
    assert now.revision > snapshot and not now.more and now.remaining == 0
    assert len(now.records) == len(keys)  # three created, three deleted
    assert {r.key for r in now.records} >= {f"{prefix}k08-{i}" for i in (1, 2, 3)}
    assert await backend.count(prefix) == len(now.records)


async def test_list_of_an_empty_prefix_is_an_empty_page_at_the_current_revision(
        backend: EtcdBackend, prefix: str) -> None:
    page = await backend.list(prefix, limit=5)
    assert page == Page([], page.revision, False, 0)
    assert page.revision <= await backend.current_revision()
    assert await backend.count(prefix) == 0


# -- watch --------------------------------------------------------------------------------------


async def test_watch_delivers_added_modified_deleted_in_order(backend: EtcdBackend, prefix: str) -> None:
    key = prefix + "a"
    start = await backend.current_revision()
    async with contextlib.aclosing(backend.watch(prefix, revision=start)) as events:
        first = asyncio.create_task(collect(events, 2))
        created = await backend.create(key, b"1")
        await backend.create(prefix.rstrip("/") + "-sibling/a", b"elsewhere")
        updated = await backend.update(key, b"2", revision=created)
        deleted = await backend.delete(key, revision=updated)
        recreated = await backend.create(key, b"again")
        got = await first + await collect(events, 2)
    assert got == [
        Event("ADDED", key, b"1", created),
        Event("MODIFIED", key, b"2", updated, prev_value=b"1"),
        Event("DELETED", key, b"2", deleted, prev_value=b"2"),
        Event("ADDED", key, b"again", recreated),
    ]


async def test_watch_resumes_from_a_revision_without_a_gap(backend: EtcdBackend, prefix: str) -> None:
    revisions = [await backend.create(f"{prefix}k{i}", b"x") for i in range(10)]
    async with contextlib.aclosing(backend.watch(prefix, revision=revisions[3])) as events:
        got = await collect(events, 3)
    assert [e.revision for e in got] == revisions[4:7]
    async with contextlib.aclosing(backend.watch(prefix, revision=got[-1].revision)) as events:
        rest = await collect(events, 3)
    assert [(e.type, e.key) for e in rest] == [("ADDED", f"{prefix}k{i}") for i in range(7, 10)]
    assert [e.revision for e in rest] == revisions[7:]


async def test_watch_is_cancelled_in_etcd_when_the_consumer_stops(
        etcd: LocalEtcd, backend: EtcdBackend, prefix: str) -> None:
    before = await etcd_watchers(etcd)
    start = await backend.current_revision()
    await backend.create(prefix + "a", b"x")

    events = backend.watch(prefix, revision=start)
    await collect(events, 1)
    await eventually(lambda: _equals(etcd_watchers(etcd), before + 1), "etcd to count the open watch")
    await events.aclose()
    await eventually(lambda: _equals(etcd_watchers(etcd), before), "etcd to drop the watch after aclose()")

    consumer = asyncio.create_task(collect(backend.watch(prefix, revision=start), 1000, within=60))
    await eventually(lambda: _equals(etcd_watchers(etcd), before + 1), "the consumer's watch to open")
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await eventually(lambda: _equals(etcd_watchers(etcd), before), "etcd to drop the cancelled task's watch")


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


# -- compaction ---------------------------------------------------------------------------------


async def test_list_and_watch_at_a_compacted_revision_raise_compacted(backend: EtcdBackend, prefix: str) -> None:
    key = prefix + "a"
    r1 = await backend.create(key, b"1")
    r2 = await backend.update(key, b"2", revision=r1)
    r3 = await backend.update(key, b"3", revision=r2)
    await backend.compact(r3)

    with pytest.raises(Compacted) as listed:
        await backend.list(prefix, revision=r1)
    assert listed.value.requested == r1
    with pytest.raises(Compacted) as watched:
        async with contextlib.aclosing(backend.watch(prefix, revision=r1)) as events:
            await collect(events, 1)
    assert (watched.value.requested, watched.value.compact_revision) == (r1, r3)

    # History from the compaction revision on is still there.
    assert (await backend.list(prefix, revision=r3)).records == [Record(key, b"3", r3, r1)]
    async with contextlib.aclosing(backend.watch(prefix, revision=r2)) as events:
        assert [e.revision for e in await collect(events, 1)] == [r3]
    await backend.compact(r2)  # already compacted further: nothing to do


# -- failover -----------------------------------------------------------------------------------


async def test_connect_skips_endpoints_that_refuse(etcd: LocalEtcd, prefix: str) -> None:
    async with EtcdBackend([dead_endpoint(), etcd.endpoint]) as backend:
        revision = await backend.create(prefix + "a", b"x")
        assert await backend.get(prefix + "a") == Record(prefix + "a", b"x", revision, revision)


async def test_connect_raises_unavailable_when_no_endpoint_answers() -> None:
    backend = EtcdBackend([dead_endpoint(), dead_endpoint()])
    with pytest.raises(Unavailable):
        await backend.connect()
    await backend.close()


async def test_calls_fail_over_to_the_next_endpoint_when_the_current_one_dies(
        etcd: LocalEtcd, prefix: str) -> None:
    async with LocalEtcd() as doomed, EtcdBackend([doomed.endpoint, etcd.endpoint]) as backend:
        await backend.create(prefix + "on-doomed", b"x")
        await asyncio.to_thread(doomed.stop)
        # Each endpoint here is its own cluster, so where a call landed shows in the data.
        assert await backend.get(prefix + "on-doomed") is None
        revision = await backend.create(prefix + "on-survivor", b"y")
    async with EtcdBackend([etcd.endpoint]) as direct:
        assert await direct.get(prefix + "on-survivor") == Record(prefix + "on-survivor", b"y", revision, revision)


async def test_calls_and_watches_raise_unavailable_when_the_only_endpoint_dies(prefix: str) -> None:
    async with LocalEtcd() as doomed, EtcdBackend([doomed.endpoint]) as backend:
        start = await backend.current_revision()
        await backend.create(prefix + "a", b"x")
        events = backend.watch(prefix, revision=start)
        await collect(events, 1)
        await asyncio.to_thread(doomed.stop)
        with pytest.raises(Unavailable):
            await backend.get(prefix + "a")
        with pytest.raises(Unavailable):
            await backend.create(prefix + "b", b"y")
        with pytest.raises(Unavailable):
            await asyncio.wait_for(anext(events), DEADLINE)
        await events.aclose()


async def test_watch_resumes_on_the_next_endpoint_after_the_last_delivered_revision(prefix: str) -> None:
    async with LocalEtcd() as doomed, LocalEtcd() as survivor, \
            EtcdBackend([doomed.endpoint, survivor.endpoint]) as backend:
        events = backend.watch(prefix, revision=await backend.current_revision())
        await backend.create(prefix + "a", b"x")
        [delivered] = await collect(events, 1)
        # Each endpoint is its own cluster: give the survivor history on both sides of the
        # resume point, of which the watch must deliver exactly what comes after it.
        async with EtcdBackend([survivor.endpoint]) as direct:
            while await direct.current_revision() < delivered.revision:
                await direct.create(f"{prefix}before-{await direct.current_revision()}", b"old")
            after = await direct.create(prefix + "b", b"y")
        await asyncio.to_thread(doomed.stop)
        [resumed] = await collect(events, 1)
        await events.aclose()
    assert (resumed.type, resumed.key, resumed.revision) == ("ADDED", prefix + "b", after)


async def test_close_ends_open_watches_with_unavailable(etcd: LocalEtcd, prefix: str) -> None:
    backend = EtcdBackend([etcd.endpoint])
    events = backend.watch(prefix, revision=await backend.current_revision())
    await backend.create(prefix + "a", b"x")
    await collect(events, 1)
    waiting = asyncio.create_task(collect(events, 1))
    await backend.current_revision()  # a round trip, by which time `waiting` reads the stream
    await backend.close()
    with pytest.raises(Unavailable):
        await waiting
    with pytest.raises(Unavailable):
        await backend.get(prefix + "a")


# -- LocalEtcd ------------------------------------------------------------------------------------


def test_local_etcd_removes_its_process_and_temp_dir_on_exit() -> None:
    with LocalEtcd() as server:
        pid, directory = server.pid, server.directory
        assert pid is not None and directory.is_dir()
        with urllib.request.urlopen(server.endpoint + "/health", timeout=5) as resp:
            assert b'"true"' in resp.read()
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert not directory.exists()


async def test_local_etcd_detached_keeps_its_data_and_is_stopped_from_its_pid_file(
        tmp_path: Path, prefix: str) -> None:
    directory = tmp_path / "etcd"
    port, peer_port = free_port(), free_port()
    first = LocalEtcd(data_dir=directory, port=port, peer_port=peer_port)
    await first.start(detach=True)
    try:
        assert (directory / "etcd.pid").read_text().strip() == str(first.pid)
        async with EtcdBackend([first.endpoint]) as backend:
            revision = await backend.create(prefix + "kept", b"x")
        later = LocalEtcd(data_dir=directory, port=port, peer_port=peer_port)  # what `harness dev down` knows
        assert later.running_pid() == first.pid
        later.stop()
        assert later.running_pid() is None and not (directory / "etcd.pid").exists()

        again = LocalEtcd(data_dir=directory, port=port, peer_port=peer_port)
        async with again, EtcdBackend([again.endpoint]) as backend:
            assert await backend.get(prefix + "kept") == Record(prefix + "kept", b"x", revision, revision)
        assert (directory / "data").is_dir()
    finally:
        first.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
