"""Shared fixtures for integration tests: one real etcd per session, a backend per test.

`etcd` is a throwaway server on free loopback ports, started once; tests keep out of each
other's way by writing only under their own `prefix`.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio

from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd
from tests.clusters import LocalCluster, keep_logs, new_cluster
from tests.integration.apiserver_fixtures import api, apiserver, ns  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def etcd() -> Iterator[LocalEtcd]:
    """A started LocalEtcd shared by the session (sync, so sync and async tests can use it)."""
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run `make deps` (Debian package etcd-server)")
    with LocalEtcd() as server:
        yield server


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test writes under, e.g. `/test/test_create-1a2b3c4d/`."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return f"/test/{name}-{uuid.uuid4().hex[:8]}/"


@pytest_asyncio.fixture
async def backend(etcd: LocalEtcd) -> AsyncIterator[EtcdBackend]:
    """An EtcdBackend connected to the session's etcd, closed after the test."""
    async with EtcdBackend([etcd.endpoint]) as connected:
        yield connected


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the test item (`item.rep_call`), so fixtures can tell a failed test."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def local_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Callable[..., LocalCluster]]:
    """Make `LocalCluster`s (not yet up) whose `harness down` is certain; after a failed test the clusters' logs
    are copied to reports/failed-<cluster>/ first, and the test's report says where."""
    made: list[LocalCluster] = []

    def make(*, masters: int, workers: int, prefix: str = "t") -> LocalCluster:
        cluster = new_cluster(tmp_path_factory.mktemp("cluster"), masters=masters, workers=workers, prefix=prefix)
        made.append(cluster)
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    for cluster in made:
        if failed and cluster.home.exists():
            kept = keep_logs(cluster)
            request.node.add_report_section("teardown", "cluster logs", f"{cluster.name}: logs kept in {kept}")
            print(f"\ncluster {cluster.name}: logs of the failed run kept in {kept}")
        down = cluster.down()
        assert down.returncode == 0, down.stdout + down.stderr
