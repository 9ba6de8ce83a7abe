"""The aggregator's log store: layout by day and source, queries and their filters, retention, following."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.logging.forward import Entry
from harness.logging.logstore import Filter, LogStore, LogStoreError, day_of, path_part, source_of

T0 = datetime(2026, 11, 26, 2, 40, 1, 123000, tzinfo=UTC).timestamp()
DAY = 86400.0


def component(node: str, name: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"node": node, "component": name, "message": message, **extra}


def container(node: str, ns: str, pod: str, name: str, message: str, stream: str = "stdout") -> dict[str, Any]:
    return {"node": node, "namespace": ns, "pod": pod, "container": name, "stream": stream, "message": message}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "logs", retention_days=7)
    yield s
    s.close()


def fill(store: LogStore) -> None:
    store.append("harness.component.kubelet", [
        Entry(T0 + 1, component("worker-1", "kubelet", "started pod web")),
        Entry(T0 + 3, component("worker-1", "kubelet", "probe failed", level="warning")),
    ])
    store.append("harness.component.apiserver", [Entry(T0 + 2, component("master-1", "apiserver", "GET /api"))])
    store.append("harness.pod.default.web-abc.httpd", [
        Entry(T0 + 4, container("worker-2", "default", "web-abc", "httpd", "GET / 200")),
        Entry(T0 + 5, container("worker-2", "default", "web-abc", "httpd", "oops", stream="stderr")),
    ])
    store.append("harness.pod.kube-system.dns-x.dns", [
        Entry(T0 + 6, container("worker-2", "kube-system", "dns-x", "dns", "query A web")),
    ])


def messages(records: list[dict[str, Any]]) -> list[str]:
    return [r["message"] for r in records]


# --------------------------------------------------------------------------------------------------- layout


def test_files_by_utc_day_and_source(store: LogStore) -> None:
    fill(store)
    day = store.root / "2026-11-26"
    files = sorted(str(p.relative_to(day)) for p in day.rglob("*.jsonl"))
    assert files == ["master-1/apiserver.jsonl", "worker-1/kubelet.jsonl",
                     "worker-2/pods/default_web-abc_httpd.jsonl", "worker-2/pods/kube-system_dns-x_dns.jsonl"]
    lines = (day / "worker-1/kubelet.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {"time": T0 + 3, "node": "worker-1", "component": "kubelet",
                                    "message": "probe failed", "level": "warning"}


def test_day_is_the_event_time_utc_day(store: LogStore) -> None:
    midnight = datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    store.append("t", [Entry(midnight - 0.001, component("n", "c", "before")),
                       Entry(midnight, component("n", "c", "at"))])
    assert day_of(midnight - 0.001) == "2026-11-26"
    assert (store.root / "2026-11-26/n/c.jsonl").read_text().count("\n") == 1
    assert (store.root / "2026-11-27/n/c.jsonl").read_text().count("\n") == 1


def test_path_parts_are_sanitized() -> None:
    assert path_part("worker-1") == "worker-1"
    assert path_part("app.access") == "app.access"
    assert path_part("../../etc/passwd") == "______etc_passwd"
    assert path_part("a/b") == "a_b"
    assert path_part("..") == "__"
    assert path_part(".hidden") == "_hidden"
    assert path_part("") == "_"
    assert path_part("x" * 500) == "x" * 200
    assert source_of("t", component("../n", "a/../b", "m")) == "___n/a____b"
    assert source_of("../../x", {"message": "m"}) == "other/______x"


def test_hostile_names_stay_inside_the_root(store: LogStore) -> None:
    store.append("../../escape", [Entry(T0, {"node": "../..", "component": "../../x", "message": "m"})])
    store.append("../../escape", [Entry(T0, {"message": "not ours"})])
    written = [p for p in store.root.parent.rglob("*.jsonl")]
    assert written and all(store.root in p.parents for p in written)
    assert messages(store.query(node="../..")) == ["m"]


def test_records_of_other_senders(store: LogStore) -> None:
    store.append("app.access", [Entry(T0, {"path": "/", "status": 200}), Entry(T0 + 1, {"message": "hi"})])
    store.append("app.access", [Entry(T0 + 2, {"component": "no node", "message": "half"})])
    assert (store.root / "2026-11-26/other/app.access.jsonl").exists()
    records = store.query()
    assert records[0] == {"time": T0, "path": "/", "status": 200, "node": "-", "tag": "app.access"}
    assert messages(records[1:]) == ["hi", "half"]
    assert messages(store.query(node="-", grep=re.compile("ha"))) == ["half"]
    assert [r["status"] for r in store.query(grep=re.compile('"status": ?200'))] == [200]


def test_values_json_has_no_type_for_become_text(store: LogStore) -> None:
    store.append("t", [Entry(T0, {"message": "m", "raw": [b"\xff\x00"], "odd": "\udcff"})])
    (record,) = store.query()
    assert record["raw"] == ["\ufffd\x00"]
    assert record["odd"] == "\udcff"


def test_an_unwritable_root_is_our_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(LogStoreError, match="cannot create"):
        LogStore(tmp_path / "file" / "logs")


def test_files_stay_open_in_a_bounded_cache(tmp_path: Path) -> None:
    store = LogStore(tmp_path, open_files=2)
    try:
        for i in range(5):
            store.append("t", [Entry(T0, component("n", f"c{i}", "m"))])
        store.append("t", [Entry(T0, component("n", "c0", "again"))])
        assert len(store._files) == 2
        assert messages(store.query(component="c0")) == ["m", "again"]
    finally:
        store.close()


# --------------------------------------------------------------------------------------------------- queries


def test_query_sorted_by_time_across_files(store: LogStore) -> None:
    fill(store)
    assert [r["time"] for r in store.query()] == [T0 + i for i in range(1, 7)]


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"node": "worker-1"}, ["started pod web", "probe failed"]),
    ({"component": "apiserver"}, ["GET /api"]),
    ({"node": "worker-1", "component": "apiserver"}, []),
    ({"namespace": "default"}, ["GET / 200", "oops"]),
    ({"namespace": "default", "pod": "web-abc", "container": "httpd"}, ["GET / 200", "oops"]),
    ({"pod": "dns-x"}, ["query A web"]),
    ({"container": "nope"}, []),
    ({"grep": re.compile(r"web$")}, ["started pod web", "query A web"]),
    ({"grep": re.compile("^GET")}, ["GET /api", "GET / 200"]),
    ({"since": T0 + 4}, ["GET / 200", "oops", "query A web"]),
    ({"since": T0 + 2, "until": T0 + 4}, ["GET /api", "probe failed"]),
    ({"limit": 2}, ["oops", "query A web"]),
    ({"limit": 0}, []),
    ({"node": "worker-2", "grep": re.compile("o"), "limit": 1}, ["oops"]),
])
def test_query_filters(store: LogStore, kwargs: dict[str, Any], expected: list[str]) -> None:
    fill(store)
    assert messages(store.query(**kwargs)) == expected


def test_since_skips_earlier_days(store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.append("t", [Entry(T0 - 2 * DAY, component("n", "c", "old")), Entry(T0, component("n", "c", "new"))])
    read: list[Path] = []
    original = LogStore._read

    def spy(path: Path, flt: Filter, size: int | None) -> Any:
        read.append(path)
        return original(path, flt, size)

    monkeypatch.setattr(LogStore, "_read", staticmethod(spy))
    assert messages(store.query(since=T0 - 60)) == ["new"]
    assert [p.parent.parent.name for p in read] == ["2026-11-26"]


def test_filters_pick_files_by_path() -> None:
    assert Filter(node="worker-1").may_hold(("worker-1", "kubelet"))
    assert not Filter(node="worker-2").may_hold(("worker-1", "kubelet"))
    assert not Filter(component="kubelet").may_hold(("worker-1", "pods", "default_web_httpd"))
    assert not Filter(pod="web").may_hold(("worker-1", "kubelet"))
    assert Filter(namespace="default", pod="web").may_hold(("n", "pods", "default_web_httpd"))
    assert not Filter(namespace="default", pod="api").may_hold(("n", "pods", "default_web_httpd"))
    assert not Filter(container="sidecar").may_hold(("n", "pods", "default_web_httpd"))
    assert Filter(node="worker-1", component="kubelet").may_hold(("other", "app"))


def test_a_torn_last_line_is_skipped(store: LogStore) -> None:
    fill(store)
    with open(store.root / "2026-11-26/worker-1/kubelet.jsonl", "ab") as f:
        f.write(b'{"time": 1, "node": "worker-1", "compo')
    assert messages(store.query(node="worker-1")) == ["started pod web", "probe failed"]


# --------------------------------------------------------------------------------------------------- retention


def test_expire_removes_days_past_retention(store: LogStore) -> None:
    for days_ago in range(10):
        store.append("t", [Entry(T0 - days_ago * DAY, component("n", "c", f"{days_ago} days ago"))])
    removed = store.expire(T0)
    assert removed == ["2026-11-17", "2026-11-18"]
    assert store.days()[0] == "2026-11-19"
    assert len(store.days()) == 8
    assert messages(store.query())[0] == "7 days ago"
    assert all(not path.is_relative_to(store.root / "2026-11-18") for path in store._files)
    assert store.expire(T0) == []
    store.append("t", [Entry(T0, component("n", "c", "still writable"))])
    assert messages(store.query())[-1] == "still writable"


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(LogStoreError, match="retention_days"):
        LogStore(tmp_path, retention_days=0)


# --------------------------------------------------------------------------------------------------- following


async def next_record(iterator: Any) -> dict[str, Any]:
    async with asyncio.timeout(5):
        record: dict[str, Any] = await anext(iterator)
        return record


async def test_follow_delivers_new_matching_records(store: LogStore) -> None:
    fill(store)
    async with contextlib.aclosing(store.follow(node="worker-1")) as following:
        first = asyncio.ensure_future(next_record(following))
        await asyncio.sleep(0)  # one step of `first`: the generator subscribes, then waits
        assert store._subscriptions
        store.append("t", [Entry(T0 + 10, component("worker-2", "kubelet", "not this node"))])
        await store.append_async("t", [Entry(T0 + 11, component("worker-1", "kubelet", "new"))])
        assert (await first)["message"] == "new"
    assert not store._subscriptions


async def test_follow_with_backlog_gives_each_record_once(store: LogStore) -> None:
    fill(store)
    got: list[str] = []
    async with contextlib.aclosing(store.follow(namespace="default", backlog=True, limit=1)) as following:
        got.append((await next_record(following))["message"])
        store.append("t", [Entry(T0 + 20, container("worker-2", "default", "web-abc", "httpd", "later"))])
        got.append((await next_record(following))["message"])
    assert got == ["oops", "later"]


async def test_a_closed_subscription_ends(store: LogStore) -> None:
    sub = store.subscribe(Filter())
    store.append("t", [Entry(T0, component("n", "c", "m"))])
    async with asyncio.timeout(5):
        assert [r["message"] for r in await sub.get_batch()] == ["m"]
        store.unsubscribe(sub)
        assert await sub.get_batch() == []
        assert await sub.get() is None
