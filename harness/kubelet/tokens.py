"""Service-account tokens for pods' projected `serviceAccountToken` volumes, as upstream's kubelet token manager
gets them: from the TokenRequest API, bound to the pod, kept until 80 % of their lifetime (or 24 hours) has passed,
then asked for again, so the file in the pod is refreshed well before the token expires."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.api import errors
from harness.util.rfc3339 import parse_time

#: A token older than this is refreshed whatever its lifetime.
MAX_TTL = 24 * 3600
DEFAULT_EXPIRATION_SECONDS = 3600


@dataclass(frozen=True)
class Cached:
    token: str
    issued: float
    expires: float


def requires_refresh(cached: Cached, now: float) -> bool:
    """Upstream's rule: refresh once 80 % of the lifetime (capped at 24 h) is gone."""
    lifetime = cached.expires - cached.issued
    return now >= cached.expires or now - cached.issued > min(0.8 * lifetime, MAX_TTL)


class TokenManager:
    def __init__(self, client: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
        self.cache: dict[tuple[str, str, str, int, str], Cached] = {}

    async def token_for(self, pod: dict[str, Any], source: dict[str, Any]) -> str:
        """The token of one projected `serviceAccountToken` source of a pod (ValueError when none can be had)."""
        md = pod["metadata"]
        namespace, uid = md.get("namespace") or "default", md.get("uid", "")
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        audience = str(source.get("audience") or "")
        seconds = int(source.get("expirationSeconds") or DEFAULT_EXPIRATION_SECONDS)
        key = (namespace, account, audience, seconds, uid)
        now = self.clock()
        cached = self.cache.get(key)
        if cached is not None and not requires_refresh(cached, now):
            return cached.token
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience] if audience else [], "expirationSeconds": seconds,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": uid}}}
        try:
            answer = await self.client.request(
                "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body=body)
            token = answer["status"]["token"]
            expires = parse_time(answer["status"]["expirationTimestamp"]).timestamp()
        except errors.ApiError as exc:
            if cached is not None and now < cached.expires:
                return cached.token  # keep serving the old token while it is valid, as upstream does
            raise ValueError(f'failed to fetch token: serviceaccounts "{account}" token: {exc}') from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"failed to fetch token: a malformed TokenRequest answer ({exc})") from None
        self.cache[key] = Cached(token, now, expires)
        return token

    def forget(self, pod_uid: str) -> None:
        for key in [k for k in self.cache if k[4] == pod_uid]:
            del self.cache[key]
