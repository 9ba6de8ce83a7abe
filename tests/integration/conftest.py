"""Shared fixtures for integration tests: one real etcd per session, a backend per test.

`etcd` is a throwaway server on free loopback ports, started once; tests keep out of each
other's way by writing only under their own `prefix`.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd
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
