"""ResourceQuota end to end: the session's apiserver (ResourceQuota admission is on by default) and a real
controller-manager running the resourcequota controller, driven over HTTP and with the real kubectl.

The controller fills in each quota's status (until then a quota limits nothing), the apiserver refuses what would
exceed a quota with upstream's messages and charges what it admits, and the controller gives usage back when
objects go.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.apiserver_fixtures import Api, ApiServerProcess, free_port, stop_process, wait_for

KUBECTL = str(Path(sys.executable).with_name("kubectl"))


class ControllerManager:
    def __init__(self, apiserver: ApiServerProcess, workdir: Path, *extra: str) -> None:
        self.log = workdir / f"controller-manager-{free_port()}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.cli", "controller-manager", "--kubeconfig", str(apiserver.kubeconfig),
                 "--controllers", "resourcequota", "--leader-elect=false", "--secure-port", str(free_port()), *extra],
                stdout=out, stderr=subprocess.STDOUT)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def controller_manager(apiserver: ApiServerProcess, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[ControllerManager]:
    # Without leader election: other modules may run controller-managers against the session's apiserver.
    cm = ControllerManager(apiserver, tmp_path_factory.mktemp("quota"))
    yield cm
    cm.stop()


def quota_body(name: str, hard: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}}


def pod_body(name: str, **resources: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                                     "resources": resources}]}}


async def quota_status(api: Api, ns: str, name: str) -> dict[str, Any]:
    status, body = await api.get(f"/api/v1/namespaces/{ns}/resourcequotas/{name}")
    assert status == 200, body
    return body.get("status") or {}


async def create_quota(api: Api, ns: str, name: str, hard: dict[str, Any], cm: ControllerManager) -> dict[str, Any]:
    """Create the quota and wait for the controller to fill in its status."""
    status, body = await api.post(f"/api/v1/namespaces/{ns}/resourcequotas", quota_body(name, hard))
    assert status == 201, body

    async def filled() -> dict[str, Any] | None:
        current = await quota_status(api, ns, name)
        return current if current.get("hard") and set(current.get("used") or {}) == set(hard) else None

    try:
        return await wait_for(filled, within=20, what=f"status of quota {name}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- controller-manager ---\n{cm.tail()}") from None


async def used(api: Api, ns: str, name: str) -> dict[str, Any]:
    return dict((await quota_status(api, ns, name)).get("used") or {})


async def test_a_quota_of_two_pods_refuses_the_third(api: Api, ns: str, controller_manager: ControllerManager
                                                     ) -> None:
    status = await create_quota(api, ns, "pods", {"pods": "2"}, controller_manager)
    assert status == {"hard": {"pods": "2"}, "used": {"pods": "0"}}
    for name in ("p1", "p2"):
        code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body(name))
        assert code == 201, body
    assert await used(api, ns, "pods") == {"pods": "2"}  # charged by the apiserver as it admitted them
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("p3"))
    assert (code, body["reason"], body["message"]) == (
        403, "Forbidden",
        'pods "p3" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2'), body
    assert body["details"] == {"name": "p3", "kind": "pods"}
    code, body = await api.get(f"/api/v1/namespaces/{ns}/pods/p3")
    assert code == 404, body
    # A dry run is checked the same way, and charges nothing.
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("p3"), params={"dryRun": "All"})
    assert code == 403 and "exceeded quota: pods" in body["message"], body


async def test_compute_quota_messages_are_upstreams(api: Api, ns: str, controller_manager: ControllerManager) -> None:
    await create_quota(api, ns, "compute", {"requests.cpu": "2", "limits.memory": "1Gi"}, controller_manager)
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("nginx"))
    assert (code, body["message"]) == (403, 'pods "nginx" is forbidden: failed quota: compute: must specify '
                                            "limits.memory for: app; requests.cpu for: app"), body
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods",
                                pod_body("one", requests={"cpu": "1"}, limits={"memory": "512Mi"}))
    assert code == 201, body
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods",
                                pod_body("two", requests={"cpu": "2"}, limits={"memory": "256Mi"}))
    assert (code, body["message"]) == (403, 'pods "two" is forbidden: exceeded quota: compute, requested: '
                                            "requests.cpu=2, used: requests.cpu=1, limited: requests.cpu=2"), body
    assert await used(api, ns, "compute") == {"requests.cpu": "1", "limits.memory": "512Mi"}


async def test_usage_goes_down_when_a_pod_is_deleted(api: Api, ns: str, controller_manager: ControllerManager
                                                     ) -> None:
    await create_quota(api, ns, "one", {"pods": "1", "count/pods": "5"}, controller_manager)
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("first"))
    assert code == 201, body
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("second"))
    assert code == 403 and "exceeded quota: one" in body["message"], body
    code, body = await api.delete(f"/api/v1/namespaces/{ns}/pods/first", {"gracePeriodSeconds": 0})
    assert code == 200, body

    async def given_back() -> bool:
        return await used(api, ns, "one") == {"pods": "0", "count/pods": "0"}

    await wait_for(given_back, within=15, what="the deleted pod's usage given back by the controller")
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("second"))
    assert code == 201, body
    assert await used(api, ns, "one") == {"pods": "1", "count/pods": "1"}


async def test_concurrent_creates_do_not_overshoot(api: Api, ns: str, controller_manager: ControllerManager) -> None:
    await create_quota(api, ns, "burst", {"pods": "3", "count/configmaps": "2"}, controller_manager)
    results = await asyncio.gather(*(api.post(f"/api/v1/namespaces/{ns}/pods", pod_body(f"p{i}"))
                                     for i in range(12)),
                                   *(api.post(f"/api/v1/namespaces/{ns}/configmaps",
                                              {"metadata": {"name": f"cm{i}"}}) for i in range(6)))
    codes = [code for code, _ in results]
    assert sorted(codes[:12]) == [201] * 3 + [403] * 9, results
    assert sorted(codes[12:]) == [201] * 2 + [403] * 4, results
    assert all("exceeded quota: burst" in body["message"] for code, body in results if code == 403)
    code, pods = await api.get(f"/api/v1/namespaces/{ns}/pods")
    assert code == 200 and len(pods["items"]) == 3, pods
    assert await used(api, ns, "burst") == {"pods": "3", "count/configmaps": "2"}


async def test_the_periodic_resync_corrects_a_charge_that_was_never_stored(
        api: Api, ns: str, apiserver: ApiServerProcess, controller_manager: ControllerManager,
        tmp_path: Path) -> None:
    await create_quota(api, ns, "resync", {"pods": "5"}, controller_manager)
    code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("taken"))
    assert code == 201, body
    # A second controller that recalculates every second, running (its caches synced) before the miscount.
    fast = ControllerManager(apiserver, tmp_path, "--resource-quota-sync-period", "1s")
    try:
        async def running() -> bool:
            return "controllers running: resourcequota" in fast.log.read_text(errors="replace")

        await wait_for(running, within=20, what="the second controller-manager's controllers to run")
        # Admission charges before the write, which then fails: the quota says 2 while one pod exists, and no
        # event tells either controller of it.
        code, body = await api.post(f"/api/v1/namespaces/{ns}/pods", pod_body("taken"))
        assert code == 409 and body["reason"] == "AlreadyExists", body
        assert await used(api, ns, "resync") == {"pods": "2"}

        async def corrected() -> bool:
            return await used(api, ns, "resync") == {"pods": "1"}

        await wait_for(corrected, within=20, what="the quota recalculated by the periodic resync")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- controller-manager ---\n{fast.tail()}") from None
    finally:
        fast.stop()


@pytest.mark.kubectl
async def test_kubectl_create_quota(apiserver: ApiServerProcess, api: Api, ns: str,
                                    controller_manager: ControllerManager, tmp_path: Path) -> None:
    assert shutil.which(KUBECTL), f"kubectl not found at {KUBECTL}: run make deps"
    env = {**os.environ, "KUBECONFIG": str(apiserver.kubeconfig), "HOME": str(tmp_path)}

    def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, "-n", ns, *args], input=stdin, capture_output=True, text=True, env=env,
                              timeout=60)

    done = await asyncio.to_thread(kubectl, "create", "quota", "team", "--hard=pods=1,requests.cpu=1,configmaps=3")
    assert done.returncode == 0 and done.stdout.strip() == "resourcequota/team created", done
    quota = json.loads((await asyncio.to_thread(kubectl, "get", "quota", "team", "-o", "json")).stdout)
    assert quota["spec"]["hard"] == {"pods": "1", "requests.cpu": "1", "configmaps": "3"}

    async def counted() -> bool:
        return await used(api, ns, "team") == {"pods": "0", "requests.cpu": "0", "configmaps": "0"}

    await wait_for(counted, within=20, what="the quota's usage from the controller")
    manifest = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n"
                "    image: nginx\n")
    done = await asyncio.to_thread(kubectl, "apply", "-f", "-", stdin=manifest)
    assert done.returncode == 1, done
    assert 'pods "web" is forbidden: failed quota: team: must specify requests.cpu for: web' in done.stderr, done
    done = await asyncio.to_thread(kubectl, "apply", "-f", "-",
                                   stdin=manifest + "    resources:\n      requests:\n        cpu: 250m\n")
    assert done.returncode == 0, done
    done = await asyncio.to_thread(kubectl, "get", "quota", "team", "--no-headers")
    assert done.returncode == 0 and "configmaps: 0/3, pods: 1/1, requests.cpu: 250m/1" in done.stdout, done
    for i in range(3):
        done = await asyncio.to_thread(kubectl, "create", "configmap", f"cm{i}", "--from-literal=k=v")
        assert done.returncode == 0, done
    done = await asyncio.to_thread(kubectl, "create", "configmap", "cm3", "--from-literal=k=v")
    assert done.returncode == 1, done
    assert done.stderr.strip() == ('error: failed to create configmap: configmaps "cm3" is forbidden: exceeded quota: '
                                   "team, requested: configmaps=1, used: configmaps=3, limited: configmaps=3"), done
