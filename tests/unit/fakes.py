"""Fakes for controller tests: informers whose caches a test seeds, a client that records writes.

Controller tests seed the caches, call `reconcile`, and assert the exact API actions made
(`client.actions`). The client answers like a server would where a controller reads the
answer: a create gets a uid, a patch applies (as a merge patch) to the object in the seeded
cache, a get reads that cache.
"""

from __future__ import annotations

import itertools
from typing import Any

from prometheus_client import CollectorRegistry

from harness.api import errors
from harness.api.patch import apply_merge_patch
from harness.api.registry import Kind
from harness.controllers.base import INDEXERS, Context, Options
from harness.machinery.informer import Cache


class FakeInformer:
    def __init__(self) -> None:
        self.cache = Cache(dict(INDEXERS))
        self.handlers: list[dict[str, Any]] = []

    def add_handlers(self, **handlers: Any) -> None:
        self.handlers.append(handlers)


class FakeInformers:
    def __init__(self) -> None:
        self.by_kind: dict[Kind, FakeInformer] = {}

    def __call__(self, kind: Kind) -> FakeInformer:
        return self.by_kind.setdefault(kind, FakeInformer())

    def seed(self, kind: Kind, *objs: dict[str, Any]) -> None:
        for obj in objs:
            self(kind).cache.put(obj)


class FakeClient:
    """Records every write; answers creates with a name and uid, lists from canned results.

    `fail[(verb, plural)]` makes that call raise the given error (once).
    """

    def __init__(self, informers: FakeInformers | None = None) -> None:
        self.informers = informers
        self.actions: list[tuple[Any, ...]] = []
        self.lists: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.fail: dict[tuple[str, str], errors.ApiError] = {}
        self._n = itertools.count()

    def _maybe_fail(self, verb: str, kind: Kind) -> None:
        error = self.fail.pop((verb, kind.plural), None)
        if error is not None:
            raise error

    def _cached(self, kind: Kind, name: str, namespace: str) -> dict[str, Any] | None:
        if self.informers is None:
            return None
        return self.informers(kind).cache.get(f"{namespace}/{name}" if namespace else name)

    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str = "", **kw: Any) -> dict[str, Any]:
        n = next(self._n)
        self.actions.append(("create", kind.plural, namespace, obj))
        self._maybe_fail("create", kind)
        md = {**obj["metadata"], "name": obj["metadata"].get("name") or f"{obj['metadata']['generateName']}{n}",
              "uid": f"uid-{n}"}
        return {**obj, "metadata": md}

    async def update(self, kind: Kind, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        self.actions.append(("update", kind.plural, subresource, obj))
        self._maybe_fail("update", kind)
        return obj

    async def update_status(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.update(kind, obj, subresource="status")

    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str = "", **kw: Any) -> dict[str, Any]:
        self.actions.append(("patch", kind.plural, namespace, name, patch))
        self._maybe_fail("patch", kind)
        current = self._cached(kind, name, namespace)
        if current is None:
            return {"metadata": {"name": name, "namespace": namespace}}
        return apply_merge_patch(current, patch)

    async def delete(self, kind: Kind, name: str, namespace: str = "", **kw: Any) -> dict[str, Any]:
        self.actions.append(("delete", kind.plural, namespace, name))
        self._maybe_fail("delete", kind)
        return {}

    async def list(self, kind: Kind, namespace: str = "", **kw: Any) -> dict[str, Any]:
        return {"items": self.lists.get((kind.plural, namespace), [])}

    async def get(self, kind: Kind, name: str, namespace: str = "", **kw: Any) -> dict[str, Any]:
        found = self._cached(kind, name, namespace)
        if found is None:
            raise errors.NotFound(f'{kind.plural} "{name}" not found')
        return found


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.messages: list[str] = []

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str, **kw: Any) -> None:
        self.events.append((type_, reason))
        self.messages.append(message)


def context() -> tuple[Context, FakeClient, FakeInformers, FakeRecorder]:
    informers, recorder = FakeInformers(), FakeRecorder()
    client = FakeClient(informers)
    ctx = Context(client=client, informers=informers, recorder=recorder,  # type: ignore[arg-type]
                  registry=CollectorRegistry(), options=Options())
    return ctx, client, informers, recorder
