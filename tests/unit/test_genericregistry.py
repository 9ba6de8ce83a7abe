"""The generic registry `Store` over an in-memory backend: the kind's strategy hooks and the store's options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.api import errors, registry, validation
from harness.apiserver.admission import Chain
from harness.apiserver.genericregistry import DeleteOptions, Store, StoreOptions
from harness.apiserver.watchcache import WatchCache
from harness.auth.authorizer import AlwaysAllow
from harness.auth.user import UserInfo
from tests.unit.memory_backend import MemoryBackend

USER = UserInfo("test", ("system:masters",))
NAMESPACES = registry.by_path("", "v1", "namespaces")
CONFIGMAPS = registry.by_path("", "v1", "configmaps")
SERVICES = registry.by_path("", "v1", "services")


@dataclass
class RecordingLifecycle:
    """A `Lifecycle` that claims nothing and records the store's calls."""

    calls: list[str] = field(default_factory=list)

    async def begin_create(self, obj: dict[str, Any], *, dry_run: bool = False) -> RecordingLifecycle:
        self.calls.append(f"begin_create {obj['metadata']['name']}")
        return self

    async def begin_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           dry_run: bool = False) -> RecordingLifecycle:
        self.calls.append(f"begin_update {new['metadata']['name']}")
        return self

    async def deleted(self, obj: dict[str, Any]) -> None:
        self.calls.append(f"deleted {obj['metadata']['name']}")

    async def commit(self) -> None:
        self.calls.append("commit")

    async def revert(self) -> None:
        self.calls.append("revert")


def make_store(kind: registry.Kind, options: StoreOptions | None = None) -> tuple[Store, MemoryBackend]:
    backend = MemoryBackend()
    chain = Chain(authorizer=AlwaysAllow(), plugins=[])
    store = Store(kind, backend, WatchCache(kind, backend), chain, options=options or StoreOptions())  # type: ignore[arg-type]
    return store, backend


def namespace(name: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if finalizers is not None:
        obj["spec"] = {"finalizers": finalizers}
    return obj


def configmap(name: str, **md: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **md}, "data": {"k": "v"}}


async def test_namespace_delete_with_spec_finalizers_marks_it_terminating_and_keeps_it() -> None:
    store, _ = make_store(NAMESPACES)
    await store.create("", namespace("team"), user=USER)  # defaulted to the `kubernetes` finalizer
    obj, deleted_now = await store.delete("", "team", DeleteOptions(), user=USER)
    assert not deleted_now
    assert obj["status"] == {"phase": "Terminating"} and obj["spec"] == {"finalizers": ["kubernetes"]}
    assert obj["metadata"]["deletionTimestamp"] and obj["metadata"]["deletionGracePeriodSeconds"] == 0
    assert await store.get("", "team") == obj
    again, deleted_now = await store.delete("", "team", DeleteOptions(), user=USER)
    assert not deleted_now and again == obj


async def test_finalize_that_clears_the_last_spec_finalizer_removes_a_terminating_namespace() -> None:
    store, _ = make_store(NAMESPACES)
    await store.create("", namespace("team", ["kubernetes", "example.com/other"]), user=USER)
    await store.delete("", "team", DeleteOptions(), user=USER)
    kept = await store.update("", "team", {**namespace("team", ["example.com/other"]), "status": {"phase": "Active"}},
                              user=USER, subresource="finalize")
    assert kept["spec"] == {"finalizers": ["example.com/other"]} and kept["status"] == {"phase": "Terminating"}
    assert await store.get("", "team") == kept
    await store.update("", "team", namespace("team", []), user=USER, subresource="finalize")
    with pytest.raises(errors.NotFound):
        await store.get("", "team")


async def test_namespace_delete_without_spec_finalizers_removes_it_at_once() -> None:
    store, _ = make_store(NAMESPACES)
    await store.create("", namespace("scratch", []), user=USER)
    obj, deleted_now = await store.delete("", "scratch", DeleteOptions(), user=USER)
    assert deleted_now and obj["status"] == {"phase": "Active"}
    assert "deletionTimestamp" not in obj["metadata"]
    with pytest.raises(errors.NotFound):
        await store.get("", "scratch")


async def test_kind_without_hooks_is_kept_by_metadata_finalizers_only_and_left_unmarked() -> None:
    store, _ = make_store(CONFIGMAPS)
    await store.create("ns", configmap("held", finalizers=["example.com/hold"]), user=USER)
    obj, deleted_now = await store.delete("ns", "held", DeleteOptions(), user=USER)
    assert not deleted_now and obj["metadata"]["deletionTimestamp"]
    assert "status" not in obj and "spec" not in obj and obj["data"] == {"k": "v"}
    await store.create("ns", configmap("free"), user=USER)
    _, deleted_now = await store.delete("ns", "free", DeleteOptions(), user=USER)
    assert deleted_now
    with pytest.raises(errors.NotFound):
        await store.get("ns", "free")


async def test_ttl_option_goes_with_every_write() -> None:
    store, backend = make_store(CONFIGMAPS, StoreOptions(ttl=60))
    await store.create("ns", configmap("c"), user=USER)
    await store.update("ns", "c", {**configmap("c"), "data": {"k": "w"}}, user=USER)
    assert backend.ttls == [60, 60]
    plain, plain_backend = make_store(CONFIGMAPS)
    await plain.create("ns", configmap("c"), user=USER)
    assert plain_backend.ttls == [0]


async def test_validation_options_are_the_stores_own() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 40000}]}}
    wide, _ = make_store(SERVICES, StoreOptions(validation_options=validation.Options(node_port_range=(40000, 40100))))
    await wide.create("ns", dict(service), user=USER)
    default, _ = make_store(SERVICES)
    with pytest.raises(errors.Invalid, match="nodePort"):
        await default.create("ns", dict(service), user=USER)


async def test_lifecycle_option_claims_around_writes_and_hears_of_deletion() -> None:
    lifecycle = RecordingLifecycle()
    store, _ = make_store(CONFIGMAPS, StoreOptions(lifecycle=lifecycle))
    await store.create("ns", configmap("c"), user=USER)
    await store.update("ns", "c", {**configmap("c"), "data": {"k": "w"}}, user=USER)
    await store.delete("ns", "c", DeleteOptions(), user=USER)
    assert lifecycle.calls == ["begin_create c", "commit", "begin_update c", "commit", "deleted c"]
