"""Pod events turned into the keys of the owners that care: shared by ReplicaSet, RC and DaemonSet.

As upstream's controllers do it: a pod with a controller ownerReference wakes that owner
(old and new owner when the reference changed); an orphan wakes every owner whose selector
matches it, when it appears or when its labels or reference change, so it can be adopted.
Creations and deletions are counted off the owner's expectations.
"""

from __future__ import annotations

from harness.api import meta
from harness.api.meta import Obj
from harness.api.registry import Kind
from harness.api.selectors import LabelSelector, label_selector_from_spec
from harness.controllers.base import PODS, Context, controller_of
from harness.controllers.expectations import Expectations
from harness.machinery.workqueue import WorkQueue


def selector_of(kind: Kind, owner: Obj) -> LabelSelector | None:
    """The owner's pod selector (an RC's is a plain map, defaulting to its template's labels)."""
    sel = (owner.get("spec") or {}).get("selector")
    if kind.kind == "ReplicationController":
        sel = {"matchLabels": sel or (owner["spec"].get("template") or {}).get("metadata", {}).get("labels")}
    if not sel:
        return None
    return label_selector_from_spec(sel)


class OwnedPods:
    """Informer handlers for pods, enqueueing the keys of their owners of `kind`."""

    def __init__(self, ctx: Context, kind: Kind, queue: WorkQueue, expectations: Expectations) -> None:
        self.ctx = ctx
        self.kind = kind
        self.queue = queue
        self.expectations = expectations

    def register(self) -> None:
        self.ctx.informers(PODS).add_handlers(on_add=self.added, on_update=self.updated, on_delete=self.deleted)

    def owner_key(self, pod: Obj) -> str | None:
        """The key of the pod's controller if it is a live owner of our kind (same uid)."""
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != self.kind.kind:
            return None
        key = meta.object_key(meta.namespace_of(pod), str(ref.get("name")))
        owner = self.ctx.informers(self.kind).cache.get(key)
        return key if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else None

    def matching(self, pod: Obj) -> list[str]:
        """Keys of the owners in the pod's namespace whose non-empty selector matches it."""
        ns, labels = meta.namespace_of(pod), meta.labels_of(pod)
        out = []
        for owner in self.ctx.informers(self.kind).cache.by_index("namespace", ns):
            sel = selector_of(self.kind, owner)
            if sel is not None and not sel.empty and sel.matches(labels):
                out.append(meta.key_of(owner))
        return out

    def added(self, pod: Obj) -> None:
        key = self.owner_key(pod)
        if key is not None:
            self.expectations.created(key)
            self.queue.add(key)
        elif controller_of(pod) is None:
            for k in self.matching(pod):
                self.queue.add(k)

    def updated(self, old: Obj, new: Obj) -> None:
        keys = {k for k in (self.owner_key(old), self.owner_key(new)) if k is not None}
        changed = meta.labels_of(old) != meta.labels_of(new) or controller_of(old) != controller_of(new)
        if controller_of(new) is None and changed:
            keys |= set(self.matching(new))
        for key in keys:
            self.queue.add(key)

    def deleted(self, pod: Obj) -> None:
        key = self.owner_key(pod)
        if key is not None:
            self.expectations.deleted(key, pod["metadata"].get("uid", ""))
            self.queue.add(key)

