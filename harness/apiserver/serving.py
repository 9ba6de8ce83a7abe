"""How the apiserver listens: its HTTPS port with the serving certificate and the client CA, and (until every client
of a cluster speaks HTTPS) its plain-HTTP port.

Without `--tls-cert-file`, the serving certificate is a self-signed one kept in `--cert-dir` as `apiserver.crt` and
`apiserver.key`, made on the first start and reused after, as upstream's apiserver does; it names the bind and
advertise addresses, loopback, this host and the `kubernetes` Service. With `--client-ca-file` the TLS layer asks for
a client certificate and verifies it against that CA (a certificate of another CA, or an expired one, ends the
handshake; Python's ssl cannot defer that to a 401 as Go's RequestClientCert does), and `authn.py` makes its subject
the user.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from harness.apiserver.state import Config
from harness.auth.user import NO_CHECK_TIME
from harness.util import certreload, x509

SELF_SIGNED_CERT, SELF_SIGNED_KEY = "apiserver.crt", "apiserver.key"


class ServingError(Exception):
    """The apiserver cannot listen as configured; the message names the flag or file."""


@dataclass(frozen=True)
class ServingCert:
    cert_file: Path
    key_file: Path
    self_signed: bool


def self_signed_names(config: Config) -> tuple[str, ...]:
    names = [socket.gethostname(), "localhost", "127.0.0.1", "kubernetes", "kubernetes.default",
             "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
    for address in (config.bind_address, config.advertise_address):
        if address and not ipaddress.ip_address(address).is_unspecified:
            names.append(address)
    names.append(str(next(ipaddress.ip_network(config.service_cluster_ip_range).hosts())))
    return tuple(dict.fromkeys(names))


def serving_cert(config: Config) -> ServingCert:
    """The serving certificate: the one given, or the self-signed one in cert_dir (made if missing)."""
    if bool(config.tls_cert_file) != bool(config.tls_private_key_file):
        raise ServingError("--tls-cert-file and --tls-private-key-file go together")
    if config.tls_cert_file:
        return ServingCert(Path(config.tls_cert_file), Path(config.tls_private_key_file), self_signed=False)
    directory = Path(config.cert_dir)
    cert, key = directory / SELF_SIGNED_CERT, directory / SELF_SIGNED_KEY
    if not (cert.exists() and key.exists()):
        host = socket.gethostname()
        ca = x509.new_ca(f"{host}-ca", days=365)
        leaf = x509.sign(ca, x509.CertRequest(host, sans=self_signed_names(config), usages=(x509.SERVER_AUTH,)))
        try:
            x509.save(leaf, cert, key)
            with cert.open("ab") as chain:  # the chain, leaf first, so a client can trust the CA from the file
                chain.write(ca.cert_pem)
        except OSError as exc:
            raise ServingError(f"--cert-dir {directory}: cannot write the self-signed certificate: "
                               f"{exc.strerror or exc}") from None
    return ServingCert(cert, key, self_signed=True)


def tls_context(config: Config, cert: ServingCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert.cert_file, cert.key_file)
        certreload.follow(ctx, str(cert.cert_file), str(cert.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ServingError(f"cannot use the serving certificate {cert.cert_file} with key {cert.key_file}: "
                           f"{exc}") from None
    if config.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=config.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ServingError(f"--client-ca-file {config.client_ca_file}: {exc}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
        # the validity period is checked by the x509 authenticator, which answers 401 as upstream's does
        ctx.verify_flags |= NO_CHECK_TIME
    return ctx


async def serve(app: web.Application, config: Config, stop: asyncio.Event, *, shutdown_timeout: float = 5.0) -> None:
    """Listen on the configured ports until `stop` is set, then shut the app down."""
    if not (config.port or config.secure_port):
        raise ServingError("no port to serve: give --secure-port (HTTPS) or --port (plain HTTP)")
    context = tls_context(config, serving_cert(config)) if config.secure_port else None
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        if config.port:
            await web.TCPSite(runner, config.bind_address, config.port).start()
        if config.secure_port:
            await web.TCPSite(runner, config.bind_address, config.secure_port, ssl_context=context).start()
        await stop.wait()
    finally:
        await runner.cleanup()


__all__ = ["ServingCert", "ServingError", "self_signed_names", "serve", "serving_cert", "tls_context"]
