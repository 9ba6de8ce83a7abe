"""Real kubectl's protobuf bodies against the apiserver: its typed commands (create namespace / deployment /
configmap / secret / serviceaccount / role / token, auth whoami / can-i, describe) send
`application/vnd.kubernetes.protobuf` and ask for it first in Accept; they must work and leave the objects
`kubectl get -o json` shows. A malformed protobuf body is a 400 Status and stores nothing.

The apiserver is this module's own (plain HTTP, every request the admin), started with a service-account signing
key so that `kubectl create token` has something to sign with.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.api import protobuf as pb
from harness.api import registry
from tests.integration.apiserver_fixtures import ApiServerProcess, start_apiserver, stop_apiserver

pytestmark = pytest.mark.kubectl

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
PROTOBUF = "application/vnd.kubernetes.protobuf"


@pytest.fixture(scope="module")
def server(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    work = tmp_path_factory.mktemp("protobuf")
    key = work / "sa.key"
    key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    process = start_apiserver(etcd.endpoint, work, extra=["--compaction-interval", "100000",
                                                          "--service-account-signing-key-file", str(key)])
    yield process
    stop_apiserver(process)


@dataclass
class Kubectl:
    server: ApiServerProcess
    namespace: str
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.server.kubeconfig), "HOME": str(self.home)}
        proc = subprocess.run([KUBECTL, *args], capture_output=True, text=True, env=env, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n"
                                 f"{proc.stdout}\n--- apiserver log ---\n{self.server.log_tail()}")
        return proc

    def ns(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("-n", self.namespace, *args, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.ns("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def kubectl(server: ApiServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """A namespace made by `kubectl create namespace` (a protobuf body), shared by the module's tests."""
    assert shutil.which(KUBECTL), f"kubectl not found at {KUBECTL}: run make deps"
    k = Kubectl(server, f"pb-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("kubectl-home"))
    out = k.run("create", "namespace", k.namespace).stdout
    assert out.strip() == f"namespace/{k.namespace} created", out
    return k


@pytest_asyncio.fixture
async def http(server: ApiServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.url) as session:
        yield session


def test_kubectl_create_commands_store_what_kubectl_sent(kubectl: Kubectl) -> None:
    k = kubectl
    assert k.get("namespace", k.namespace)["status"]["phase"] == "Active"
    assert "deployment.apps/web created" in k.ns("create", "deployment", "web", "--image=nginx", "--port=8080").stdout
    assert "configmap/c created" in k.ns("create", "configmap", "c", "--from-literal=a=b",
                                         "--from-literal=empty=").stdout
    assert "secret/s created" in k.ns("create", "secret", "generic", "s", "--from-literal=p=q").stdout
    assert "pod/p created" in k.ns("run", "p", "--image=busybox", "--labels=app=p", "--", "sleep", "3600").stdout
    assert "service/web exposed" in k.ns("expose", "deployment", "web", "--port", "80",
                                         "--target-port", "8080").stdout
    assert "serviceaccount/builder created" in k.ns("create", "serviceaccount", "builder").stdout
    assert "role.rbac.authorization.k8s.io/reader created" in k.ns("create", "role", "reader", "--verb=get,list",
                                                                   "--resource=pods").stdout
    k.ns("create", "rolebinding", "readers", "--role=reader", "--serviceaccount", f"{k.namespace}:builder")

    deployment = k.get("deployment", "web")
    assert deployment["metadata"]["labels"] == {"app": "web"} and deployment["metadata"]["uid"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert (container["name"], container["image"]) == ("nginx", "nginx")
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    # defaulted by the apiserver, as for a JSON body
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert k.get("configmap", "c")["data"] == {"a": "b", "empty": ""}
    secret = k.get("secret", "s")
    assert secret["type"] == "Opaque" and base64.b64decode(secret["data"]["p"]) == b"q"
    pod = k.get("pod", "p")
    assert pod["spec"]["containers"][0]["args"] == ["sleep", "3600"] and pod["metadata"]["labels"] == {"app": "p"}
    service = k.get("service", "web")
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == 8080
    assert service["spec"]["selector"] == {"app": "web"} and service["spec"]["clusterIP"]
    assert k.get("role", "reader")["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    binding = k.get("rolebinding", "readers")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "builder", "namespace": k.namespace}]


def test_kubectl_scale_and_describe_read_protobuf_responses(kubectl: Kubectl) -> None:
    k = kubectl
    if "deployment.apps/web" not in k.ns("get", "deployment", "-o", "name").stdout:
        k.ns("create", "deployment", "web", "--image=nginx")
    assert "deployment.apps/web scaled" in k.ns("scale", "deployment", "web", "--replicas", "3").stdout
    assert k.get("deployment", "web")["spec"]["replicas"] == 3
    # describe reads the object, its ReplicaSets and Events through kubectl's typed client: protobuf responses
    out = k.ns("describe", "deployment", "web").stdout
    assert "Replicas:               3 desired" in out and "RollingUpdateStrategy:  25% max unavailable" in out, out
    out = k.ns("describe", "namespace", k.namespace).stdout
    assert "Status:       Active" in out, out


def test_kubectl_create_job_when_jobs_are_served(kubectl: Kubectl) -> None:
    if not any(kind.kind == "Job" for kind in registry.KINDS):
        pytest.skip("batch/v1 Job is not a kind harness serves")
    assert "job.batch/j created" in kubectl.ns("create", "job", "j", "--image=busybox").stdout


def test_kubectl_auth_commands(kubectl: Kubectl) -> None:
    k = kubectl
    review = json.loads(k.run("auth", "whoami", "-o", "json").stdout)
    assert review["kind"] == "SelfSubjectReview"
    assert review["status"]["userInfo"]["username"] == "system:admin"
    assert "system:masters" in review["status"]["userInfo"]["groups"]
    assert k.run("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert k.ns("auth", "can-i", "delete", "deployments.apps", "--subresource=scale").stdout.strip() == "yes"
    rules = k.ns("auth", "can-i", "--list").stdout
    assert "*.*" in rules and "[*]" in rules, rules


def test_kubectl_create_token(kubectl: Kubectl) -> None:
    k = kubectl
    if "serviceaccount/builder" not in k.ns("get", "serviceaccount", "-o", "name").stdout:
        k.ns("create", "serviceaccount", "builder")
    token = k.ns("create", "token", "builder", "--duration=10m", "--audience=a1").stdout.strip()
    _header, claims, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert payload["sub"] == f"system:serviceaccount:{k.namespace}:builder" and payload["aud"] == ["a1"]
    assert payload["exp"] - payload["iat"] == 600 and signature


def test_protobuf_errors_reach_kubectl_as_statuses(kubectl: Kubectl) -> None:
    k = kubectl
    k.ns("create", "configmap", "dup")
    proc = k.ns("create", "configmap", "dup", check=False)
    assert proc.returncode != 0 and 'configmaps "dup" already exists' in proc.stderr, proc.stderr
    proc = k.ns("create", "configmap", "BAD_NAME", check=False)
    assert proc.returncode != 0 and 'ConfigMap "BAD_NAME" is invalid' in proc.stderr, proc.stderr


async def test_a_truncated_protobuf_body_is_400_and_stores_nothing(kubectl: Kubectl,
                                                                   http: aiohttp.ClientSession) -> None:
    ns = kubectl.namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    whole = pb.encode({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cut"}, "data": {"a": "b"}})
    for accept in ("application/json", f"{PROTOBUF}, application/json"):
        async with http.post(path, data=whole[:-7], headers={"Content-Type": PROTOBUF, "Accept": accept}) as resp:
            body = await resp.read()
            assert resp.status == 400, body
            status = pb.decode(body) if resp.content_type == PROTOBUF else orjson.loads(body)
            assert accept.startswith(resp.content_type)
        assert status["kind"] == "Status" and status["code"] == 400 and status["reason"] == "BadRequest"
        assert "truncated" in status["message"], status
    async with http.get(f"{path}/cut") as resp:
        assert resp.status == 404
    # and an envelope naming another kind is refused as a JSON body naming it would be
    pod = pb.encode({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cut"}})
    async with http.post(path, data=pod, headers={"Content-Type": PROTOBUF}) as resp:
        status = await resp.json()
        assert resp.status == 400 and "the kind in the data (Pod)" in status["message"], status
    # the whole body is fine
    async with http.post(path, data=whole, headers={"Content-Type": PROTOBUF, "Accept": PROTOBUF}) as resp:
        assert resp.status == 201 and resp.content_type == PROTOBUF
        created = pb.decode(await resp.read())
        assert created["data"] == {"a": "b"} and created["metadata"]["namespace"] == ns


async def test_responses_follow_accept(kubectl: Kubectl, http: aiohttp.ClientSession) -> None:
    ns = kubectl.namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    async with http.post(path, json={"metadata": {"name": "acc"}, "data": {"x": "y"}}) as resp:
        assert resp.status == 201 and resp.content_type == "application/json"
        as_json = await resp.json()
    async with http.get(f"{path}/acc", headers={"Accept": f"{PROTOBUF}, application/json"}) as resp:
        assert resp.content_type == PROTOBUF
        assert pb.decode(await resp.read()) == as_json
    async with http.get(path, headers={"Accept": PROTOBUF}) as resp:
        lst = pb.decode(await resp.read())
        assert lst["kind"] == "ConfigMapList" and "acc" in [i["metadata"]["name"] for i in lst["items"]]
    table = f"{PROTOBUF};as=Table;v=v1;g=meta.k8s.io, application/json;as=Table;v=v1;g=meta.k8s.io"
    async with http.get(path, headers={"Accept": table}) as resp:
        assert resp.content_type == "application/json" and (await resp.json())["kind"] == "Table"
    async with http.get(f"{path}/acc", headers={"Accept": "application/json, " + PROTOBUF}) as resp:
        assert resp.content_type == "application/json" and await resp.json() == as_json
