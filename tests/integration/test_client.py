"""The async REST client against the apiserver: verbs, our errors, failover, watch."""

from __future__ import annotations

import asyncio

import pytest

from harness.api import errors, registry
from harness.client.rest import Client
from tests.integration.apiserver_fixtures import ApiServerProcess, free_port

CONFIGMAPS = registry.by_path("", "v1", "configmaps")


async def test_verbs_and_errors(apiserver: ApiServerProcess, ns: str) -> None:
    async with Client.for_url(apiserver.url) as c:
        made = await c.create(CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "1"}}, ns)
        assert made["metadata"]["uid"]
        with pytest.raises(errors.AlreadyExists):
            await c.create(CONFIGMAPS, {"metadata": {"name": "a"}}, ns)
        patched = await c.patch(CONFIGMAPS, "a", {"data": {"k": "2"}}, ns)
        assert patched["data"] == {"k": "2"}
        with pytest.raises(errors.Conflict):
            await c.update(CONFIGMAPS, made)  # stale resourceVersion
        lst = await c.list(CONFIGMAPS, ns)
        assert [o["metadata"]["name"] for o in lst["items"]] == ["a"]
        await c.delete(CONFIGMAPS, "a", ns)
        with pytest.raises(errors.NotFound):
            await c.get(CONFIGMAPS, "a", ns)


async def test_fails_over_to_the_next_apiserver(apiserver: ApiServerProcess, ns: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with Client.for_url(dead, apiserver.url) as c:
        got = await c.get(registry.by_path("", "v1", "namespaces"), ns)
        assert got["metadata"]["name"] == ns
        assert c.server == apiserver.url


async def test_list_all_reads_every_page(apiserver: ApiServerProcess, ns: str) -> None:
    async with Client.for_url(apiserver.url) as c:
        for i in range(7):
            await c.create(CONFIGMAPS, {"metadata": {"name": f"c{i}"}}, ns)
        everything = await c.list_all(CONFIGMAPS, ns, page=3)
        assert [o["metadata"]["name"] for o in everything["items"]] == [f"c{i}" for i in range(7)]
        assert "continue" not in everything["metadata"]


async def test_watch_yields_events(apiserver: ApiServerProcess, ns: str) -> None:
    async with Client.for_url(apiserver.url) as c:
        rv = (await c.list(CONFIGMAPS, ns))["metadata"]["resourceVersion"]

        async def first_two() -> list[str]:
            seen = []
            # No bookmarks: the server's periodic one (every 10 s) could land between the two events.
            async for ev in c.watch(CONFIGMAPS, ns, resource_version=rv, allow_bookmarks=False):
                seen.append(ev.type)
                if len(seen) == 2:
                    return seen
            return seen

        task = asyncio.create_task(first_two())
        await c.create(CONFIGMAPS, {"metadata": {"name": "w"}}, ns)
        await c.delete(CONFIGMAPS, "w", ns)
        assert await asyncio.wait_for(task, 10) == ["ADDED", "DELETED"]
