"""Who is asking: the apiserver's authentication, request by request, as upstream's authenticators answer.

An authenticator looks at a request's credentials and answers with a user, with None when it has nothing to say
about them, or raises `errors.Unauthorized` when they are present but wrong (a bearer token nobody issued). The
`Authentication` of a secure port asks, in upstream's order:

- x509 client certificates (`--client-ca-file`): the TLS layer has verified the chain against the client CA, and
  the authenticator the validity period (an expired certificate is a 401); the common name is the user and each
  organization a group (`O=system:masters`);
- bearer tokens from a static token file (`--token-auth-file`: `token,user,uid,"group1,group2"` per line),
  service-account tokens, and bootstrap tokens (`--enable-bootstrap-token-auth`);
- anonymous, only at the public paths (`/healthz`, `/livez`, `/readyz`, `/version` and below them), as
  AuthenticationConfiguration's `anonymous.conditions` allows: anywhere else a request without credentials is 401.

Every authenticated user is also in `system:authenticated`; the anonymous user is `system:anonymous` in
`system:unauthenticated`. Attempts are counted as upstream counts them (`authentication_attempts{result}`,
`authenticated_user_requests{username}`, `authentication_duration_seconds{result}`).
"""

from __future__ import annotations

import csv
import datetime as dt
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from harness.api import errors
from harness.auth import bootstraptoken, serviceaccount
from harness.auth.user import (
    ANONYMOUS_NAME,
    AUTHENTICATED,
    MASTERS,
    UNAUTHENTICATED,
    UserInfo,
    certificate_validity_error,
    from_peer_certificate,
)

log = logging.getLogger(__name__)

ANONYMOUS = UserInfo(ANONYMOUS_NAME, (UNAUTHENTICATED,))
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
#: Who a request on the plain-HTTP port is: the cluster admin, as on upstream's removed insecure port.
INSECURE_PORT_USER = UserInfo("system:admin", (MASTERS, AUTHENTICATED))
#: Who the apiserver's own writes are (admission keeping quota usage): upstream's loopback client.
APISERVER_USER = UserInfo("system:apiserver", (MASTERS, AUTHENTICATED))
#: The request's user, set by the apiserver's authentication middleware before any handler runs.
USER = web.RequestKey("harness_user", UserInfo)


class AuthnConfigError(Exception):
    """An authentication flag's file cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Credentials:
    """What a request presents: its headers, the client certificate the TLS layer verified (Python's decoded form, or
    None), and its path."""

    headers: Mapping[str, str]
    peer_cert: Mapping[str, Any] | None
    path: str


class Authenticator(Protocol):
    name: str

    def authenticate(self, creds: Credentials) -> UserInfo | None: ...


@runtime_checkable
class TokenAuthenticator(Protocol):
    """An authenticator of bearer tokens, which TokenReview asks too."""

    def authenticate_token(self, token: str) -> UserInfo | None: ...


class CertificateRejected(errors.Unauthorized):
    """A client certificate that is present but not valid now: a 401 counted as an authentication error."""


class X509Authenticator:
    """The user of a verified client certificate: CN the name, each O a group.

    The TLS layer verified the chain to the client CA but not the validity period (`serving.tls_context` turns
    the time check off), so that an expired certificate is a 401 and an `error` attempt, as upstream's, not a
    handshake that fails before any request is seen."""

    name = "x509"

    def authenticate(self, creds: Credentials) -> UserInfo | None:
        if not creds.peer_cert:
            return None
        invalid = certificate_validity_error(creds.peer_cert, time.time())
        if invalid:
            log.info("Unable to authenticate the request: verifying certificate SN=%s failed: %s",
                     creds.peer_cert.get("serialNumber", "?"), invalid)
            raise CertificateRejected("Unauthorized")
        user = from_peer_certificate(creds.peer_cert)
        if user is None:
            raise errors.Unauthorized("Unauthorized")  # upstream: "x509: certificate has no common name"
        return user


class TokenFileAuthenticator:
    """Bearer tokens of a static token file (`--token-auth-file`), compared in constant time."""

    name = "token-file"

    def __init__(self, users: Mapping[str, UserInfo]) -> None:
        self.users = dict(users)

    @classmethod
    def load(cls, path: Path) -> TokenFileAuthenticator:
        try:
            text = path.read_text()
        except OSError as exc:
            raise AuthnConfigError(f"--token-auth-file {path}: {exc.strerror or exc}") from None
        users: dict[str, UserInfo] = {}
        for number, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 3 or not row[0] or not row[1]:
                raise AuthnConfigError(f"--token-auth-file {path}, line {number}: want token,user,uid[,\"groups\"]")
            groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
            if row[0] in users:
                raise AuthnConfigError(f"--token-auth-file {path}, line {number}: a token given twice")
            users[row[0]] = UserInfo(row[1], groups, uid=row[2])
        return cls(users)

    def authenticate(self, creds: Credentials) -> UserInfo | None:
        token = bearer_token(creds.headers)
        return None if token is None else self.authenticate_token(token)

    def authenticate_token(self, token: str) -> UserInfo | None:
        for known, user in self.users.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return user
        return None


class ServiceAccountTokens:
    """Bound service-account JWTs (harness.auth.serviceaccount checks them): a token that is ours but not valid is
    401, and the reason goes to the log only, as upstream keeps it from clients."""

    name = "serviceaccount"

    def __init__(self, checker: serviceaccount.TokenAuthenticator) -> None:
        self.checker = checker

    def authenticate(self, creds: Credentials) -> UserInfo | None:
        token = bearer_token(creds.headers)
        if token is None:
            return None
        try:
            return self.authenticate_token(token)
        except serviceaccount.TokenError as exc:
            log.info("service account token refused: %s", exc)
            raise errors.Unauthorized("Unauthorized") from None

    def authenticate_token(self, token: str) -> UserInfo | None:
        """The token's user; None when it is not a token of ours; TokenError when it is ours but not valid."""
        return self.checker.authenticate_token(token)


class BootstrapTokens:
    """Bootstrap tokens (`--enable-bootstrap-token-auth`): `<id>.<secret>` matched against the kube-system Secret
    `bootstrap-token-<id>` (harness.auth.bootstraptoken decides); why a token was refused goes to the log only."""

    name = "bootstrap-token"

    def __init__(self, lookup: bootstraptoken.SecretLookup) -> None:
        self.lookup = lookup

    def authenticate(self, creds: Credentials) -> UserInfo | None:
        token = bearer_token(creds.headers)
        return None if token is None else self.authenticate_token(token)

    def authenticate_token(self, token: str) -> UserInfo | None:
        user, why = bootstraptoken.authenticate(token, self.lookup, dt.datetime.now(dt.UTC))
        if why:
            log.info("bootstrap token refused: %s", why)
        return user


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_public(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


def username_label(name: str) -> str:
    """Upstream's bounded `username` label: a few known names as they are, an e-mail address, or `other`."""
    if name in ("admin", "client", "kube_proxy", "kubelet", "system:serviceaccount:kube-system:default"):
        return name
    return "email_id" if "@" in name else "other"


class AuthnMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter("authentication_attempts", "Counter of authenticated attempts.", ("result",),
                                registry=registry)
        self.users = Counter("authenticated_user_requests", "Counter of authenticated requests broken out by "
                             "username.", ("username",), registry=registry)
        self.duration = Histogram("authentication_duration_seconds", "Authentication duration in seconds broken "
                                  "out by result.", ("result",), registry=registry,
                                  buckets=tuple(0.001 * 2 ** i for i in range(15)))


class Authentication:
    """The authenticators of a secure port, asked in order; anonymous only at the public paths."""

    def __init__(self, authenticators: list[Authenticator], metrics: AuthnMetrics) -> None:
        self.authenticators = authenticators
        self.metrics = metrics

    def authenticate_token(self, token: str) -> tuple[UserInfo | None, str]:
        """Who a bearer token is, for TokenReview: (user, "") or (None, why not)."""
        for authenticator in self.authenticators:
            if isinstance(authenticator, TokenAuthenticator):
                try:
                    user = authenticator.authenticate_token(token)
                except serviceaccount.TokenError as exc:
                    return None, f"[invalid bearer token, {exc}]"
                if user is not None:
                    return _with_authenticated(user), ""
        return None, ""

    def authenticate(self, creds: Credentials) -> UserInfo:
        started = time.perf_counter()
        result = "failure"
        try:
            for authenticator in self.authenticators:
                user = authenticator.authenticate(creds)
                if user is not None:
                    result = "success"
                    self.metrics.users.labels(username_label(user.name)).inc()
                    return _with_authenticated(user)
            if is_public(creds.path) and bearer_token(creds.headers) is None:
                result = "anonymous"
                return ANONYMOUS
            raise errors.Unauthorized("Unauthorized")
        except CertificateRejected:
            result = "error"
            raise
        except errors.Unauthorized:
            result = "failure"
            raise
        except Exception:
            result = "error"
            raise
        finally:
            if result != "anonymous":
                self.metrics.attempts.labels(result).inc()
                self.metrics.duration.labels(result).observe(time.perf_counter() - started)


def _with_authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(user.name, (*user.groups, AUTHENTICATED), user.uid, user.extra)


def build(*, client_ca_file: str, token_auth_file: str, registry: CollectorRegistry,
          service_accounts: serviceaccount.TokenAuthenticator | None = None,
          bootstrap_tokens: bootstraptoken.SecretLookup | None = None) -> Authentication:
    """The secure port's authentication from the apiserver's flags, in upstream's order."""
    authenticators: list[Authenticator] = []
    if client_ca_file:
        authenticators.append(X509Authenticator())
    if token_auth_file:
        authenticators.append(TokenFileAuthenticator.load(Path(token_auth_file)))
    if service_accounts is not None:
        authenticators.append(ServiceAccountTokens(service_accounts))
    if bootstrap_tokens is not None:
        authenticators.append(BootstrapTokens(bootstrap_tokens))
    return Authentication(authenticators, AuthnMetrics(registry))


__all__ = [
    "ANONYMOUS",
    "AUTHENTICATED",
    "INSECURE_PORT_USER",
    "PUBLIC_PATHS",
    "UNAUTHENTICATED",
    "USER",
    "Authentication",
    "Authenticator",
    "AuthnConfigError",
    "AuthnMetrics",
    "BootstrapTokens",
    "Credentials",
    "ServiceAccountTokens",
    "TokenAuthenticator",
    "TokenFileAuthenticator",
    "X509Authenticator",
    "bearer_token",
    "build",
    "is_public",
    "username_label",
]
