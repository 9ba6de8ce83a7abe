"""Service-account tokens on a real apiserver: TokenRequest issues bound JWTs, the apiserver authenticates them, and
they stop working when what they are bound to goes (the pod, the service account); expired, forged and foreign
tokens are 401; TokenReview says why; the ServiceAccount admission plugin gives every pod its token volume.

The apiserver runs `--authorization-mode=RBAC` with the cluster PKI's `sa.key`, so a fresh service account is
authenticated but may do nothing beyond discovery and reviews.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.auth import serviceaccount as sa
from harness.client import kubeconfig
from harness.client.rest import Client
from tests.integration.apiserver_fixtures import ApiServerProcess, start_secure_apiserver, stop_apiserver

ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass
class Server:
    process: ApiServerProcess
    url: str
    pki: Path
    work: Path

    def context(self, stem: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if stem:
            ctx.load_cert_chain(self.pki / f"{stem}.crt", self.pki / f"{stem}.key")
        return ctx

    def admin(self) -> Client:
        path = self.work / "admin.conf"
        kubeconfig.write(path, kubeconfig.KubeConfig(servers=[self.url], user="admin",
                                                     ca_file=str(self.pki / "ca.crt"),
                                                     cert_file=str(self.pki / "admin.crt"),
                                                     key_file=str(self.pki / "admin.key")))
        return Client.from_kubeconfig(path)


@pytest.fixture(scope="module")
def server(etcd: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("sa")
    started = start_secure_apiserver(etcd.endpoint, work, extra=[  # type: ignore[attr-defined]
        "--authorization-mode", "Node,RBAC",
        "--service-account-signing-key-file", str(work / "pki" / "sa.key"),
        "--service-account-key-file", str(work / "pki" / "sa.pub"), "--service-account-issuer", ISSUER,
        "--enable-admission-plugins", "NamespaceLifecycle,ServiceAccount,DefaultTolerationSeconds"])
    yield Server(started.process, started.url, started.pki, work)
    stop_apiserver(started.process)


@pytest.fixture
async def namespace(server: Server) -> str:
    """A namespace with its default service account (no controller-manager runs here to make it)."""
    name = f"sa-{uuid.uuid4().hex[:8]}"
    async with server.admin() as admin:
        await admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
        await admin.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts",
                            body={"metadata": {"name": "default"}})
    return name


async def call(server: Server, method: str, path: str, *, token: str = "", stem: str | None = None,
               body: Any = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, server.url + path, ssl=server.context(stem), json=body, headers=headers) as resp:
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()}


def token_request(seconds: int = 600, bound: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if bound:
        spec["boundObjectRef"] = bound
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


async def whoami(server: Server, token: str) -> tuple[int, dict[str, Any]]:
    code, body = await call(server, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token,
                            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return code, body["status"]["userInfo"] if code == 201 else body


async def test_a_requested_token_authenticates_as_its_service_account(server: Server, namespace: str) -> None:
    async with server.admin() as admin:
        account = await admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                                      body={"metadata": {"name": "robot"}})
        answer = await admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/robot/token",
                                     body=token_request(seconds=1200))
    assert answer["kind"] == "TokenRequest"
    assert answer["spec"]["audiences"] == [ISSUER], "defaults to the issuer, as --api-audiences does"
    assert answer["spec"]["expirationSeconds"] == 1200
    token = answer["status"]["token"]
    code, user = await whoami(server, token)
    assert code == 201
    assert user["username"] == f"system:serviceaccount:{namespace}:robot"
    assert user["uid"] == account["metadata"]["uid"]
    assert user["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                              "system:authenticated"]
    assert user["extra"]["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")
    code, body = await call(server, "GET", f"/api/v1/namespaces/{namespace}/secrets", token=token)
    assert code == 403, "a fresh service account may not read secrets"
    assert body["message"] == (f'secrets is forbidden: User "system:serviceaccount:{namespace}:robot" cannot list '
                               f'resource "secrets" in API group "" in the namespace "{namespace}"')


async def test_deleting_the_service_account_revokes_its_tokens(server: Server, namespace: str) -> None:
    async with server.admin() as admin:
        await admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                            body={"metadata": {"name": "doomed"}})
        token = (await admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/doomed/token",
                                     body=token_request()))["status"]["token"]
        assert (await whoami(server, token))[0] == 201
        await admin.request("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/doomed")
    code = 0
    for _ in range(100):  # the apiserver's cache sees the delete a moment later
        code, body = await whoami(server, token)
        if code == 401:
            break
        await asyncio.sleep(0.05)
    assert (code, body["message"]) == (401, "Unauthorized")
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    code, answer = await call(server, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", stem="admin",
                              body=review)
    assert code == 201
    assert answer["status"]["authenticated"] is False
    assert answer["status"]["error"] == (f"[invalid bearer token, service account {namespace}/doomed has been "
                                         "deleted]")


async def test_a_pod_bound_token_dies_with_its_pod(server: Server, namespace: str) -> None:
    async with server.admin() as admin:
        pod = await admin.request("POST", f"/api/v1/namespaces/{namespace}/pods", body={
            "metadata": {"name": "holder"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        bound = {"apiVersion": "v1", "kind": "Pod", "name": "holder", "uid": pod["metadata"]["uid"]}
        token = (await admin.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/default/token",
                                     body=token_request(bound=bound)))["status"]["token"]
        code, user = await whoami(server, token)
        assert code == 201
        assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["holder"]
        assert user["extra"]["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]
        await admin.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/holder",
                            params={"gracePeriodSeconds": "0"})
    for _ in range(100):
        code, _ = await whoami(server, token)
        if code == 401:
            break
        await asyncio.sleep(0.05)
    assert code == 401


async def test_bad_token_requests_are_refused_with_the_field(server: Server, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/default/token"
    code, body = await call(server, "POST", path, stem="admin", body=token_request(seconds=599))
    assert code == 422
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.expirationSeconds",
                                          "message": "Invalid value: 599: may not specify a duration less than "
                                                     "10 minutes"}]
    code, body = await call(server, "POST", path, stem="admin", body=token_request(
        bound={"apiVersion": "v1", "kind": "Pod", "name": "ghost"}))
    assert (code, body["message"]) == (404, 'pods "ghost" not found')
    code, _ = await call(server, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/nobody/token",
                         stem="admin", body=token_request())
    assert code == 404


async def test_expired_forged_and_foreign_tokens_are_401(server: Server, namespace: str) -> None:
    async with server.admin() as admin:
        account = await admin.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
    key = sa.load_private_key((server.pki / "sa.key").read_bytes())
    two_hours_ago = time.time() - 7200
    expired = sa.TokenIssuer(key, ISSUER, clock=lambda: two_hours_ago).issue(
        namespace=namespace, service_account=account, audiences=[ISSUER], expiration_seconds=600).token
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = sa.TokenIssuer(stranger, ISSUER).issue(namespace=namespace, service_account=account,
                                                   audiences=[ISSUER], expiration_seconds=600).token
    foreign = sa.TokenIssuer(key, "https://elsewhere.example").issue(
        namespace=namespace, service_account=account, audiences=[ISSUER], expiration_seconds=600).token
    for token in (expired, forged, foreign, "not-a-jwt"):
        code, body = await whoami(server, token)
        assert (code, body.get("message")) == (401, "Unauthorized"), token[:20]


async def test_every_pod_gets_its_token_volume(server: Server, namespace: str) -> None:
    async with server.admin() as admin:
        pod = await admin.request("POST", f"/api/v1/namespaces/{namespace}/pods", body={
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}})
        opted_out = await admin.request("POST", f"/api/v1/namespaces/{namespace}/pods", body={
            "metadata": {"name": "quiet"}, "spec": {"automountServiceAccountToken": False,
                                                    "containers": [{"name": "a", "image": "busybox"}]}})
        code, body = await call(server, "POST", f"/api/v1/namespaces/{namespace}/pods", stem="admin", body={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lost"},
            "spec": {"serviceAccountName": "missing", "containers": [{"name": "a", "image": "busybox"}]}})
    assert pod["spec"]["serviceAccountName"] == "default"
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    for container in pod["spec"]["containers"]:
        assert {"name": volume["name"], "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"} in container["volumeMounts"]
    assert not opted_out["spec"].get("volumes")
    assert code == 403
    assert body["message"] == (f'pods "lost" is forbidden: error looking up service account {namespace}/missing: '
                               'serviceaccount "missing" not found')
