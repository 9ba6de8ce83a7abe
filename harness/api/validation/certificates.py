"""Validation of CertificateSigningRequests (certificates.k8s.io/v1), as upstream's: the request must be a PEM
PKCS#10 request with a good signature, usages known and not repeated, a fully qualified signer name, at least 600
seconds asked for, well-formed conditions (Approved and Denied exclusive), and `status.certificate` PEM
certificates. Updates keep Approved/Denied/Failed conditions; only the approval subresource sets Approved or
Denied, only the status subresource sets the certificate, once."""

from __future__ import annotations

from typing import Any

from harness.api import certificates as certs
from harness.api.errors import Cause
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.util import csr

_TRUE_ONLY = {certs.APPROVED, certs.DENIED, certs.FAILED}
_STATUSES = ("False", "True", "Unknown")
_CERT_BEGIN = "-----BEGIN CERTIFICATE-----"


def _signer_name(path: str, name: Any) -> list[Cause]:
    if not name:
        return [f.required(path)]
    if not isinstance(name, str) or name.count("/") != 1:
        return [f.invalid(path, name, "must be a fully qualified domain and path of the form "
                                      "'example.com/signer-name'")]
    domain, rest = name.split("/")
    causes = [f.invalid(path, name, f"validating domain component: {m}") for m in formats.dns1123_subdomain(domain)]
    if "." not in domain:
        causes.append(f.invalid(path, name, "should be a domain with at least two segments separated by dots"))
    if not rest:
        causes.append(f.invalid(path, name, "validating path component: must not be empty"))
    return causes


def _certificate_error(value: str) -> str:
    """Why status.certificate is not PEM CERTIFICATE blocks ("" when it is, or empty)."""
    if not value:
        return ""
    text = value.strip()
    blocks = text.count(_CERT_BEGIN)
    if not blocks:
        if "-----BEGIN " in text:
            kind = text.split("-----BEGIN ", 1)[1].split("-----", 1)[0]
            return f'only CERTIFICATE PEM blocks are allowed, found "{kind}"'
        return "must contain at least one CERTIFICATE PEM block"
    if text.count("-----BEGIN ") != blocks:
        return "only CERTIFICATE PEM blocks are allowed"
    from cryptography import x509 as cx509

    try:
        cx509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        return f"x509: malformed certificate ({exc})"
    return ""


def validate_csr(obj: dict[str, Any]) -> list[Cause]:
    spec, status = f.as_dict(obj.get("spec")), f.as_dict(obj.get("status"))
    causes: list[Cause] = []
    try:
        certs.parse_request(obj)
    except certs.RequestError as exc:
        causes.append(f.invalid("spec.request", "<request data>", str(exc)))
    usages = spec.get("usages") or []
    if not usages:
        causes.append(f.required("spec.usages"))
    seen: set[str] = set()
    for i, usage in enumerate(usages):
        if usage not in csr.ALL_USAGES:
            causes.append(f.not_supported(f"spec.usages[{i}]", usage, sorted(csr.ALL_USAGES)))
        if usage in seen:
            causes.append(f.duplicate(f"spec.usages[{i}]", usage))
        seen.add(usage)
    if spec.get("signerName") == certs.LEGACY_UNKNOWN:
        causes.append(f.invalid("spec.signerName", certs.LEGACY_UNKNOWN,
                                "the legacy signerName is not allowed via this API version"))
    else:
        causes += _signer_name("spec.signerName", spec.get("signerName"))
    seconds = spec.get("expirationSeconds")
    if seconds is not None and (not isinstance(seconds, int) or seconds < 600):
        causes.append(f.invalid("spec.expirationSeconds", seconds,
                                "may not specify a duration less than 600 seconds (10 minutes)"))
    causes += _conditions(status.get("conditions") or [])
    raw = status.get("certificate")
    pem = certs.certificate_pem(obj)
    error = "" if not raw else _certificate_error(pem.decode(errors="replace")) if pem else \
        "must contain at least one CERTIFICATE PEM block"
    if error:
        causes.append(f.invalid("status.certificate", "<certificate data>", error))
    return causes


def _conditions(conditions: list[Any]) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    approved = denied = False
    for i, c in enumerate(conditions):
        c = f.as_dict(c)
        path, ctype, cstatus = f"status.conditions[{i}]", c.get("type") or "", c.get("status") or ""
        if not ctype:
            causes.append(f.required(f"{path}.type"))
        allowed = ("True",) if ctype in _TRUE_ONLY else _STATUSES
        if not cstatus:
            causes.append(f.required(f"{path}.status"))
        elif cstatus not in allowed:
            causes.append(f.not_supported(f"{path}.status", cstatus, allowed))
        if ctype == certs.APPROVED:
            approved = True
            if denied:
                causes.append(f.invalid(f"{path}.type", ctype, "Approved and Denied conditions are mutually "
                                                              "exclusive"))
        elif ctype == certs.DENIED:
            denied = True
            if approved:
                causes.append(f.invalid(f"{path}.type", ctype, "Approved and Denied conditions are mutually "
                                                              "exclusive"))
        if ctype and ctype in seen:
            causes.append(f.duplicate(f"{path}.type", ctype))
        seen.add(ctype)
    return causes


def _of_type(obj: dict[str, Any], ctype: str) -> list[dict[str, Any]]:
    return [c for c in certs.conditions(obj) if c.get("type") == ctype]


def _update(new: dict[str, Any], old: dict[str, Any], *, approval: bool, certificate: bool) -> list[Cause]:
    causes: list[Cause] = []
    if new.get("spec") != old.get("spec"):
        causes.append(f.invalid("spec", "<spec>", "field is immutable"))
    for ctype in (certs.APPROVED, certs.DENIED, certs.FAILED):
        if len(_of_type(new, ctype)) < len(_of_type(old, ctype)):
            causes.append(f.forbidden("status.conditions", f'updates may not remove a condition of type "{ctype}"'))
    if not approval:
        for ctype in (certs.APPROVED, certs.DENIED):
            before, after = _of_type(old, ctype), _of_type(new, ctype)
            if len(after) > len(before):
                causes.append(f.forbidden("status.conditions", f'updates may not add a condition of type "{ctype}"'))
            elif len(after) == len(before) and after != before:
                causes.append(f.forbidden("status.conditions",
                                          f'updates may not modify a condition of type "{ctype}"'))
    if certs.certificate(new) != certs.certificate(old):
        if not certificate:
            causes.append(f.forbidden("status.certificate", "updates may not set certificate content"))
        elif certs.certificate(old):
            causes.append(f.forbidden("status.certificate", "updates may not modify existing certificate content"))
    return causes


def validate_csr_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _update(new, old, approval=False, certificate=False)


def validate_csr_status(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return validate_csr(new) + _update(new, old, approval=False, certificate=True)


def validate_csr_approval(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return validate_csr(new) + _update(new, old, approval=True, certificate=False)
