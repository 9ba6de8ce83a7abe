"""Kubelet TLS bootstrap as kubeadm does it, on a real apiserver (`--enable-bootstrap-token-auth`, Node,RBAC) and a
real controller-manager (csrapproving, csrsigning, tokencleaner): a bootstrap token authenticates as
`system:bootstrap:<id>`, the kubelet's certificate manager gets its `system:node:<name>` certificate with no one
approving, writes its kubeconfig, and renews the certificate as itself; expired, forged and deleted tokens are 401,
and the token cleaner removes expired token Secrets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509 as cx509
from cryptography.x509.oid import NameOID

from harness.api import errors
from harness.auth import bootstraptoken
from harness.client import kubeconfig
from harness.client.rest import Client
from harness.cluster.local import NodeSpec
from harness.kubelet import certificate
from tests.integration.apiserver_fixtures import (
    SecureUsers,
    bind_cluster_role,
    signing_cluster,
    wait_for,
)

RBAC = "/apis/rbac.authorization.k8s.io/v1"
SECRETS = "/api/v1/namespaces/kube-system/secrets"


@pytest.fixture(scope="module")
def setup(etcd: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureUsers]:
    work = tmp_path_factory.mktemp("bootstrap")
    nodes = [NodeSpec("master-1", "master", "127.0.0.1")]
    flags = ["--authorization-mode", "Node,RBAC", "--enable-bootstrap-token-auth"]
    with signing_cluster(etcd.endpoint, work, nodes, flags,  # type: ignore[attr-defined]
                         "csrapproving,csrsigning,tokencleaner") as users:
        yield users


@pytest.fixture(scope="module")
async def token(setup: SecureUsers) -> str:
    """A bootstrap token and kubeadm's bindings for it (ask for, and be auto-approved, node client certificates;
    nodes renew their own)."""
    value = bootstraptoken.new_token()
    async with setup.client("admin") as admin:
        await admin.request("POST", SECRETS, body=bootstraptoken.secret_for(
            value, expiration=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            extra_groups=("system:bootstrappers:kubeadm:default-node-token",)))
        group = "system:bootstrappers:kubeadm:default-node-token"
        await bind_cluster_role(admin, "kubeadm:kubelet-bootstrap", "system:node-bootstrapper", "Group", group)
        await bind_cluster_role(admin, "kubeadm:node-autoapprove-bootstrap",
                                "system:certificates.k8s.io:certificatesigningrequests:nodeclient", "Group", group)
        await bind_cluster_role(admin, "kubeadm:node-autoapprove-certificate-rotation",
                                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group",
                                "system:nodes")

        async def in_force() -> bool:  # the Secret and the bindings are in the apiserver's caches
            review = await admin.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
                    "user": f"system:bootstrap:{value.split('.')[0]}", "groups": ["system:bootstrappers", group],
                    "resourceAttributes": {"group": "certificates.k8s.io", "resource": "certificatesigningrequests",
                                           "subresource": "nodeclient", "verb": "create"}}})
            found = await admin.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body={
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": value}})
            return bool(review["status"].get("allowed") and found["status"].get("authenticated"))

        await wait_for(in_force, within=10, what="the bootstrap token and its bindings in force")
    return value


def token_kubeconfig(setup: SecureUsers, path: Path, value: str) -> Path:
    kubeconfig.write(path, kubeconfig.KubeConfig(servers=[setup.url], user="tls-bootstrap-token-user",
                                                 ca_file=str(setup.pki / "ca.crt"), token=value))
    return path


async def whoami(path: Path) -> dict[str, Any]:
    async with Client.from_kubeconfig(path) as client:
        review = await client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                      body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return dict(review["status"]["userInfo"])


async def test_a_bootstrap_token_is_its_own_user(setup: SecureUsers, token: str, tmp_path: Path) -> None:
    who = await whoami(token_kubeconfig(setup, tmp_path / "boot.conf", token))
    assert who["username"] == f"system:bootstrap:{token.split('.')[0]}"
    assert {"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"} <= set(who["groups"])


async def test_the_kubelet_bootstraps_and_renews_its_certificate(setup: SecureUsers, token: str,
                                                                 tmp_path: Path) -> None:
    files = certificate.Files(tmp_path / "kubelet.conf", token_kubeconfig(setup, tmp_path / "boot.conf", token),
                              tmp_path / "pki")
    assert await certificate.bootstrap(files, "w7", wait_seconds=30)
    assert (await whoami(files.kubeconfig))["username"] == "system:node:w7"
    first = certificate.current_certificate(files)
    assert first is not None
    assert first.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    assert not await certificate.bootstrap(files, "w7"), "a kubeconfig with a good certificate is kept"
    async with Client.from_kubeconfig(files.kubeconfig) as node:  # renewal: a selfnodeclient request, as the node
        cert_pem, key_pem = await certificate.request_certificate(node, "w7", wait_seconds=30)
    certificate.store(files, cert_pem, key_pem, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    second = certificate.current_certificate(files)
    assert second is not None and second.serial_number != first.serial_number
    assert files.current.is_symlink() and len(list((tmp_path / "pki").glob("kubelet-client-2*.pem"))) == 2
    assert (await whoami(files.kubeconfig))["username"] == "system:node:w7"


def test_the_rotation_deadline_is_70_to_90_percent_through() -> None:
    import random

    from harness.util import x509

    ca = x509.new_ca("ca", key_kind="ecdsa")
    cert: cx509.Certificate = x509.sign(ca, x509.CertRequest("n", days=100), key_kind="ecdsa").cert
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    for seed in range(20):
        at = certificate.rotation_deadline(cert, random.Random(seed)) - cert.not_valid_before_utc
        assert 0.7 * life <= at <= 0.9 * life


@pytest.mark.parametrize("problem", ["forged", "expired", "deleted", "no-auth-usage"])
async def test_bad_bootstrap_tokens_are_401(setup: SecureUsers, tmp_path: Path, problem: str) -> None:
    value = bootstraptoken.new_token()
    secret = bootstraptoken.secret_for(value, expiration=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    if problem == "no-auth-usage":
        secret["stringData"]["usage-bootstrap-authentication"] = "false"
    async with setup.client("admin") as admin:
        if problem != "deleted":
            await admin.request("POST", SECRETS, body=secret)
    used = value[:7] + "x" * 16 if problem == "forged" else value
    path = token_kubeconfig(setup, tmp_path / "bad.conf", used)

    async def refused() -> bool:
        try:
            await whoami(path)
        except errors.Unauthorized:
            return True
        return False

    if problem == "expired":  # the Secret expires a moment after it works
        async def works() -> bool:  # once the apiserver's cache has the Secret
            try:
                return (await whoami(path))["username"] == f"system:bootstrap:{value.split('.')[0]}"
            except errors.Unauthorized:
                return False

        assert await wait_for(works, within=10, what="the new bootstrap token accepted")
        async with setup.client("admin") as admin:
            secret["stringData"]["expiration"] = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
                                                  ).strftime("%Y-%m-%dT%H:%M:%SZ")
            await admin.request("PUT", f"{SECRETS}/{secret['metadata']['name']}", body=secret)
    assert await wait_for(refused, within=10, what=f"a {problem} bootstrap token refused")


async def test_the_token_cleaner_removes_expired_token_secrets(setup: SecureUsers) -> None:
    value = bootstraptoken.new_token()
    secret = bootstraptoken.secret_for(value, expiration=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    async with setup.client("admin") as admin:
        await admin.request("POST", SECRETS, body=secret)

        async def gone() -> bool:
            try:
                await admin.request("GET", f"{SECRETS}/{secret['metadata']['name']}")
            except errors.NotFound:
                return True
            return False

        assert await wait_for(gone, within=15, what="the expired token's Secret deleted")


def test_a_missing_or_unreadable_kubeconfig_needs_bootstrap_and_a_foreign_one_is_kept(tmp_path: Path) -> None:
    files = certificate.Files(tmp_path / "kubelet.conf", tmp_path / "boot.conf", tmp_path / "pki")
    now = dt.datetime.now(dt.UTC)
    assert certificate.needs_bootstrap(files, now)
    files.kubeconfig.write_text("{not: [yaml")
    assert certificate.needs_bootstrap(files, now)
    kubeconfig.write(files.kubeconfig, kubeconfig.KubeConfig(servers=["https://127.0.0.1:6443"],
                                                             cert_file="/etc/harness/pki/other.crt"))
    assert not certificate.needs_bootstrap(files, now), "a kubeconfig of another making is left alone"
