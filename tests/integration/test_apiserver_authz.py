"""Authorization on a real apiserver with `--authorization-mode=Node,RBAC`: the bootstrap policy reconciled at start,
upstream's 403 wording, roles and bindings taking effect, escalation refused, the Node authorizer's graph, the
access and token reviews, impersonation, and real kubectl's `auth can-i` / `auth whoami`.

Users are client certificates of the cluster CA that `harness.cluster.pki` makes (ECDSA keys, for speed): the
admin (system:masters), the kubelet of worker `w1`, Prometheus, and test users signed here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.api import errors
from harness.auth import rbac
from harness.client.rest import Client
from harness.cluster.local import NodeSpec
from tests.integration.apiserver_fixtures import (
    SecureUsers,
    start_apiserver,
    start_secure_apiserver,
    stop_apiserver,
)

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
TOKEN = "authz-test-token-0123456789"
RBAC_V1 = "/apis/rbac.authorization.k8s.io/v1"


Cluster = SecureUsers


@pytest.fixture(scope="module")
def cluster(etcd: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("authz")
    (work / "tokens.csv").write_text(f'{TOKEN},token-user,uid-7,"team-a"\n')
    nodes = [NodeSpec("master-1", "master", "127.0.0.1"), NodeSpec("w1", "worker", "127.0.0.2")]
    started = start_secure_apiserver(etcd.endpoint, work, nodes=nodes, extra=[  # type: ignore[attr-defined]
        "--authorization-mode", "Node,RBAC", "--token-auth-file", str(work / "tokens.csv")])
    cluster = Cluster(started.process, started.url, started.pki, work)
    # the kubelet's client certificate (as TLS bootstrap would get it), under the stem kubelet-w1
    node = cluster.user("system:node:w1", "system:nodes")
    for suffix in ("crt", "key"):
        (started.pki / f"kubelet-w1.{suffix}").write_bytes((started.pki / f"{node}.{suffix}").read_bytes())
    yield cluster
    stop_apiserver(started.process)


@pytest.fixture
async def namespace(cluster: Cluster) -> str:
    name = f"authz-{uuid.uuid4().hex[:8]}"
    async with cluster.client("admin") as admin:
        await admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    return name


async def status_of(cluster: Cluster, stem: str | None, method: str, path: str,
                    body: Any = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.request(
            method, cluster.url + path, ssl=cluster.context(stem), json=body) as resp:
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()}


async def can(cluster: Cluster, stem: str, verb: str, resource: str, namespace: str = "", *, group: str = "",
              name: str = "") -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace,
                                              "group": group, "name": name}}}
    code, body = await status_of(cluster, stem, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                 review)
    assert code == 201, body
    return bool(body["status"]["allowed"])


async def eventually_can(cluster: Cluster, stem: str, verb: str, resource: str, namespace: str = "", *,
                         group: str = "", want: bool = True) -> None:
    """Bindings take effect once the apiserver's cache has them: wait on the answer, not on a clock."""
    for _ in range(100):
        if await can(cluster, stem, verb, resource, namespace, group=group) is want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stem} {'still cannot' if want else 'still can'} {verb} {resource} in {namespace!r}")


# -- the bootstrap policy ----------------------------------------------------------------------


async def test_the_bootstrap_policy_is_there_at_start(cluster: Cluster) -> None:
    async with cluster.client("admin") as admin:
        admin_role = await admin.request("GET", f"{RBAC_V1}/clusterroles/cluster-admin")
        assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} in admin_role["rules"]
        assert admin_role["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
        proxier = await admin.request("GET", f"{RBAC_V1}/clusterrolebindings/system:node-proxier")
        assert proxier["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                        "name": "system:kube-proxy"}]
        view = await admin.request("GET", f"{RBAC_V1}/clusterroles/view")
        assert view["aggregationRule"]["clusterRoleSelectors"] == [
            {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]
        for name in ("system:kube-scheduler", "system:kube-controller-manager", "system:node",
                     "system:public-info-viewer", "system:discovery", "harness:prometheus"):
            await admin.request("GET", f"{RBAC_V1}/clusterroles/{name}")


async def test_a_restart_restores_a_removed_rule_and_keeps_what_an_admin_added(cluster: Cluster, etcd: object,
                                                                                tmp_path: Path) -> None:
    async with cluster.client("admin") as admin:
        role = await admin.request("GET", f"{RBAC_V1}/clusterroles/system:discovery")
        upstream_rules = role["rules"]
        extra = {"nonResourceURLs": ["/harness-test"], "verbs": ["get"]}
        role["rules"] = [extra]
        await admin.request("PUT", f"{RBAC_V1}/clusterroles/system:discovery", body=role)
    second = start_apiserver(etcd.endpoint, tmp_path, extra=[  # type: ignore[attr-defined]
        "--compaction-interval", "100000", "--authorization-mode", "RBAC"])
    try:
        async with Client.from_kubeconfig(second.kubeconfig) as admin:
            rules = (await admin.request("GET", f"{RBAC_V1}/clusterroles/system:discovery"))["rules"]
    finally:
        stop_apiserver(second)
    assert rules[0] == extra
    assert rbac.uncovered(rules, upstream_rules) == [], "every upstream grant is back"


# -- refusals, worded as upstream --------------------------------------------------------------


async def test_a_user_without_bindings_gets_upstreams_403(cluster: Cluster, namespace: str) -> None:
    bob = cluster.user("bob")
    code, body = await status_of(cluster, bob, "GET", f"/api/v1/namespaces/{namespace}/pods")
    assert code == 403
    assert body["message"] == (f'pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the '
                               f'namespace "{namespace}"')
    assert body["reason"] == "Forbidden"
    assert body["details"] == {"kind": "pods"}
    code, body = await status_of(cluster, bob, "GET", "/apis/apps/v1/deployments")
    assert body["message"] == ('deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API '
                               'group "apps" at the cluster scope')
    code, body = await status_of(cluster, bob, "GET", f"/api/v1/namespaces/{namespace}/pods/web/log")
    assert body["message"] == (f'pods "web" is forbidden: User "bob" cannot get resource "pods/log" in API group '
                               f'"" in the namespace "{namespace}"')


async def test_paths_are_authorized_by_the_bootstrap_roles(cluster: Cluster) -> None:
    bob, prometheus = cluster.user("bob"), "prometheus"
    assert (await status_of(cluster, bob, "GET", "/api"))[0] == 200, "system:discovery"
    assert (await status_of(cluster, bob, "GET", "/apis/apps/v1"))[0] == 200
    code, body = await status_of(cluster, bob, "GET", "/metrics")
    assert (code, body["message"]) == (403, 'forbidden: User "bob" cannot get path "/metrics"')
    assert (await status_of(cluster, prometheus, "GET", "/metrics"))[0] == 200
    assert (await status_of(cluster, None, "GET", "/version"))[0] == 200, "system:public-info-viewer"
    assert (await status_of(cluster, None, "GET", "/api"))[0] == 401, "anonymous only at the public paths"


# -- bindings take effect ----------------------------------------------------------------------


async def test_a_role_binding_grants_in_its_namespace_only(cluster: Cluster, namespace: str) -> None:
    carol = cluster.user("carol", "devs")
    async with cluster.client("admin") as admin:
        await admin.request("POST", f"{RBAC_V1}/namespaces/{namespace}/roles", body={
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]})
        await admin.request("POST", f"{RBAC_V1}/namespaces/{namespace}/rolebindings", body={
            "metadata": {"name": "devs-read-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}]})
    await eventually_can(cluster, carol, "list", "pods", namespace)
    assert (await status_of(cluster, carol, "GET", f"/api/v1/namespaces/{namespace}/pods"))[0] == 200
    assert (await status_of(cluster, carol, "GET", "/api/v1/namespaces/default/pods"))[0] == 403
    assert not await can(cluster, carol, "delete", "pods", namespace)

    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "carol", "groups": ["devs"],
                       "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": namespace}}}
    code, body = await status_of(cluster, "admin", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                 review)
    assert code == 201
    assert body["status"] == {"allowed": True, "reason": f'RBAC: allowed by RoleBinding "devs-read-pods/{namespace}" '
                                                         'of Role "pod-reader" to Group "devs"'}


async def test_a_binding_to_a_missing_role_says_so(cluster: Cluster, namespace: str) -> None:
    dave = cluster.user("dave")
    async with cluster.client("admin") as admin:
        await admin.request("POST", f"{RBAC_V1}/namespaces/{namespace}/rolebindings", body={
            "metadata": {"name": "dangling"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "nowhere"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave"}]})
    message = ""
    for _ in range(100):
        code, body = await status_of(cluster, dave, "GET", f"/api/v1/namespaces/{namespace}/secrets")
        message = body["message"]
        if message.endswith('RBAC: role.rbac.authorization.k8s.io "nowhere" not found'):
            break
        await asyncio.sleep(0.05)
    assert code == 403
    assert message == (f'secrets is forbidden: User "dave" cannot list resource "secrets" in API group "" in the '
                       f'namespace "{namespace}": RBAC: role.rbac.authorization.k8s.io "nowhere" not found')


async def test_a_user_cannot_grant_what_it_does_not_hold(cluster: Cluster, namespace: str) -> None:
    erin = cluster.user("erin")
    async with cluster.client("admin") as admin:
        await admin.request("POST", f"{RBAC_V1}/namespaces/{namespace}/roles", body={
            "metadata": {"name": "role-writer"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
        await admin.request("POST", f"{RBAC_V1}/namespaces/{namespace}/rolebindings", body={
            "metadata": {"name": "erin-writes-roles"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "role-writer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "erin"}]})
    await eventually_can(cluster, erin, "create", "roles", namespace, group="rbac.authorization.k8s.io")
    roles = f"{RBAC_V1}/namespaces/{namespace}/roles"
    code, body = await status_of(cluster, erin, "POST", roles, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "greedy"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})
    assert code == 403
    assert body["message"] == (
        'roles.rbac.authorization.k8s.io "greedy" is forbidden: user "erin" (groups=["system:authenticated"]) is '
        'attempting to grant RBAC permissions not currently held:\n{APIGroups:[""], Resources:["secrets"], '
        'Verbs:["get"]}')
    code, _ = await status_of(cluster, erin, "POST", roles, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "modest"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    assert code == 201, "what the user holds it may grant"
    async with cluster.client("admin") as admin:
        with pytest.raises(errors.NotFound):
            await admin.request("GET", f"{roles}/greedy")


# -- the Node authorizer -----------------------------------------------------------------------


async def test_a_kubelet_reads_only_what_its_pods_use(cluster: Cluster, namespace: str) -> None:
    async with cluster.client("admin") as admin:
        for name in ("used", "unused"):
            await admin.request("POST", f"/api/v1/namespaces/{namespace}/secrets",
                                body={"metadata": {"name": name}, "data": {}})
        await admin.request("POST", f"/api/v1/namespaces/{namespace}/pods", body={
            "metadata": {"name": "on-w1"},
            "spec": {"nodeName": "w1", "containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": "s", "secret": {"secretName": "used"}}]}})
    base = f"/api/v1/namespaces/{namespace}/secrets"
    for _ in range(100):
        code, body = await status_of(cluster, "kubelet-w1", "GET", f"{base}/used")
        if code == 200:
            break
        await asyncio.sleep(0.05)
    assert code == 200, body
    code, body = await status_of(cluster, "kubelet-w1", "GET", f"{base}/unused")
    assert code == 403
    assert body["message"] == (f'secrets "unused" is forbidden: User "system:node:w1" cannot get resource "secrets" in '
                               f'API group "" in the namespace "{namespace}": no relationship found between node '
                               "'w1' and this object")
    code, _ = await status_of(cluster, "kubelet-w1", "GET", f"{base}?fieldSelector=metadata.name%3Dused")
    assert code == 200, "a list of the one secret it may read, as the kubelet's watch asks"
    code, _ = await status_of(cluster, "kubelet-w1", "GET", base)
    assert code == 403


async def test_a_kubelet_may_touch_only_its_own_lease(cluster: Cluster) -> None:
    leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    code, _ = await status_of(cluster, "kubelet-w1", "POST", leases, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "w1"},
        "spec": {"holderIdentity": "w1", "leaseDurationSeconds": 40}})
    assert code in (201, 409)
    assert (await status_of(cluster, "kubelet-w1", "GET", f"{leases}/w1"))[0] == 200
    code, body = await status_of(cluster, "kubelet-w1", "GET", f"{leases}/w2")
    assert code == 403
    assert body["message"].endswith(": can only access node lease with the same name as the requesting node")


# -- reviews and kubectl -----------------------------------------------------------------------


async def test_token_review_answers_for_a_token(cluster: Cluster) -> None:
    path = "/apis/authentication.k8s.io/v1/tokenreviews"
    code, body = await status_of(cluster, "admin", "POST", path, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": TOKEN}})
    assert code == 201
    assert body["status"] == {"authenticated": True, "user": {
        "username": "token-user", "uid": "uid-7", "groups": ["team-a", "system:authenticated"]}}
    code, body = await status_of(cluster, "admin", "POST", path, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "forged"}})
    assert (code, body["status"]["authenticated"]) == (201, False)
    code, _ = await status_of(cluster, cluster.user("bob"), "POST", path, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": TOKEN}})
    assert code == 403, "only those allowed to create tokenreviews may ask"


async def test_impersonation_needs_the_impersonate_verb(cluster: Cluster) -> None:
    bob = cluster.user("bob")
    headers = {"Impersonate-User": "carol"}
    async with aiohttp.ClientSession() as session:
        async with session.get(cluster.url + "/api/v1/namespaces", ssl=cluster.context(bob), headers=headers) as r:
            body = await r.json()
            assert r.status == 403
            assert body["message"] == ('users "carol" is forbidden: User "bob" cannot impersonate resource "users" in '
                                       'API group "" at the cluster scope')
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        async with session.post(cluster.url + "/apis/authentication.k8s.io/v1/selfsubjectreviews", json=review,
                                ssl=cluster.context("admin"),
                                headers={"Impersonate-User": "carol", "Impersonate-Group": "devs"}) as r:
            assert r.status == 201
            assert (await r.json())["status"]["userInfo"] == {"username": "carol",
                                                              "groups": ["devs", "system:authenticated"]}


def test_kubectl_auth_whoami_and_can_i(cluster: Cluster) -> None:
    carol = cluster.user("carol", "devs")
    done = cluster.kubectl(carol, "auth", "whoami", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"]["userInfo"] == {"username": "carol",
                                                             "groups": ["devs", "system:authenticated"]}
    done = cluster.kubectl(carol, "auth", "can-i", "create", "deployments", "-n", "default")
    assert (done.returncode, done.stdout.strip()) == (1, "no"), done.stderr
    done = cluster.kubectl("admin", "auth", "can-i", "create", "deployments", "-n", "default")
    assert (done.returncode, done.stdout.strip()) == (0, "yes"), done.stderr
    done = cluster.kubectl("admin", "auth", "can-i", "get", "pods", "--as", "bob")
    assert (done.returncode, done.stdout.strip()) == (1, "no"), done.stderr
    done = cluster.kubectl("admin", "auth", "can-i", "--list", "--as", "bob")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.split()}
    assert "selfsubjectaccessreviews.authorization.k8s.io" in rows, done.stdout
