"""Node failure: a worker whose kubelet stops goes NotReady and its pods come back on the other workers, with the
shortened periods of the test cluster (`pytest --new-cluster`); restarting the kubelet makes it Ready again."""

from __future__ import annotations

import pytest

from tests.infra.support import InfraCluster, deployment, node_ready

GRACE_LIMIT = 20  # seconds of node-monitor grace period this test is willing to wait out


def test_a_worker_that_stops_reporting_loses_its_pods_and_comes_back(cluster: InfraCluster) -> None:
    grace = cluster.settings().get("control_plane_node_monitor_grace_period", 50)
    tolerate = cluster.settings().get("control_plane_default_unreachable_toleration_seconds", 300)
    if grace > GRACE_LIMIT or tolerate > GRACE_LIMIT or len(cluster.workers) < 2:
        pytest.skip(f"needs 2 workers and shortened periods (grace {grace}s, toleration {tolerate}s here): "
                    "run with --new-cluster")
    victim, others = cluster.workers[-1], {w.name for w in cluster.workers[:-1]}
    replicas = 2 * len(cluster.workers)
    with cluster.namespace("failover") as ns:
        cluster.apply(deployment("web", replicas), ns)
        cluster.wait_rollout(ns, "web")
        assert any(p["spec"]["nodeName"] == victim.name for p in cluster.pods(ns, "app=web")), "nothing to move"
        stopped = cluster.host(victim.name).run(f"{cluster.supervisorctl} stop harness-kubelet")
        assert stopped.rc == 0, stopped.stdout + stopped.stderr
        try:
            cluster.wait(lambda: node_ready(cluster.nodes()[victim.name]) != "True", grace + 15,
                         lambda: f"{victim.name} stayed Ready with its kubelet stopped\n"
                         + cluster.describe(ns, ("harness-controller-manager",)))
            taints = cluster.nodes()[victim.name]["spec"].get("taints", [])
            assert {"node.kubernetes.io/unreachable"} <= {t["key"] for t in taints}, taints

            def moved() -> bool:
                ready = [p for p in cluster.ready_pods(ns, "app=web") if not p["metadata"].get("deletionTimestamp")]
                return len(ready) == replicas and {p["spec"]["nodeName"] for p in ready} <= others

            cluster.wait(moved, tolerate + 60, lambda: f"the pods did not come back on {sorted(others)}\n"
                         + cluster.describe(ns, ("harness-controller-manager",)))
        finally:
            started = cluster.host(victim.name).run(f"{cluster.supervisorctl} start harness-kubelet")
            assert started.rc == 0, started.stdout + started.stderr
        cluster.wait(lambda: node_ready(cluster.nodes()[victim.name]) == "True", 60,
                     lambda: f"{victim.name} did not become Ready again\n" + cluster.log_tail(victim.name,
                                                                                           "harness-kubelet"))
        cluster.wait(lambda: all(p["spec"]["nodeName"] != victim.name for p in cluster.pods(ns, "app=web")), 60,
                     lambda: f"the evicted pods on {victim.name} were not cleaned up\n" + cluster.describe(ns))
        assert not any(t["key"].startswith("node.kubernetes.io/")
                       for t in cluster.nodes()[victim.name]["spec"].get("taints", []))
