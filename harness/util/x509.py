"""X.509 keys and certificates with the `cryptography` library: make a CA, sign a leaf, read one back.

What a certificate is for (its names, usages, lifetime) is the caller's; this module only turns such a request into
PEM and back, and describes a certificate for people (`describe`). Keys are RSA 2048 by default, as kubeadm's; an
`Issued` pair is written with `save`, the key 0600 and its directory 0700 where the directory is created.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.util.files import write_atomic

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_BITS = 2048
# Clocks of machines differ a little: a certificate is valid from a few minutes before it was made (kubeadm: 5 min).
BACKDATE = dt.timedelta(minutes=5)
SERVER_AUTH = "server"
CLIENT_AUTH = "client"
_USAGES = {SERVER_AUTH: ExtendedKeyUsageOID.SERVER_AUTH, CLIENT_AUTH: ExtendedKeyUsageOID.CLIENT_AUTH}


class X509Error(Exception):
    """A key or certificate that cannot be made or read; the message names the file or the field."""


@dataclass(frozen=True)
class CertRequest:
    """What a certificate says: common name, organizations (Kubernetes groups), subject alternative names (DNS names
    and IP addresses, as text), usages (`server`, `client`) and how long it is valid."""

    common_name: str
    organizations: tuple[str, ...] = ()
    sans: tuple[str, ...] = ()
    usages: tuple[str, ...] = (CLIENT_AUTH,)
    days: int = 365


@dataclass(frozen=True)
class Issued:
    """A key and its certificate."""

    key: PrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


@dataclass(frozen=True)
class Description:
    """A certificate as people read it."""

    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    usages: tuple[str, ...] = field(default=())
    is_ca: bool = False

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds() / 86400


def new_key(kind: str = "rsa") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise X509Error(f"unknown key type {kind!r}: rsa or ecdsa")


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def subject(common_name: str, organizations: tuple[str, ...] = ()) -> str:
    """The subject a certificate for this name and these organizations has, as `describe` words it."""
    return _name(common_name, organizations).rfc4514_string()


def normalized(names: tuple[str, ...]) -> set[str]:
    """Subject alternative names as `describe` words them (IP addresses in their canonical form)."""
    out: set[str] = set()
    for name in names:
        try:
            out.add(str(ipaddress.ip_address(name)))
        except ValueError:
            out.add(name)
    return out


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _validity(days: int, now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    return start - BACKDATE, start + dt.timedelta(days=days)


def new_ca(common_name: str, *, days: int = 3650, key_kind: str = "rsa", now: dt.datetime | None = None) -> Issued:
    """A self-signed certificate authority (kubeadm's CAs last 10 years)."""
    key = new_key(key_kind)
    not_before, not_after = _validity(days, now)
    name = _name(common_name)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(key, cert)


def sign(ca: Issued, request: CertRequest, *, key: PrivateKey | None = None, key_kind: str = "rsa",
         now: dt.datetime | None = None) -> Issued:
    """A leaf certificate for `request`, signed by `ca` (with a new key unless one is given)."""
    unknown = set(request.usages) - set(_USAGES)
    if unknown or not request.usages:
        raise X509Error(f"certificate {request.common_name!r}: usages must be among {sorted(_USAGES)}, "
                        f"not {sorted(unknown) or 'none'}")
    if not request.common_name:
        raise X509Error("a certificate needs a common name")
    key = key or new_key(key_kind)
    not_before, not_after = _validity(request.days, now)
    not_after = min(not_after, ca.cert.not_valid_after_utc)  # a leaf never outlives its CA
    public = key.public_key()
    builder = (x509.CertificateBuilder().subject_name(_name(request.common_name, request.organizations))
               .issuer_name(ca.cert.subject).public_key(public).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([_USAGES[u] for u in request.usages]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    if request.sans:
        builder = builder.add_extension(_san(request.sans), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def save(issued: Issued, cert_path: Path, key_path: Path | None = None) -> None:
    """Write the certificate (0644) and, where a path is given, its key (0600); new directories are 0700."""
    for path in (cert_path, key_path):
        if path is not None:
            _private_dirs(path.parent)
    write_atomic(cert_path, issued.cert_pem, mode=0o644)
    if key_path is not None:
        write_atomic(key_path, issued.key_pem, mode=0o600)


def _private_dirs(directory: Path) -> None:
    """Make the directory and any missing parent, each 0700 (mkdir's `mode` applies to the last one only)."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(mode=0o700)


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise X509Error(f"cannot read certificate {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise X509Error(f"{path} is not a PEM certificate: {exc}") from None


def load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise X509Error(f"cannot read key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise X509Error(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise X509Error(f"{path}: only RSA and ECDSA keys are used here, not {type(key).__name__}")
    return key


def load(cert_path: Path, key_path: Path) -> Issued:
    """A certificate and its key from PEM files; refused when the key does not belong to the certificate."""
    issued = Issued(load_key(key_path), load_cert(cert_path))
    if public_key_pem(issued.key) != issued.cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise X509Error(f"key {key_path} does not belong to certificate {cert_path}")
    return issued


def describe(cert: x509.Certificate) -> Description:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple([*san.get_values_for_type(x509.DNSName),
                      *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        sans = ()
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = tuple(name for name, oid in _USAGES.items() if oid in eku)
    except x509.ExtensionNotFound:
        usages = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return Description(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(), sans=sans,
                       not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, usages=usages,
                       is_ca=is_ca)


def verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `cert` (the signature only; validity dates are the caller's)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


__all__ = ["CLIENT_AUTH", "SERVER_AUTH", "CertRequest", "Description", "Issued", "PrivateKey", "X509Error",
           "describe", "fingerprint", "load", "load_cert", "load_key", "new_ca", "new_key", "normalized",
           "public_key_pem", "save", "sign", "subject", "verify_signed_by"]
