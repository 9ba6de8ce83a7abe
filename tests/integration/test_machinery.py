"""Informers and leader election against real apiservers on a real etcd.

The failure tests run extra apiservers of their own (and, for compaction, an etcd of their
own, so the session's history is never compacted under other tests) and stop every one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from harness.api import errors, registry
from harness.client.rest import Client, WatchEvent
from harness.machinery.informer import Informer, index_by_namespace, index_by_node, index_by_owner, running
from harness.machinery.leaderelection import LEASES, LeaderElector
from harness.storage.local import LocalEtcd
from tests.integration import apiserver_fixtures
from tests.integration.apiserver_fixtures import ApiServerProcess, start_apiserver, wait_for

PODS = registry.by_path("", "v1", "pods")
CONFIGMAPS = registry.by_path("", "v1", "configmaps")
OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "0b5e3a4e-0000-4000-8000-000000000001"}


def pod(name: str, *, node: str = "", owner: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if owner:
        md["ownerReferences"] = [owner]
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def names(objs: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in objs]


def broken_handler(obj: dict[str, Any]) -> None:
    raise RuntimeError("a handler bug")


class Recorder:
    """Handlers that log ("add" | "update" | "delete", name), in the order they were called."""

    def __init__(self, informer: Informer) -> None:
        self.events: list[tuple[str, str]] = []
        informer.add_handlers(on_add=lambda o: self._log("add", o),
                              on_update=lambda old, new: self._log("update", new),
                              on_delete=lambda o: self._log("delete", o))

    def _log(self, what: str, obj: dict[str, Any]) -> None:
        self.events.append((what, obj["metadata"]["name"]))

    async def wait_for(self, event: tuple[str, str], *, within: float = 10.0) -> None:
        async def seen() -> bool:
            return event in self.events
        await wait_for(seen, within=within, what=f"{event} among {self.events}")


@contextlib.asynccontextmanager
async def extra_apiserver(etcd_endpoint: str, workdir: Path, *, extra: list[str] | None = None,
                          port: int = 0) -> AsyncIterator[ApiServerProcess]:
    """Another `harness apiserver` (on `port` if given), killed on the way out.

    Killed, not terminated: on SIGTERM the apiserver waits for open watches (even ones whose
    client has gone) for its whole shutdown timeout, which would add seconds to every test.
    """
    with pytest.MonkeyPatch.context() as mp:
        if port:
            mp.setattr(apiserver_fixtures, "free_port", lambda: port)
        server = await asyncio.to_thread(start_apiserver, etcd_endpoint, workdir, extra=extra)
    try:
        yield server
    finally:
        await kill(server)


async def kill(server: ApiServerProcess) -> None:
    server.proc.kill()
    await asyncio.to_thread(server.proc.wait, 10)


# -- informer ----------------------------------------------------------------------------------


async def test_informer_lists_then_reports_changes_in_order_and_keeps_indexes(apiserver: ApiServerProcess,
                                                                              ns: str) -> None:
    async with Client.for_url(apiserver.url) as c:
        await c.create(PODS, pod("p1", node="n1", owner=OWNER), ns)
        await c.create(PODS, pod("p2"), ns)
        informer = Informer(c, PODS, namespace=ns, indexers={"node": index_by_node, "owner": index_by_owner,
                                                              "namespace": index_by_namespace})
        informer.add_handlers(on_add=broken_handler)  # a failing handler must not stop the others
        rec = Recorder(informer)
        async with running(informer, timeout=10):
            assert rec.events == [("add", "p1"), ("add", "p2")]
            assert informer.synced and len(informer.cache) == 2
            assert informer.cache.keys() == [f"{ns}/p1", f"{ns}/p2"]
            assert names(informer.cache.by_index("node", "n1")) == ["p1"]
            assert names(informer.cache.by_index("owner", OWNER["uid"])) == ["p1"]
            assert names(informer.cache.by_index("namespace", ns)) == ["p1", "p2"]

            await c.create(PODS, pod("p3", node="n2", owner=OWNER), ns)
            await c.patch(PODS, "p1", {"metadata": {"ownerReferences": None, "labels": {"x": "y"}}}, ns)
            await c.delete(PODS, "p2", ns, grace_period=0)
            await rec.wait_for(("delete", "p2"))

            assert rec.events[2:] == [("add", "p3"), ("update", "p1"), ("delete", "p2")]
            p1 = informer.cache.get(f"{ns}/p1")
            assert p1 is not None and p1["metadata"]["labels"] == {"x": "y"}
            assert informer.cache.get(f"{ns}/p2") is None
            assert names(informer.cache.by_index("owner", OWNER["uid"])) == ["p3"]
            assert names(informer.cache.by_index("node", "n2")) == ["p3"]
            assert names(informer.cache.by_index("namespace", ns)) == ["p1", "p3"]
            assert informer.lists == 1


async def test_informer_resync_calls_on_update_with_the_cached_object(apiserver: ApiServerProcess, ns: str) -> None:
    async with Client.for_url(apiserver.url) as c:
        await c.create(CONFIGMAPS, {"metadata": {"name": "a"}}, ns)
        informer = Informer(c, CONFIGMAPS, namespace=ns, resync_period=0.1)
        resynced: list[bool] = []
        informer.add_handlers(on_update=lambda old, new: resynced.append(old is new))
        async with running(informer, timeout=10):
            async def twice() -> bool:
                return len(resynced) >= 2
            await wait_for(twice, what="two resyncs")
        assert all(resynced)


async def test_handlers_added_to_a_synced_informer_get_the_cache_as_adds(apiserver: ApiServerProcess,
                                                                         ns: str) -> None:
    async with Client.for_url(apiserver.url) as c:
        await c.create(CONFIGMAPS, {"metadata": {"name": "a"}}, ns)
        informer = Informer(c, CONFIGMAPS, namespace=ns)
        async with running(informer, timeout=10):
            late = Recorder(informer)
            assert late.events == [("add", "a")]


async def test_informer_rewatches_through_another_apiserver_when_its_own_dies(
        apiserver: ApiServerProcess, etcd: LocalEtcd, ns: str, tmp_path: Path) -> None:
    async with extra_apiserver(etcd.endpoint, tmp_path) as doomed, \
            Client.for_url(doomed.url, apiserver.url) as c, Client.for_url(apiserver.url) as writer:
        await writer.create(CONFIGMAPS, {"metadata": {"name": "before"}}, ns)
        informer = Informer(c, CONFIGMAPS, namespace=ns)
        rec = Recorder(informer)
        async with running(informer, timeout=10):
            assert c.server == doomed.url
            await kill(doomed)
            await writer.create(CONFIGMAPS, {"metadata": {"name": "during"}}, ns)
            await writer.patch(CONFIGMAPS, "before", {"data": {"k": "v"}}, ns)
            await rec.wait_for(("update", "before"))
            assert rec.events == [("add", "before"), ("add", "during"), ("update", "before")]
            assert c.server == apiserver.url
            assert informer.lists == 1, "a broken watch resumes from its resourceVersion, it does not relist"


async def compacted_past(client: Client, resource_version: str) -> bool:
    """Whether a watch from `resource_version` is answered 410 Gone (it has changes after it otherwise)."""
    events = cast(AsyncGenerator[WatchEvent, None],
                  client.watch(CONFIGMAPS, "default", resource_version=resource_version))
    try:
        async with contextlib.aclosing(events):
            async for _ in events:
                return False
    except errors.Gone:
        return True
    return False


async def test_informer_relists_after_410_and_reports_the_differences(tmp_path: Path) -> None:
    with LocalEtcd() as own_etcd:
        async with extra_apiserver(own_etcd.endpoint, tmp_path, extra=["--compaction-interval", "0.3"]) as compactor, \
                Client.for_url(compactor.url) as writer:
            for name in ("a", "b", "c"):
                await writer.create(CONFIGMAPS, {"metadata": {"name": name, "labels": {"t": "relist"}}}, "default")
            reader = await asyncio.to_thread(start_apiserver, own_etcd.endpoint, tmp_path)
            port = int(reader.url.rsplit(":", 1)[1])
            try:
                async with Client.for_url(reader.url) as c:
                    informer = Informer(c, CONFIGMAPS, namespace="default", label_selector="t=relist")
                    rec = Recorder(informer)
                    async with running(informer, timeout=10):
                        listed_at = informer.resource_version
                        await kill(reader)  # the informer's watch breaks and cannot resume: no server
                        await writer.patch(CONFIGMAPS, "a", {"data": {"k": "v"}}, "default")
                        await writer.delete(CONFIGMAPS, "b", "default")
                        await writer.create(CONFIGMAPS, {"metadata": {"name": "d", "labels": {"t": "relist"}}},
                                            "default")
                        await wait_for(lambda: compacted_past(writer, listed_at), within=15,
                                       what=f"etcd compacted past {listed_at}")
                        async with extra_apiserver(own_etcd.endpoint, tmp_path, port=port):
                            await rec.wait_for(("add", "d"), within=45)
                            assert rec.events[3:] == [("delete", "b"), ("update", "a"), ("add", "d")]
                            assert informer.lists == 2
                            assert sorted(informer.cache.keys()) == ["default/a", "default/c", "default/d"]
            finally:
                await kill(reader)


# -- leader election ---------------------------------------------------------------------------


class Candidate:
    """A LeaderElector running in a task, with a lead() that records its start and its cancellation."""

    def __init__(self, client: Client, ns: str, identity: str) -> None:
        self.elector = LeaderElector(client, name="ctl", namespace=ns, identity=identity,
                                     lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)
        self.led = asyncio.Event()
        self.lead_cancelled = asyncio.Event()
        self.task = asyncio.create_task(self.elector.run(self._lead))

    async def _lead(self) -> None:
        self.led.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.lead_cancelled.set()
            raise

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def first_leader(*candidates: Candidate, within: float = 10.0) -> Candidate:
    waits = {asyncio.create_task(c.led.wait()): c for c in candidates}
    done, pending = await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    assert done, f"no leader within {within}s"
    return waits[done.pop()]


async def test_exactly_one_of_two_candidates_leads(apiserver: ApiServerProcess, ns: str) -> None:
    async with Client.for_url(apiserver.url) as c1, Client.for_url(apiserver.url) as c2:
        a, b = Candidate(c1, ns, "a"), Candidate(c2, ns, "b")
        try:
            leader = await first_leader(a, b)
            other = b if leader is a else a
            lease = await c1.get(LEASES, "ctl", ns)
            assert lease["spec"]["holderIdentity"] == leader.elector.identity
            assert lease["spec"]["leaseDurationSeconds"] == 2
            assert lease["spec"]["leaseTransitions"] == 0
            # Over several renewals (and several of the follower's tries), the follower never leads.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(other.led.wait(), 1.5)
            assert not other.led.is_set() and not other.elector.is_leader
            assert leader.elector.is_leader and other.elector.leader == leader.elector.identity
            renewed = await c1.get(LEASES, "ctl", ns)
            assert renewed["spec"]["renewTime"] > lease["spec"]["renewTime"]
            assert renewed["spec"]["acquireTime"] == lease["spec"]["acquireTime"]
        finally:
            await asyncio.gather(a.stop(), b.stop())


async def test_cancelled_leader_releases_and_the_other_takes_over_quickly(apiserver: ApiServerProcess,
                                                                          ns: str) -> None:
    async with Client.for_url(apiserver.url) as c1, Client.for_url(apiserver.url) as c2:
        a, b = Candidate(c1, ns, "a"), Candidate(c2, ns, "b")
        try:
            leader = await first_leader(a, b)
            other = b if leader is a else a
            loop = asyncio.get_running_loop()
            start = loop.time()
            await leader.stop()
            assert leader.lead_cancelled.is_set() and not leader.elector.is_leader
            await asyncio.wait_for(other.led.wait(), 2.0)
            took = loop.time() - start
            assert took < 1.0, f"takeover took {took:.2f}s: the lease was not released"
            lease = await c1.get(LEASES, "ctl", ns)
            assert lease["spec"]["holderIdentity"] == other.elector.identity
            assert lease["spec"]["leaseTransitions"] == 1
        finally:
            await asyncio.gather(a.stop(), b.stop())


async def test_leader_whose_apiserver_goes_away_stops_within_renew_deadline(
        apiserver: ApiServerProcess, etcd: LocalEtcd, ns: str, tmp_path: Path) -> None:
    async with extra_apiserver(etcd.endpoint, tmp_path) as doomed, \
            Client.for_url(doomed.url) as c1, Client.for_url(apiserver.url) as c2:
        a = Candidate(c1, ns, "a")
        b: Candidate | None = None
        try:
            await first_leader(a)
            b = Candidate(c2, ns, "b")
            loop = asyncio.get_running_loop()
            await kill(doomed)
            start = loop.time()
            await asyncio.wait_for(a.task, 5)  # run() returns: the process would exit
            took = loop.time() - start
            assert 1.0 < took < 1.5 + 1.0, f"run() returned {took:.2f}s after the apiserver died, not ~1.5s"
            assert a.lead_cancelled.is_set() and not a.elector.is_leader
            # It could not release the lease; the other candidate gets it once it expires.
            await asyncio.wait_for(b.led.wait(), 5)
            lease = await c2.get(LEASES, "ctl", ns)
            assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
        finally:
            await a.stop()
            if b is not None:
                await b.stop()
