"""Security of a running cluster, checked as kube-bench checks the CIS Kubernetes Benchmark, plus behaviour.

Each configuration check names its CIS control (benchmark v1.10 numbering) and reads what is really there: the files
on the machines, and the command line of the running program (`/proc/<pid>/cmdline`), as kube-bench does. Checks of
controls that this topology implements differently say so; controls whose work is still to come (etcd TLS, the
kubelet's authentication, audit, encryption at rest) are added with that work.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.infra.support import InfraCluster

PKI = "/etc/harness/pki"
KUBELET_CERT_DIR = "/var/lib/harness/pki"


def flags(cluster: InfraCluster, machine: str, program: str) -> dict[str, str]:
    """The flags of a running supervisord program: `--name value` and `--name=value` forms."""
    state, pid = cluster.programs(machine)[program]
    assert state == "RUNNING" and pid, f"{program} on {machine} is {state}"
    argv = cluster.host(machine).run(f"cat /proc/{pid}/cmdline").stdout.split("\0")
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            out[name] = value if (eq or value) else "true"
        i += 1
    return out


def request(cluster: InfraCluster, path: str, *, context: ssl.SSLContext | None, method: str = "GET",
            body: Any = None, token: str = "") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(cluster.servers[0] + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def anonymous(cluster: InfraCluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cluster.ca_file))


def certificate(cluster: InfraCluster, stem: str) -> ssl.SSLContext:
    """A TLS context presenting a certificate of the cluster PKI (`inventory/<name>/pki/<stem>.crt`)."""
    ctx = anonymous(cluster)
    pki = Path(cluster.cluster_vars["pki_source"])
    ctx.load_cert_chain(pki / f"{stem}.crt", pki / f"{stem}.key")
    return ctx


# -- 1.1: control plane configuration files ----------------------------------------------------


def test_cis_1_1_19_to_21_pki_files_are_roots_and_keys_0600(cluster: InfraCluster) -> None:
    """1.1.19 PKI ownership root:root; 1.1.20 certificates 644 or stricter; 1.1.21 keys 600."""
    for machine in cluster.machines:
        host = cluster.host(machine)
        listing = host.run(f"find {PKI} -type f -printf '%u:%g %m %p\\n'").stdout.split("\n")
        entries = [line.split(" ", 2) for line in listing if line]
        assert entries, f"no PKI on {machine}"
        for owner, mode, path in entries:
            assert owner == "root:root", f"{machine}:{path} is {owner}"
            limit = 0o600 if path.endswith(".key") else 0o644
            assert int(mode, 8) & ~limit == 0, f"{machine}:{path} is {mode}"


@pytest.mark.parametrize(("cis", "conf"), [("1.1.13-14", "admin.conf"), ("1.1.15-16", "scheduler.conf"),
                                           ("1.1.17-18", "controller-manager.conf")])
def test_cis_1_1_kubeconfigs_are_root_only(cluster: InfraCluster, cis: str, conf: str) -> None:
    """The control plane's kubeconfigs hold client keys: 600, root:root."""
    for master in cluster.masters:
        f = cluster.host(master.name).file(f"/etc/harness/{conf}")
        if conf == "admin.conf" and not f.exists:
            continue  # the admin's kubeconfig stays with the admin (inventory/<name>/kubeconfig), as k3s keeps it
        assert f.exists, f"/etc/harness/{conf} on {master.name} (CIS {cis})"
        assert (f.user, f.group) == ("root", "root")
        assert f.mode & 0o077 == 0, f"/etc/harness/{conf} on {master.name} is {oct(f.mode)} (CIS {cis})"


def test_cis_4_1_9_to_10_kubelet_kubeconfig_is_root_only(cluster: InfraCluster) -> None:
    for worker in cluster.workers:
        f = cluster.host(worker.name).file("/etc/harness/kubelet.conf")
        assert (f.user, f.group) == ("root", "root")
        assert f.mode & 0o077 == 0, oct(f.mode)


# -- 1.2: the apiserver ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apiserver(cluster: InfraCluster) -> dict[str, str]:
    return flags(cluster, cluster.masters[0].name, "harness-apiserver")


def test_cis_1_2_1_anonymous_requests_are_refused(cluster: InfraCluster) -> None:
    """1.2.1 (anonymous-auth false): harness allows anonymous requests only at /healthz, /livez, /readyz and /version,
    as AuthenticationConfiguration's anonymous.conditions does; anything else without credentials is 401."""
    status, body = request(cluster, "/api/v1/namespaces", context=anonymous(cluster))
    assert (status, body.get("message")) == (401, "Unauthorized")
    assert request(cluster, "/api", context=anonymous(cluster))[0] == 401
    assert request(cluster, "/version", context=anonymous(cluster))[0] == 200


def test_cis_1_2_5_to_8_authorization_is_node_and_rbac(apiserver: dict[str, str]) -> None:
    """1.2.6 not AlwaysAllow; 1.2.7 includes Node; 1.2.8 includes RBAC."""
    modes = apiserver["--authorization-mode"].split(",")
    assert "AlwaysAllow" not in modes
    assert {"Node", "RBAC"} <= set(modes)


@pytest.mark.parametrize(("cis", "plugin"), [("1.2.13", "ServiceAccount"), ("1.2.14", "NamespaceLifecycle"),
                                             ("1.2.15", "NodeRestriction")])
def test_cis_1_2_admission_plugins(apiserver: dict[str, str], cis: str, plugin: str) -> None:
    assert plugin in apiserver["--enable-admission-plugins"].split(","), f"CIS {cis}"


def test_cis_1_2_16_no_profiling_endpoint(cluster: InfraCluster) -> None:
    """1.2.16 (profiling false): harness serves no /debug/pprof at all."""
    assert request(cluster, "/debug/pprof/", context=cluster.tls())[0] == 404


def test_cis_1_2_24_to_30_tls_and_service_account_flags(apiserver: dict[str, str]) -> None:
    """1.2.25 service-account-key-file; 1.2.28 tls-cert-file and key; 1.2.29 client-ca-file; and no plain port."""
    for flag in ("--service-account-key-file", "--service-account-signing-key-file", "--tls-cert-file",
                 "--tls-private-key-file", "--client-ca-file"):
        assert apiserver.get(flag, "").startswith(PKI), flag
    assert apiserver["--port"] == "0", "no plain-HTTP port"


def test_cis_1_2_17_to_20_audit_log_is_on(apiserver: dict[str, str]) -> None:
    """1.2.17 audit-log-path; 1.2.18 maxage 30; 1.2.19 maxbackup 10; 1.2.20 maxsize 100."""
    assert apiserver["--audit-log-path"] == "/var/log/harness/audit.log"
    assert apiserver["--audit-policy-file"] == "/etc/harness/audit-policy.yaml"
    assert int(apiserver["--audit-log-maxage"]) >= 30
    assert int(apiserver["--audit-log-maxbackup"]) >= 10
    assert int(apiserver["--audit-log-maxsize"]) >= 100


def test_a_change_is_in_the_audit_log_with_who_made_it(cluster: InfraCluster) -> None:
    with cluster.namespace("audit") as ns:
        name = f"audited-{uuid.uuid4().hex[:6]}"
        done = cluster.kubectl("create", "configmap", name, "-n", ns, "--from-literal=k=v")
        assert done.returncode == 0, done.stderr

        def events() -> list[dict[str, Any]]:
            found = []
            for master in cluster.masters:
                text = cluster.host(master.name).run(f"grep -h '{name}' /var/log/harness/audit.log || true").stdout
                found += [json.loads(line) for line in text.splitlines() if line.strip()]
            return found

        cluster.wait(lambda: any(e["verb"] == "create" for e in events()), 30, "no audit event for the create")
        [event] = [e for e in events() if e["verb"] == "create"]
        assert event["user"]["username"] == "kubernetes-admin"
        assert event["objectRef"]["name"] == name and event["level"] == "Metadata", "config maps: metadata only"
        assert event["responseStatus"]["code"] == 201
        assert event["annotations"]["authorization.k8s.io/decision"] == "allow"


def test_cis_1_2_31_secrets_are_encrypted_in_etcd(cluster: InfraCluster, apiserver: dict[str, str]) -> None:
    """1.2.31 encryption-provider-config, and a secret read from etcd itself holds no plaintext."""
    assert apiserver["--encryption-provider-config"] == f"{PKI}/encryption-config.yaml"
    with cluster.namespace("enc") as ns:
        name = f"s-{uuid.uuid4().hex[:6]}"
        done = cluster.kubectl("create", "secret", "generic", name, "-n", ns, "--from-literal=password=plaintext-99")
        assert done.returncode == 0, done.stderr
        master = cluster.masters[0]
        encoded = cluster.host(master.name).run(
            f"etcdctl --endpoints https://{master.ip}:2379 --cacert {PKI}/etcd/ca.crt "
            f"--cert {PKI}/apiserver-etcd-client.crt --key {PKI}/apiserver-etcd-client.key "
            f"get /registry/secrets/{ns}/{name} --print-value-only | base64 -w0").stdout
        stored = base64.b64decode(encoded)
        assert stored.startswith(b"k8s:enc:aescbc:v1:key1:"), stored[:40]
        assert b"plaintext-99" not in stored and b"cGxhaW50ZXh0LTk5" not in stored
        assert cluster.get("secret", name, "-n", ns)["data"]["password"] == "cGxhaW50ZXh0LTk5"


def test_cis_1_2_27_and_30_the_apiserver_reaches_etcd_with_its_certificate(apiserver: dict[str, str]) -> None:
    """1.2.27 etcd-certfile and etcd-keyfile; 1.2.30 etcd-cafile; every etcd server over https."""
    assert apiserver["--etcd-certfile"] == f"{PKI}/apiserver-etcd-client.crt"
    assert apiserver["--etcd-keyfile"] == f"{PKI}/apiserver-etcd-client.key"
    assert apiserver["--etcd-cafile"] == f"{PKI}/etcd/ca.crt"
    assert all(url.startswith("https://") for url in apiserver["--etcd-servers"].split(","))


# -- 2: etcd -----------------------------------------------------------------------------------


def test_cis_2_1_to_2_5_etcd_speaks_tls_with_client_certificates(cluster: InfraCluster) -> None:
    """2.1 cert-file and key-file; 2.2 client-cert-auth; 2.4 peer cert-file and key-file; 2.5 peer-client-cert-auth;
    and 2.3 (auto-tls) and 2.6 (peer-auto-tls) not set."""
    for master in cluster.masters:
        etcd = flags(cluster, master.name, "harness-etcd")
        assert etcd["--cert-file"] == f"{PKI}/etcd/server.crt"
        assert etcd["--key-file"] == f"{PKI}/etcd/server.key"
        assert etcd["--client-cert-auth"] == "true"
        assert etcd["--peer-cert-file"] == f"{PKI}/etcd/peer.crt"
        assert etcd["--peer-client-cert-auth"] == "true"
        assert "--auto-tls" not in etcd and "--peer-auto-tls" not in etcd
        assert etcd["--listen-client-urls"].startswith("https://")


def test_etcd_refuses_a_client_without_a_certificate(cluster: InfraCluster) -> None:
    master = cluster.masters[0]
    host = cluster.host(master.name)
    plain = host.run(f"etcdctl --endpoints https://{master.ip}:2379 --cacert {PKI}/etcd/ca.crt "
                     "--dial-timeout 3s --command-timeout 3s endpoint health")
    assert plain.rc != 0, plain.stdout
    other_ca = host.run(f"etcdctl --endpoints https://{master.ip}:2379 --cacert {PKI}/etcd/ca.crt "
                        f"--cert {PKI}/apiserver-kubelet-client.crt --key {PKI}/apiserver-kubelet-client.key "
                        "--dial-timeout 3s --command-timeout 3s endpoint health")
    assert other_ca.rc != 0, "a certificate of the cluster CA is not one of the etcd CA"
    ok = host.run(f"etcdctl --endpoints https://{master.ip}:2379 --cacert {PKI}/etcd/ca.crt "
                  f"--cert {PKI}/etcd/healthcheck-client.crt --key {PKI}/etcd/healthcheck-client.key endpoint health")
    assert ok.rc == 0, ok.stderr


# -- 1.3: the controller-manager ---------------------------------------------------------------


def test_cis_1_3_3_and_5_controllers_use_their_own_accounts(cluster: InfraCluster) -> None:
    """1.3.3 use-service-account-credentials; 1.3.5 root-ca-file."""
    cm = flags(cluster, cluster.masters[0].name, "harness-controller-manager")
    assert cm["--use-service-account-credentials"] == "true"
    assert cm["--root-ca-file"] == f"{PKI}/ca.crt"
    accounts = {sa["metadata"]["name"] for sa in cluster.get("serviceaccounts", "-n", "kube-system")["items"]}
    assert {"deployment-controller", "replicaset-controller", "namespace-controller"} <= accounts


# -- 4.2: the kubelet --------------------------------------------------------------------------


def test_cis_4_2_1_to_4_kubelet_authenticates_and_authorizes(cluster: InfraCluster) -> None:
    """4.2.1 anonymous-auth false; 4.2.2 authorization-mode not AlwaysAllow; 4.2.3 client-ca-file; 4.2.4
    read-only-port 0; 4.2.10 tls-cert-file and key."""
    for worker in cluster.workers:
        kubelet = flags(cluster, worker.name, "harness-kubelet")
        assert kubelet["--anonymous-auth"] == "false"
        assert kubelet["--authorization-mode"] == "Webhook"
        assert kubelet["--authentication-token-webhook"] == "true"
        assert kubelet["--client-ca-file"] == f"{PKI}/ca.crt"
        assert kubelet["--read-only-port"] == "0"
        assert kubelet["--tls-cert-file"] == f"{PKI}/kubelet.crt"


def kubelet_get(cluster: InfraCluster, path: str, context: ssl.SSLContext) -> tuple[int, str]:
    worker = cluster.workers[0]
    try:
        with urllib.request.urlopen(f"https://{worker.ip}:10250{path}", timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_kubelet_api_refuses_anonymous_and_unauthorized_callers(cluster: InfraCluster) -> None:
    assert kubelet_get(cluster, "/pods", anonymous(cluster)) == (401, "Unauthorized")
    worker = cluster.workers[0].name
    code, text = kubelet_get(cluster, "/pods", certificate(cluster, "dns"))
    assert (code, text) == (403, "Forbidden (user=system:kube-dns, verb=get, resource=nodes, subresource=pods)")
    code, text = kubelet_get(cluster, "/metrics", certificate(cluster, "prometheus"))
    assert code == 200 and "kubelet_running_pods" in text, "Prometheus may read nodes/metrics"
    code, _ = kubelet_get(cluster, "/pods", certificate(cluster, "apiserver-kubelet-client"))
    assert code == 200, f"the apiserver's client certificate reaches {worker}'s pods"


def test_the_apiserver_verifies_the_kubelets_certificate(cluster: InfraCluster) -> None:
    apiserver = flags(cluster, cluster.masters[0].name, "harness-apiserver")
    assert apiserver["--kubelet-certificate-authority"] == f"{PKI}/ca.crt"
    assert apiserver["--kubelet-client-certificate"] == f"{PKI}/apiserver-kubelet-client.crt"


# -- 1.3 / 1.4: the scheduler's and controller-manager's secure ports -----------------------------


@pytest.mark.parametrize(("program", "port"), [("harness-scheduler", 10259), ("harness-controller-manager", 10257)])
def test_secure_ports_serve_metrics_only_to_whom_rbac_allows(cluster: InfraCluster, program: str, port: int) -> None:
    """Upstream's delegated authentication and authorization: health for anyone, /metrics by SubjectAccessReview."""
    master = cluster.masters[0]

    def get(path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"https://{master.ip}:{port}{path}", timeout=10, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    assert get("/healthz", anonymous(cluster)) == (200, b"ok")
    code, body = get("/metrics", anonymous(cluster))
    assert code == 403
    assert json.loads(body)["message"] == 'forbidden: User "system:anonymous" cannot get path "/metrics"'
    code, body = get("/metrics", certificate(cluster, "prometheus"))
    assert code == 200 and b"process_resident_memory_bytes" in body
    assert flags(cluster, master.name, program)["--client-ca-file"] == f"{PKI}/ca.crt"


# -- 5.1: RBAC ---------------------------------------------------------------------------------


def test_cis_5_1_1_cluster_admin_is_bound_only_to_system_masters(cluster: InfraCluster) -> None:
    bindings = cluster.get("clusterrolebindings")["items"]
    to_admin = [b for b in bindings if b["roleRef"]["name"] == "cluster-admin"]
    assert [(b["metadata"]["name"], b["subjects"]) for b in to_admin] == [
        ("cluster-admin", [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}])]


# -- behaviour ---------------------------------------------------------------------------------


def test_a_fresh_service_account_is_authenticated_but_may_not_read_secrets(cluster: InfraCluster) -> None:
    with cluster.namespace("sec") as ns:
        name = f"robot-{uuid.uuid4().hex[:6]}"
        status, _ = request(cluster, f"/api/v1/namespaces/{ns}/serviceaccounts", context=cluster.tls(),
                            method="POST", body={"apiVersion": "v1", "kind": "ServiceAccount",
                                                 "metadata": {"name": name}})
        assert status == 201
        status, answer = request(cluster, f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
                                 context=cluster.tls(), method="POST",
                                 body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                       "spec": {"expirationSeconds": 600}})
        assert status == 201, answer
        token = answer["status"]["token"]
        status, body = request(cluster, f"/api/v1/namespaces/{ns}/secrets", context=anonymous(cluster),
                               token=token)
        assert status == 403
        assert body["message"] == (f'secrets is forbidden: User "system:serviceaccount:{ns}:{name}" cannot list '
                                   f'resource "secrets" in API group "" in the namespace "{ns}"')
        status, body = request(cluster, f"/api/v1/namespaces/{ns}/secrets", context=anonymous(cluster),
                               token=token[:-4] + "AAAA")
        assert (status, body["message"]) == (401, "Unauthorized"), "a forged signature"


def kubelet_certificate(cluster: InfraCluster, worker: str, tmp_path: Path) -> ssl.SSLContext:
    """A TLS context presenting the client certificate a worker's kubelet got through TLS bootstrap."""
    pem = cluster.host(worker).file(f"{KUBELET_CERT_DIR}/kubelet-client-current.pem").content
    (tmp_path / f"{worker}.pem").write_bytes(pem)
    ctx = anonymous(cluster)
    ctx.load_cert_chain(tmp_path / f"{worker}.pem")
    return ctx


def test_kubelets_got_their_client_certificates_through_tls_bootstrap(cluster: InfraCluster, tmp_path: Path) -> None:
    """kubeadm's join: each kubelet's certificate was asked for with the bootstrap token, approved by csrapproving
    and issued by csrsigning; its kubeconfig is the kubelet's own writing."""
    for worker in cluster.workers:
        kubelet = flags(cluster, worker.name, "harness-kubelet")
        assert kubelet["--bootstrap-kubeconfig"] == "/etc/harness/bootstrap-kubelet.conf"
        assert kubelet["--rotate-certificates"] == "true"
        status, who = request(cluster, "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                              context=kubelet_certificate(cluster, worker.name, tmp_path), method="POST",
                              body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert status == 201, who
        assert who["status"]["userInfo"]["username"] == f"system:node:{worker.name}"
    requests = cluster.get("csr")["items"]
    node_requests = [r for r in requests if r["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"]
    assert {r["spec"]["username"].split(":")[0:2] == ["system", "bootstrap"] for r in node_requests} == {True}
    assert all(any(c["type"] == "Approved" and c.get("reason") == "AutoApproved"
                   for c in r["status"]["conditions"]) for r in node_requests)


def test_a_kubelet_cannot_modify_another_node(cluster: InfraCluster, tmp_path: Path) -> None:
    if len(cluster.workers) < 2:
        pytest.skip("needs two workers")
    first, second = cluster.workers[0].name, cluster.workers[1].name
    kubelet = kubelet_certificate(cluster, first, tmp_path)
    patch = {"metadata": {"labels": {"harness-test/stolen": "yes"}}}
    req_body = json.dumps(patch).encode()
    req = urllib.request.Request(f"{cluster.servers[0]}/api/v1/nodes/{second}", data=req_body, method="PATCH",
                                 headers={"Content-Type": "application/merge-patch+json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10, context=kubelet)
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["message"] == (
        f'nodes "{second}" is forbidden: node "{first}" is not allowed to modify node "{second}"')
    status, _ = request(cluster, "/api/v1/namespaces/default/secrets", context=kubelet)
    assert status == 403, "a kubelet lists no secrets"


def test_pods_get_the_service_account_token_and_ca(cluster: InfraCluster) -> None:
    """The ServiceAccount admission plugin's volume, filled by the kubelet through TokenRequest: what
    `load_incluster_config()` reads in a pod."""
    with cluster.namespace("sa") as ns:
        cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; \
head -c 27 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; echo; \
cut -c1-3 /var/run/secrets/kubernetes.io/serviceaccount/token"]
""", ns)
        cluster.wait(lambda: cluster.get("pod", "reader", "-n", ns)["status"].get("phase") == "Succeeded", 90,
                     lambda: cluster.describe(ns))
        logs = cluster.kubectl("logs", "reader", "-n", ns).stdout.split("\n")
        assert logs[:3] == [ns, "-----BEGIN CERTIFICATE-----", "eyJ"], logs
