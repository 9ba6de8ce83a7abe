"""CertificateSigningRequests on a running cluster: the controller-manager's certificate controllers (acting as the
`certificate-controller` service account) sign what an admin approves with `kubectl certificate approve`, and the
certificate they issue authenticates its holder."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
import uuid
from pathlib import Path

from harness.api import certificates as certs
from harness.util import csr, x509
from tests.infra.support import InfraCluster


def test_an_approved_request_is_signed_and_its_certificate_authenticates(cluster: InfraCluster,
                                                                         tmp_path: Path) -> None:
    name = f"infra-{uuid.uuid4().hex[:8]}"
    key = x509.new_key("ecdsa")
    body = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
            "spec": {"request": base64.b64encode(csr.make(key, f"user-{name}", ("infra-testers",))).decode(),
                     "signerName": certs.KUBE_APISERVER_CLIENT, "usages": ["client auth"],
                     "expirationSeconds": 3600}}
    try:
        done = cluster.kubectl("create", "-f", "-", stdin=json.dumps(body))
        assert done.returncode == 0, done.stderr
        approved = cluster.kubectl("certificate", "approve", name)
        assert approved.returncode == 0, approved.stderr
        pem = cluster.wait(lambda: cluster.get("csr", name).get("status", {}).get("certificate", ""), 60,
                           lambda: f"no certificate issued: {cluster.get('csr', name)}")
        (tmp_path / "u.crt").write_bytes(base64.b64decode(pem))
        (tmp_path / "u.key").write_bytes(x509.key_pem(key))
        context = ssl.create_default_context(cafile=str(cluster.ca_file))
        context.load_cert_chain(tmp_path / "u.crt", tmp_path / "u.key")
        request = urllib.request.Request(cluster.servers[0] + "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                         data=json.dumps({"apiVersion": "authentication.k8s.io/v1",
                                                          "kind": "SelfSubjectReview"}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            who = json.loads(resp.read())["status"]["userInfo"]
        assert who["username"] == f"user-{name}" and "infra-testers" in who["groups"]
    finally:
        cluster.kubectl("delete", "csr", name, "--ignore-not-found")
