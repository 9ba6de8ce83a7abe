"""The ServiceAccount admission plugin: every pod runs as a service account that exists, and (unless it or its
account opts out) gets the projected `kube-api-access-<random>` volume with a bound token, the cluster CA and its
namespace, mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount in every container, as upstream's
plugin adds it. In-cluster clients (`load_incluster_config()`) read exactly these files."""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Any

from harness.api import errors
from harness.apiserver.admission import Attributes, Phases

DEFAULT_ACCOUNT = "default"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
#: Upstream's projected token lifetime: an hour and seven seconds, so the kubelet's refresh is seen in metrics.
TOKEN_SECONDS = 3607
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
#: The default service account is made by the controller-manager moments after its namespace: ask again a few
#: times before refusing the pod (upstream retries too).
DEFAULT_RETRIES, RETRY_INTERVAL = 10, 0.5

AccountLookup = Callable[[str, str], Awaitable[dict[str, Any] | None]]
_ALPHABET = string.ascii_lowercase + string.digits


def _suffix() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(5))


def token_volume(name: str) -> dict[str, Any]:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                      "fieldPath": "metadata.namespace"}}]}}]}}


def mount_token(spec: dict[str, Any]) -> None:
    """Add the token volume and its mount to a pod spec (pure; upstream's mountServiceAccountToken)."""
    volumes = spec.setdefault("volumes", [])
    names = {v.get("name") for v in volumes if isinstance(v, dict)}
    existing = next((n for n in names if isinstance(n, str) and n.startswith(VOLUME_PREFIX)), None)
    name = existing or VOLUME_PREFIX + _suffix()
    while existing is None and name in names:
        name = VOLUME_PREFIX + _suffix()
    added = False
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            mounts = container.setdefault("volumeMounts", [])
            if any(isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH for m in mounts):
                continue
            mounts.append({"name": name, "readOnly": True, "mountPath": MOUNT_PATH})
            added = True
    if added and existing is None:
        volumes.append(token_volume(name))


class ServiceAccount(Phases):
    name = "ServiceAccount"

    def __init__(self, lookup: AccountLookup, *, retries: int = DEFAULT_RETRIES,
                 interval: float = RETRY_INTERVAL) -> None:
        self.lookup = lookup
        self.retries = retries
        self.interval = interval

    async def _account(self, namespace: str, name: str) -> dict[str, Any] | None:
        attempts = self.retries if name == DEFAULT_ACCOUNT else 1
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.interval)
            found = await self.lookup(namespace, name)
            if found is not None:
                return found
        return None

    async def admit(self, attrs: Attributes) -> None:
        if attrs.kind != "Pod" or attrs.operation != "CREATE" or attrs.subresource or not isinstance(attrs.obj,
                                                                                                          dict):
            return
        pod = attrs.obj
        if MIRROR_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {}):
            return
        spec = pod.setdefault("spec", {})
        account_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_ACCOUNT
        spec["serviceAccountName"] = account_name
        account = await self._account(attrs.namespace, account_name)
        if account is None:
            raise errors.Forbidden(
                f'pods "{attrs.name}" is forbidden: error looking up service account {attrs.namespace}/'
                f'{account_name}: serviceaccount "{account_name}" not found', kind="pods", name=attrs.name)
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = account.get("automountServiceAccountToken")
        if automount is None:
            automount = True
        if automount:
            mount_token(spec)
