"""tokencleaner: deletes bootstrap-token Secrets in kube-system once their `expiration` has passed, as upstream's
controller (off unless named in --controllers, as kubeadm turns it on: `--controllers=*,tokencleaner`)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
from typing import Any

from harness.api import errors, meta, registry
from harness.auth import bootstraptoken
from harness.controllers.base import Controller

log = logging.getLogger(__name__)

SECRETS = registry.by_path("", "v1", "secrets")


def _expiration(secret: dict[str, Any]) -> dt.datetime | None:
    raw = (secret.get("data") or {}).get("expiration")
    if raw is None:
        return None
    try:
        return dt.datetime.fromisoformat(base64.b64decode(raw).decode().replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)  # unreadable: expired, as upstream treats it


class TokenCleaner(Controller):
    name = "tokencleaner"
    event_source = "token-cleaner"

    def setup(self) -> None:
        self.ctx.informers(SECRETS).add_handlers(on_add=self._secret, on_update=lambda old, new: self._secret(new))

    def _secret(self, secret: dict[str, Any]) -> None:
        if secret.get("type") == bootstraptoken.SECRET_TYPE and \
                meta.metadata(secret).get("namespace") == bootstraptoken.NAMESPACE:
            self.enqueue(secret)

    async def reconcile(self, key: str) -> None:
        secret = self.ctx.informers(SECRETS).cache.get(key)
        if secret is None or secret.get("type") != bootstraptoken.SECRET_TYPE:
            return
        when = _expiration(secret)
        if when is None:
            return
        left = (when - dt.datetime.now(dt.UTC)).total_seconds()
        if left > 0:
            self.queue.add_after(key, left)
            return
        md = meta.metadata(secret)
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.ctx.client.delete(SECRETS, md["name"], md["namespace"],
                                         preconditions={"uid": md.get("uid", "")})
            log.info("tokencleaner: deleted expired bootstrap token %s/%s", md["namespace"], md["name"])
