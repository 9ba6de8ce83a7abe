"""Pod Security admission on a real apiserver (PodSecurity is a default plugin): a namespace labelled `restricted`
refuses a plain nginx pod with upstream's message and admits a compliant one; a Deployment is admitted with a
`Warning` header; labels that do not parse are refused; the audit log and /metrics record the decisions; and real
kubectl shows `kubectl run` refused and `kubectl label ns` warning about the pods already there.

The apiserver is this module's own (plain HTTP, every request the admin), with an audit policy that logs pods at
Metadata level, and a PodSecurityConfiguration that exempts one namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from tests.integration.apiserver_fixtures import ApiServerProcess, start_apiserver, stop_apiserver, wait_for

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
P = "pod-security.kubernetes.io/"
EXEMPT = "psa-exempt"

AUDIT_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources: [{group: "", resources: ["pods"]}, {group: "apps", resources: ["deployments"]}]
- level: None
"""

ADMISSION_CONFIG = f"""
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {{enforce: privileged, audit: privileged, warn: privileged}}
    exemptions: {{namespaces: [{EXEMPT}]}}
"""

NGINX_DETAIL = ('allowPrivilegeEscalation != false (container "nginx" must set securityContext.allowPrivilegeEscalation'
                '=false), unrestricted capabilities (container "nginx" must set securityContext.capabilities.drop='
                '["ALL"]), runAsNonRoot != true (pod or container "nginx" must set securityContext.runAsNonRoot=true), '
                'seccompProfile (pod or container "nginx" must set securityContext.seccompProfile.type to '
                '"RuntimeDefault" or "Localhost")')
NGINX_REASONS = "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
COMPLIANT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
             "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.fixture(scope="module")
def server(etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerProcess, Path]]:
    work = tmp_path_factory.mktemp("podsecurity")
    (work / "audit.yaml").write_text(AUDIT_POLICY)
    (work / "admission.yaml").write_text(ADMISSION_CONFIG)
    log = work / "audit.log"
    process = start_apiserver(etcd.endpoint, work, extra=[
        "--compaction-interval", "100000", "--audit-policy-file", str(work / "audit.yaml"),
        "--audit-log-path", str(log), "--admission-control-config-file", str(work / "admission.yaml")])
    yield process, log
    stop_apiserver(process)


class Http:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, path: str, body: Any = None,
                   content_type: str = "application/json") -> tuple[int, Any, list[str]]:
        """(status, body, the warnings of the `Warning` header)."""
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(method, path, data=data, headers={"Content-Type": content_type}) as resp:
            doc = orjson.loads(await resp.read())
            return resp.status, doc, warnings_of(resp.headers.getall("Warning", []))

    async def namespace(self, **labels: str) -> str:
        name = f"psa-{uuid.uuid4().hex[:8]}"
        status, body, _ = await self.call("POST", "/api/v1/namespaces", {
            "metadata": {"name": name, "labels": {P + k: v for k, v in labels.items()}}})
        assert status == 201, body
        return name

    async def label(self, namespace: str, **labels: str) -> tuple[int, Any, list[str]]:
        return await self.call("PATCH", f"/api/v1/namespaces/{namespace}",
                               {"metadata": {"labels": {P + k: v for k, v in labels.items()}}},
                               "application/merge-patch+json")

    async def cached_pods(self, namespace: str) -> list[str]:
        """The pods the watch cache holds (what the plugin checks existing pods from)."""
        status, body, _ = await self.call("GET", f"/api/v1/namespaces/{namespace}/pods?resourceVersion=0")
        assert status == 200, body
        return [p["metadata"]["name"] for p in body["items"]]


def warnings_of(headers: list[str]) -> list[str]:
    """The messages of `299 - "..."` warnings, unescaped."""
    found = re.findall(r'299 - "((?:[^"\\]|\\.)*)"', ", ".join(headers))
    return [re.sub(r"\\(.)", r"\1", m) for m in found]


@pytest_asyncio.fixture
async def http(server: tuple[ApiServerProcess, Path]) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(server[0].url) as session:
        yield Http(session)


def nginx(name: str, security_context: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "nginx", "image": "nginx"}
    if security_context:
        container["securityContext"] = security_context
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def audit_events(log: Path, name: str) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [e for e in map(json.loads, lines) if (e.get("objectRef") or {}).get("name") == name]


async def test_restricted_namespace_refuses_plain_nginx_and_admits_a_compliant_pod(
        http: Http, server: tuple[ApiServerProcess, Path]) -> None:
    ns = await http.namespace()
    status, body, warnings = await http.label(ns, enforce="restricted")
    assert (status, warnings) == (200, []), body  # no pods yet: nothing to warn about

    status, body, warnings = await http.call("POST", f"/api/v1/namespaces/{ns}/pods", nginx("web"))
    assert status == 403, body
    assert body["message"] == f'pods "web" is forbidden: violates PodSecurity "restricted:latest": {NGINX_DETAIL}'
    assert (body["reason"], body["details"]) == ("Forbidden", {"name": "web", "kind": "pods"})
    assert warnings == []

    status, body, warnings = await http.call("POST", f"/api/v1/namespaces/{ns}/pods", nginx("ok", COMPLIANT))
    assert (status, warnings) == (201, []), body

    # the audit log says which policy decided, and /metrics counts the decisions
    log = server[1]
    refused = await wait_for(lambda: _async(audit_events(log, "web")), what="the refused pod's audit event")
    assert refused[-1]["responseStatus"]["code"] == 403
    assert refused[-1]["annotations"][P + "enforce-policy"] == "restricted:latest"
    async with http.session.get("/metrics") as resp:
        metrics = await resp.text()
    assert 'pod_security_evaluations_total{decision="deny",mode="enforce",policy_level="restricted",' \
           'policy_version="latest",request_operation="create",resource="pod",subresource=""}' in metrics


async def _async(value: Any) -> Any:
    return value


async def test_deployment_is_admitted_with_a_warning_and_audited(http: Http,
                                                                 server: tuple[ApiServerProcess, Path]) -> None:
    ns = await http.namespace(enforce="restricted", audit="restricted")
    template = nginx("")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]}}}
    status, body, warnings = await http.call("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)
    assert status == 201, body
    assert warnings == [f'would violate PodSecurity "restricted:latest": {NGINX_DETAIL}']
    events = await wait_for(lambda: _async([e for e in audit_events(server[1], "web")
                                            if (e.get("objectRef") or {}).get("namespace") == ns]),
                            what="the deployment's audit event")
    assert events[-1]["annotations"][P + "audit-violations"] == \
        f'would violate PodSecurity "restricted:latest": {NGINX_DETAIL}'


async def test_namespace_labels_that_do_not_parse_are_refused(http: Http) -> None:
    ns = await http.namespace()
    status, body, _ = await http.label(ns, enforce="strict")
    assert status == 422, body
    assert body["message"] == (f'Namespace "{ns}" is invalid: metadata.labels[{P}enforce]: Invalid value: "strict": '
                               "must be one of privileged, baseline, restricted")
    status, body, _ = await http.call("POST", "/api/v1/namespaces", {
        "metadata": {"name": f"psa-{uuid.uuid4().hex[:8]}", "labels": {P + "warn-version": "1.30"}}})
    assert status == 422 and body["message"].endswith('Invalid value: "1.30": must be "latest" or "v1.x"'), body


async def test_raising_enforce_warns_about_existing_pods_and_exempt_namespaces_say_so(http: Http) -> None:
    ns = await http.namespace()
    for name in ("web-1", "web-2"):
        status, body, _ = await http.call("POST", f"/api/v1/namespaces/{ns}/pods", nginx(name))
        assert status == 201, body
    await wait_for(lambda: _has(http.cached_pods(ns), {"web-1", "web-2"}), what="the pods in the watch cache")
    status, body, warnings = await http.label(ns, enforce="restricted")
    assert status == 200, body
    assert body["metadata"]["labels"][P + "enforce"] == "restricted"
    assert warnings == [f'existing pods in namespace "{ns}" violate the new PodSecurity enforce level '
                        '"restricted:latest"', f"web-1 (and 1 other pod): {NGINX_REASONS}"]

    status, body, _ = await http.call("GET", f"/api/v1/namespaces/{EXEMPT}")
    if status == 404:
        status, body, _ = await http.call("POST", "/api/v1/namespaces", {"metadata": {"name": EXEMPT}})
        assert status == 201, body
    status, body, warnings = await http.label(EXEMPT, enforce="baseline")
    assert status == 200, body
    assert warnings == [f'namespace "{EXEMPT}" is exempt from Pod Security, and the policy '
                        "(enforce=baseline:latest) will be ignored"]
    status, body, _ = await http.call("POST", f"/api/v1/namespaces/{EXEMPT}/pods",
                                      nginx(f"p-{uuid.uuid4().hex[:6]}", {"privileged": True}))
    assert status == 201, body


async def _has(names: Any, wanted: set[str]) -> bool:
    return wanted <= set(await names)


# -- kubectl ------------------------------------------------------------------------------------------------------

def kubectl(server: ApiServerProcess, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(home)}
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.kubectl
async def test_kubectl_run_is_refused_and_kubectl_label_warns(http: Http, server: tuple[ApiServerProcess, Path],
                                                              tmp_path: Path) -> None:
    assert shutil.which(KUBECTL), f"kubectl not found at {KUBECTL}: run make deps"
    process = server[0]
    ns = await http.namespace()
    done = kubectl(process, tmp_path, "-n", ns, "run", "old", "--image=nginx")
    assert done.returncode == 0 and done.stdout.strip() == "pod/old created", done.stderr
    await wait_for(lambda: _has(http.cached_pods(ns), {"old"}), what="the pod in the watch cache")

    done = kubectl(process, tmp_path, "label", "ns", ns, f"{P}enforce=restricted")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"namespace/{ns} labeled"
    assert done.stderr.splitlines() == [
        f'Warning: existing pods in namespace "{ns}" violate the new PodSecurity enforce level "restricted:latest"',
        f"Warning: old: {NGINX_REASONS}"]

    done = kubectl(process, tmp_path, "-n", ns, "run", "nginx", "--image=nginx")
    assert done.returncode == 1
    assert done.stderr.strip() == ('Error from server (Forbidden): pods "nginx" is forbidden: violates PodSecurity '
                                   f'"restricted:latest": {NGINX_DETAIL}')
