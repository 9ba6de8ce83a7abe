"""The certificates admission plugins, as upstream's: who may approve a CertificateSigningRequest
(`CertificateApproval`: the `approve` verb on `signers/<signerName>`), who may issue its certificate
(`CertificateSigning`: `sign` on the signer), and that nobody asks the kube-apiserver-client signer for a
certificate in `system:masters` (`CertificateSubjectRestriction`). A signer name `example.com/path` is also
granted by a rule on `example.com/*`."""

from __future__ import annotations

from harness.api import certificates as certs
from harness.api import errors
from harness.apiserver.admission import Attributes, Phases
from harness.auth.authorizer import Authorizer, RequestInfo
from harness.auth.user import MASTERS, UserInfo


def _may(authorizer: Authorizer | None, user: UserInfo, verb: str, signer: str) -> bool:
    if authorizer is None:
        return True
    names = [signer]
    if "/" in signer:
        names.append(signer.split("/", 1)[0] + "/*")
    return any(authorizer.authorize(user, RequestInfo(verb=verb, group=certs.GROUP, version="*", resource="signers",
                                                      name=name)).allowed for name in names)


def _is_csr(attrs: Attributes) -> bool:
    return attrs.kind == "CertificateSigningRequest"


def _signer(attrs: Attributes) -> str:
    obj = attrs.obj or attrs.old or {}
    return str((obj.get("spec") or {}).get("signerName") or "")


class _SignerPermission(Phases):
    """Refuse a write through `subresource` unless its user holds `verb` on the request's signer."""

    verb: str
    subresource: str

    def __init__(self, authorizer: Authorizer | None) -> None:
        self.authorizer = authorizer

    def applies(self, attrs: Attributes) -> bool:
        return _is_csr(attrs) and attrs.operation == "UPDATE" and attrs.subresource == self.subresource

    async def validate(self, attrs: Attributes) -> None:
        if not self.applies(attrs):
            return
        signer = _signer(attrs)
        if not _may(self.authorizer, attrs.user, self.verb, signer):
            raise errors.Forbidden(f'certificatesigningrequests.certificates.k8s.io "{attrs.name}" is forbidden: '
                                   f'user not permitted to {self.verb} requests with signerName "{signer}"',
                                   kind="certificatesigningrequests", name=attrs.name, group=certs.GROUP)


class CertificateApproval(_SignerPermission):
    name, verb, subresource = "CertificateApproval", "approve", "approval"


class CertificateSigning(_SignerPermission):
    """Only a write that changes status.certificate needs `sign`."""

    name, verb, subresource = "CertificateSigning", "sign", "status"

    def applies(self, attrs: Attributes) -> bool:
        return super().applies(attrs) and certs.certificate(attrs.obj or {}) != certs.certificate(attrs.old or {})


class CertificateSubjectRestriction(Phases):
    name = "CertificateSubjectRestriction"

    async def validate(self, attrs: Attributes) -> None:
        if not _is_csr(attrs) or attrs.operation != "CREATE" or _signer(attrs) != certs.KUBE_APISERVER_CLIENT:
            return
        try:
            request = certs.parse_request(attrs.obj or {})
        except certs.RequestError:
            return  # validation has refused it already
        if MASTERS in request.organizations:
            raise errors.Forbidden(f'certificatesigningrequests.certificates.k8s.io "{attrs.name}" is forbidden: '
                                   f"use of {certs.KUBE_APISERVER_CLIENT} signer with {MASTERS} group is not "
                                   "allowed", kind="certificatesigningrequests", name=attrs.name, group=certs.GROUP)
