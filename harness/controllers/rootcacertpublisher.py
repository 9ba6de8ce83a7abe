"""root-ca-cert-publisher: every namespace has the ConfigMap `kube-root-ca.crt` with the cluster CA (`ca.crt`), which
the projected token volume of every pod mounts next to its token, as upstream's controller publishes it."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from harness.api import errors, meta, registry
from harness.controllers.base import NAMESPACES, Controller

log = logging.getLogger(__name__)

CONFIG_MAPS = registry.by_path("", "v1", "configmaps")
NAME = "kube-root-ca.crt"
DESCRIPTION_KEY = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


def desired(namespace: str, ca: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": namespace, "annotations": {DESCRIPTION_KEY: DESCRIPTION}},
            "data": {"ca.crt": ca}}


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"

    def setup(self) -> None:
        path = self.ctx.options.root_ca_file
        self.ca = Path(path).read_text() if path else ""
        if not self.ca:
            log.info("root-ca-cert-publisher: no --root-ca-file, nothing to publish")
            return
        self.ctx.informers(NAMESPACES).add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.ctx.informers(CONFIG_MAPS).add_handlers(on_update=lambda old, new: self._config_map(new),
                                                     on_delete=self._config_map)

    def _config_map(self, cm: dict[str, Any]) -> None:
        if cm["metadata"]["name"] == NAME:
            self.queue.add(cm["metadata"]["namespace"])

    async def reconcile(self, key: str) -> None:
        if not self.ca:
            return
        ns = self.ctx.informers(NAMESPACES).cache.get(key)
        if ns is None or meta.is_terminating(ns) or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        cm = self.ctx.informers(CONFIG_MAPS).cache.get(meta.object_key(key, NAME))
        if cm is None:
            with contextlib.suppress(errors.AlreadyExists, errors.Forbidden):
                await self.ctx.client.create(CONFIG_MAPS, desired(key, self.ca), key)
            return
        annotations = (cm["metadata"].get("annotations") or {})
        if (cm.get("data") or {}) == {"ca.crt": self.ca} and annotations.get(DESCRIPTION_KEY):
            return
        md = {**cm["metadata"], "annotations": {**annotations, DESCRIPTION_KEY: DESCRIPTION}}
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.ctx.client.update(CONFIG_MAPS, {**cm, "metadata": md, "data": {"ca.crt": self.ca}})
