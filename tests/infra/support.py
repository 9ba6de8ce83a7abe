"""What the infra suites share: the cluster as its Ansible inventory describes it, driven with real kubectl and
checked on its machines through testinfra.

Everything comes from the inventory (`--ansible-inventory`, or `--cluster NAME` for inventory/NAME/hosts.yml), so
the same suites run against local namespace nodes and against Vagrant VMs: the apiservers are the masters'
`node_ip`s on port 6443, the machines are reached the way Ansible reaches them.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

from harness.client import kubeconfig
from tests.clusters import supervisor_states

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
APISERVER_PORT = 6443
CONTROL_PLANE_PROGRAMS = ("harness-etcd", "harness-apiserver", "harness-scheduler", "harness-controller-manager",
                          "harness-dns", "harness-pod-routes")
NODE_PROGRAMS = ("harness-kubelet", "harness-kube-proxy")
COMPONENT_LOG = {"harness-kubelet": "kubelet", "harness-kube-proxy": "kube-proxy", "harness-etcd": "etcd",
                 "harness-apiserver": "apiserver", "harness-scheduler": "scheduler",
                 "harness-controller-manager": "controller-manager", "harness-dns": "dns",
                 "harness-pod-routes": "pod-routes"}
BUSYBOX = "busybox"
#: How much longer everything takes on VMs under qemu's TCG emulation (the inventory's `vm_accel: qemu`) than on
#: namespace nodes or KVM: the suites' waits are this many times as long there (measured: a rollout of 3 pods
#: ~4x, a task of the playbook ~8x).
TCG_TIME_SCALE = 6.0


def kubectl_binary() -> str:
    local = VENV_BIN / "kubectl"
    return str(local) if local.exists() else "kubectl"


@dataclass
class Machine:
    name: str
    ip: str
    groups: list[str]
    vars: dict[str, Any]


@dataclass
class InfraCluster:
    """The cluster behind an inventory: its machines, kubectl against its apiservers, testinfra hosts."""

    inventory: Path
    machines: dict[str, Machine] = field(default_factory=dict)
    cluster_vars: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, inventory: Path) -> InfraCluster:
        doc = yaml.safe_load(inventory.read_text())["all"]
        cluster = cls(inventory, cluster_vars=dict(doc.get("vars") or {}))
        for group, body in (doc.get("children") or {}).items():
            for name, host_vars in ((body or {}).get("hosts") or {}).items():
                machine = cluster.machines.get(name)
                if machine is None:
                    machine = cluster.machines[name] = Machine(name, "", [], {})
                machine.groups.append(group)
                if host_vars:
                    machine.vars.update(host_vars)
                    machine.ip = host_vars.get("node_ip") or host_vars.get("ansible_host") or machine.ip
        return cluster

    # ---- the machines ----

    @property
    def masters(self) -> list[Machine]:
        return [m for m in self.machines.values() if "masters" in m.groups]

    @property
    def workers(self) -> list[Machine]:
        return [m for m in self.machines.values() if "workers" in m.groups]

    def settings(self) -> dict[str, Any]:
        """The cluster's `harness up --set` settings (host vars every machine has alike)."""
        per_host = [m.vars for m in self.machines.values()]
        return {k: v for k, v in per_host[0].items() if all(h.get(k) == v for h in per_host)} if per_host else {}

    def hosts_matching(self, pattern: str) -> set[str]:
        """The machines an Ansible host pattern names: `all`, a group, a host, or a comma-separated list of them."""
        names: set[str] = set()
        for part in pattern.split(","):
            if part == "all":
                names |= set(self.machines)
            elif part in self.machines:
                names.add(part)
            else:
                names |= {m.name for m in self.machines.values() if part in m.groups}
        return names

    @property
    def servers(self) -> list[str]:
        return [f"https://{m.ip}:{APISERVER_PORT}" for m in self.masters]

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig `harness up` writes beside the inventory."""
        return self.inventory.parent / "kubeconfig"

    def tls(self) -> ssl.SSLContext | None:
        """The admin's TLS context for a raw request to an apiserver (trusting the cluster CA, with the admin's
        client certificate)."""
        return kubeconfig.ssl_context(kubeconfig.load(self.kubeconfig))

    @property
    def ca_file(self) -> Path:
        """The cluster CA's certificate, in the PKI the inventory names (`pki_source`)."""
        return Path(self.cluster_vars["pki_source"]) / "ca.crt"

    @property
    def venv(self) -> str:
        """The harness virtualenv on the machines (VMs: their own; local nodes: the project's)."""
        return str(self.cluster_vars.get("harness_venv_dir") or ROOT / ".venv")

    @property
    def vms(self) -> bool:
        """Machines of their own (Vagrant VMs), rather than namespace nodes sharing this host's kernel."""
        return "vm_accel" in self.cluster_vars

    @property
    def time_scale(self) -> float:
        """The factor of every wait: TCG_TIME_SCALE on emulated VMs, else 1."""
        return TCG_TIME_SCALE if self.cluster_vars.get("vm_accel") == "qemu" else 1.0

    @property
    def supervisorctl(self) -> str:
        return f"{self.venv}/bin/supervisorctl -c /etc/harness/supervisor/supervisord.conf"

    def host(self, name: str) -> Any:
        """The testinfra host for machine `name`."""
        return testinfra.get_host(f"ansible://{name}?ansible_inventory={self.inventory}")

    def programs(self, name: str) -> dict[str, tuple[str, int | None]]:
        """{program: (state, pid)} from supervisorctl on machine `name`."""
        return supervisor_states(self.host(name).run(f"{self.supervisorctl} status").stdout)

    def log_tail(self, name: str, program: str, lines: int = 30) -> str:
        component = COMPONENT_LOG.get(program, program)
        out = self.host(name).run(f"tail -n {lines} /var/log/harness/{component}.log").stdout
        return f"--- {name}: /var/log/harness/{component}.log (last {lines} lines) ---\n{out}"

    # ---- the API ----

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60,
                server: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), "--server", server or self.servers[0], *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout * self.time_scale,
                              check=False)

    def get(self, *args: str) -> dict[str, Any]:
        """`kubectl get ... -o json`, parsed; fails the test if kubectl fails."""
        done = self.kubectl("get", *args, "-o", "json")
        if done.returncode != 0:
            pytest.fail(f"kubectl get {' '.join(args)}: {done.stderr.strip()}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def apply(self, manifest: str, namespace: str) -> None:
        done = self.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
        if done.returncode != 0:
            pytest.fail(f"kubectl apply: {done.stderr.strip()}\n{manifest}")

    def api_get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.servers[0] + path, timeout=10, context=self.tls()) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: n for n in self.get("nodes")["items"]}

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = self.get(*args)["items"]
        return items

    def live_pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        """The pods not being deleted."""
        return [p for p in self.pods(namespace, selector) if not p["metadata"].get("deletionTimestamp")]

    def describe(self, namespace: str, programs: tuple[str, ...] = ("harness-kubelet",)) -> str:
        """What a failing test shows: objects, events, and the tail of the relevant component logs."""
        parts = [self.kubectl("get", "nodes,deploy,rs,pods,svc,endpoints", "-n", namespace, "-o", "wide").stdout,
                 self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp").stdout]
        for program in programs:
            where = self.workers if program in NODE_PROGRAMS else self.masters
            parts += [self.log_tail(m.name, program) for m in where]
        return "\n".join(parts)

    # ---- waiting ----

    def wait(self, condition: Callable[[], Any], timeout: float, what: Callable[[], str] | str,
             interval: float = 0.5) -> Any:
        """Wait until `condition()` is truthy and return it; fail with `what` (called then) on timeout (which is
        `timeout` seconds times the cluster's time_scale)."""
        timeout *= self.time_scale
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{what if isinstance(what, str) else what()}\n(waited {timeout:.0f}s)")
            time.sleep(interval)

    def ready_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(namespace, selector) if pod_ready(p)]

    def wait_rollout(self, namespace: str, deployment: str, timeout: float = 120) -> None:
        timeout *= self.time_scale
        done = self.kubectl("rollout", "status", "-n", namespace, f"deploy/{deployment}", f"--timeout={timeout:.0f}s",
                            timeout=timeout + 10)
        if done.returncode != 0:
            pytest.fail(f"deploy/{deployment} did not roll out: {done.stdout}{done.stderr}\n"
                        + self.describe(namespace))

    @contextmanager
    def namespace(self, prefix: str) -> Iterator[str]:
        name = f"{prefix}-{uuid.uuid4().hex[:5]}"
        self.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n", "default")
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false")


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def node_ready(node: dict[str, Any]) -> str:
    return next((c.get("status", "") for c in (node.get("status") or {}).get("conditions") or []
                 if c.get("type") == "Ready"), "")


def deployment(name: str, replicas: int, *, command: str = "httpd -f -p 8080 -h /etc",
               extra_spec: str = "", strategy: str = "") -> str:
    """A busybox Deployment serving /etc on 8080 (GET /hostname answers the pod's name), Ready when it listens."""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
{strategy}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{extra_spec}
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {BUSYBOX}
        command: ["sh", "-c", "{command}"]
        ports: [{{name: http, containerPort: 8080}}]
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
        readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}
"""


def service(name: str, kind: str = "ClusterIP") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: {kind}
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


class ReadyWatch:
    """Watches a label's pods through the apiserver; once `counting` is set, keeps the fewest Ready pods there were
    at any moment (after every event), in `fewest`."""

    def __init__(self, cluster: InfraCluster, namespace: str, selector: str) -> None:
        self.url = (f"{cluster.servers[0]}/api/v1/namespaces/{namespace}/pods?watch=1&labelSelector={selector}"
                    "&allowWatchBookmarks=false")
        self.context = cluster.tls()
        self.ready: dict[str, bool] = {}
        self.fewest: int | None = None
        self.counting = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def count(self) -> int:
        return sum(self.ready.values())

    def _run(self) -> None:
        with suppress(OSError, ValueError), urllib.request.urlopen(self.url, timeout=300, context=self.context) as resp:
            self._started.set()
            for line in resp:
                if self._stop.is_set():
                    return
                event = json.loads(line)
                pod = event["object"]
                name = pod["metadata"]["name"]
                if event["type"] == "DELETED":
                    self.ready.pop(name, None)
                else:
                    self.ready[name] = pod_ready(pod) and not pod["metadata"].get("deletionTimestamp")
                if self.counting:
                    self.fewest = self.count() if self.fewest is None else min(self.fewest, self.count())
