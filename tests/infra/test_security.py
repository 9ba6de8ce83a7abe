"""Security of a running cluster, checked as kube-bench checks the CIS Kubernetes Benchmark, plus behaviour.

Each configuration check names its CIS control (benchmark v1.10 numbering) and reads what is really there: the files
on the machines, and the command line of the running program (`/proc/<pid>/cmdline`), as kube-bench does. Checks of
controls that this topology implements differently say so; controls whose work is still to come (etcd TLS, the
kubelet's authentication, audit, encryption at rest) are added with that work.
"""

from __future__ import annotations

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


# -- 1.3: the controller-manager ---------------------------------------------------------------


def test_cis_1_3_3_and_5_controllers_use_their_own_accounts(cluster: InfraCluster) -> None:
    """1.3.3 use-service-account-credentials; 1.3.5 root-ca-file."""
    cm = flags(cluster, cluster.masters[0].name, "harness-controller-manager")
    assert cm["--use-service-account-credentials"] == "true"
    assert cm["--root-ca-file"] == f"{PKI}/ca.crt"
    accounts = {sa["metadata"]["name"] for sa in cluster.get("serviceaccounts", "-n", "kube-system")["items"]}
    assert {"deployment-controller", "replicaset-controller", "namespace-controller"} <= accounts


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


def test_a_kubelet_cannot_modify_another_node(cluster: InfraCluster) -> None:
    if len(cluster.workers) < 2:
        pytest.skip("needs two workers")
    first, second = cluster.workers[0].name, cluster.workers[1].name
    kubelet = certificate(cluster, f"machines/{first}/kubelet-client")
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
