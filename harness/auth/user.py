"""The user a request is made as, and the well-known names and groups upstream gives meaning to."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
NODES = "system:nodes"
NODE_PREFIX = "system:node:"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS = "system:serviceaccounts"
ANONYMOUS_NAME = "system:anonymous"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated (or anonymous) user: upstream's user.Info."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def extra_dict(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in self.extra}


def from_peer_certificate(peer_cert: Mapping[str, Any] | None) -> UserInfo | None:
    """The user of a client certificate the TLS layer verified (Python's decoded form): CN the name, each O a group;
    None without a certificate or without a common name."""
    if not peer_cert:
        return None
    common, orgs = "", []
    for rdn in peer_cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                common = value
            elif key == "organizationName":
                orgs.append(value)
    return UserInfo(common, tuple(orgs)) if common else None


#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME, for TLS contexts that ask for client certificates: the chain is verified
#: at the handshake, the validity period by the authenticator (`certificate_validity_error`), so that an expired
#: certificate is answered with a 401 as upstream's (Go asks for client certificates without verifying them).
NO_CHECK_TIME = ssl.VerifyFlags(0x200000)


def certificate_validity_error(peer_cert: Mapping[str, Any], now: float) -> str:
    """Go's wording for a certificate outside its validity period (Python's decoded form), or "" when it is valid
    now."""
    try:
        not_before = ssl.cert_time_to_seconds(peer_cert["notBefore"])
        not_after = ssl.cert_time_to_seconds(peer_cert["notAfter"])
    except (KeyError, ValueError):
        return "x509: certificate has no validity period"
    if now < not_before:
        return (f"x509: certificate has expired or is not yet valid: current time {_go_time(now)} is before "
                f"{_go_time(not_before)}")
    if now > not_after:
        return (f"x509: certificate has expired or is not yet valid: current time {_go_time(now)} is after "
                f"{_go_time(not_after)}")
    return ""


def _go_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}")


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a service account's user name, or None for any other user."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, sep, name = username[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


def node_name(user: UserInfo) -> str | None:
    """The node a kubelet's identity names (`system:node:<name>` in `system:nodes`), or None."""
    if NODES not in user.groups or not user.name.startswith(NODE_PREFIX):
        return None
    return user.name[len(NODE_PREFIX):] or None
