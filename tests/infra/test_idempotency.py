"""A second run of the playbook reports changed=0 and restarts nothing: no program, no pod."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.cluster.provision import run_playbook
from tests.infra.support import InfraCluster, deployment


def changed_tasks(log: str) -> list[str]:
    """`TASK name: host` for every task that reported a change, from a playbook's log."""
    task, out = "", []
    for line in log.splitlines():
        if line.startswith("TASK ["):
            task = line.split("]", 1)[0] + "]"
        elif line.startswith("changed: ["):
            out.append(f"{task}: {line.split('[', 1)[1].split(']', 1)[0]}")
    return out


def test_a_second_playbook_run_changes_and_restarts_nothing(cluster: InfraCluster) -> None:
    with cluster.namespace("idem") as ns:
        cluster.apply(deployment("web", len(cluster.workers)), ns)
        cluster.wait_rollout(ns, "web")
        pods = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["containerID"]
                for p in cluster.live_pods(ns, "app=web")}
        programs = {m: cluster.programs(m) for m in cluster.machines}
        with tempfile.TemporaryDirectory(prefix="harness-idempotency-") as tmp:
            run = run_playbook(cluster.inventory, Path(tmp), ident="again", progress=lambda _line: None)
            failed = {host: recap for host, recap in run.recap.items() if recap.get("changed")}
            assert not failed, f"the second run changed something: {failed}\n" + "\n".join(
                changed_tasks(run.log.read_text()))
        assert {m: cluster.programs(m) for m in cluster.machines} == programs
        assert {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["containerID"]
                for p in cluster.live_pods(ns, "app=web")} == pods
        assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in cluster.live_pods(ns, "app=web"))
