"""LimitRanges on a real apiserver (LimitRanger is a default admission plugin): a LimitRange created through the
API gives new pods its defaults and the `kubernetes.io/limit-ranger` annotation, and a pod over its max is refused
with upstream's 403; a LimitRange whose bounds do not nest is refused with 422; real kubectl creates, lists (by
its short name `limits`) and describes them.

The plugin reads LimitRanges from the watch cache, which may lag a create by a moment: each test first waits
until a dry-run pod shows the new LimitRange's defaults.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.integration.apiserver_fixtures import Api, ApiServerProcess, wait_for

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
ANNOTATION = "kubernetes.io/limit-ranger"

LIMITS = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "compute"},
          "spec": {"limits": [{"type": "Container",
                               "default": {"cpu": "500m", "memory": "256Mi"},
                               "defaultRequest": {"cpu": "250m", "memory": "128Mi"},
                               "max": {"cpu": "1", "memory": "1Gi"},
                               "min": {"cpu": "100m"}},
                              {"type": "Pod", "max": {"cpu": "2"}}]}}


def pod(name: str, *containers: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": list(containers) or [{"name": "nginx", "image": "nginx"}]}}


def container(name: str, **resources: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "image": "nginx", "resources": resources}


async def limit_range_in_force(api: Api, ns: str) -> None:
    """Wait until admission sees the LimitRange: a dry-run pod gets its defaults."""
    async def defaulted() -> Any:
        status, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod("probe"), params={"dryRun": "All"})
        assert status == 201, body
        return ANNOTATION in (body["metadata"].get("annotations") or {})

    await wait_for(defaulted, what="the LimitRange's defaults on a dry-run pod")


async def test_a_limit_range_defaults_pods_and_refuses_those_over_its_bounds(api: Api, ns: str) -> None:
    status, body = await api.post(f"/api/v1/namespaces/{ns}/limitranges", LIMITS)
    assert status == 201, body
    assert body["spec"]["limits"][1] == {"type": "Pod", "max": {"cpu": "2"}}  # only Container items defaulted
    await limit_range_in_force(api, ns)

    status, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod("nginx"))
    assert status == 201, body
    assert body["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "250m", "memory": "128Mi"},
                                                          "limits": {"cpu": "500m", "memory": "256Mi"}}
    assert body["metadata"]["annotations"][ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container nginx; cpu, memory limit for container nginx")
    status, stored = await api.get(f"/api/v1/namespaces/{ns}/pods/nginx")
    assert status == 200 and stored["spec"]["containers"][0]["resources"] == body["spec"]["containers"][0][
        "resources"]

    status, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod("big", container("app", limits={"cpu": "2"})))
    assert status == 403, body
    assert body["reason"] == "Forbidden" and body["details"] == {"name": "big", "kind": "pods"}
    assert body["message"] == 'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'

    small = container("app", requests={"cpu": "50m"}, limits={"cpu": "100m", "memory": "2Gi"})
    status, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod("odd", small))
    assert status == 403, body
    assert body["message"] == ('pods "odd" is forbidden: [minimum cpu usage per Container is 100m, but request '
                               "is 50m, maximum memory usage per Container is 1Gi, but limit is 2Gi]")

    three = pod("trio", *(container(name, limits={"cpu": "800m"}) for name in ("a", "b", "c")))
    status, body = await api.post(f"/api/v1/namespaces/{ns}/pods", three)
    assert status == 403, body
    assert body["message"] == 'pods "trio" is forbidden: maximum cpu usage per Pod is 2, but limit is 2400m'
    status, body = await api.get(f"/api/v1/namespaces/{ns}/pods/big")
    assert status == 404, "a refused pod is not stored"


async def test_a_limit_range_whose_bounds_do_not_nest_is_invalid(api: Api, ns: str) -> None:
    bad = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "bad"},
           "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "default": {"cpu": "2"}},
                               {"type": "Pod", "default": {"cpu": "1"}}]}}
    status, body = await api.post(f"/api/v1/namespaces/{ns}/limitranges", bad)
    assert status == 422, body
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    assert ("spec.limits[0].default[cpu]", 'Invalid value: "1": default value 2 is greater than max value 1') \
        in causes
    assert ("spec.limits[1].default", "Forbidden: may not be specified when `type` is 'Pod'") in causes


# -- kubectl ------------------------------------------------------------------------------------------------------


def kubectl(server: ApiServerProcess, home: Path, *args: str, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(home)}
    return subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


MANIFEST = """
apiVersion: v1
kind: LimitRange
metadata:
  name: mem-limit-range
spec:
  limits:
  - type: Container
    default:
      memory: 512Mi
    defaultRequest:
      memory: 256Mi
    max:
      memory: 1Gi
"""


@pytest.mark.kubectl
async def test_kubectl_creates_lists_and_describes_limit_ranges(api: Api, ns: str, apiserver: ApiServerProcess,
                                                                tmp_path: Path) -> None:
    assert shutil.which(KUBECTL), f"kubectl not found at {KUBECTL}: run make deps"
    path = tmp_path / "limits.yaml"
    path.write_text(textwrap.dedent(MANIFEST))
    done = kubectl(apiserver, tmp_path, "-n", ns, "create", "-f", str(path))
    assert done.returncode == 0, f"{done.stderr}\n--- apiserver log ---\n{apiserver.log_tail()}"
    assert done.stdout.strip() == "limitrange/mem-limit-range created"

    done = kubectl(apiserver, tmp_path, "-n", ns, "get", "limits")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["NAME", "CREATED", "AT"]
    assert len(rows) == 1 and rows[0].split()[0] == "mem-limit-range", done.stdout
    assert rows[0].split()[1].endswith("Z"), "CREATED AT is an RFC 3339 time"

    done = kubectl(apiserver, tmp_path, "-n", ns, "describe", "limitrange", "mem-limit-range")
    assert done.returncode == 0, f"{done.stderr}\n--- apiserver log ---\n{apiserver.log_tail()}"
    lines = [line.split() for line in done.stdout.splitlines()]
    assert ["Name:", "mem-limit-range"] in lines and ["Namespace:", ns] in lines
    # Type, Resource, Min, Max, Default Request, Default Limit, Max Limit/Request Ratio
    assert ["Container", "memory", "-", "1Gi", "256Mi", "512Mi", "-"] in lines, done.stdout

    await limit_range_in_force(api, ns)
    done = kubectl(apiserver, tmp_path, "-n", ns, "run", "huge", "--image=nginx", "--overrides",
                   '{"spec": {"containers": [{"name": "huge", "image": "nginx", '
                   '"resources": {"limits": {"memory": "2Gi"}}}]}}')
    assert done.returncode == 1
    assert done.stderr.strip() == ('Error from server (Forbidden): pods "huge" is forbidden: maximum memory usage '
                                   "per Container is 1Gi, but limit is 2Gi")
