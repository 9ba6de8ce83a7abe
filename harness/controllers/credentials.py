"""`--use-service-account-credentials`: each controller acts as its own service account in kube-system.

As upstream's controller-manager does, the process's own identity (system:kube-controller-manager) only watches
(shared informers), elects a leader and makes the controllers' service accounts and tokens; every write a controller
makes carries the token of `system:serviceaccount:kube-system:<controller's account>`, so RBAC's
`system:controller:*` roles decide what each controller may do. Tokens come from TokenRequest and are renewed
when 80 % of their lifetime has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from harness.api import errors, registry
from harness.client.rest import Client
from harness.util.rfc3339 import parse_time

log = logging.getLogger(__name__)

SERVICE_ACCOUNTS = registry.by_path("", "v1", "serviceaccounts")
NAMESPACE = "kube-system"
TOKEN_SECONDS = 3600


class ControllerCredentials:
    def __init__(self, root: Client, *, namespace: str = NAMESPACE, token_seconds: int = TOKEN_SECONDS) -> None:
        self.root = root
        self.namespace = namespace
        self.token_seconds = token_seconds
        self.clients: dict[str, Client] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def _ensure_account(self, name: str) -> None:
        try:
            await self.root.get(SERVICE_ACCOUNTS, name, self.namespace)
        except errors.NotFound:
            with contextlib.suppress(errors.AlreadyExists):
                await self.root.create(SERVICE_ACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                          "metadata": {"name": name, "namespace": self.namespace}},
                                       self.namespace)

    async def _token(self, name: str) -> tuple[str, float]:
        answer: dict[str, Any] = await self.root.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{name}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": self.token_seconds}})
        status = answer["status"]
        return status["token"], parse_time(status["expirationTimestamp"]).timestamp()

    async def client_for(self, name: str) -> Client:
        """A client that is the service account `name` (made if missing), its token kept fresh."""
        if name in self.clients:
            return self.clients[name]
        await self._ensure_account(name)
        token, expires = await self._token(name)
        # the bearer token only: a client certificate would be authenticated first and win
        config = dataclasses.replace(self.root.config, token=token, cert_file="", key_file="")
        client = Client(config, timeout=self.root.timeout, user_agent=f"{self.root.user_agent}/{name}")
        self.clients[name] = client
        self.tasks.append(asyncio.create_task(self._renew(name, client, expires), name=f"token-{name}"))
        return client

    async def _renew(self, name: str, client: Client, expires: float) -> None:
        while True:
            await asyncio.sleep(max(1.0, 0.8 * (expires - time.time())))
            delay = 1.0
            while True:
                try:
                    token, expires = await self._token(name)
                    client.set_token(token)
                    break
                except (errors.ApiError, OSError) as exc:
                    log.warning("renewing the token of %s: %s; retrying in %.0f s", name, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients.values():
            await client.close()
        self.clients.clear()
