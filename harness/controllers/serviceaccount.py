"""ServiceAccount: every active namespace has a `default` service account."""

from __future__ import annotations

import contextlib
from typing import Any

from harness.api import errors, meta
from harness.controllers.base import NAMESPACES, SERVICE_ACCOUNTS, Controller

DEFAULT = "default"


class ServiceAccountController(Controller):
    name = "serviceaccount"

    def setup(self) -> None:
        self.ctx.informers(NAMESPACES).add_handlers(on_add=self.enqueue,
                                                    on_update=lambda old, new: self.enqueue(new))
        self.ctx.informers(SERVICE_ACCOUNTS).add_handlers(on_delete=self._deleted)

    def _deleted(self, sa: dict[str, Any]) -> None:
        if sa["metadata"]["name"] == DEFAULT:
            self.queue.add(sa["metadata"]["namespace"])

    async def reconcile(self, key: str) -> None:
        ns = self.ctx.informers(NAMESPACES).cache.get(key)
        terminating = ns is not None and (meta.is_terminating(ns)
                                          or (ns.get("status") or {}).get("phase") == "Terminating")
        if ns is None or terminating:
            return
        if self.ctx.informers(SERVICE_ACCOUNTS).cache.get(meta.object_key(key, DEFAULT)) is not None:
            return
        with contextlib.suppress(errors.AlreadyExists):
            await self.ctx.client.create(SERVICE_ACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                            "metadata": {"name": DEFAULT, "namespace": key}}, key)
