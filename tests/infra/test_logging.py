"""The logging pipeline: every machine's component logs and every container's logs reach the aggregator on the
first master with their metadata, and nothing is lost when the aggregator is killed for a while and an agent is
killed mid-stream (at-least-once: duplicates are allowed, counted and reported). The aggregator's Forward port
speaks only TLS and only to a client that proves the cluster's shared key; its query port is HTTPS only."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.logging import forward
from tests.infra.support import BUSYBOX, InfraCluster

LINES = 2000
FORWARD_PORT, HTTP_PORT = 24224, 24220


def cluster_tls(cluster: InfraCluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cluster.ca_file))


def query(cluster: InfraCluster, **params: str) -> list[dict[str, Any]]:
    url = f"https://{cluster.masters[0].ip}:{HTTP_PORT}/query?" + urllib.parse.urlencode({"limit": "1000000",
                                                                                           **params})
    with urllib.request.urlopen(url, timeout=30, context=cluster_tls(cluster)) as resp:
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


def aggregator_metric(cluster: InfraCluster, sample: str) -> float:
    url = f"https://{cluster.masters[0].ip}:{HTTP_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=10, context=cluster_tls(cluster)) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " "))


def aggregator_answers(cluster: InfraCluster) -> bool:
    """Whether the aggregator's HTTPS port answers /healthz."""
    url = f"https://{cluster.masters[0].ip}:{HTTP_PORT}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10, context=cluster_tls(cluster)) as resp:
            return resp.status == 200
    except OSError:
        return False


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
        # RUNNING is supervisord's word after 2 s; the aggregator serves a moment later (seconds under emulation)
        cluster.wait(lambda: aggregator_answers(cluster), 30, "the restarted aggregator does not answer")

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


# -- the aggregator's ports -------------------------------------------------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    """What the peer sends until it closes the connection (failing if it neither answers nor closes in 10 s)."""
    got = b""
    sock.settimeout(10)
    try:
        while data := sock.recv(65536):
            got += data
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        pytest.fail(f"the aggregator kept the connection open, having sent {got!r}")
    return got


def next_message(sock: socket.socket, unpacker: Any) -> Any:
    sock.settimeout(10)
    while True:
        for message in unpacker:
            return message
        data = sock.recv(65536)
        assert data, "the aggregator closed the connection"
        unpacker.feed(data)


def handshake(cluster: InfraCluster, key: str, hostname: str) -> tuple[ssl.SSLSocket, Any, forward.Helo, str]:
    """A TLS connection (verified against the cluster CA) that has sent its PING: (socket, unpacker, HELO, salt)."""
    ip = cluster.masters[0].ip
    sock = cluster_tls(cluster).wrap_socket(socket.create_connection((ip, FORWARD_PORT), timeout=10),
                                            server_hostname=ip)
    unpacker = forward.new_unpacker()
    helo = forward.parse_helo(next_message(sock, unpacker))
    salt = forward.new_salt()
    sock.sendall(forward.pack(forward.ping(helo, hostname=hostname, shared_key=key, salt=salt)))
    return sock, unpacker, helo, salt


def test_the_forward_port_does_not_serve_a_plain_tcp_client(cluster: InfraCluster) -> None:
    marker = f"plain-{uuid.uuid4().hex[:8]}"
    events = forward.packed_forward("infra.plain", [forward.Entry(time.time(), {"message": marker})], "plain-chunk")
    with socket.create_connection((cluster.masters[0].ip, FORWARD_PORT), timeout=10) as sock:
        sock.sendall(events)
        got = read_until_closed(sock)
    assert b"ack" not in got and b"HELO" not in got, got
    assert query(cluster, since="1h", grep=marker) == []


def test_the_forward_port_refuses_a_client_without_the_shared_key(cluster: InfraCluster) -> None:
    mismatch = 'harness_log_aggregator_handshake_failures_total{reason="shared_key_mismatch"}'
    before = aggregator_metric(cluster, mismatch)
    sock, unpacker, _helo, _salt = handshake(cluster, "not-the-cluster-key", "infra-test")
    with sock:
        assert next_message(sock, unpacker) == ["PONG", False, "shared_key mismatch", "", ""]
        assert read_until_closed(sock) == b""
    assert aggregator_metric(cluster, mismatch) == before + 1


def test_the_forward_port_takes_events_after_the_handshake_with_the_cluster_key(cluster: InfraCluster) -> None:
    key = forward.read_shared_key(str(Path(cluster.cluster_vars["pki_source"]) / "forward-shared-key"))
    marker = f"keyed-{uuid.uuid4().hex[:8]}"
    sock, unpacker, helo, salt = handshake(cluster, key, "infra-test")
    with sock:
        server = forward.check_pong(next_message(sock, unpacker), hostname="infra-test", salt=salt,
                                    nonce=helo.nonce, shared_key=key)
        assert server == f"{cluster.masters[0].name}-log-aggregator"
        sock.sendall(forward.packed_forward("infra.keyed", [forward.Entry(time.time(), {"message": marker})],
                                            "keyed-chunk"))
        assert next_message(sock, unpacker) == {"ack": "keyed-chunk"}
    assert [r["message"] for r in query(cluster, since="1h", grep=marker)] == [marker]


def test_the_query_port_is_https_with_the_aggregator_certificate(cluster: InfraCluster) -> None:
    master = cluster.masters[0]
    with urllib.request.urlopen(f"https://{master.ip}:{HTTP_PORT}/healthz", timeout=10,
                                context=cluster_tls(cluster)) as resp:
        assert resp.status == 200
    with cluster_tls(cluster).wrap_socket(socket.create_connection((master.ip, HTTP_PORT), timeout=10),
                                          server_hostname=master.ip) as tls:
        cert = tls.getpeercert()
    assert cert and ("commonName", "harness-log-aggregator") in (rdn[0] for rdn in cert["subject"]), cert
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{master.ip}:{HTTP_PORT}/healthz", timeout=10).close()
