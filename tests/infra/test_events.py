"""Events: what the components do is recorded — scheduled, pulled, created, started, scaled, killed — and
`kubectl get events` and `kubectl describe` show it."""

from __future__ import annotations

from tests.infra.support import InfraCluster, deployment


def reasons(cluster: InfraCluster, ns: str) -> dict[str, set[str]]:
    """{reason: {source component}} of the namespace's events."""
    found: dict[str, set[str]] = {}
    for event in cluster.get("events", "-n", ns)["items"]:
        found.setdefault(event["reason"], set()).add((event.get("source") or {}).get("component", ""))
    return found


def test_components_record_what_they_do(cluster: InfraCluster) -> None:
    with cluster.namespace("events") as ns:
        cluster.apply(deployment("web", 2), ns)
        cluster.wait_rollout(ns, "web")
        wanted = {"ScalingReplicaSet", "SuccessfulCreate", "Scheduled", "Pulled", "Created", "Started"}
        cluster.wait(lambda: wanted <= set(reasons(cluster, ns)), 30,
                     lambda: f"missing events {sorted(wanted - set(reasons(cluster, ns)))}: {reasons(cluster, ns)}")
        seen = reasons(cluster, ns)
        assert seen["Scheduled"] == {"default-scheduler"}, seen
        assert seen["ScalingReplicaSet"] == {"deployment-controller"}, seen
        assert seen["Started"] == {"kubelet"}, seen

        pod = cluster.live_pods(ns, "app=web")[0]["metadata"]["name"]
        described = cluster.kubectl("describe", "pod", "-n", ns, pod)
        assert described.returncode == 0, described.stderr
        events = described.stdout.split("Events:", 1)[-1]
        for reason in ("Scheduled", "Pulled", "Created", "Started"):
            assert reason in events, described.stdout

        assert cluster.kubectl("scale", "-n", ns, "deploy/web", "--replicas=1").returncode == 0
        cluster.wait(lambda: "Killing" in reasons(cluster, ns) and "SuccessfulDelete" in reasons(cluster, ns), 30,
                     lambda: f"no Killing/SuccessfulDelete after scaling down: {reasons(cluster, ns)}")
        listed = cluster.kubectl("get", "events", "-n", ns)
        assert listed.returncode == 0 and "Killing" in listed.stdout and "ScalingReplicaSet" in listed.stdout
