"""Garbage collector: `ownerReferences` semantics across every kind, as upstream's GC.

The one idea is a dependency graph keyed by uid: every kind's informer feeds a uid → (kind,
cache key) index, and each cache's "owner" index gives an object's dependents. Queue keys
are uids, so one queue serves every kind. What a uid's reconcile does depends on its object:

- not being deleted, with owners: each owner is *solid* (exists), *waiting* (being deleted
  in the foreground) or *dangling* (gone). Absence is only believed after a live GET, so a
  lagging cache never causes a deletion; an owner found by uid in the graph exists, whatever
  name or kind the reference spells. No solid owner left → delete the object (foreground if
  it has dependents of its own and an owner waits for it, else background); a solid owner
  next to dangling or waiting ones → just drop those references.
- being deleted with the `orphan` finalizer: drop the reference to it from every dependent,
  then remove the finalizer.
- being deleted with `foregroundDeletion`: enqueue its dependents (they see a waiting owner,
  above); remove the finalizer once no dependent with blockOwnerDeletion remains.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from functools import partial
from typing import Any

from harness.api import errors, meta, registry
from harness.api.registry import Kind
from harness.controllers.base import Context, Controller

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
SOLID, WAITING, DANGLING = "solid", "waiting", "dangling"
#: How many owner uids verified absent are remembered (upstream's absentOwnerCache).
ABSENT_CACHE_SIZE = 500


def owner_refs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if isinstance(r, dict)]


def finalizers_of(obj: dict[str, Any]) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def uid_of(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def waits_for_dependents(obj: dict[str, Any]) -> bool:
    return meta.is_terminating(obj) and FOREGROUND in finalizers_of(obj)


class GarbageCollector(Controller):
    name = "garbagecollector"
    event_source = "garbage-collector-controller"
    workers = 4

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        #: uid → (kind, cache key) of every object the informers hold: the graph's nodes.
        self.graph: dict[str, tuple[Kind, str]] = {}
        self.absent: OrderedDict[str, None] = OrderedDict()

    def setup(self) -> None:
        for kind in registry.STORED_KINDS:
            self.ctx.informers(kind).add_handlers(on_add=partial(self._added, kind),
                                                  on_update=partial(self._updated, kind),
                                                  on_delete=partial(self._deleted, kind))

    # -- the graph -------------------------------------------------------------------------

    def _added(self, kind: Kind, obj: dict[str, Any]) -> None:
        uid = uid_of(obj)
        if not uid:
            return
        self.graph[uid] = (kind, meta.key_of(obj))
        if self._needs_attention(obj):
            self.queue.add(uid)

    def _updated(self, kind: Kind, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._added(kind, new)
        now = {r.get("uid"): r for r in owner_refs(new)}
        for ref in owner_refs(old):
            # A reference dropped or unblocked may be what a foreground-deleting owner waits for.
            if now.get(ref.get("uid")) != ref and ref.get("uid") in self.graph:
                self.queue.add(str(ref["uid"]))

    def _deleted(self, kind: Kind, obj: dict[str, Any]) -> None:
        uid = uid_of(obj)
        self.graph.pop(uid, None)
        for _, dependent in self.dependents(uid):
            self.queue.add(uid_of(dependent))
        for ref in owner_refs(obj):
            if ref.get("uid") in self.graph:
                self.queue.add(str(ref["uid"]))

    def _needs_attention(self, obj: dict[str, Any]) -> bool:
        if meta.is_terminating(obj):
            return bool({FOREGROUND, ORPHAN} & set(finalizers_of(obj)))
        for ref in owner_refs(obj):
            owner = self.cached(str(ref.get("uid") or ""))
            if owner is None or waits_for_dependents(owner):
                return True
        return False

    def cached(self, uid: str) -> dict[str, Any] | None:
        node = self.graph.get(uid)
        if node is None:
            return None
        obj = self.ctx.informers(node[0]).cache.get(node[1])
        return obj if obj is not None and uid_of(obj) == uid else None

    def dependents(self, uid: str) -> Iterator[tuple[Kind, dict[str, Any]]]:
        if not uid:
            return
        for kind in registry.STORED_KINDS:
            for obj in self.ctx.informers(kind).cache.by_index("owner", uid):
                yield kind, obj

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        node = self.graph.get(key)
        obj = self.cached(key)
        if node is None or obj is None:
            return
        kind = node[0]
        if meta.is_terminating(obj):
            if ORPHAN in finalizers_of(obj):
                await self._orphan_dependents(kind, obj)
            elif FOREGROUND in finalizers_of(obj):
                await self._delete_dependents(kind, obj)
            return
        if owner_refs(obj):
            await self._attempt_to_delete(kind, obj)

    async def _orphan_dependents(self, kind: Kind, owner: dict[str, Any]) -> None:
        uid = uid_of(owner)
        for dep_kind, dependent in list(self.dependents(uid)):
            await self._drop_refs(dep_kind, dependent, {uid})
        await self._remove_finalizer(kind, owner, ORPHAN)

    async def _delete_dependents(self, kind: Kind, owner: dict[str, Any]) -> None:
        uid = uid_of(owner)
        blocked = False
        for _, dependent in self.dependents(uid):
            if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in owner_refs(dependent)):
                blocked = True  # terminating ones too: the owner goes after them
            if not meta.is_terminating(dependent):
                self.queue.add(uid_of(dependent))
        if not blocked:
            await self._remove_finalizer(kind, owner, FOREGROUND)

    async def _attempt_to_delete(self, kind: Kind, obj: dict[str, Any]) -> None:
        if all(self._solid_in_cache(ref) for ref in owner_refs(obj)):
            return  # the common case (e.g. an owner seen after its dependent at start): no GET needed
        latest = await self._live(kind, obj)
        if latest is None or meta.is_terminating(latest) or not owner_refs(latest):
            return
        states: dict[str, list[dict[str, Any]]] = {SOLID: [], WAITING: [], DANGLING: []}
        for ref in owner_refs(latest):
            states[await self._owner_state(ref, latest)].append(ref)
        if states[SOLID]:
            stale = {str(r.get("uid")) for r in states[DANGLING] + states[WAITING]}
            if stale:
                await self._drop_refs(kind, latest, stale)
            return
        if states[WAITING] and next(self.dependents(uid_of(latest)), None) is not None:
            policy = "Foreground"  # an owner waits for us: make it wait for our dependents too
        elif ORPHAN in finalizers_of(latest):
            policy = "Orphan"
        elif FOREGROUND in finalizers_of(latest):
            policy = "Foreground"
        else:
            policy = "Background"
        await self._delete(kind, latest, policy)

    def _solid_in_cache(self, ref: dict[str, Any]) -> bool:
        owner = self.cached(str(ref.get("uid") or ""))
        return owner is not None and not waits_for_dependents(owner)

    async def _owner_state(self, ref: dict[str, Any], dependent: dict[str, Any]) -> str:
        uid = str(ref.get("uid") or "")
        owner = self.cached(uid)
        if owner is None and uid not in self.absent:
            try:
                kind = registry.by_kind(str(ref.get("apiVersion") or ""), str(ref.get("kind") or ""))
            except errors.NotFound:
                log.warning("%s: owner kind %s/%s is unknown; leaving it alone", meta.key_of(dependent),
                            ref.get("apiVersion"), ref.get("kind"))
                return SOLID
            owner = await self._get_owner(kind, ref, dependent)
            if owner is None:
                self._remember_absent(uid)
        if owner is None:
            return DANGLING
        return WAITING if waits_for_dependents(owner) else SOLID

    async def _get_owner(self, kind: Kind, ref: dict[str, Any], dependent: dict[str, Any]) -> dict[str, Any] | None:
        """The owner as the apiserver has it now, or None if absent (or a different object by that name)."""
        namespace = meta.namespace_of(dependent) if kind.namespaced else ""
        if kind.namespaced and not namespace:
            return None  # a cluster-scoped object cannot have a namespaced owner
        try:
            owner = await self.ctx.client.get(kind, str(ref.get("name") or ""), namespace)
        except errors.NotFound:
            return None
        return owner if uid_of(owner) == ref.get("uid") else None

    def _remember_absent(self, uid: str) -> None:
        self.absent[uid] = None
        while len(self.absent) > ABSENT_CACHE_SIZE:
            self.absent.popitem(last=False)

    # -- writes ----------------------------------------------------------------------------

    async def _live(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any] | None:
        try:
            latest = await self.ctx.client.get(kind, meta.name_of(obj), meta.namespace_of(obj))
        except errors.NotFound:
            return None
        return latest if uid_of(latest) == uid_of(obj) else None

    async def _delete(self, kind: Kind, obj: dict[str, Any], policy: str) -> None:
        log.info("garbage collecting %s %s (propagation %s)", kind.kind, meta.key_of(obj), policy)
        with contextlib.suppress(errors.NotFound, errors.Conflict):  # gone, or replaced by a newer one
            await self.ctx.client.delete(kind, meta.name_of(obj), meta.namespace_of(obj), propagation_policy=policy,
                                         preconditions={"uid": uid_of(obj)})

    async def _drop_refs(self, kind: Kind, obj: dict[str, Any], uids: set[str]) -> None:
        refs = [r for r in owner_refs(obj) if r.get("uid") not in uids]
        patch = {"metadata": {"ownerReferences": refs or None, "resourceVersion": meta.resource_version_of(obj)}}
        with contextlib.suppress(errors.NotFound):
            await self.ctx.client.patch(kind, meta.name_of(obj), patch, meta.namespace_of(obj))

    async def _remove_finalizer(self, kind: Kind, obj: dict[str, Any], finalizer: str) -> None:
        latest = await self._live(kind, obj)
        if latest is None or finalizer not in finalizers_of(latest):
            return
        rest = [f for f in finalizers_of(latest) if f != finalizer]
        patch = {"metadata": {"finalizers": rest or None, "resourceVersion": meta.resource_version_of(latest)}}
        try:
            await self.ctx.client.patch(kind, meta.name_of(latest), patch, meta.namespace_of(latest))
        except errors.NotFound:
            return
        log.info("%s %s: removed finalizer %s", kind.kind, meta.key_of(latest), finalizer)
