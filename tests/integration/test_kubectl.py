"""Unmodified kubectl (the pinned one in the virtualenv) against the apiserver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.apiserver_fixtures import ApiServerProcess

pytestmark = pytest.mark.kubectl

KUBECTL = str(Path(sys.executable).with_name("kubectl"))


class Kubectl:
    def __init__(self, server: ApiServerProcess, namespace: str, workdir: Path) -> None:
        self.server = server
        self.namespace = namespace
        self.workdir = workdir
        self.env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(workdir)}

    def run(self, *args: str, stdin: str | None = None, check: bool = True,
            namespaced: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [KUBECTL, *(["-n", self.namespace] if namespaced else []), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n"
                                 f"{proc.stdout}\n--- apiserver log ---\n{self.server.log_tail()}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str) -> str:
        path = self.workdir / f"m-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(textwrap.dedent(manifest))
        return self.run("apply", "-f", str(path)).stdout

    def configmap(self, name: str, **data: str) -> None:
        items = "".join(f"\n  {k}: {v}" for k, v in data.items()) or " {}"
        self.apply(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:{items}\n")


@pytest.fixture
def kubectl(apiserver: ApiServerProcess, tmp_path: Path) -> Iterator[Kubectl]:
    assert shutil.which(KUBECTL), f"kubectl not found at {KUBECTL}: run make deps"
    ns = f"k-{uuid.uuid4().hex[:8]}"
    k = Kubectl(apiserver, ns, tmp_path)
    k.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
    yield k


WEB = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
          name: http
        env:
        - {name: MODE, value: "one"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: http
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
"""


def test_apply_creates_then_updates_without_flags(kubectl: Kubectl) -> None:
    out = kubectl.apply(WEB)
    assert "deployment.apps/web created" in out and "service/web created" in out, out
    assert "configmap/web-config created" in out, out
    out = kubectl.apply(WEB.replace("replicas: 2", "replicas: 4").replace('value: "one"', 'value: "two"')
                        .replace("greeting: hello", "greeting: bye"))
    assert "deployment.apps/web configured" in out and "configmap/web-config configured" in out, out
    assert "service/web unchanged" in out, out
    d = kubectl.json("get", "deployment", "web")
    assert d["spec"]["replicas"] == 4
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert c["env"] == [{"name": "MODE", "value": "two"}] and c["ports"][0]["containerPort"] == 8080
    assert kubectl.json("get", "configmap", "web-config")["data"] == {"greeting": "bye"}
    # Removing a field from the manifest removes it from the object (three-way merge).
    out = kubectl.apply(WEB.replace("""        env:
        - {name: MODE, value: "one"}
""", ""))
    c = kubectl.json("get", "deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in c, c


def test_apply_namespace_manifest(kubectl: Kubectl) -> None:
    name = f"applied-{uuid.uuid4().hex[:6]}"
    out = kubectl.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{team: a}}\n")
    assert f"namespace/{name} created" in out, out
    ns = kubectl.json("get", "namespace", name)
    assert ns["metadata"]["labels"]["team"] == "a" and ns["status"]["phase"] == "Active"


def test_get_shows_the_usual_columns(kubectl: Kubectl) -> None:
    kubectl.apply(WEB)
    kubectl.apply("""
        apiVersion: v1
        kind: Pod
        metadata: {name: solo}
        spec:
          restartPolicy: Never
          containers: [{name: solo, image: busybox, command: [sleep, "3600"]}]
        """)
    out = kubectl.run("get", "pods").stdout
    assert out.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], out
    assert "solo" in out and "Pending" in out
    wide = kubectl.run("get", "pods", "-o", "wide").stdout.split("\n")[0].split()
    assert wide[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"], wide
    out = kubectl.run("get", "deployments").stdout
    assert out.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], out
    out = kubectl.run("get", "svc", "web").stdout
    assert out.split("\n")[0].split()[:5] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"], out
    doc = yaml.safe_load(kubectl.run("get", "cm", "web-config", "-o", "yaml").stdout)
    assert doc["data"] == {"greeting": "hello"}


def test_get_with_label_and_field_selectors(kubectl: Kubectl) -> None:
    for name, tier in (("a", "web"), ("b", "db")):
        kubectl.configmap(name, k="v")
        kubectl.run("label", "configmap", name, f"tier={tier}")
    out = kubectl.run("get", "cm", "-l", "tier=web", "-o", "name").stdout.split()
    assert out == ["configmap/a"], out
    out = kubectl.run("get", "cm", "--field-selector", "metadata.name=b", "-o", "name").stdout.split()
    assert out == ["configmap/b"], out


def test_label_annotate_patch_scale_delete(kubectl: Kubectl) -> None:
    kubectl.apply(WEB)
    kubectl.run("label", "deployment", "web", "tier=frontend")
    kubectl.run("annotate", "deployment", "web", "owner=team-a")
    d = kubectl.json("get", "deployment", "web")
    assert d["metadata"]["labels"]["tier"] == "frontend" and d["metadata"]["annotations"]["owner"] == "team-a"
    kubectl.run("patch", "deployment", "web", "-p", '{"spec":{"replicas":3}}')
    kubectl.run("patch", "deployment", "web", "--type=merge", "-p", '{"metadata":{"labels":{"m":"1"}}}')
    kubectl.run("patch", "deployment", "web", "--type=json",
                "-p", '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"busybox:1.37"}]')
    d = kubectl.json("get", "deployment", "web")
    assert d["spec"]["replicas"] == 3 and d["metadata"]["labels"]["m"] == "1"
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.37"
    out = kubectl.run("scale", "deployment", "web", "--replicas=5").stdout
    assert "scaled" in out, out
    assert kubectl.json("get", "deployment", "web")["spec"]["replicas"] == 5
    out = kubectl.run("delete", "configmap", "web-config").stdout
    assert 'configmap "web-config" deleted' in out, out
    proc = kubectl.run("get", "configmap", "web-config", check=False)
    assert proc.returncode != 0 and "NotFound" in proc.stderr, proc.stderr


def test_describe_shows_the_object_and_its_events(kubectl: Kubectl) -> None:
    kubectl.apply(WEB)
    out = kubectl.run("describe", "deployment", "web").stdout
    assert "Name:" in out and "web" in out and "Replicas:" in out, out
    out = kubectl.run("describe", "service", "web").stdout
    assert "Selector:" in out and "app=web" in out, out


def test_get_watch_streams_changes(kubectl: Kubectl) -> None:
    kubectl.configmap("w0", k="v")
    cmd = [KUBECTL, "-n", kubectl.namespace, "get", "configmaps", "-w", "-o", "name"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kubectl.env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "configmap/w0"
        kubectl.configmap("w1", k="v")
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline and line.strip() != "configmap/w1":
            line = proc.stdout.readline()
        assert line.strip() == "configmap/w1", line
    finally:
        proc.terminate()
        proc.wait(10)


def test_api_resources_and_explain(kubectl: Kubectl) -> None:
    out = kubectl.run("api-resources", namespaced=False).stdout
    for row in ("deployments", "pods", "leases", "clusterrolebindings"):
        assert row in out, out
    line = next(ln for ln in out.splitlines() if ln.startswith("deployments "))
    assert "deploy" in line and "apps/v1" in line and "Deployment" in line, line
    out = kubectl.run("explain", "pods.spec.containers", namespaced=False).stdout
    assert "KIND:" in out and "Pod" in out and "image" in out, out


def test_invalid_manifest_is_reported_with_the_field(kubectl: Kubectl) -> None:
    bad = WEB.split("---")[0].replace("containerPort: 8080", "containerPort: 99999")
    path = kubectl.workdir / "bad.yaml"
    path.write_text(bad)
    proc = kubectl.run("apply", "-f", str(path), check=False)
    assert proc.returncode != 0
    assert "containerPort" in proc.stderr and "Invalid" in proc.stderr, proc.stderr
