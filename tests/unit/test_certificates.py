"""CertificateSigningRequests as data: validation as upstream words it, what each signer accepts, signing with the
requested usages, the approval and status strategies, and when csrcleaner removes a request."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from cryptography import x509 as cx509
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness.api import certificates as certs
from harness.api import registry
from harness.api.validation import check_create, check_subresource_update, check_update
from harness.apiserver.strategies import strategy_for
from harness.auth.user import UserInfo
from harness.controllers.certificates import should_remove
from harness.util import csr, x509

KIND = registry.by_path("certificates.k8s.io", "v1", "certificatesigningrequests")
KEY = x509.new_key("ecdsa")
NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)


def obj(pem: bytes | None = None, **spec: Any) -> dict[str, Any]:
    pem = pem if pem is not None else csr.make(KEY, "system:node:w1", ("system:nodes",))
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "r"},
            "spec": {"request": base64.b64encode(pem).decode(), "signerName": certs.KUBE_APISERVER_CLIENT_KUBELET,
                     "usages": ["digital signature", "client auth"], **spec}}


def messages(causes: list[Any]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


def test_a_good_request_is_valid() -> None:
    assert check_create(KIND, obj()) == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"request": base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n").decode()},
     'spec.request: Invalid value: "<request data>": PEM block type must be CERTIFICATE REQUEST'),
    ({"usages": []}, "spec.usages: Required value"),
    ({"usages": ["client auth", "client auth"]}, 'spec.usages[1]: Duplicate value: "client auth"'),
    ({"signerName": ""}, "spec.signerName: Required value"),
    ({"signerName": "a/b/c"}, "spec.signerName: Invalid value: \"a/b/c\": must be a fully qualified domain and path "
                              "of the form 'example.com/signer-name'"),
    ({"signerName": certs.LEGACY_UNKNOWN}, 'spec.signerName: Invalid value: "kubernetes.io/legacy-unknown": the '
                                           "legacy signerName is not allowed via this API version"),
    ({"expirationSeconds": 599}, "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than "
                                 "600 seconds (10 minutes)"),
])
def test_bad_requests_name_the_field(change: dict[str, Any], expected: str) -> None:
    bad = obj()
    bad["spec"].update(change)
    assert expected in messages(check_create(KIND, bad))


def test_a_request_whose_signature_does_not_match_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization

    der = cx509.load_pem_x509_csr(csr.make(KEY, "alice")).public_bytes(serialization.Encoding.DER)
    tampered = der.replace(b"alice", b"admin")  # the subject changed after signing
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(tampered) + \
        b"-----END CERTIFICATE REQUEST-----\n"
    assert not cx509.load_pem_x509_csr(pem).is_signature_valid
    assert 'spec.request: Invalid value: "<request data>": x509: ECDSA verification failure' in \
        messages(check_create(KIND, obj(pem)))


def approved(o: dict[str, Any], *types: str) -> dict[str, Any]:
    return {**o, "status": {"conditions": [{"type": t, "status": "True"} for t in types]}}


def test_approval_and_denial_are_exclusive_and_kept() -> None:
    old = obj()
    both = approved(old, "Approved", "Denied")
    assert 'status.conditions[1].type: Invalid value: "Denied": Approved and Denied conditions are mutually ' \
           "exclusive" in messages(check_subresource_update(KIND, "approval", both, old) or [])
    removed = check_subresource_update(KIND, "approval", old, approved(old, "Approved")) or []
    assert 'status.conditions: Forbidden: updates may not remove a condition of type "Approved"' in messages(removed)
    via_status = check_subresource_update(KIND, "status", approved(old, "Approved"), old)
    assert via_status is None  # status has its own rules (the status row), not a subresource row
    via_update = check_update(KIND, approved(old, "Approved"), old)
    assert 'status.conditions: Forbidden: updates may not add a condition of type "Approved"' in messages(via_update)


def test_the_requester_is_recorded_whatever_the_client_sent() -> None:
    o = obj(username="someone-else", groups=["system:masters"])
    strategy_for(KIND).prepare_create_by(o, UserInfo("system:bootstrap:abc", ("system:bootstrappers",), "u1",
                                                     (("k", ("v",)),)))
    assert {k: o["spec"][k] for k in ("username", "groups", "uid", "extra")} == {
        "username": "system:bootstrap:abc", "groups": ["system:bootstrappers"], "uid": "u1", "extra": {"k": ["v"]}}


def test_the_approval_subresource_takes_conditions_only() -> None:
    new = {"metadata": {}, "spec": obj()["spec"], "status": {}}
    sent = {"status": {"certificate": "Zm9v", "conditions": [{"type": "Approved", "status": "True"}]}}
    strategy_for(KIND).prepare_subresource_update("approval", new, sent)
    assert "certificate" not in new["status"]
    [condition] = new["status"]["conditions"]
    assert condition["lastUpdateTime"] and condition["lastTransitionTime"]


@pytest.mark.parametrize(("signer", "cn", "orgs", "sans", "usages", "error"), [
    (certs.KUBE_APISERVER_CLIENT_KUBELET, "system:node:w1", ("system:nodes",), (), ["client auth"], ""),
    (certs.KUBE_APISERVER_CLIENT_KUBELET, "system:node:w1", ("system:nodes",), (),
     ["digital signature", "key encipherment", "client auth"], ""),
    (certs.KUBE_APISERVER_CLIENT_KUBELET, "w1", ("system:nodes",), (), ["client auth"],
     "subject common name does not begin with system:node:"),
    (certs.KUBE_APISERVER_CLIENT_KUBELET, "system:node:w1", ("system:masters",), (), ["client auth"],
     "subject organization is not system:nodes"),
    (certs.KUBE_APISERVER_CLIENT_KUBELET, "system:node:w1", ("system:nodes",), ("w1",), ["client auth"],
     "DNS or IP subjectAltNames are not allowed"),
    (certs.KUBE_APISERVER_CLIENT_KUBELET, "system:node:w1", ("system:nodes",), (), ["server auth"],
     "usages did not match ['client auth', 'digital signature', 'key encipherment']"),
    (certs.KUBELET_SERVING, "system:node:w1", ("system:nodes",), ("w1", "10.0.0.1"), ["server auth"], ""),
    (certs.KUBELET_SERVING, "system:node:w1", ("system:nodes",), (), ["server auth"],
     "DNS or IP subjectAltName is required"),
    (certs.KUBE_APISERVER_CLIENT, "alice", ("dev",), (), ["digital signature"],
     "missing required usages ['client auth']"),
])
def test_each_signer_accepts_what_upstream_s_does(signer: str, cn: str, orgs: tuple[str, ...],
                                                  sans: tuple[str, ...], usages: list[str], error: str) -> None:
    request = csr.parse(csr.make(KEY, cn, orgs, sans))
    assert certs.signer_error(signer, request, usages) == error


def test_signing_gives_the_requested_names_usages_and_duration() -> None:
    ca = x509.new_ca("ca", key_kind="ecdsa", now=NOW)
    request = csr.parse(csr.make(KEY, "system:node:w1", ("system:nodes",), ("w1", "10.0.0.1")))
    cert = cx509.load_pem_x509_certificate(csr.sign(ca, request, ["digital signature", "server auth"],
                                                    seconds=3600, now=NOW))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(seconds=3600) + x509.BACKDATE
    assert cert.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value == \
        cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    key_usage = cert.extensions.get_extension_for_class(cx509.KeyUsage).value
    assert key_usage.digital_signature and not key_usage.key_encipherment
    sans = cert.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    assert sans.get_values_for_type(cx509.DNSName) == ["w1"]
    cert.verify_directly_issued_by(ca.cert)
    capped = cx509.load_pem_x509_certificate(csr.sign(ca, request, ["client auth"], seconds=10**10, now=NOW))
    assert capped.not_valid_after_utc == ca.cert.not_valid_after_utc, "never outlives the CA"


def _at(o: dict[str, Any], created: dt.datetime, *conditions: tuple[str, dt.datetime]) -> dict[str, Any]:
    o = {**o, "metadata": {"name": "r", "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    o["status"] = {"conditions": [{"type": t, "status": "True", "lastUpdateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
                                  for t, when in conditions]}
    return o


@pytest.mark.parametrize(("conditions", "created_ago", "removed"), [
    ((), dt.timedelta(hours=23), False),
    ((), dt.timedelta(hours=25), True),
    ((("Approved", dt.timedelta(minutes=30)),), dt.timedelta(hours=2), False),
    ((("Approved", dt.timedelta(minutes=61)),), dt.timedelta(hours=2), True),
    ((("Denied", dt.timedelta(minutes=61)),), dt.timedelta(hours=2), True),
    ((("Failed", dt.timedelta(minutes=5)),), dt.timedelta(hours=2), False),
])
def test_the_cleaner_removes_what_is_done_with(conditions: tuple[tuple[str, dt.timedelta], ...],
                                               created_ago: dt.timedelta, removed: bool) -> None:
    o = _at(obj(), NOW - created_ago, *((t, NOW - ago) for t, ago in conditions))
    assert should_remove(o, NOW) is removed


def test_the_cleaner_removes_a_request_whose_certificate_expired() -> None:
    ca = x509.new_ca("ca", key_kind="ecdsa", now=NOW - dt.timedelta(days=10))
    request = csr.parse(csr.make(KEY, "a"))
    pem = csr.sign(ca, request, ["client auth"], seconds=600, now=NOW - dt.timedelta(minutes=20))
    o = _at(obj(), NOW - dt.timedelta(minutes=20), ("Approved", NOW - dt.timedelta(minutes=20)))
    o["status"]["certificate"] = base64.b64encode(pem).decode()
    assert should_remove(o, NOW)
    assert certs.state(o) == "Approved,Issued"
