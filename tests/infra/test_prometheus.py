"""Prometheus on the first master scrapes every component on every machine: each target is up, and queries
answer with what the cluster is doing."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.infra.support import InfraCluster

# job -> the inventory group whose machines serve it (None: the first master only)
JOBS = {"prometheus": None, "etcd": "etcd", "apiserver": "masters", "scheduler": "masters",
        "controller-manager": "masters", "dns": "masters", "kubelet": "workers", "kube-proxy": "workers",
        "log-agent": "all", "log-aggregator": None}


@pytest.fixture(scope="module")
def prometheus(cluster: InfraCluster) -> str:
    return f"http://{cluster.masters[0].ip}:9090"


def api(prometheus: str, path: str, **params: str) -> Any:
    url = f"{prometheus}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def test_every_component_on_every_machine_is_an_up_target(cluster: InfraCluster, prometheus: str) -> None:
    expected = {(job, m.name) for job, group in JOBS.items()
                for m in ([cluster.masters[0]] if group is None else
                          [cluster.machines[n] for n in sorted(cluster.hosts_matching(group))])}

    def targets() -> dict[tuple[str, str], dict[str, Any]]:
        active = api(prometheus, "targets", state="active")["activeTargets"]
        return {(t["labels"]["job"], t["labels"]["instance"]): t for t in active}

    def all_up() -> bool:
        seen = targets()
        return set(seen) == expected and all(t["health"] == "up" for t in seen.values())

    cluster.wait(all_up, 60, lambda: "targets not all up: " + ", ".join(
        f"{job}/{instance}={t['health']} {t.get('lastError', '')}" for (job, instance), t in sorted(targets().items())
        if t["health"] != "up") + f"; missing: {sorted(expected - set(targets()))}")


def test_queries_answer_with_what_the_cluster_does(cluster: InfraCluster, prometheus: str) -> None:
    def value(query: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = api(prometheus, "query", query=query)["result"]
        return result

    requests = cluster.wait(lambda: value("sum(apiserver_request_total)"), 30, "no apiserver_request_total yet")
    assert float(requests[0]["value"][1]) > 0, requests
    running = cluster.wait(lambda: value("kubelet_running_pods"), 30, "no kubelet_running_pods yet")
    assert {r["metric"]["instance"] for r in running} == {w.name for w in cluster.workers}, running
    assert all(float(r["value"][1]) >= 0 for r in running), running
    up = value("up")
    assert up and all(r["value"][1] == "1" for r in up), [r for r in up if r["value"][1] != "1"]
    # every component reports its process, as upstream's do
    processes = {r["metric"]["job"] for r in value("process_resident_memory_bytes")}
    assert set(JOBS) <= processes, processes
