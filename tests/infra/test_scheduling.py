"""Scheduling: pods spread across the workers; a nodeSelector pins a pod; an unschedulable pod says why."""

from __future__ import annotations

from collections import Counter

from tests.infra.support import BUSYBOX, InfraCluster, deployment


def test_pods_spread_across_workers(cluster: InfraCluster) -> None:
    with cluster.namespace("spread") as ns:
        replicas = 2 * len(cluster.workers)
        cluster.apply(deployment("spread", replicas), ns)
        cluster.wait_rollout(ns, "spread")
        per_node = Counter(p["spec"]["nodeName"] for p in cluster.pods(ns, "app=spread"))
        assert set(per_node) == {w.name for w in cluster.workers}, f"pods per node: {dict(per_node)}"
        assert max(per_node.values()) - min(per_node.values()) <= 1, f"uneven: {dict(per_node)}"


def test_a_node_selector_pins_the_pod(cluster: InfraCluster) -> None:
    target = cluster.workers[-1].name
    labelled = cluster.kubectl("label", "node", target, "infra-test/pinned=yes", "--overwrite")
    assert labelled.returncode == 0, labelled.stderr
    try:
        with cluster.namespace("pinned") as ns:
            cluster.apply(deployment("pinned", 3, extra_spec="      nodeSelector: {infra-test/pinned: 'yes'}"), ns)
            cluster.wait_rollout(ns, "pinned")
            nodes = {p["spec"]["nodeName"] for p in cluster.pods(ns, "app=pinned")}
            assert nodes == {target}, nodes
    finally:
        cluster.kubectl("label", "node", target, "infra-test/pinned-")


def test_an_unschedulable_pod_says_why(cluster: InfraCluster) -> None:
    with cluster.namespace("nowhere") as ns:
        cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: nowhere}}
spec:
  nodeSelector: {{infra-test/no-such-label: 'yes'}}
  containers: [{{name: main, image: {BUSYBOX}, command: [sleep, '3600']}}]
""", ns)

        def condition() -> dict[str, str] | None:
            pod = cluster.get("pod", "-n", ns, "nowhere")
            return next((c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"
                         and c["status"] == "False"), None)

        scheduled = cluster.wait(condition, 30, lambda: "the pod never got PodScheduled=False\n" + cluster.describe(ns))
        assert scheduled["reason"] == "Unschedulable", scheduled
        workers = len(cluster.workers)
        assert scheduled["message"].startswith(f"0/{workers} nodes are available"), scheduled["message"]
        assert "didn't match Pod's node affinity/selector" in scheduled["message"], scheduled["message"]
        events = cluster.get("events", "-n", ns, "--field-selector", "involvedObject.name=nowhere")["items"]
        assert any(e["reason"] == "FailedScheduling" for e in events), events
        assert not cluster.get("pod", "-n", ns, "nowhere")["spec"].get("nodeName")
