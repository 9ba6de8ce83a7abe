"""Namespace: deleting a namespace deletes everything in it, then the namespace itself.

A deleted namespace stays `Terminating` while its `kubernetes` finalizer is there. This
controller deletes every namespaced object in it, kind by kind, requeues until nothing is
left (finalizers and graceful pod deletion take time), then removes its finalizer through
the `finalize` subresource, upon which the apiserver deletes the namespace.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from harness.api import errors, meta, registry
from harness.controllers.base import NAMESPACES, Controller

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
#: Seconds between checks while content is still being deleted.
RECHECK = 1.0


class NamespaceController(Controller):
    name = "namespace"
    workers = 2

    def setup(self) -> None:
        self.ctx.informers(NAMESPACES).add_handlers(
            on_add=self._maybe, on_update=lambda old, new: self._maybe(new))

    def _maybe(self, ns: dict[str, Any]) -> None:
        if meta.is_terminating(ns):
            self.enqueue(ns)

    async def reconcile(self, key: str) -> None:
        ns = self.ctx.informers(NAMESPACES).cache.get(key)
        if ns is None or not meta.is_terminating(ns):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return
        remaining = 0
        for kind in registry.STORED_KINDS:
            if kind.namespaced:
                remaining += await self._delete_all(kind, key)
        if remaining:
            self.queue.add_after(key, RECHECK)
            return
        finalized = {**ns, "spec": {**(ns.get("spec") or {}),
                                    "finalizers": [f for f in ns["spec"]["finalizers"] if f != FINALIZER]}}
        try:
            await self.ctx.client.update(NAMESPACES, finalized, subresource="finalize")
        except errors.NotFound:
            return
        log.info("namespace %s emptied and finalized", key)

    async def _delete_all(self, kind: registry.Kind, namespace: str) -> int:
        """Delete what is left of one kind; return how many objects remain."""
        items = (await self.ctx.client.list(kind, namespace))["items"]
        for item in items:
            md = item["metadata"]
            if meta.is_terminating(item):
                continue
            with contextlib.suppress(errors.NotFound):
                await self.ctx.client.delete(kind, md["name"], namespace, propagation_policy="Background")
        return len(items)
