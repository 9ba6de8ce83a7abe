"""The apiserver's HTTPS port: the cluster PKI's serving certificate, x509 and token authentication, 401 for anyone
else except at the health and version paths, the self-signed fallback, and real kubectl over TLS.

One apiserver serves both its plain-HTTP port (the one the fixtures use; where every request is the admin) and its
secure port; certificates come from `harness.cluster.pki` as `harness up` makes them (ECDSA keys, for speed).
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from harness.client import kubeconfig
from harness.client.rest import Client
from harness.util import x509
from tests.integration.apiserver_fixtures import (
    ApiServerProcess,
    free_port,
    start_apiserver,
    start_secure_apiserver,
    stop_apiserver,
)

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
TOKEN = "0123456789abcdef-test-token"


@dataclass
class Secure:
    server: ApiServerProcess
    url: str
    pki: Path
    work: Path

    def kubeconfig(self, user: str, *, token: str = "") -> Path:
        """A kubeconfig for a certificate of the PKI (`admin`, `scheduler`, ...) or, with `token`, a bearer token."""
        path = self.work / f"kubeconfig-{user}"
        cert, key = ("", "") if token else (str(self.pki / f"{user}.crt"), str(self.pki / f"{user}.key"))
        kubeconfig.write(path, kubeconfig.KubeConfig(servers=[self.url], user=user, ca_file=str(self.pki / "ca.crt"),
                                                     cert_file=cert, key_file=key, token=token))
        return path

    def context(self, user: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if user:
            ctx.load_cert_chain(self.pki / f"{user}.crt", self.pki / f"{user}.key")
        return ctx


@pytest.fixture(scope="module")
def secure(etcd: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    work = tmp_path_factory.mktemp("tls")
    (work / "tokens.csv").write_text(f'{TOKEN},token-user,uid-1,"team-a,team-b"\n')
    started = start_secure_apiserver(etcd.endpoint, work,  # type: ignore[attr-defined]
                                     extra=["--token-auth-file", str(work / "tokens.csv")])
    yield Secure(started.process, started.url, started.pki, work)
    stop_apiserver(started.process)


async def get(url: str, ctx: ssl.SSLContext, *, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=ctx, headers=headers) as resp:
        body = await resp.read()
        return resp.status, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}


async def test_a_client_certificate_of_the_cluster_ca_authenticates(secure: Secure) -> None:
    async with Client.from_kubeconfig(secure.kubeconfig("admin")) as client:
        names = [ns["metadata"]["name"] for ns in (await client.request("GET", "/api/v1/namespaces"))["items"]]
    assert {"default", "kube-system"} <= set(names)


async def test_no_credentials_is_401_as_upstream_says_it(secure: Secure) -> None:
    status, body = await get(f"{secure.url}/api/v1/namespaces", secure.context())
    assert status == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    status, _ = await get(f"{secure.url}/apis", secure.context())
    assert status == 401, "discovery is not public"


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz", "/readyz/etcd", "/version"])
async def test_health_and_version_answer_anyone(secure: Secure, path: str) -> None:
    status, _ = await get(f"{secure.url}{path}", secure.context())
    assert status == 200


async def test_static_tokens_authenticate_and_unknown_ones_are_401(secure: Secure) -> None:
    async with Client.from_kubeconfig(secure.kubeconfig("token-user", token=TOKEN)) as client:
        assert (await client.request("GET", "/api/v1/namespaces/default"))["metadata"]["name"] == "default"
    for headers in ({"Authorization": "Bearer forged"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        status, body = await get(f"{secure.url}/api/v1/namespaces", secure.context(), headers=headers)
        assert (status, body.get("reason")) == (401, "Unauthorized"), headers
    status, _ = await get(f"{secure.url}/healthz", secure.context(), headers={"Authorization": "Bearer forged"})
    assert status == 401, "a bad token is refused even where anonymous requests are allowed"


async def test_a_certificate_of_another_ca_is_refused_at_the_handshake(secure: Secure, tmp_path: Path) -> None:
    stranger = x509.sign(x509.new_ca("someone-else", key_kind="ecdsa"),
                         x509.CertRequest("kubernetes-admin", ("system:masters",)), key_kind="ecdsa")
    x509.save(stranger, tmp_path / "s.crt", tmp_path / "s.key")
    ctx = secure.context()
    ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    with pytest.raises(aiohttp.ClientError):
        await get(f"{secure.url}/api/v1/namespaces", ctx)


def _attempts(text: str, result: str) -> float:
    prefix = f'authentication_attempts_total{{result="{result}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


@pytest.mark.parametrize("shift", [-10, 10], ids=["expired", "not-yet-valid"])
async def test_a_certificate_outside_its_validity_is_401_and_counted_as_an_error(secure: Secure, tmp_path: Path,
                                                                                shift: int) -> None:
    ca = x509.load(secure.pki / "ca.crt", secure.pki / "ca.key")
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=shift)
    x509.save(x509.sign(ca, x509.CertRequest("kubernetes-admin", ("system:masters",), days=1), now=when,
                        key_kind="ecdsa"), tmp_path / "a.crt", tmp_path / "a.key")
    ctx = secure.context()
    ctx.load_cert_chain(tmp_path / "a.crt", tmp_path / "a.key")
    _, before = await get(f"{secure.url}/metrics", secure.context("admin"))
    status, body = await get(f"{secure.url}/api/v1/namespaces", ctx)
    assert (status, body.get("reason"), body.get("message")) == (401, "Unauthorized", "Unauthorized")
    status, _ = await get(f"{secure.url}/healthz", ctx)
    assert status == 401, "a bad certificate is refused even where anonymous requests are allowed"
    _, after = await get(f"{secure.url}/metrics", secure.context("admin"))
    assert _attempts(after["text"], "error") == _attempts(before["text"], "error") + 2


async def test_authentication_is_counted_with_upstream_metric_names(secure: Secure) -> None:
    await get(f"{secure.url}/api/v1/namespaces", secure.context())  # a failure
    status, body = await get(f"{secure.url}/metrics", secure.context("admin"))
    assert status == 200
    lines = body["text"].splitlines()
    assert any(line.startswith('authentication_attempts_total{result="failure"}') for line in lines), lines[:5]
    assert any(line.startswith('authentication_attempts_total{result="success"}') for line in lines)
    assert any(line.startswith("authentication_duration_seconds_bucket") for line in lines)


def test_real_kubectl_speaks_tls_with_the_admin_certificate(secure: Secure) -> None:
    done = subprocess.run([KUBECTL, "--kubeconfig", str(secure.kubeconfig("admin")), "get", "namespace", "default",
                           "-o", "jsonpath={.metadata.name}"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "default"), done.stderr
    done = subprocess.run([KUBECTL, "--kubeconfig", str(secure.kubeconfig("forger", token="forged")), "get",
                           "namespaces"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "error: You must be logged in to the server (Unauthorized)" in done.stderr, done.stderr


def test_the_plain_http_port_still_serves_the_admin(secure: Secure) -> None:
    done = subprocess.run([KUBECTL, "--kubeconfig", str(secure.server.kubeconfig), "get", "namespace", "default",
                           "-o", "name"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "namespace/default"), done.stderr


async def test_without_a_certificate_it_makes_a_self_signed_one_and_keeps_it(etcd: object, tmp_path: Path) -> None:
    port = free_port()
    cert_dir = tmp_path / "certs"
    server = start_apiserver(etcd.endpoint, tmp_path, extra=[  # type: ignore[attr-defined]
        "--secure-port", str(port), "--cert-dir", str(cert_dir)])
    try:
        crt, key = cert_dir / "apiserver.crt", cert_dir / "apiserver.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(cert_dir.stat().st_mode) == 0o700
        described = x509.describe(x509.load_cert(crt))
        assert {"127.0.0.1", "localhost", "kubernetes.default.svc", "10.96.0.1"} <= set(described.sans)
        ctx = ssl.create_default_context(cafile=str(crt))  # the file holds the chain, so its CA is trusted
        status, _ = await get(f"https://127.0.0.1:{port}/healthz", ctx)
        assert status == 200
        first = crt.read_bytes()
    finally:
        stop_apiserver(server)
    server = start_apiserver(etcd.endpoint, tmp_path, extra=["--secure-port", str(free_port()),  # type: ignore
                                                              "--cert-dir", str(cert_dir)])
    stop_apiserver(server)
    assert crt.read_bytes() == first, "a restart keeps the self-signed certificate"
