"""CertificateSigningRequests end to end on a real apiserver (Node,RBAC) and a real controller-manager running
csrapproving and csrsigning: a bootstrapping kubelet's request is approved and signed by itself, a node renews its
own, a user's request waits for `kubectl certificate approve`, approvers need `approve` on the signer, and nobody
gets a `system:masters` certificate from the kube-apiserver-client signer."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509 as cx509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.api import certificates as certs
from harness.api import errors
from harness.client.rest import Client
from harness.cluster.local import NodeSpec
from harness.util import csr, x509
from tests.integration.apiserver_fixtures import (
    SecureUsers,
    bind_cluster_role,
    signing_cluster,
    wait_allowed,
    wait_for,
)

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


Setup = SecureUsers


@pytest.fixture(scope="module")
def setup(etcd: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("csr")
    nodes = [NodeSpec("master-1", "master", "127.0.0.1"), NodeSpec("w1", "worker", "127.0.0.2")]
    with signing_cluster(etcd.endpoint, work, nodes, ["--authorization-mode", "Node,RBAC"],  # type: ignore[attr-defined]
                         "csrapproving,csrsigning,csrcleaner") as users:
        yield users


def request_body(name: str, pem: bytes, signer: str, usages: list[str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
            "spec": {"request": base64.b64encode(pem).decode(), "signerName": signer, "usages": usages, **spec}}


async def call(client: Client, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """(status, body) of a request, errors included."""
    try:
        return 200, await client.request(method, path, body=body)
    except errors.ApiError as err:
        return err.code, {"message": err.message}


async def issued(client: Client, name: str) -> cx509.Certificate:
    async def certificate() -> str:
        return certs.certificate(await client.request("GET", f"{CSR_PATH}/{name}"))

    pem = await wait_for(certificate, within=20, what=f"a certificate for CSR {name}")
    return cx509.load_pem_x509_certificate(base64.b64decode(pem))


@pytest.fixture(scope="module")
async def kubeadm_bindings(setup: Setup) -> None:
    """The bindings kubeadm makes for TLS bootstrap: bootstrappers may ask, their requests and nodes' renewals are
    approved automatically."""
    async with setup.client("admin") as admin:
        await bind_cluster_role(admin, "kubelet-bootstrap", "system:node-bootstrapper", "Group", "system:bootstrappers")
        await bind_cluster_role(admin, "node-autoapprove-bootstrap",
                                "system:certificates.k8s.io:certificatesigningrequests:nodeclient", "Group",
                                "system:bootstrappers")
        await bind_cluster_role(admin, "node-autoapprove-certificate-rotation",
                                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group",
                                "system:nodes")
        await wait_allowed(admin, "system:bootstrap:any", ["system:bootstrappers"], "create",
                           "certificatesigningrequests", group="certificates.k8s.io", subresource="nodeclient")
        await wait_allowed(admin, "system:bootstrap:any", ["system:bootstrappers"], "create",
                           "certificatesigningrequests", group="certificates.k8s.io")
        await wait_allowed(admin, "system:node:any", ["system:nodes"], "create", "certificatesigningrequests",
                           group="certificates.k8s.io", subresource="selfnodeclient")


async def test_a_bootstrapping_kubelet_gets_its_client_certificate_with_no_one_approving(
        setup: Setup, kubeadm_bindings: None, tmp_path: Path) -> None:
    key = x509.new_key("ecdsa")
    pem = csr.make(key, "system:node:w9", ("system:nodes",))
    name = f"node-csr-{uuid.uuid4().hex[:8]}"
    async with setup.client(setup.user("system:bootstrap:abcdef", "system:bootstrappers")) as bootstrap:
        created = await bootstrap.request("POST", CSR_PATH, body=request_body(
            name, pem, certs.KUBE_APISERVER_CLIENT_KUBELET, ["digital signature", "client auth"]))
        assert created["spec"]["username"] == "system:bootstrap:abcdef"
        assert "system:bootstrappers" in created["spec"]["groups"]
        cert = await issued(bootstrap, name)
        got = await bootstrap.request("GET", f"{CSR_PATH}/{name}")
    approved = next(c for c in got["status"]["conditions"] if c["type"] == "Approved")
    assert (approved["reason"], approved["message"]) == (
        "AutoApproved", "Auto approving kubelet client certificate after SubjectAccessReview.")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:w9"
    assert cert.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value == \
        cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    cert.verify_directly_issued_by(cx509.load_pem_x509_certificate((setup.pki / "ca.crt").read_bytes()))
    (tmp_path / "n.crt").write_bytes(base64.b64decode(got["status"]["certificate"]))
    (tmp_path / "n.key").write_bytes(x509.key_pem(key))
    async with Client.from_kubeconfig(setup.kubeconfig("w9", tmp_path / "n.crt", tmp_path / "n.key")) as node:
        review = await node.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                    body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review["status"]["userInfo"]["username"] == "system:node:w9"


async def test_a_node_renews_its_own_certificate_but_not_another_s(setup: Setup, kubeadm_bindings: None) -> None:
    node = setup.user("system:node:w1", "system:nodes")  # the node's client certificate, as bootstrap got it
    own, other = f"renew-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    async with setup.client(node) as kubelet:
        await kubelet.request("POST", CSR_PATH, body=request_body(
            own, csr.make(x509.new_key("ecdsa"), "system:node:w1", ("system:nodes",)),
            certs.KUBE_APISERVER_CLIENT_KUBELET, ["digital signature", "client auth"]))
        await kubelet.request("POST", CSR_PATH, body=request_body(
            other, csr.make(x509.new_key("ecdsa"), "system:node:w2", ("system:nodes",)),
            certs.KUBE_APISERVER_CLIENT_KUBELET, ["digital signature", "client auth"]))
        await issued(kubelet, own)
    async with setup.client("admin") as admin:  # the renewal was signed after the other was looked at
        assert certs.state(await admin.request("GET", f"{CSR_PATH}/{other}")) == "Pending"


async def test_kubectl_certificate_approve_needs_approve_on_the_signer(setup: Setup, tmp_path: Path) -> None:
    name = f"alice-{uuid.uuid4().hex[:8]}"
    body = request_body(name, csr.make(x509.new_key("ecdsa"), "alice", ("developers",)),
                        certs.KUBE_APISERVER_CLIENT, ["client auth"], expirationSeconds=3600)
    done = setup.kubectl("admin", "create", "-f", "-", stdin=json.dumps(body))
    assert done.returncode == 0, done.stderr
    listed = setup.kubectl("admin", "get", "csr", name)
    assert listed.stdout.split("\n")[0].split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION",
                                                    "CONDITION"]
    assert listed.stdout.split("\n")[1].split()[2:] == [certs.KUBE_APISERVER_CLIENT, "kubernetes-admin", "60m",
                                                        "Pending"]
    # bob may update approvals but holds no `approve` on the signer
    async with setup.client("admin") as admin:
        await admin.request("POST", f"{RBAC}/clusterroles", body={
            "metadata": {"name": f"approvals-{name}"},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests",
                                                                           "certificatesigningrequests/approval"],
                       "verbs": ["get", "list", "update"]}]})
        await bind_cluster_role(admin, f"approvals-{name}", f"approvals-{name}", "User", "bob")
        await wait_allowed(admin, "bob", [], "update", "certificatesigningrequests", group="certificates.k8s.io",
                           subresource="approval")
    refused = setup.kubectl(setup.user("bob"), "certificate", "approve", name)
    assert refused.returncode != 0
    assert (f'certificatesigningrequests.certificates.k8s.io "{name}" is forbidden: user not permitted to approve '
            f'requests with signerName "{certs.KUBE_APISERVER_CLIENT}"') in refused.stderr
    approved = setup.kubectl("admin", "certificate", "approve", name)
    assert approved.returncode == 0, approved.stderr
    assert f"certificatesigningrequest.certificates.k8s.io/{name} approved" in approved.stdout
    async with setup.client("admin") as admin:
        cert = await issued(admin, name)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3600 <= lifetime.total_seconds() <= 3600 + 600, "expirationSeconds (plus the backdating) is honoured"
    state = setup.kubectl("admin", "get", "csr", name, "-o", "jsonpath={.status.conditions[0].type}")
    assert state.stdout == "Approved"
    assert setup.kubectl("admin", "get", "csr", name).stdout.split("\n")[1].split()[-1] == "Approved,Issued"


async def test_no_system_masters_certificate_from_the_client_signer(setup: Setup) -> None:
    name = f"sneaky-{uuid.uuid4().hex[:8]}"
    body = request_body(name, csr.make(x509.new_key("ecdsa"), "mallory", ("system:masters",)),
                        certs.KUBE_APISERVER_CLIENT, ["client auth"])
    async with setup.client("admin") as admin:
        status, answer = await call(admin, "POST", CSR_PATH, body=body)
    assert status == 403
    assert answer["message"] == (f'certificatesigningrequests.certificates.k8s.io "{name}" is forbidden: use of '
                                 f"{certs.KUBE_APISERVER_CLIENT} signer with system:masters group is not allowed")


@pytest.mark.parametrize(("change", "message"), [
    ({"request": base64.b64encode(b"not a request").decode()},
     'spec.request: Invalid value: "<request data>": PEM block type must be CERTIFICATE REQUEST'),
    ({"usages": ["client auth", "client auth"]}, 'spec.usages[1]: Duplicate value: "client auth"'),
    ({"usages": ["flying"]}, 'spec.usages[0]: Unsupported value: "flying"'),
    ({"signerName": "example"}, "spec.signerName: Invalid value: \"example\": must be a fully qualified domain and "
                                "path of the form 'example.com/signer-name'"),
    ({"expirationSeconds": 60}, "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than "
                                "600 seconds (10 minutes)"),
])
async def test_a_bad_request_is_422_with_the_field(setup: Setup, change: dict[str, Any], message: str) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    body = request_body(name, csr.make(x509.new_key("ecdsa"), "carol"), certs.KUBE_APISERVER_CLIENT,
                        ["client auth"])
    body["spec"].update(change)
    async with setup.client("admin") as admin:
        status, answer = await call(admin, "POST", CSR_PATH, body=body)
        assert status == 422, answer
        assert message in answer["message"], answer["message"]
        status, _ = await call(admin, "GET", f"{CSR_PATH}/{name}")
        assert status == 404, "nothing was stored"
