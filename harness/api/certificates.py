"""CertificateSigningRequests (certificates.k8s.io/v1) as data: their state, their request, and what each of
Kubernetes' signers accepts (upstream's certificate controllers' checks), shared by the apiserver's validation and
admission and by the csrapproving and csrsigning controllers. Pure: no I/O."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from harness.util import csr
from harness.util.x509 import X509Error

GROUP = "certificates.k8s.io"
KUBE_APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
KUBE_APISERVER_CLIENT_KUBELET = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
LEGACY_UNKNOWN = "kubernetes.io/legacy-unknown"
APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"

#: What a kubelet's client and serving certificates may be used for: required usages, then the optional ones.
_KUBELET_CLIENT = ({"client auth"}, {"digital signature", "key encipherment"})
_KUBELET_SERVING = ({"server auth"}, {"digital signature", "key encipherment"})
_APISERVER_CLIENT = ({"client auth"}, {"digital signature", "key encipherment"})


class RequestError(ValueError):
    """spec.request is not a PEM certificate request, or its signature is wrong (Go's words)."""


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _bytes(value: Any) -> bytes:
    """A []byte field: base64 text in JSON (b"" when it is not base64)."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str) or not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def request_bytes(obj: Mapping[str, Any]) -> bytes:
    """spec.request, decoded."""
    return _bytes(_dict(obj.get("spec")).get("request"))


def certificate_pem(obj: Mapping[str, Any]) -> bytes:
    """status.certificate, decoded (the PEM the signer wrote)."""
    return _bytes(_dict(obj.get("status")).get("certificate"))


def parse_request(obj: Mapping[str, Any]) -> csr.Request:
    data = request_bytes(obj)
    if not data:
        raise RequestError("PEM block type must be CERTIFICATE REQUEST")
    try:
        return csr.parse(data)
    except X509Error as exc:
        raise RequestError(str(exc)) from None


def conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    listed = _dict(obj.get("status")).get("conditions")
    return [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []


def has_condition(obj: Mapping[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status", "True") == "True" for c in conditions(obj))


def certificate(obj: Mapping[str, Any]) -> str:
    """status.certificate as stored (base64 of the PEM); "" before one is issued."""
    return str(_dict(obj.get("status")).get("certificate") or "")


def state(obj: Mapping[str, Any]) -> str:
    """kubectl's CONDITION column: `Approved,Issued`, `Denied`, `Failed`, `Pending`, ..."""
    shown = [c.get("type", "") for c in conditions(obj) if c.get("type") in (APPROVED, DENIED, FAILED)]
    if certificate(obj):
        shown.append("Issued")
    return ",".join(shown) or "Pending"


def signer_error(signer: str, request: csr.Request, usages: list[str]) -> str:
    """Why this signer will not sign the request ("" when it will), as upstream's signer checks word it."""
    if signer == KUBE_APISERVER_CLIENT_KUBELET:
        return _kubelet_error(request, usages, serving=False)
    if signer == KUBELET_SERVING:
        return _kubelet_error(request, usages, serving=True)
    if signer == KUBE_APISERVER_CLIENT:
        return _usage_error(usages, *_APISERVER_CLIENT)
    return f"signer {signer} is not handled by this signer"


def _usage_error(usages: list[str], required: set[str], optional: set[str]) -> str:
    bad = [u for u in usages if u not in required | optional]
    if bad:
        return f"usages did not match {sorted(required | optional)}"
    missing = sorted(required - set(usages))
    if missing:
        return f"missing required usages {missing}"
    return ""


def _kubelet_error(request: csr.Request, usages: list[str], *, serving: bool) -> str:
    if list(request.organizations) != [NODES_GROUP]:
        return f"subject organization is not {NODES_GROUP}"
    if not request.common_name.startswith(NODE_PREFIX):
        return f"subject common name does not begin with {NODE_PREFIX}"
    if request.emails or request.uris:
        return "email and URI subjectAltNames are not allowed"
    if serving:
        if not (request.dns_names or request.ip_addresses):
            return "DNS or IP subjectAltName is required"
        return _usage_error(usages, *_KUBELET_SERVING)
    if request.dns_names or request.ip_addresses:
        return "DNS or IP subjectAltNames are not allowed"
    return _usage_error(usages, *_KUBELET_CLIENT)


def is_node_client(obj: Mapping[str, Any], request: csr.Request) -> bool:
    """Whether this is a kubelet asking for its client certificate (what csrapproving may approve)."""
    spec = obj.get("spec") or {}
    return spec.get("signerName") == KUBE_APISERVER_CLIENT_KUBELET and \
        not signer_error(KUBE_APISERVER_CLIENT_KUBELET, request, list(spec.get("usages") or []))


def is_self_node_client(obj: Mapping[str, Any], request: csr.Request) -> bool:
    """A node client request made by that node itself (a renewal): spec.username is the subject's CN."""
    return is_node_client(obj, request) and _dict(obj.get("spec")).get("username") == request.common_name
