"""The logging pipeline: every machine's component logs and every container's logs reach the aggregator on the
first master with their metadata, and nothing is lost when the aggregator is killed for a while and an agent is
killed mid-stream (at-least-once: duplicates are allowed, counted and reported)."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.infra.support import BUSYBOX, InfraCluster

LINES = 2000


def query(cluster: InfraCluster, **params: str) -> list[dict[str, Any]]:
    url = f"http://{cluster.masters[0].ip}:24220/query?" + urllib.parse.urlencode({"limit": "1000000", **params})
    with urllib.request.urlopen(url, timeout=30) as resp:
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


def agent_retries(ip: str) -> float:
    """harness_log_agent_retries_total of the agent at `ip`."""
    with urllib.request.urlopen(f"http://{ip}:24221/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("harness_log_agent_retries_total"))


def test_component_and_container_logs_arrive_with_their_metadata(cluster: InfraCluster) -> None:
    for machine in cluster.machines.values():
        component = "kubelet" if "workers" in machine.groups else "apiserver"
        cluster.wait(lambda m=machine, c=component: query(cluster, node=m.name, component=c, since="1h", limit="5"),
                     60, f"no {component} logs of {machine.name} in the aggregator")
    with cluster.namespace("logs") as ns:
        marker = f"hello-{uuid.uuid4().hex[:8]}"
        cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {BUSYBOX}, command: [sh, -c, "echo {marker} out; echo {marker} err >&2; sleep 3600"]}}
""", ns)
        records = cluster.wait(lambda: len(found := query(cluster, namespace=ns, pod="talker", grep=marker)) == 2
                               and found, 60, lambda: f"the pod's two lines did not arrive: "
                               f"{query(cluster, namespace=ns, pod='talker')}")
        node = cluster.get("pod", "-n", ns, "talker")["spec"]["nodeName"]
        assert {(r["stream"], r["message"]) for r in records} == {("stdout", f"{marker} out"),
                                                                  ("stderr", f"{marker} err")}
        assert all(r["node"] == node and r["container"] == "main" and r["namespace"] == ns for r in records)


def test_nothing_is_lost_when_the_aggregator_and_an_agent_are_killed(
        cluster: InfraCluster, record_property: Callable[[str, object], None]) -> None:
    run = uuid.uuid4().hex[:8]
    worker, aggregator = cluster.workers[0], cluster.masters[0]
    host = cluster.host(worker.name)
    with cluster.namespace("noloss") as ns:
        cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: counter}}
spec:
  nodeName: {worker.name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c, "i=0; while [ $i -lt {LINES} ]; do echo pod-{run} $i; i=$((i+1)); usleep 5000; done; sleep 3600"]
""", ns)
        # a component writing to its log file under /var/log/harness, as supervisord writes every component's
        component_log = f"/var/log/harness/noloss-{run}.log"
        host.run(f"nohup sh -c 'i=0; while [ $i -lt {LINES} ]; do echo \"ts=now level=info logger=test "
                 f"msg=\\\"comp-{run} $i\\\"\" >> {component_log}; i=$((i+1)); usleep 5000; done' "
                 ">/dev/null 2>&1 &")
        cluster.wait(lambda: query(cluster, namespace=ns, pod="counter", grep=f"pod-{run} 1[0-9]$"), 60,
                     "the counter pod's first lines did not arrive")

        # the aggregator goes away for a while (kill -9, kept down); once the worker's agent has noticed (it is
        # retrying, buffering what it reads), the agent dies too, mid-stream
        retries = agent_retries(worker.ip)
        _state, pid = cluster.programs(aggregator.name)["harness-log-aggregator"]
        cluster.host(aggregator.name).run(f"kill -9 {pid}; {cluster.supervisorctl} stop harness-log-aggregator")
        cluster.wait(lambda: agent_retries(worker.ip) > retries, 60,
                     "the agent never noticed the aggregator was gone")
        _state, agent = cluster.programs(worker.name)["harness-log-agent"]
        host.run(f"kill -9 {agent}")
        cluster.wait(lambda: cluster.programs(worker.name)["harness-log-agent"][0] == "RUNNING", 30,
                     "supervisord did not restart the killed log agent")
        started = cluster.host(aggregator.name).run(f"{cluster.supervisorctl} start harness-log-aggregator")
        assert started.rc == 0, started.stdout + started.stderr

        def numbers(source: dict[str, str], prefix: str) -> Counter[int]:
            found = Counter[int]()
            for record in query(cluster, since="1h", grep=f"{prefix}-{run} ", **source):
                match = re.search(rf"{prefix}-{run} (\d+)", record["message"])
                if match:
                    found[int(match[1])] += 1
            return found

        sources = {"pod": ({"namespace": ns, "pod": "counter"}, "pod"),
                   "component": ({"node": worker.name, "component": f"noloss-{run}"}, "comp")}
        for name, (source, prefix) in sources.items():
            cluster.wait(lambda s=source, p=prefix: len(numbers(s, p)) == LINES, 180,
                         lambda s=source, p=prefix, n=name: f"{n}: {LINES - len(numbers(s, p))} of {LINES} lines "
                         f"missing, e.g. {sorted(set(range(LINES)) - set(numbers(s, p)))[:10]}\n"
                         + cluster.log_tail(worker.name, "harness-log-agent"))
            seen = numbers(source, prefix)
            duplicates = sum(seen.values()) - LINES
            print(f"no-loss, {name}: {LINES} lines, all delivered, {duplicates} duplicates")
            record_property(f"{name}_duplicates", duplicates)  # in the JUnit report (reports/infra.xml)
        host.run(f"rm -f {component_log}")
