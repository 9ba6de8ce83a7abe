"""Service-account tokens: bound JWTs as upstream issues them (TokenRequest) and checks them (authentication).

A token is an RS256 JWT signed with the cluster's service-account key (`sa.key`; `kid` is the base64url SHA-256
of the public key's DER, as upstream computes it). Its claims name the issuer, the audiences, when it expires and,
under `kubernetes.io`, the namespace, the service account and the object it is bound to (a Pod, a Secret or a
Node; a pod-bound token also names the pod's node). A token is valid only while what it names still exists with
the same uid: deleting the pod or the service account revokes it.

`Lookup` is how the checker sees objects (the apiserver's watch caches); nothing here does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.auth.user import UserInfo, service_account_groups, service_account_username

#: Upstream's bounds on a requested token's lifetime (TokenRequest `spec.expirationSeconds`).
MIN_EXPIRATION_SECONDS = 600
MAX_EXPIRATION_SECONDS = 2**32
DEFAULT_EXPIRATION_SECONDS = 3600
#: How far token times may be off the apiserver's clock (upstream's leeway).
LEEWAY_SECONDS = 60
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
EXTRA_NODE_UID = "authentication.kubernetes.io/node-uid"
EXTRA_CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
BINDABLE_KINDS = ("Pod", "Secret", "Node")


class TokenError(Exception):
    """A token that claims to be ours but is not valid; the message says why (logged, never sent to clients)."""


@dataclass(frozen=True)
class Bound:
    kind: str  # Pod | Secret | Node
    name: str
    uid: str


class Lookup(Protocol):
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object of this kind (ServiceAccount, Pod, Secret, Node), or None."""
        ...


def key_id(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the service-account signing key must be an RSA key")
    return key


def load_public_keys(pem: bytes) -> list[rsa.RSAPublicKey]:
    """Every RSA public key in a PEM file (public keys, or a private key's public half), as upstream reads them."""
    keys: list[rsa.RSAPublicKey] = []
    for block in pem.split(b"-----END ")[:-1]:
        start = block.rfind(b"-----BEGIN ")
        if start < 0:
            continue
        kind = block[start + len(b"-----BEGIN "):].split(b"-----", 1)[0]
        text = block[start:] + b"-----END " + kind + b"-----\n"
        if b"PRIVATE" in kind:
            key: Any = serialization.load_pem_private_key(text, password=None).public_key()
        elif b"CERTIFICATE" in kind:
            key = x509.load_pem_x509_certificate(text).public_key()
        else:
            key = serialization.load_pem_public_key(text)
        if isinstance(key, rsa.RSAPublicKey):
            keys.append(key)
    if not keys:
        raise ValueError("no RSA public key found")
    return keys


@dataclass
class Issued:
    token: str
    expires: int  # Unix seconds
    claims: dict[str, Any]


class TokenIssuer:
    """Signs bound service-account tokens (the apiserver's `--service-account-signing-key-file`)."""

    def __init__(self, private_key: rsa.RSAPrivateKey, issuer: str, *, clock: Callable[[], float] = time.time) -> None:
        self.key = private_key
        self.kid = key_id(private_key.public_key())
        self.issuer = issuer
        self.clock = clock

    def issue(self, *, namespace: str, service_account: dict[str, Any], audiences: Sequence[str],
              expiration_seconds: int, bound: Bound | None = None, node: Bound | None = None) -> Issued:
        now = int(self.clock())
        md = service_account["metadata"]
        private: dict[str, Any] = {"namespace": namespace,
                                   "serviceaccount": {"name": md["name"], "uid": md.get("uid", "")}}
        if bound is not None:
            private[bound.kind.lower()] = {"name": bound.name, "uid": bound.uid}
        if node is not None and (bound is None or bound.kind != "Node"):
            private["node"] = {"name": node.name, "uid": node.uid}
        claims = {"iss": self.issuer, "sub": service_account_username(namespace, md["name"]),
                  "aud": list(audiences), "exp": now + expiration_seconds, "iat": now, "nbf": now,
                  "jti": str(uuid.uuid4()), "kubernetes.io": private}
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return Issued(token, now + expiration_seconds, claims)


class TokenAuthenticator:
    """Checks service-account JWTs (`--service-account-key-file`, `--service-account-issuer`, `--api-audiences`).

    `authenticate_token` answers None for a token that is not a JWT of one of our issuers, so the next authenticator
    may try it, and raises TokenError for one that is ours but invalid (expired, forged, revoked)."""

    name = "serviceaccount"

    def __init__(self, public_keys: Sequence[rsa.RSAPublicKey], issuers: Sequence[str], audiences: Sequence[str],
                 lookup: Lookup, *, clock: Callable[[], float] = time.time) -> None:
        self.keys = list(public_keys)
        self.issuers = list(issuers)
        self.audiences = list(audiences)
        self.lookup = lookup
        self.clock = clock

    def authenticate_token(self, token: str) -> UserInfo | None:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        if unverified.get("iss") not in self.issuers:
            return None
        claims = self._verified(token)
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            raise TokenError("the token has no kubernetes.io claims")
        return self._user(claims, private)

    def _verified(self, token: str) -> dict[str, Any]:
        """The claims of a token one of our keys signed for one of our audiences, its times judged by our clock."""
        claims: dict[str, Any] | None = None
        last: Exception | None = None
        for key in self.keys:
            try:
                claims = jwt.decode(
                    token, key, algorithms=["RS256"], audience=self.audiences or None, issuer=self.issuers,
                    options={"require": ["exp", "iat", "sub"], "verify_aud": bool(self.audiences),
                             "verify_exp": False, "verify_nbf": False, "verify_iat": False})
                break
            except jwt.InvalidSignatureError as exc:
                last = exc
            except jwt.InvalidAudienceError:
                raise TokenError("token audiences is invalid for the target audiences") from None
            except jwt.PyJWTError as exc:
                raise TokenError(f"invalid token: {exc}") from None
        if claims is None:
            raise TokenError(f"invalid signature: {last}")
        now = self.clock()
        try:
            expires, not_before = float(claims["exp"]), float(claims.get("nbf", claims["iat"]))
        except (TypeError, ValueError):
            raise TokenError("invalid token: exp, nbf and iat must be numbers") from None
        if now > expires + LEEWAY_SECONDS:
            raise TokenError("service account token has expired")
        if now < not_before - LEEWAY_SECONDS:
            raise TokenError("service account token is not valid yet")
        return claims

    def _user(self, claims: dict[str, Any], private: dict[str, Any]) -> UserInfo:
        namespace = str(private.get("namespace") or "")
        sa_claim = private.get("serviceaccount") or {}
        name, uid = str(sa_claim.get("name") or ""), str(sa_claim.get("uid") or "")
        if claims.get("sub") != service_account_username(namespace, name):
            raise TokenError("the token's subject does not name its service account")
        sa = self.lookup.get("ServiceAccount", namespace, name)
        if sa is None:
            raise TokenError(f"service account {namespace}/{name} has been deleted")
        if uid and sa["metadata"].get("uid") != uid:
            raise TokenError(f"service account UID ({uid}) does not match the one in the token")
        extra: dict[str, list[str]] = {}
        for kind in ("Pod", "Secret", "Node"):
            ref = private.get(kind.lower())
            if not isinstance(ref, dict):
                continue
            obj = self.lookup.get(kind, "" if kind == "Node" else namespace, str(ref.get("name") or ""))
            if obj is None:
                if kind == "Node" and "pod" in private:
                    continue  # a pod-bound token's node is informational; the pod is what binds it
                raise TokenError(f"{kind.lower()} {ref.get('name')} that the token is bound to has been deleted")
            if ref.get("uid") and obj["metadata"].get("uid") != ref["uid"]:
                raise TokenError(f"the {kind.lower()} the token is bound to has been recreated")
            if kind == "Pod":
                extra[EXTRA_POD_NAME], extra[EXTRA_POD_UID] = [str(ref.get("name"))], [str(ref.get("uid") or "")]
            if kind == "Node":
                extra[EXTRA_NODE_NAME], extra[EXTRA_NODE_UID] = [str(ref.get("name"))], [str(ref.get("uid") or "")]
        if claims.get("jti"):
            extra[EXTRA_CREDENTIAL_ID] = [f"JTI={claims['jti']}"]
        return UserInfo(service_account_username(namespace, name), service_account_groups(namespace), uid,
                        tuple((k, tuple(v)) for k, v in sorted(extra.items())))
