"""Service-account tokens (harness.auth.serviceaccount): what the issuer signs, how keys are named and read, and
what the authenticator accepts, rejects as not ours (None) or refuses as invalid (TokenError)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import time
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from harness.auth import serviceaccount as sa
from harness.auth.serviceaccount import Bound, TokenAuthenticator, TokenError, TokenIssuer

# Generated once for the module: 2048-bit keys keep the tests fast.
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "https://kubernetes.default.svc.cluster.local"
NOW = 1_700_000_000


def account(name: str = "builder", uid: str = "sa-uid", namespace: str = "ns") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "uid": uid}}


def obj(kind: str, name: str, uid: str, namespace: str = "ns") -> dict[str, Any]:
    md = {"name": name, "uid": uid} if kind == "Node" else {"name": name, "namespace": namespace, "uid": uid}
    return {"apiVersion": "v1", "kind": kind, "metadata": md}


class DictLookup:
    """A harness.auth Lookup over a dict keyed by (kind, namespace, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def put(self, o: dict[str, Any]) -> None:
        md = o["metadata"]
        self.objects[(o["kind"], md.get("namespace", ""), md["name"])] = o

    def delete(self, kind: str, namespace: str, name: str) -> None:
        del self.objects[(kind, namespace, name)]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))


def pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def pem_private(key: Any, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))


def numbers(key: rsa.RSAPublicKey) -> rsa.RSAPublicNumbers:
    return key.public_numbers()


def fixed_issuer(now: float = NOW, key: rsa.RSAPrivateKey = KEY, issuer: str = ISSUER) -> TokenIssuer:
    return TokenIssuer(key, issuer, clock=lambda: now)


def world() -> DictLookup:
    lookup = DictLookup()
    lookup.put(account())
    lookup.put(obj("Pod", "web", "pod-uid"))
    lookup.put(obj("Node", "n1", "node-uid"))
    lookup.put(obj("Secret", "s", "secret-uid"))
    return lookup


def authenticator(lookup: DictLookup, *, audiences: tuple[str, ...] = (AUDIENCE,),
                  keys: tuple[rsa.RSAPublicKey, ...] = (KEY.public_key(),)) -> TokenAuthenticator:
    return TokenAuthenticator(list(keys), [ISSUER], list(audiences), lookup)


def issue_now(*, bound: Bound | None = None, node: Bound | None = None, audiences: tuple[str, ...] = (AUDIENCE,),
              key: rsa.RSAPrivateKey = KEY, issuer: str = ISSUER, seconds: int = 3600,
              sa_obj: dict[str, Any] | None = None, now: float | None = None) -> sa.Issued:
    at = time.time() if now is None else now
    return TokenIssuer(key, issuer, clock=lambda: at).issue(
        namespace="ns", service_account=sa_obj or account(), audiences=list(audiences),
        expiration_seconds=seconds, bound=bound, node=node)


# -- issuing -------------------------------------------------------------------------------------------------------

def test_issue_claims_of_a_pod_bound_token_on_a_node() -> None:
    issued = fixed_issuer().issue(namespace="ns", service_account=account(), audiences=["a1", "a2"],
                                  expiration_seconds=3607, bound=Bound("Pod", "web", "pod-uid"),
                                  node=Bound("Node", "n1", "node-uid"))
    claims = jwt.decode(issued.token, KEY.public_key(), algorithms=["RS256"], audience="a1",
                        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    jti = claims.pop("jti")
    assert isinstance(jti, str) and jti
    assert claims == {
        "iss": ISSUER, "sub": "system:serviceaccount:ns:builder", "aud": ["a1", "a2"],
        "exp": NOW + 3607, "iat": NOW, "nbf": NOW,
        "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "builder", "uid": "sa-uid"},
                          "pod": {"name": "web", "uid": "pod-uid"}, "node": {"name": "n1", "uid": "node-uid"}}}
    assert issued.expires == NOW + 3607
    assert issued.claims["jti"] == jti and issued.claims["exp"] == NOW + 3607


def test_issue_truncates_a_fractional_clock_to_whole_seconds() -> None:
    issued = fixed_issuer(NOW + 0.9).issue(namespace="ns", service_account=account(), audiences=["a"],
                                          expiration_seconds=600)
    assert issued.claims["iat"] == issued.claims["nbf"] == NOW
    assert issued.claims["exp"] == issued.expires == NOW + 600


def test_issue_unbound_names_only_the_service_account() -> None:
    issued = fixed_issuer().issue(namespace="ns", service_account=account(), audiences=["a"],
                                  expiration_seconds=600)
    assert issued.claims["kubernetes.io"] == {"namespace": "ns",
                                              "serviceaccount": {"name": "builder", "uid": "sa-uid"}}


def test_issue_secret_bound_and_node_bound() -> None:
    secret = fixed_issuer().issue(namespace="ns", service_account=account(), audiences=["a"],
                                  expiration_seconds=600, bound=Bound("Secret", "s", "secret-uid"))
    assert secret.claims["kubernetes.io"]["secret"] == {"name": "s", "uid": "secret-uid"}
    assert "pod" not in secret.claims["kubernetes.io"] and "node" not in secret.claims["kubernetes.io"]
    node = fixed_issuer().issue(namespace="ns", service_account=account(), audiences=["a"], expiration_seconds=600,
                                bound=Bound("Node", "n1", "node-uid"), node=Bound("Node", "other", "x"))
    # A node-bound token names its node once: the one it is bound to.
    assert node.claims["kubernetes.io"]["node"] == {"name": "n1", "uid": "node-uid"}


def test_issue_gives_every_token_its_own_jti() -> None:
    issuer = fixed_issuer()
    one, two = (issuer.issue(namespace="ns", service_account=account(), audiences=["a"], expiration_seconds=600)
                for _ in range(2))
    assert one.claims["jti"] != two.claims["jti"]
    assert one.token != two.token


def test_issue_header_names_the_key() -> None:
    issued = fixed_issuer().issue(namespace="ns", service_account=account(), audiences=["a"],
                                  expiration_seconds=600)
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "RS256"
    assert header["kid"] == sa.key_id(KEY.public_key())


# -- key ids and key files -----------------------------------------------------------------------------------------

def test_key_id_is_unpadded_base64url_sha256_of_the_spki_der() -> None:
    der = KEY.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    kid = sa.key_id(KEY.public_key())
    assert kid == expected
    assert len(kid) == 43 and "=" not in kid and "+" not in kid and "/" not in kid
    assert sa.key_id(OTHER_KEY.public_key()) != kid


def test_load_public_keys_reads_a_public_key() -> None:
    (key,) = sa.load_public_keys(pem_public(KEY))
    assert numbers(key) == numbers(KEY.public_key())


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_load_public_keys_takes_a_private_keys_public_half(fmt: serialization.PrivateFormat) -> None:
    (key,) = sa.load_public_keys(pem_private(KEY, fmt))
    assert numbers(key) == numbers(KEY.public_key())


def test_load_public_keys_reads_every_key_of_a_bundle() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = OTHER_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    bundle = b"# comment\n" + pem_public(KEY) + ec_pem + pkcs1 + pem_private(KEY)
    keys = sa.load_public_keys(bundle)
    # The EC key is skipped; the rest come in file order.
    assert [numbers(k) for k in keys] == [numbers(KEY.public_key()), numbers(OTHER_KEY.public_key()),
                                          numbers(KEY.public_key())]


def test_load_public_keys_reads_a_certificates_key() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sa")])
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
            .serial_number(1).not_valid_before(when).not_valid_after(when + datetime.timedelta(days=1))
            .sign(KEY, hashes.SHA256()))
    (key,) = sa.load_public_keys(cert.public_bytes(serialization.Encoding.PEM))
    assert numbers(key) == numbers(KEY.public_key())


@pytest.mark.parametrize("pem", [
    b"",
    b"not a pem at all\n",
    ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
], ids=["empty", "garbage", "ec-only"])
def test_load_public_keys_without_an_rsa_key_raises(pem: bytes) -> None:
    with pytest.raises(ValueError, match="no RSA public key"):
        sa.load_public_keys(pem)


def test_load_private_key() -> None:
    key = sa.load_private_key(pem_private(KEY))
    assert numbers(key.public_key()) == numbers(KEY.public_key())
    with pytest.raises(ValueError, match="RSA"):
        sa.load_private_key(pem_private(ec.generate_private_key(ec.SECP256R1())))


# -- authenticating ------------------------------------------------------------------------------------------------

def test_a_valid_pod_bound_token_authenticates_as_its_service_account() -> None:
    issued = issue_now(bound=Bound("Pod", "web", "pod-uid"))
    user = authenticator(world()).authenticate_token(issued.token)
    assert user is not None
    assert user.name == "system:serviceaccount:ns:builder"
    assert user.uid == "sa-uid"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:ns")
    assert user.extra_dict() == {
        "authentication.kubernetes.io/pod-name": ["web"],
        "authentication.kubernetes.io/pod-uid": ["pod-uid"],
        "authentication.kubernetes.io/credential-id": [f"JTI={issued.claims['jti']}"]}


def test_a_pod_bound_token_names_the_pods_node_too() -> None:
    issued = issue_now(bound=Bound("Pod", "web", "pod-uid"), node=Bound("Node", "n1", "node-uid"))
    user = authenticator(world()).authenticate_token(issued.token)
    assert user is not None
    extra = user.extra_dict()
    assert extra["authentication.kubernetes.io/node-name"] == ["n1"]
    assert extra["authentication.kubernetes.io/node-uid"] == ["node-uid"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["web"]


def test_an_unbound_token_authenticates_without_binding_extras() -> None:
    issued = issue_now()
    user = authenticator(world()).authenticate_token(issued.token)
    assert user is not None
    assert user.extra_dict() == {"authentication.kubernetes.io/credential-id": [f"JTI={issued.claims['jti']}"]}


def test_a_token_is_checked_against_every_key() -> None:
    issued = issue_now()
    user = authenticator(world(), keys=(OTHER_KEY.public_key(), KEY.public_key())).authenticate_token(issued.token)
    assert user is not None and user.name == "system:serviceaccount:ns:builder"


def test_no_audiences_configured_accepts_any_audience() -> None:
    issued = issue_now(audiences=("whatever",))
    assert authenticator(world(), audiences=()).authenticate_token(issued.token) is not None


def test_a_token_of_another_issuer_is_not_ours() -> None:
    issued = issue_now(issuer="https://elsewhere.example")
    assert authenticator(world()).authenticate_token(issued.token) is None


@pytest.mark.parametrize("token", ["", "abc", "not.a.jwt", "Bearer xyz", "a.b.c.d"])
def test_a_string_that_is_no_jwt_is_not_ours(token: str) -> None:
    assert authenticator(world()).authenticate_token(token) is None


def test_an_expired_token_is_refused() -> None:
    issued = issue_now(now=time.time() - 2 * 3600, seconds=600)
    with pytest.raises(TokenError, match="expired"):
        authenticator(world()).authenticate_token(issued.token)


def test_a_token_signed_by_another_key_is_refused() -> None:
    issued = issue_now(key=OTHER_KEY)
    with pytest.raises(TokenError, match="signature"):
        authenticator(world()).authenticate_token(issued.token)


def test_a_token_for_another_audience_is_refused() -> None:
    issued = issue_now(audiences=("https://vault.example",))
    with pytest.raises(TokenError, match="audience"):
        authenticator(world()).authenticate_token(issued.token)


def test_a_token_of_a_deleted_service_account_is_refused() -> None:
    lookup = world()
    issued = issue_now()
    lookup.delete("ServiceAccount", "ns", "builder")
    with pytest.raises(TokenError, match="deleted"):
        authenticator(lookup).authenticate_token(issued.token)


def test_a_token_of_a_recreated_service_account_is_refused() -> None:
    lookup = world()
    issued = issue_now()
    lookup.put(account(uid="new-uid"))
    with pytest.raises(TokenError, match="UID"):
        authenticator(lookup).authenticate_token(issued.token)


def test_a_pod_bound_token_dies_with_its_pod() -> None:
    lookup = world()
    issued = issue_now(bound=Bound("Pod", "web", "pod-uid"), node=Bound("Node", "n1", "node-uid"))
    assert authenticator(lookup).authenticate_token(issued.token) is not None
    lookup.delete("Pod", "ns", "web")
    with pytest.raises(TokenError, match="deleted"):
        authenticator(lookup).authenticate_token(issued.token)


def test_a_pod_bound_token_is_refused_once_the_pod_is_recreated() -> None:
    lookup = world()
    issued = issue_now(bound=Bound("Pod", "web", "pod-uid"))
    lookup.put(obj("Pod", "web", "another-pod-uid"))
    with pytest.raises(TokenError, match="recreated"):
        authenticator(lookup).authenticate_token(issued.token)


def test_a_pod_bound_token_outlives_its_node() -> None:
    lookup = world()
    issued = issue_now(bound=Bound("Pod", "web", "pod-uid"), node=Bound("Node", "n1", "node-uid"))
    lookup.delete("Node", "", "n1")
    user = authenticator(lookup).authenticate_token(issued.token)
    assert user is not None
    assert user.extra_dict()["authentication.kubernetes.io/pod-name"] == ["web"]


def test_secret_and_node_bound_tokens_die_with_what_they_are_bound_to() -> None:
    lookup = world()
    secret = issue_now(bound=Bound("Secret", "s", "secret-uid"))
    node = issue_now(bound=Bound("Node", "n1", "node-uid"))
    auth = authenticator(lookup)
    assert auth.authenticate_token(secret.token) is not None
    node_user = auth.authenticate_token(node.token)
    assert node_user is not None
    assert node_user.extra_dict()["authentication.kubernetes.io/node-name"] == ["n1"]
    lookup.delete("Secret", "ns", "s")
    lookup.delete("Node", "", "n1")
    with pytest.raises(TokenError, match="secret"):
        auth.authenticate_token(secret.token)
    with pytest.raises(TokenError, match="node"):
        auth.authenticate_token(node.token)


def _forge(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": sa.key_id(KEY.public_key())})


def test_a_token_whose_subject_is_not_its_service_account_is_refused() -> None:
    now = int(time.time())
    token = _forge({"iss": ISSUER, "sub": "system:serviceaccount:kube-system:admin", "aud": [AUDIENCE],
                    "exp": now + 600, "iat": now, "nbf": now,
                    "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "builder", "uid": "sa-uid"}}})
    with pytest.raises(TokenError, match="subject"):
        authenticator(world()).authenticate_token(token)


def test_a_token_without_kubernetes_claims_is_refused() -> None:
    now = int(time.time())
    token = _forge({"iss": ISSUER, "sub": "system:serviceaccount:ns:builder", "aud": [AUDIENCE],
                    "exp": now + 600, "iat": now})
    with pytest.raises(TokenError, match=r"kubernetes\.io"):
        authenticator(world()).authenticate_token(token)


def test_a_token_without_expiry_is_refused() -> None:
    now = int(time.time())
    token = _forge({"iss": ISSUER, "sub": "system:serviceaccount:ns:builder", "aud": [AUDIENCE], "iat": now,
                    "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "builder", "uid": "sa-uid"}}})
    with pytest.raises(TokenError):
        authenticator(world()).authenticate_token(token)


def test_the_authenticator_judges_expiry_by_its_own_clock() -> None:
    """BUG: TokenAuthenticator takes `clock` but never uses it: PyJWT checks exp/nbf/iat against the wall clock.

    A token with a 10-minute lifetime, checked by an authenticator whose clock reads 2 hours after it was issued,
    must be expired for that authenticator (upstream's validator uses its injected `now()`); and a token issued by a
    fake clock long ago is still valid for an authenticator whose clock reads the same time."""
    now = time.time()
    fresh = issue_now(now=now, seconds=600)
    later = TokenAuthenticator([KEY.public_key()], [ISSUER], [AUDIENCE], world(), clock=lambda: now + 2 * 3600)
    with pytest.raises(TokenError, match="expired"):
        later.authenticate_token(fresh.token)
    old = issue_now(now=NOW, seconds=3600)
    then = TokenAuthenticator([KEY.public_key()], [ISSUER], [AUDIENCE], world(), clock=lambda: NOW + 60)
    assert then.authenticate_token(old.token) is not None
