"""Fixtures that run the real apiserver (`harness apiserver`) against the session's etcd.

The apiserver runs as a subprocess, the way users and supervisord run it, so tests that
drive real kubectl (a blocking subprocess) never stall the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from harness.client import kubeconfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServerProcess:
    url: str
    kubeconfig: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_apiserver(etcd_endpoint: str, workdir: Path, *, extra: list[str] | None = None,
                    host: str = "127.0.0.1") -> ApiServerProcess:
    port = free_port()
    log = workdir / f"apiserver-{port}.log"
    cmd = [sys.executable, "-m", "harness.cli", "apiserver", "--etcd-servers", etcd_endpoint,
           "--bind-address", host, "--port", str(port), *(extra or [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"apiserver exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                if b" 200 " in s.recv(100):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"apiserver not ready within 30 s:\n{log.read_text()}")
        time.sleep(0.1)
    kc = workdir / f"kubeconfig-{port}"
    kubeconfig.write(kc, kubeconfig.KubeConfig(servers=[url]))
    return ApiServerProcess(url, kc, log, proc)


@dataclass
class SecureApiServer:
    """An apiserver with the cluster PKI `harness up` makes: its HTTPS URL, the PKI directory, and the process
    (whose plain-HTTP port still serves the admin)."""

    process: ApiServerProcess
    url: str
    pki: Path


def start_secure_apiserver(etcd_endpoint: str, workdir: Path, *, nodes: list[Any] | None = None,
                           extra: list[str] | None = None) -> SecureApiServer:
    """The PKI for `nodes` (default: one master at 127.0.0.1; ECDSA keys, for speed) and an apiserver serving it on
    an HTTPS port with x509 client authentication, plus whatever `extra` flags a test adds."""
    from harness.cluster import pki
    from harness.cluster.local import NodeSpec

    directory = workdir / "pki"
    pki.ensure(directory, pki.plan(nodes or [NodeSpec("master-1", "master", "127.0.0.1")],
                                   service_cidr="10.96.0.0/12"), key_kind="ecdsa")
    port = free_port()
    process = start_apiserver(etcd_endpoint, workdir, extra=[
        "--compaction-interval", "100000", "--secure-port", str(port),
        "--tls-cert-file", str(directory / "apiserver.crt"), "--tls-private-key-file", str(directory / "apiserver.key"),
        "--client-ca-file", str(directory / "ca.crt"), *(extra or [])])
    return SecureApiServer(process, f"https://127.0.0.1:{port}", directory)


KUBECTL = str(Path(sys.executable).with_name("kubectl"))


@dataclass
class SecureUsers:
    """A secure apiserver and its callers: client certificates of its cluster CA made on demand (ECDSA keys, for
    speed), and for each a kubeconfig, a client, a TLS context and real kubectl."""

    server: ApiServerProcess
    url: str
    pki: Path
    work: Path

    def user(self, name: str, *groups: str) -> str:
        """A certificate for a user of this test (CN name, O groups); returns the stem of its files."""
        from harness.util import x509

        stem = f"user-{name.replace(':', '_')}"
        if not (self.pki / f"{stem}.crt").exists():
            ca = x509.load(self.pki / "ca.crt", self.pki / "ca.key")
            x509.save(x509.sign(ca, x509.CertRequest(name, tuple(groups)), key_kind="ecdsa"),
                      self.pki / f"{stem}.crt", self.pki / f"{stem}.key")
        return stem

    def kubeconfig(self, stem: str, cert: Path | None = None, key: Path | None = None) -> Path:
        """A kubeconfig for the certificate `stem` of the PKI (`admin`, a user's), or for the given files."""
        path = self.work / f"kubeconfig-{stem}"
        kubeconfig.write(path, kubeconfig.KubeConfig(
            servers=[self.url], user=stem, ca_file=str(self.pki / "ca.crt"),
            cert_file=str(cert or self.pki / f"{stem}.crt"), key_file=str(key or self.pki / f"{stem}.key")))
        return path

    def client(self, stem: str) -> Any:
        from harness.client.rest import Client

        return Client.from_kubeconfig(self.kubeconfig(stem))

    def context(self, stem: str | None = None) -> Any:
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if stem:
            ctx.load_cert_chain(self.pki / f"{stem}.crt", self.pki / f"{stem}.key")
        return ctx

    def kubectl(self, stem: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig(stem)), *args], capture_output=True,
                              text=True, timeout=60, input=stdin,
                              stdin=None if stdin is not None else subprocess.DEVNULL)


def start_signing_controller_manager(users: SecureUsers, controllers: str) -> subprocess.Popen[bytes]:
    """A controller-manager (as the admin, no leader election) running `controllers`, signing with the PKI's CA;
    its log is <work>/controller-manager.log."""
    with open(users.work / "controller-manager.log", "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "harness.cli", "controller-manager",
                                 "--kubeconfig", str(users.kubeconfig("admin")), "--secure-port", str(free_port()),
                                 "--leader-elect=false", "--controllers", controllers,
                                 "--cluster-signing-cert-file", str(users.pki / "ca.crt"),
                                 "--cluster-signing-key-file", str(users.pki / "ca.key")],
                                stdout=out, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def signing_cluster(etcd_endpoint: str, work: Path, nodes: list[Any], apiserver_flags: list[str],
                    controllers: str) -> Iterator[SecureUsers]:
    """A secure apiserver (`apiserver_flags` added) and a controller-manager running `controllers` that signs with
    its CA; both stopped on leaving."""
    started = start_secure_apiserver(etcd_endpoint, work, nodes=nodes, extra=apiserver_flags)
    users = SecureUsers(started.process, started.url, started.pki, work)
    cm = start_signing_controller_manager(users, controllers)
    try:
        yield users
    finally:
        stop_process(cm)
        stop_apiserver(started.process)


async def bind_cluster_role(client: Any, name: str, role: str, kind: str, subject: str) -> None:
    """A ClusterRoleBinding `name` of `role` to one subject (kind User or Group); kept if it exists."""
    from harness.api import errors

    try:
        await client.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body={
            "metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                    "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}]})
    except errors.AlreadyExists:
        return


async def wait_allowed(client: Any, user: str, groups: list[str], verb: str, resource: str, *, group: str = "",
                       subresource: str = "") -> None:
    """Wait until the apiserver's authorizer (its RBAC caches) allows this, as a SubjectAccessReview answers."""
    attributes = {"group": group, "resource": resource, "subresource": subresource, "verb": verb}

    async def allowed() -> bool:
        review = await client.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": attributes}})
        return bool(review["status"].get("allowed"))

    await wait_for(allowed, within=10, what=f"{user} allowed to {verb} {resource}/{subresource}")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s: for the components tests start."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def stop_apiserver(server: ApiServerProcess) -> None:
    stop_process(server.proc)


@pytest.fixture(scope="session")
def apiserver(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    server = start_apiserver(etcd.endpoint, tmp_path_factory.mktemp("apiserver"),
                             extra=["--compaction-interval", "100000"])
    yield server
    stop_apiserver(server)


class Api:
    """A thin JSON-over-HTTP helper for tests that check exact wire behaviour."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                      content_type: str = "application/json", headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None) -> tuple[int, Any]:
        hdrs = {"Content-Type": content_type, **(headers or {})}
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        async with self.session.request(method, self.base + path, data=data, headers=hdrs,
                                        params=params) as resp:
            text = await resp.read()
            try:
                doc = orjson.loads(text) if text else None
            except ValueError:
                doc = text.decode(errors="replace")
            return resp.status, doc

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, body, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, body, **kw)

    async def patch(self, path: str, body: Any, content_type: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("PATCH", path, body, content_type=content_type, **kw)


@pytest_asyncio.fixture
async def api(apiserver: ApiServerProcess) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, apiserver.url)


@pytest_asyncio.fixture
async def ns(api: Api) -> AsyncIterator[str]:
    """A fresh namespace per test, so tests never see each other's objects."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    status, body = await api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": name}})
    assert status == 201, body
    yield name


async def wait_for(predicate: Any, *, within: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll an async predicate until it returns something truthy, or fail saying what was awaited."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what or predicate}; last value: {last!r}")


__all__ = ["KUBECTL", "Api", "ApiServerProcess", "SecureUsers", "api", "apiserver", "bind_cluster_role", "free_port",
           "ns", "signing_cluster", "start_apiserver", "start_signing_controller_manager", "stop_apiserver",
           "stop_process", "wait_allowed", "wait_for"]
