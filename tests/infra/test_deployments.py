"""Deployments: rollout, scale up and down, a rolling update that never has fewer than
replicas - maxUnavailable Ready pods, and rollback."""

from __future__ import annotations

from tests.infra.support import InfraCluster, ReadyWatch, deployment

REPLICAS = 4
STRATEGY = """  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 1, maxSurge: 1}
  minReadySeconds: 0"""


def revision_command(cluster: InfraCluster, ns: str) -> str:
    spec = cluster.get("deploy", "-n", ns, "web")["spec"]["template"]["spec"]
    return str(spec["containers"][0]["command"][-1])


def test_rollout_scale_rolling_update_and_rollback(cluster: InfraCluster) -> None:
    with cluster.namespace("deploy") as ns:
        cluster.apply(deployment("web", REPLICAS, strategy=STRATEGY), ns)
        cluster.wait_rollout(ns, "web")
        assert len(cluster.ready_pods(ns, "app=web")) == REPLICAS

        # scale up, then down
        for replicas in (6, 2, REPLICAS):
            scaled = cluster.kubectl("scale", "-n", ns, "deploy/web", f"--replicas={replicas}")
            assert scaled.returncode == 0, scaled.stderr
            cluster.wait(lambda r=replicas: len(cluster.pods(ns, "app=web")) == r
                         and len(cluster.ready_pods(ns, "app=web")) == r, 90,
                         lambda r=replicas: f"deploy/web did not settle at {r} Ready pods\n" + cluster.describe(ns))

        # a rolling update, watched pod by pod: never fewer than replicas - maxUnavailable Ready
        original = revision_command(cluster, ns)
        with ReadyWatch(cluster, ns, "app=web") as watch:
            cluster.wait(lambda: watch.count() == REPLICAS, 20, "the watch never saw every pod Ready")
            watch.counting = True
            updated = cluster.kubectl("set", "env", "-n", ns, "deploy/web", "VERSION=2")
            assert updated.returncode == 0, updated.stderr
            cluster.wait_rollout(ns, "web")
        assert watch.fewest is not None and watch.fewest >= REPLICAS - 1, (
            f"only {watch.fewest} Ready pods at one moment of the update (maxUnavailable 1)\n" + cluster.describe(ns))
        cluster.wait(lambda: len(live := cluster.live_pods(ns, "app=web")) == REPLICAS and all(
            {"name": "VERSION", "value": "2"} in p["spec"]["containers"][0].get("env", []) for p in live), 30,
            lambda: "the old pods did not all go\n" + cluster.describe(ns))

        # rollback: the first template again
        undone = cluster.kubectl("rollout", "undo", "-n", ns, "deploy/web")
        assert undone.returncode == 0, undone.stderr
        cluster.wait_rollout(ns, "web")
        cluster.wait(lambda: all("env" not in p["spec"]["containers"][0] for p in cluster.live_pods(ns, "app=web"))
                     and len(cluster.ready_pods(ns, "app=web")) == REPLICAS, 60,
                     lambda: "the rollback did not bring back the first template\n" + cluster.describe(ns))
        assert revision_command(cluster, ns) == original
        history = cluster.kubectl("rollout", "history", "-n", ns, "deploy/web")
        assert history.returncode == 0 and "3" in history.stdout, history.stdout + history.stderr
