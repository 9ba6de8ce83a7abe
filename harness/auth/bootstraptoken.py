"""Bootstrap tokens, as kubeadm and upstream's apiserver use them (`--enable-bootstrap-token-auth`): a token
`<id>.<secret>` (6 and 16 characters of [a-z0-9]) is valid while the kube-system Secret `bootstrap-token-<id>` of
type `bootstrap.kubernetes.io/token` holds that secret, allows authentication
(`usage-bootstrap-authentication: "true"`), has not expired and is not being deleted. Its user is
`system:bootstrap:<id>` in `system:bootstrappers` and the Secret's `auth-extra-groups`. Pure: the Secret comes from
a lookup."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
import secrets
import string
from collections.abc import Callable, Mapping
from typing import Any

from harness.auth.user import UserInfo

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
USER_PREFIX = "system:bootstrap:"
GROUP = "system:bootstrappers"
TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
EXTRA_GROUP = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$")

SecretLookup = Callable[[str], Mapping[str, Any] | None]


def new_token() -> str:
    """A random token in kubeadm's format."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(6)) + "." + \
        "".join(secrets.choice(alphabet) for _ in range(16))


def secret_name(token_id: str) -> str:
    return SECRET_PREFIX + token_id


def secret_for(token: str, *, expiration: dt.datetime | None = None, extra_groups: tuple[str, ...] = (),
               description: str = "") -> dict[str, Any]:
    """The Secret that makes `token` valid (as `kubeadm token create` writes it)."""
    match = TOKEN.match(token)
    if match is None:
        raise ValueError("a bootstrap token is <6 of [a-z0-9]>.<16 of [a-z0-9]>")
    data = {"token-id": match.group(1), "token-secret": match.group(2), "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true"}
    if expiration is not None:
        data["expiration"] = expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    if extra_groups:
        data["auth-extra-groups"] = ",".join(extra_groups)
    if description:
        data["description"] = description
    return {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": secret_name(match.group(1)), "namespace": NAMESPACE},
            "stringData": data}


def _data(secret: Mapping[str, Any], key: str) -> str:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return str((secret.get("stringData") or {}).get(key) or "")
    try:
        return base64.b64decode(raw).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return ""


def expired(secret: Mapping[str, Any], now: dt.datetime) -> bool:
    """Whether the Secret's `expiration` has passed (an unreadable one counts as passed)."""
    when = _data(secret, "expiration")
    if not when:
        return False
    try:
        return dt.datetime.fromisoformat(when.replace("Z", "+00:00")) <= now
    except ValueError:
        return True


def authenticate(token: str, lookup: SecretLookup, now: dt.datetime) -> tuple[UserInfo | None, str]:
    """(the token's user, "") or (None, why not): None with "" when it is not a bootstrap token at all."""
    match = TOKEN.match(token)
    if match is None:
        return None, ""
    token_id, token_secret = match.groups()
    secret = lookup(secret_name(token_id))
    if secret is None:
        return None, f"no secret of name {secret_name(token_id)} to match bootstrap bearer token"
    if (secret.get("metadata") or {}).get("deletionTimestamp"):
        return None, f"secret {secret_name(token_id)} is being deleted"
    if secret.get("type") != SECRET_TYPE:
        return None, f"secret {secret_name(token_id)} is not of type {SECRET_TYPE}"
    if not hmac.compare_digest(_data(secret, "token-secret").encode(), token_secret.encode()) or \
            _data(secret, "token-id") != token_id:
        return None, f"bootstrap token {token_id} does not match its secret"
    if expired(secret, now):
        return None, f"bootstrap token {token_id} has expired"
    if _data(secret, "usage-bootstrap-authentication") != "true":
        return None, f"bootstrap token {token_id} is not usable for authentication"
    extra = [g.strip() for g in _data(secret, "auth-extra-groups").split(",") if g.strip()]
    bad = [g for g in extra if not EXTRA_GROUP.match(g)]
    if bad:
        return None, f"bootstrap token {token_id} has invalid auth-extra-groups {bad}"
    return UserInfo(USER_PREFIX + token_id, (GROUP, *extra)), ""
