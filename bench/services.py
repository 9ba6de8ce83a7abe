"""Services on the whole stack: network programming latency, ClusterIP vs pod IP, cluster DNS.

Builds what tests/integration/test_services.py builds, outside pytest: a throwaway etcd, a host
bridge with an apiserver, two node namespaces each running `harness kubelet` and `harness proxy`
(iptables mode, `--iptables-min-sync-period` as given, default 1 s), the endpoints controller and
`harness dns` on the bridge address behind the kube-dns Service (10.96.0.10). Then, in one run:

1. network programming latency: --services Services without a selector, each with Endpoints of
   10 fake pod IPs written here; the time from the batch's first create until every node's
   `iptables-save -t nat` has all their KUBE-SEP DNAT rules; then one update per Endpoints object
   (one address changed), issued every --update-interval seconds, each timed from its write until
   the new address's KUBE-SEP rule is in the rules of every node (target p99 <= 1 s);
2. one busybox httpd pod on node 1 behind the Service `web`: --megabytes fetched with busybox wget
   from node 0's namespace through the pod IP and through the ClusterIP (MB/s, ratio; target >= 0.9),
   and the connect() time of --connects short connections each way (p50/p99);
3. --queries DNS A lookups of `web.<ns>.svc.cluster.local` from node 0's namespace through
   10.96.0.10 (p50/p99).

Figures, not pass/fail. Needs root and runc. Everything is torn down, also on SIGTERM.

    .venv/bin/python bench/services.py [--services 100] [--min-sync-period 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import pct

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.api import errors, registry
from harness.client.rest import Client
from harness.storage.local import LocalEtcd, free_port
from tests.integration.apiserver_fixtures import wait_for
from tests.integration.node_fixtures import (
    Network,
    Node,
    destroy,
    destroy_network,
    make_network,
    make_node,
    sh,
    wait_node_ready,
)
from tests.integration.test_services import _kube_dns_registered, _spawn

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
SERVICES = registry.by_path("", "v1", "services")
ENDPOINTS = registry.by_path("", "v1", "endpoints")
NAMESPACES = registry.by_path("", "v1", "namespaces")
SEP_DNAT = re.compile(r'^-A KUBE-SEP-\S+ .*--comment "?([^"\s]+)"? .*-j DNAT --to-destination (\S+)')

CONNECT_SCRIPT = """
import json, socket, sys, time
targets = json.loads(sys.argv[1]); count = int(sys.argv[2]); out = {t: [] for t in targets}
for _ in range(count):
    for t in targets:
        host, port = t.rsplit(":", 1)
        s = socket.socket(); s.settimeout(5)
        start = time.perf_counter(); s.connect((host, int(port))); out[t].append(time.perf_counter() - start)
        s.close()
print(json.dumps(out))
"""

DNS_SCRIPT = """
import json, socket, sys, time
from dnslib import QTYPE, DNSRecord
name, count = sys.argv[1], int(sys.argv[2]); sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2); lat = []; answers = set()
for i in range(count):
    q = DNSRecord.question(name, "A"); start = time.perf_counter()
    sock.sendto(q.pack(), ("10.96.0.10", 53)); reply = DNSRecord.parse(sock.recv(4096))
    lat.append(time.perf_counter() - start)
    answers |= {str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A}
print(json.dumps({"lat": lat, "answers": sorted(answers)}))
"""


class Stack:
    """The two-node cluster; `close` removes all of it, whatever was made."""

    def __init__(self, etcd: LocalEtcd, workdir: Path, min_sync: float) -> None:
        self.workdir = workdir
        self.min_sync = min_sync
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: list[Node] = []
        self.routes: list[str] = []
        self.network: Network = make_network(etcd, workdir)

    def start(self) -> None:
        for i in range(2):
            node = make_node(self.network, self.workdir, index=i)
            self.nodes.append(node)
            node.kubelet_args = ["--log-level", "info"]
            node.start_kubelet()
        kc = str(self.kubeconfig)
        for node in self.nodes:
            self.procs.append(_spawn(["proxy", "--kubeconfig", kc, "--hostname-override", node.name,
                                      "--iptables-min-sync-period", str(self.min_sync), "--log-level", "warning",
                                      "--healthz-bind-address", f"{node.ip}:10256"],
                                     self.workdir / f"proxy-{node.name}.log", node.netns))
            sh("ip", "route", "replace", node.pod_cidr, "via", node.ip)
            self.routes.append(node.pod_cidr)
        self.procs.append(_spawn(["controller-manager", "--kubeconfig", kc, "--controllers", "endpoints",
                                  "--leader-elect=false", "--secure-port", str(free_port()), "--log-level", "warning"],
                                 self.workdir / "cm.log"))
        self.procs.append(_spawn(["dns", "--kubeconfig", kc, "--bind-address", self.network.host_ip, "--port", "53",
                                  "--health-port", str(free_port()), "--log-level", "warning"],
                                 self.workdir / "dns.log"))
        for node in self.nodes:
            wait_node_ready(node)

    @property
    def kubeconfig(self) -> Path:
        assert self.network.apiserver is not None
        return self.network.apiserver.kubeconfig

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in self.nodes:
            node.run_in(sys.executable, "-m", "harness.cli", "proxy", "--cleanup", timeout=60)
            destroy(node)
        for cidr in self.routes:
            sh("ip", "route", "delete", cidr, check=False)
        destroy_network(self.network)


async def nat_rules(node: Node) -> set[tuple[str, str]]:
    """(service port key, DNAT destination) of every KUBE-SEP rule in the node's nat table."""
    proc = await asyncio.create_subprocess_exec("nsenter", f"--net=/run/netns/{node.netns}", "iptables-save", "-t",
                                                "nat", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await proc.communicate()
    found = set()
    for line in out.decode().splitlines():
        if m := SEP_DNAT.match(line):
            found.add((m.group(1), m.group(2)))
    return found


class Watcher:
    """Polls every node's rules; records when each awaited (key, destination) is on all of them."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.pending: dict[tuple[str, str], float] = {}  # -> time of the write
        self.latencies: dict[tuple[str, str], float] = {}
        self.polls = 0

    def expect(self, key: tuple[str, str], written: float) -> None:
        self.pending[key] = written

    async def settled(self) -> bool:
        return not self.pending

    async def run(self) -> None:
        while True:
            if not self.pending:
                await asyncio.sleep(0.01)
                continue
            rules = await asyncio.gather(*(nat_rules(n) for n in self.nodes))
            now = time.perf_counter()
            self.polls += 1
            for key in [k for k in self.pending if all(k in r for r in rules)]:
                self.latencies[key] = now - self.pending.pop(key)


def endpoints(name: str, ips: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"name": "http", "port": 8080}]}]}


async def programming(client: Client, stack: Stack, ns: str, count: int, interval: float) -> None:
    """Part 1: the batch create, then one Endpoints update every `interval` seconds."""
    sub = stack.network.subnet
    # fake pod IPs: service i uses 10 addresses from node (i % 2)'s /26, updates take one from the other node's
    ips = {f"s{i}": [f"10.244.{sub}.{(i % 2) * 64 + 1 + j}" for j in range(10)] for i in range(count)}
    watcher = Watcher(stack.nodes)
    task = asyncio.create_task(watcher.run())
    try:
        start = time.perf_counter()
        for name, addrs in ips.items():
            await client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}, ns)
            await client.create(ENDPOINTS, endpoints(name, addrs), ns)
            for ip in addrs:
                watcher.expect((f"{ns}/{name}:http", f"{ip}:8080"), start)
        written = time.perf_counter() - start
        await wait_for(watcher.settled, within=60, what="all services programmed on every node")
        batch = max(watcher.latencies.values())
        watcher.latencies.clear()
        await asyncio.sleep(stack.min_sync + 0.2)  # a quiet period, as between real changes
        for i, (name, addrs) in enumerate(ips.items()):
            new_ip = f"10.244.{sub}.{((i + 1) % 2) * 64 + 20 + i % 40}"
            t = time.perf_counter()
            await client.patch(ENDPOINTS, name, {"subsets": endpoints(name, [new_ip, *addrs[1:]])["subsets"]}, ns)
            watcher.expect((f"{ns}/{name}:http", f"{new_ip}:8080"), t)
            await asyncio.sleep(max(0.0, t + interval - time.perf_counter()))
        await wait_for(watcher.settled, within=60, what="all updates programmed on every node")
    finally:
        task.cancel()
    lat = list(watcher.latencies.values())
    print(f"1. network programming (iptables mode, --iptables-min-sync-period {stack.min_sync:g} s, "
          f"{len(stack.nodes)} nodes, polls of iptables-save on every node: {watcher.polls})")
    print(f"   batch: {count} Services x 10 endpoints written in {written:.2f} s, "
          f"all KUBE-SEP rules on every node {batch:.2f} s after the first write")
    print(f"   {len(lat)} Endpoints updates (one every {interval:g} s), write -> new KUBE-SEP rule on every node:")
    print(f"   p50 {pct(lat, 0.5):7.1f} ms  p99 {pct(lat, 0.99):7.1f} ms  max {max(lat) * 1000:7.1f} ms"
          f"   (target p99 <= 1000 ms)")


async def web_service(client: Client, stack: Stack, ns: str, megabytes: int) -> tuple[str, str]:
    """One httpd pod on node 1 serving a `megabytes` file, behind the Service `web`: (pod IP, ClusterIP)."""
    await client.create(PODS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "labels": {"app": "web"}},
        "spec": {"nodeName": stack.nodes[1].name, "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "httpd", "image": "busybox", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", f"dd if=/dev/zero of=/tmp/big bs=1M count={megabytes} 2>/dev/null; "
                                    "httpd -f -p 8080 -h /tmp"],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}, ns)
    svc = await client.create(SERVICES, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}, ns)

    async def ready() -> str | None:
        try:
            ep = await client.get(ENDPOINTS, "web", ns)
        except errors.NotFound:
            return None
        addrs = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
        return addrs[0] if addrs else None

    pod_ip: str = await wait_for(ready, within=60, what="web-0 ready in the endpoints of web")

    async def programmed() -> bool:
        rules = await asyncio.gather(*(nat_rules(n) for n in stack.nodes))
        return all((f"{ns}/web:http", f"{pod_ip}:8080") in r for r in rules)

    await wait_for(programmed, within=20, what="web programmed on every node")
    return pod_ip, svc["spec"]["clusterIP"]


def fetch(node: Node, url: str, megabytes: int) -> float:
    """MB/s of one busybox wget of the big file from the node's namespace."""
    start = time.perf_counter()
    done = node.run_in("busybox", "wget", "-q", "-O", "/dev/null", url, timeout=120)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"wget {url} failed: {done.stderr}")
    return megabytes / elapsed


async def data_path(stack: Stack, pod_ip: str, cluster_ip: str, megabytes: int, connects: int) -> None:
    """Part 2: throughput and connect latency from node 0 to the pod on node 1, direct and through the ClusterIP."""
    client_node = stack.nodes[0]
    direct, via = f"http://{pod_ip}:8080/big", f"http://{cluster_ip}:80/big"
    rates: dict[str, list[float]] = {direct: [], via: []}
    for _ in range(3):  # interleaved, best of three each
        for url in rates:
            rates[url].append(await asyncio.to_thread(fetch, client_node, url, megabytes))
    pod_rate, svc_rate = max(rates[direct]), max(rates[via])
    targets = [f"{pod_ip}:8080", f"{cluster_ip}:80"]
    out = await asyncio.to_thread(client_node.run_in, sys.executable, "-c", CONNECT_SCRIPT, json.dumps(targets),
                                  str(connects), timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"connect loop failed: {out.stderr}")
    times = json.loads(out.stdout)
    print(f"2. data path, node 0's namespace -> httpd pod on node 1 ({megabytes} MB, busybox wget, best of 3)")
    print(f"   pod IP    {pod_ip:>15}: {pod_rate:8.1f} MB/s   (all: {', '.join(f'{r:.0f}' for r in rates[direct])})")
    print(f"   ClusterIP {cluster_ip:>15}: {svc_rate:8.1f} MB/s   (all: {', '.join(f'{r:.0f}' for r in rates[via])})")
    print(f"   ratio ClusterIP / pod IP: {svc_rate / pod_rate:.2f}   (target >= 0.9)")
    for label, target in (("pod IP   ", targets[0]), ("ClusterIP", targets[1])):
        lat = times[target]
        slow = sum(1 for t in lat if t > 0.5)  # a SYN retransmitted after 1 s (a full accept queue drops SYNs)
        print(f"   connect() {label} x{len(lat)}: p50 {pct(lat, 0.5):6.3f} ms  p99 {pct(lat, 0.99):8.3f} ms  "
              f"({slow} took > 500 ms: SYN retransmits)")
    ratio50 = pct(times[targets[1]], 0.5) / pct(times[targets[0]], 0.5)
    print(f"   connect p50 ClusterIP / pod IP: {ratio50:.2f}")


async def dns_lookups(stack: Stack, ns: str, cluster_ip: str, queries: int) -> None:
    """Part 3: A lookups of the web Service's name through the kube-dns ClusterIP, from node 0's namespace."""
    name = f"web.{ns}.svc.cluster.local"
    out = await asyncio.to_thread(stack.nodes[0].run_in, sys.executable, "-c", DNS_SCRIPT, name, str(queries),
                                  timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"DNS loop failed: {out.stderr}")
    result = json.loads(out.stdout)
    lat = result["lat"]
    ok = "matches" if result["answers"] == [cluster_ip] else f"expected {cluster_ip}"
    print(f"3. DNS: {len(lat)} A queries for {name} via 10.96.0.10 from node 0's namespace "
          f"(answer {result['answers']}: {ok})")
    print(f"   p50 {pct(lat, 0.5):6.3f} ms  p99 {pct(lat, 0.99):6.3f} ms  max {max(lat) * 1000:6.3f} ms")


async def run(stack: Stack, args: argparse.Namespace) -> None:
    async with Client.from_kubeconfig(stack.kubeconfig) as client:
        for n in stack.nodes:  # what the node IPAM controller would do
            await client.patch(NODES, n.name, {"spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]}})
        await _kube_dns_registered(client, stack.network.host_ip)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        started = time.perf_counter()
        web = asyncio.create_task(web_service(client, stack, ns, args.megabytes))  # its pod starts meanwhile
        try:
            await programming(client, stack, ns, args.services, args.update_interval)
            pod_ip, cluster_ip = await web
        finally:
            web.cancel()
        await data_path(stack, pod_ip, cluster_ip, args.megabytes, args.connects)
        await dns_lookups(stack, ns, cluster_ip, args.queries)
        print(f"(measurements took {time.perf_counter() - started:.0f} s)")


def main(args: argparse.Namespace) -> None:
    with LocalEtcd() as etcd, tempfile.TemporaryDirectory(prefix="bench-services-") as tmp:
        begun = time.perf_counter()
        stack = Stack(etcd, Path(tmp), args.min_sync_period)
        try:
            stack.start()
            print(f"stack up in {time.perf_counter() - begun:.1f} s: apiserver on {stack.network.host_ip}, nodes "
                  f"{', '.join(f'{n.name} {n.ip} pods {n.pod_cidr}' for n in stack.nodes)}")
            asyncio.run(run(stack, args))
        finally:
            stack.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--min-sync-period", type=float, default=1.0, help="kube-proxy --iptables-min-sync-period")
    parser.add_argument("--update-interval", type=float, default=0.1, help="seconds between Endpoints updates")
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--queries", type=int, default=500)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM still runs the teardown
    main(parser.parse_args())
