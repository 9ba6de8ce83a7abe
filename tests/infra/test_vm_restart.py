"""VMs stop and start again: after `vagrant halt` and `vagrant up`, systemd starts supervisord, supervisord every
program, the routes of the cluster's ranges are back and the kubelet restarts the pods. Only for a cluster of VMs
(inventory/vagrant): a namespace node has no boot to come back from."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.support import ROOT, InfraCluster, deployment, node_ready, pod_ready

#: A halt and a boot under emulation take minutes each.
BOOT_SECONDS = 900


def vagrant(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_DRIVER": "1"}  # the Vagrantfile leaves the inventory alone
    return subprocess.run(["vagrant", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def listed(cluster: InfraCluster, *args: str) -> list[dict[str, Any]]:
    """`kubectl get ARGS` items, or none while the apiserver is still starting."""
    done = cluster.kubectl("get", *args, "-o", "json")
    return json.loads(done.stdout)["items"] if done.returncode == 0 else []


@pytest.fixture()
def vms(cluster: InfraCluster) -> InfraCluster:
    provider = Path(cluster.inventory).parent / "provider"
    if not provider.is_file() or provider.read_text().strip() != "vagrant":
        pytest.skip("VMs only: a namespace node is not booted (the cluster's inventory/<name>/provider says so)")
    return cluster


def test_halt_and_up_bring_back_a_working_cluster(vms: InfraCluster) -> None:
    with vms.namespace("reboot") as ns:
        vms.apply(deployment("web", len(vms.workers)), ns)
        vms.wait_rollout(ns, "web", timeout=300)
        before = {p["metadata"]["name"] for p in vms.ready_pods(ns, "app=web")}
        halted = vagrant("halt", timeout=BOOT_SECONDS)
        assert halted.returncode == 0, halted.stdout + halted.stderr
        up = vagrant("up", "--no-provision", timeout=BOOT_SECONDS)
        assert up.returncode == 0, up.stdout + up.stderr
        def workers_ready() -> bool:
            ready = {n["metadata"]["name"] for n in listed(vms, "nodes") if node_ready(n) == "True"}
            return ready >= {w.name for w in vms.workers}

        vms.wait(workers_ready, BOOT_SECONDS, lambda: "the workers did not become Ready after the boot\n"
                 + vms.describe(ns))
        for machine in vms.machines.values():
            name = machine.name

            def running(name: str = name) -> bool:
                programs = vms.programs(name)
                return bool(programs) and all(state == "RUNNING" for state, _ in programs.values())

            vms.wait(running, BOOT_SECONDS, f"{name}: not every program RUNNING after the boot")
            routes = vms.host(machine.name).run("ip route show %s", vms.cluster_vars["service_cidr"])
            assert f"via {vms.cluster_vars['node_gateway']}" in routes.stdout, routes.stdout
        # the same pods (a reboot is no eviction), Ready again: their containers restarted by the kubelet
        vms.wait(lambda: {p["metadata"]["name"] for p in listed(vms, "pods", "-n", ns, "-l", "app=web")
                          if pod_ready(p)} == before, BOOT_SECONDS,
                 lambda: f"the pods {sorted(before)} did not come back Ready\n" + vms.describe(ns))
