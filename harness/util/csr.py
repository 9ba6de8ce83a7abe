"""PKCS#10 certificate signing requests with the `cryptography` library: make one (a kubelet asking for its
certificate), read one (what the apiserver validates), and sign one with a CA (what the csrsigning controller
does), turning Kubernetes' key usage names (`client auth`, `digital signature`, ...) into X.509 extensions."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.util.x509 import BACKDATE, Issued, PrivateKey, X509Error

PEM_TYPE = "CERTIFICATE REQUEST"

#: Kubernetes' names of extended key usages (certificates.k8s.io KeyUsage) -> their OIDs.
EXTENDED_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape sgc": x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
}
#: Kubernetes' names of key usages -> the `x509.KeyUsage` argument each sets.
KEY_USAGES = {
    "signing": "digital_signature", "digital signature": "digital_signature",
    "content commitment": "content_commitment", "key encipherment": "key_encipherment",
    "key agreement": "key_agreement", "data encipherment": "data_encipherment", "cert sign": "key_cert_sign",
    "crl sign": "crl_sign", "encipher only": "encipher_only", "decipher only": "decipher_only",
}
ALL_USAGES = frozenset(EXTENDED_USAGES) | frozenset(KEY_USAGES)


@dataclass(frozen=True)
class Request:
    """What a signing request asks for, as the signers look at it."""

    common_name: str
    organizations: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    emails: tuple[str, ...]
    uris: tuple[str, ...]
    csr: x509.CertificateSigningRequest


def make(key: PrivateKey, common_name: str, organizations: tuple[str, ...] = (),
         sans: tuple[str, ...] = ()) -> bytes:
    """A PEM signing request for this subject and these names (DNS names or IP addresses), signed by `key`."""
    name = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        entries: list[x509.GeneralName] = []
        for san in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                entries.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def parse(data: bytes) -> Request:
    """The request in PEM `data`; X509Error in Go's words when it is not one or its signature is wrong."""
    text = data.lstrip()
    begin = f"-----BEGIN {PEM_TYPE}-----".encode()
    if not text.startswith(b"-----BEGIN "):
        raise X509Error("PEM block type must be CERTIFICATE REQUEST")
    if not text.startswith(begin):
        raise X509Error("PEM block type must be CERTIFICATE REQUEST")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise X509Error(f"x509: malformed certificate request ({exc})") from None
    if not csr.is_signature_valid:
        raise X509Error("x509: ECDSA verification failure" if "EC" in type(csr.public_key()).__name__ else
                        "crypto/rsa: verification error")
    subject = csr.subject
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        emails = tuple(san.get_values_for_type(x509.RFC822Name))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        dns = ips = emails = uris = ()
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Request(str(cns[0].value) if cns else "",
                   tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)),
                   dns, ips, emails, uris, csr)


def sign(ca: Issued, request: Request, usages: list[str], *, seconds: int,
         now: dt.datetime | None = None) -> bytes:
    """A PEM certificate for the request's key, subject and names, with these usages, valid `seconds` from now
    (backdated a little, never past the CA's own expiry), signed by `ca`."""
    unknown = [u for u in usages if u not in ALL_USAGES]
    if unknown:
        raise X509Error(f"unknown key usages {unknown}")
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    not_before = start - BACKDATE
    not_after = min(start + dt.timedelta(seconds=seconds), ca.cert.not_valid_after_utc)
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    for usage in usages:
        if usage in KEY_USAGES:
            flags[KEY_USAGES[usage]] = True
    public = request.csr.public_key()
    builder = (x509.CertificateBuilder().subject_name(request.csr.subject).issuer_name(ca.cert.subject)
               .public_key(public).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    if any(flags.values()):
        try:
            builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
        except ValueError as exc:  # encipher/decipher only without key agreement
            raise X509Error(f"key usages {sorted(usages)}: {exc}") from None
    extended = list(dict.fromkeys(EXTENDED_USAGES[u] for u in usages if u in EXTENDED_USAGES))
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    names: list[x509.GeneralName] = [*(x509.DNSName(d) for d in request.dns_names),
                                     *(x509.IPAddress(ipaddress.ip_address(i)) for i in request.ip_addresses),
                                     *(x509.RFC822Name(e) for e in request.emails),
                                     *(x509.UniformResourceIdentifier(u) for u in request.uris)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
