"""The apiserver's authenticators on tables of credentials: certificates, tokens, anonymous at public paths only."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from harness.api import errors
from harness.apiserver import authn
from harness.auth.user import UserInfo

#: Python's decoded form of a verified peer certificate; valid from 2000 to 2999 (the authenticator checks dates).
VALID = {"notBefore": "Jan  1 00:00:00 2000 GMT", "notAfter": "Jan  1 00:00:00 2999 GMT"}
ADMIN_CERT = {"subject": ((("organizationName", "system:masters"),), (("commonName", "kubernetes-admin"),)), **VALID}
NODE_CERT = {"subject": ((("organizationName", "system:nodes"),), (("commonName", "system:node:worker-1"),)),
             **VALID}


def creds(path: str = "/api/v1/pods", *, cert: dict | None = None, token: str = "") -> authn.Credentials:
    return authn.Credentials({"Authorization": f"Bearer {token}"} if token else {}, cert, path)


@pytest.fixture
def authentication() -> authn.Authentication:
    tokens = authn.TokenFileAuthenticator({"s3cret": UserInfo("alice", ("devs",))})
    return authn.Authentication([authn.X509Authenticator(), tokens], authn.AuthnMetrics(CollectorRegistry()))


@pytest.mark.parametrize(("given", "user"), [
    (creds(cert=ADMIN_CERT), UserInfo("kubernetes-admin", ("system:masters", authn.AUTHENTICATED))),
    (creds(cert=NODE_CERT), UserInfo("system:node:worker-1", ("system:nodes", authn.AUTHENTICATED))),
    (creds(token="s3cret"), UserInfo("alice", ("devs", authn.AUTHENTICATED))),
    (creds(cert=ADMIN_CERT, token="s3cret"), UserInfo("kubernetes-admin", ("system:masters", authn.AUTHENTICATED))),
    (creds("/healthz"), authn.ANONYMOUS),
    (creds("/readyz/etcd"), authn.ANONYMOUS),
    (creds("/version"), authn.ANONYMOUS),
])
def test_who_the_request_is(authentication: authn.Authentication, given: authn.Credentials, user: UserInfo) -> None:
    assert authentication.authenticate(given) == user


@pytest.mark.parametrize("given", [
    creds(), creds("/apis"), creds("/metrics"), creds("/healthzfoo"), creds(token="wrong"),
    creds("/healthz", token="wrong"), creds(cert={"subject": ((("organizationName", "x"),),), **VALID}),
])
def test_everyone_else_is_401(authentication: authn.Authentication, given: authn.Credentials) -> None:
    with pytest.raises(errors.Unauthorized, match=r"^Unauthorized$"):
        authentication.authenticate(given)


def test_attempts_are_counted_by_result(authentication: authn.Authentication) -> None:
    authentication.authenticate(creds(token="s3cret"))
    with pytest.raises(errors.Unauthorized):
        authentication.authenticate(creds())
    authentication.authenticate(creds("/healthz"))
    attempts = authentication.metrics.attempts
    assert attempts.labels("success")._value.get() == 1
    assert attempts.labels("failure")._value.get() == 1


def test_token_file_as_upstream_writes_it(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text('# comment\nabc,bob,uid-1,"g1,g2"\ndef,carol,uid-2\n')
    loaded = authn.TokenFileAuthenticator.load(tmp_path / "t.csv")
    assert loaded.users == {"abc": UserInfo("bob", ("g1", "g2"), "uid-1"), "def": UserInfo("carol", (), "uid-2")}


@pytest.mark.parametrize(("text", "message"), [
    ("abc,bob\n", "line 1: want token,user,uid"),
    ("abc,bob,1\nabc,carol,2\n", "line 2: a token given twice"),
])
def test_bad_token_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(authn.AuthnConfigError, match=message):
        authn.TokenFileAuthenticator.load(tmp_path / "t.csv")


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(authn.AuthnConfigError, match=r"--token-auth-file .*nope\.csv"):
        authn.TokenFileAuthenticator.load(tmp_path / "nope.csv")


@pytest.mark.parametrize(("name", "label"), [("admin", "admin"), ("kubelet", "kubelet"), ("a@b.c", "email_id"),
                                             ("system:node:worker-1", "other")])
def test_username_label_is_bounded_as_upstream(name: str, label: str) -> None:
    assert authn.username_label(name) == label


def test_the_kubernetes_service_points_at_the_secure_port_when_there_is_one() -> None:
    from harness.apiserver.state import Config

    assert Config(etcd_servers=[], port=6443).advertised_port == 6443
    assert Config(etcd_servers=[], port=0, secure_port=6443).advertised_port == 6443
    assert Config(etcd_servers=[], port=8080, secure_port=6443).advertised_port == 6443


@pytest.mark.parametrize(("now", "why"), [
    (946684799.0, "current time 1999-12-31T23:59:59Z is before 2000-01-01T00:00:00Z"),
    (32503680001.0, "current time 3000-01-01T00:00:01Z is after 2999-01-01T00:00:00Z"),
])
def test_a_certificate_outside_its_validity_is_described_in_go_s_words(now: float, why: str) -> None:
    from harness.auth.user import certificate_validity_error

    assert certificate_validity_error(ADMIN_CERT, now) == \
        f"x509: certificate has expired or is not yet valid: {why}"
    assert certificate_validity_error(ADMIN_CERT, 1e9) == ""
    assert certificate_validity_error({"subject": ()}, 1e9) == "x509: certificate has no validity period"
