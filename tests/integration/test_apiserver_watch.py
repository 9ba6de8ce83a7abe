"""Watch over HTTP: order, resumption without gaps, selectors, and 410 after compaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.integration.apiserver_fixtures import Api, start_apiserver, stop_apiserver, wait_for


def cm(name: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data or {}}


async def events(api: Api, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
    async with api.session.get(api.base + path, params={"watch": "1", **params}) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.strip():
                yield orjson.loads(line)


async def collect(api: Api, path: str, params: dict[str, str], count: int, within: float = 10) -> list[Any]:
    got: list[Any] = []

    async def run() -> None:
        async for ev in events(api, path, params):
            got.append(ev)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(run(), within)
    except TimeoutError:
        raise AssertionError(f"expected {count} watch events within {within}s, got {len(got)}: "
                             f"{[(e['type'], e['object']['metadata'].get('name')) for e in got]}") from None
    return got


async def test_watch_delivers_added_modified_deleted_in_order(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    status, lst = await api.get(base)
    assert status == 200
    rv = lst["metadata"]["resourceVersion"]
    watcher = asyncio.create_task(collect(api, base, {"resourceVersion": rv}, 3))
    status, created = await api.post(base, cm("a", {"k": "1"}))
    assert status == 201, created
    status, updated = await api.put(f"{base}/a", {**created, "data": {"k": "2"}})
    assert status == 200, updated
    status, _ = await api.delete(f"{base}/a")
    assert status == 200
    got = await watcher
    assert [e["type"] for e in got] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e["object"]["data"]["k"] for e in got] == ["1", "2", "2"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in got]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3, rvs
    assert rvs[0] == int(created["metadata"]["resourceVersion"])


async def test_watch_resumes_from_a_resource_version_without_a_gap(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    revisions = []
    for i in range(10):
        status, obj = await api.post(base, cm(f"c{i}"))
        assert status == 201
        revisions.append(obj["metadata"]["resourceVersion"])
    # Resume after the 4th create: exactly the 6 later creates, in order.
    got = await collect(api, base, {"resourceVersion": revisions[3]}, 6)
    assert [e["object"]["metadata"]["name"] for e in got] == [f"c{i}" for i in range(4, 10)]
    assert all(e["type"] == "ADDED" for e in got)


async def test_watch_without_resource_version_starts_with_existing_objects(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for name in ("x", "y"):
        assert (await api.post(base, cm(name)))[0] == 201
    got = await collect(api, base, {}, 2)
    assert sorted(e["object"]["metadata"]["name"] for e in got) == ["x", "y"]
    assert {e["type"] for e in got} == {"ADDED"}


async def test_watch_with_label_selector_sees_objects_enter_and_leave(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    _, lst = await api.get(base)
    watcher = asyncio.create_task(collect(api, base, {"resourceVersion": lst["metadata"]["resourceVersion"],
                                                      "labelSelector": "app=web"}, 2))
    _, obj = await api.post(base, cm("s", labels={"app": "db"}))
    obj["metadata"]["labels"] = {"app": "web"}
    status, obj = await api.put(f"{base}/s", obj)
    assert status == 200, obj
    obj["metadata"]["labels"] = {"app": "db"}
    status, obj = await api.put(f"{base}/s", obj)
    assert status == 200, obj
    got = await watcher
    assert [e["type"] for e in got] == ["ADDED", "DELETED"]


async def test_watch_from_a_compacted_revision_answers_410_expired(etcd: Any, tmp_path: Path) -> None:
    # A server of its own that compacts etcd every half second, as upstream does every 5 minutes.
    server = start_apiserver(etcd.endpoint, tmp_path, extra=["--compaction-interval", "0.5"])
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, server.url)
            ns = f"compact-{uuid.uuid4().hex[:8]}"
            assert (await api.post("/api/v1/namespaces", {"metadata": {"name": ns}}))[0] == 201
            base = f"/api/v1/namespaces/{ns}/configmaps"
            _, first = await api.post(base, cm("old"))
            old_rv = first["metadata"]["resourceVersion"]

            async def expired() -> Any:
                await api.post(base, {"metadata": {"generateName": "n"}, "data": {}})
                got = await collect(api, base, {"resourceVersion": old_rv}, 1)
                return got[0] if got[0]["type"] == "ERROR" else None

            error = await wait_for(expired, within=20, interval=0.2, what="a watch from a compacted revision to fail")
            status = error["object"]
            assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired", status
            # A watch from the list's current revision still works after compaction.
            _, lst = await api.get(base)
            watcher = asyncio.create_task(collect(api, base, {"resourceVersion": lst["metadata"]["resourceVersion"]},
                                                  1))
            await api.post(base, cm("new"))
            assert (await watcher)[0]["object"]["metadata"]["name"] == "new"
    finally:
        stop_apiserver(server)


async def test_watch_timeout_seconds_ends_the_stream(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with api.session.get(api.base + base, params={"watch": "1", "timeoutSeconds": "1"},
                               timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert body == b""
    assert loop.time() - start < 5


async def etcd_watchers(etcd: Any) -> int:
    async with aiohttp.ClientSession() as s, s.get(etcd.endpoint + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    raise AssertionError("etcd does not report etcd_debugging_mvcc_watcher_total")


async def test_a_hundred_watchers_share_one_etcd_watch(api: Api, ns: str, etcd: Any) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    before = await etcd_watchers(etcd)
    streams = []
    watchers = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # one connection per watch
    try:
        for _ in range(100):
            resp = await watchers.get(api.base + base, params={"watch": "1"})
            assert resp.status == 200
            streams.append(resp)
        during = await etcd_watchers(etcd)
        assert during - before <= 1, f"etcd watchers went from {before} to {during} for 100 API watches"
        await api.post(base, cm("fanout"))
        for resp in streams:
            line = await asyncio.wait_for(resp.content.readline(), 10)
            assert orjson.loads(line)["object"]["metadata"]["name"] == "fanout"
    finally:
        for resp in streams:
            resp.close()
        await watchers.close()
