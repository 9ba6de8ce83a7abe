"""`harness up` as steps: machines, inventory, provisioning (site.yml), every worker Ready, the user's kubeconfig.

Each phase's seconds are kept (`BringUp.phases`) for the summary and for the bring-up figures. Re-running on a
cluster that is up reuses its machines and re-applies the playbook, which then changes nothing.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.api.nodes import ready_status
from harness.client import kubeconfig
from harness.client.kubeconfig import KubeConfig
from harness.cluster import inventory, pki
from harness.cluster.local import LocalProvider, NodeSpec
from harness.cluster.provision import PlaybookRun, run_playbook
from harness.cluster.spec import ClusterSpec
from harness.cluster.vagrant import VagrantProvider

APISERVER_PORT = 6443
#: Where the `common` role puts a machine's certificates (the roles' harness_pki_dir).
MACHINE_PKI_DIR = "/etc/harness/pki"
#: The providers: Linux-namespace nodes on this machine, or VMs by the project's Vagrantfile.
LOCAL, VAGRANT = "local", "vagrant"
PROVIDERS = (LOCAL, VAGRANT)
#: Where a VM has the project (Vagrant's synced folder) and the virtualenv (baked into the box).
VM_VARS = {"harness_source_dir": "/vagrant", "harness_venv_dir": "/opt/harness/venv"}


class NodesNotReadyError(Exception):
    """Not every worker became a Ready Node in time; the message lists what was seen."""


@dataclass
class NodeState:
    name: str
    ready: bool
    pod_cidr: str = ""


@dataclass
class BringUp:
    """A cluster's bring-up: where its files are, and how long each phase took."""

    name: str
    spec: ClusterSpec
    home: Path  # inventory/<name>
    settings: Mapping[str, Any] = field(default_factory=dict)  # extra playbook variables (`harness up --set`)
    kind: str = LOCAL  # the provider: LOCAL or VAGRANT
    spec_path: Path | None = None  # the spec file, which the Vagrantfile reads too
    phases: dict[str, float] = field(default_factory=dict)
    nodes: list[NodeSpec] = field(default_factory=list)
    playbook: PlaybookRun | None = None
    node_states: list[NodeState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [NodeSpec(n.name, n.role, n.ip) for n in self.spec.nodes()]

    @property
    def hosts(self) -> Path:
        return self.home / "hosts.yml"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def masters(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.role == "master"]

    @property
    def workers(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.role == "worker"]

    def apiserver_urls(self) -> list[str]:
        return [f"https://{m.ip}:{APISERVER_PORT}" for m in self.masters]

    def provider(self) -> LocalProvider | VagrantProvider:
        if self.kind == VAGRANT:
            return VagrantProvider(self.name, spec_path=self.spec_path or Path("cluster.yaml"))
        return LocalProvider(self.name, state_dir=self.home / "machines", network=str(self.spec.network),
                             gateway=str(self.spec.gateway))

    def remember_provider(self) -> None:
        """inventory/<name>/provider: which provider made the cluster, for `harness down` and `status`."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "provider").write_text(self.kind + "\n")

    @property
    def pki_dir(self) -> Path:
        return self.home / "pki"

    @property
    def settings_file(self) -> Path:
        return self.home / "settings.yml"

    def remember_settings(self) -> dict[str, Any]:
        """The cluster's settings: those of earlier `harness up --set`, updated with this run's."""
        try:
            earlier = yaml.safe_load(self.settings_file.read_text()) or {}
        except FileNotFoundError:
            earlier = {}
        settings = {**earlier, **self.settings}
        if settings:
            self.home.mkdir(parents=True, exist_ok=True)
            self.settings_file.write_text("# `harness up --set` settings of this cluster (every host's vars)\n"
                                          + yaml.safe_dump(settings, sort_keys=True))
        return settings

    # ---- the phases ----

    def make_machines(self, progress: Callable[[str], None], *, create: bool = True) -> None:
        """The machines (unless `create` is false: only the inventory for machines made elsewhere) and the
        inventory that reaches them."""
        with self._phase("machines"):
            machines = self.provider()
            self.remember_provider()
            if create and isinstance(machines, VagrantProvider):
                sizes = {role.rstrip("s"): size.memory for role, size in self.spec.sizes.items()}
                machines.create(self.nodes, progress=progress, sizes=sizes, gateway=str(self.spec.gateway))
            elif create:
                machines.create(self.nodes, progress=progress)
            self.settings = self.remember_settings()
            the_plan = self.pki_plan()
            host_vars = {n.name: {"pki_files": [{"src": src, "dest": dest, "mode": f"{mode:04o}"}
                                                for src, dest, mode in pki.files_for(the_plan, n)],
                                  "kubeconfig_files": [{"src": f"{n.name}/{kc['name']}.conf",
                                                        "dest": f"{kc['name']}.conf", "mode": "0600"}
                                                       for kc in pki.kubeconfigs_for(n)]} for n in self.nodes}
            inventory.write_inventory(self.hosts, self.name, self.nodes, machines.key,
                                      cluster_vars={**self.spec.cluster_vars(),
                                                    **(self.vm_vars(machines, progress)
                                                       if isinstance(machines, VagrantProvider) else {}),
                                                    "pki_source": str(self.pki_dir.resolve()),
                                                    "kubeconfig_source": str(self.kubeconfigs_dir.resolve())},
                                      settings=self.settings, host_vars=host_vars,
                                      ssh_user="vagrant" if self.kind == VAGRANT else "root")

    @staticmethod
    def vm_vars(machines: VagrantProvider, progress: Callable[[str], None]) -> dict[str, str]:
        """Where a VM has the project and the virtualenv, and what runs it: `vm_accel` is the libvirt driver, kvm,
        or qemu for TCG emulation (where everything takes several times as long)."""
        return {**VM_VARS, "vm_accel": machines.accelerator(progress)}

    def pki_plan(self) -> pki.Plan:
        return pki.plan(self.nodes, service_cidr=str(self.spec.service_cidr))

    @property
    def kubeconfigs_dir(self) -> Path:
        return self.home / "kubeconfigs"

    def make_pki(self, progress: Callable[[str], None]) -> pki.Changes:
        """The cluster's CAs and certificates in inventory/<name>/pki, made once and kept (reissued only where the
        machines changed or a certificate nears expiry); and each machine's component kubeconfigs, which the
        `common` role places, as kubeadm writes /etc/kubernetes/*.conf."""
        with self._phase("pki"):
            changes = pki.ensure(self.pki_dir, self.pki_plan())
            self.write_component_kubeconfigs()
        if changes:
            made = [*(f"CA {name}" for name in changes.cas), *changes.certs,
                    *(["service-account key"] * changes.sa_key), *(["encryption key"] * changes.encryption_key),
                    *(["log forwarding shared key"] * changes.forward_key),
                    *(["bootstrap token"] * changes.bootstrap_token)]
            progress(f"pki: made {len(made)} in {self.pki_dir}: {', '.join(made)}")
        else:
            progress(f"pki: {self.pki_dir} is current")
        return changes

    def provision(self, progress: Callable[[str], None]) -> PlaybookRun:
        with self._phase("provision"):
            self.playbook = run_playbook(self.hosts, self.home / "ansible", ident="up", progress=progress)
        return self.playbook

    def wait_nodes_ready(self, progress: Callable[[str], None], timeout: float = 180.0) -> list[NodeState]:
        with self._phase("nodes Ready"):
            self.node_states = wait_nodes_ready(self.admin(), [w.name for w in self.workers],
                                                timeout=timeout, progress=progress)
        return self.node_states

    def admin(self) -> KubeConfig:
        """The cluster admin's credentials (`kubernetes-admin` in system:masters), as `harness up` gives them."""
        directory = self.pki_dir.resolve()
        return KubeConfig(servers=self.apiserver_urls(), cluster=self.name, user="kubernetes-admin",
                          ca_file=str(directory / "ca.crt"), cert_file=str(directory / "admin.crt"),
                          key_file=str(directory / "admin.key"))

    def write_component_kubeconfigs(self) -> None:
        """inventory/<name>/kubeconfigs/<machine>/<component>.conf: every apiserver, the CA and the component's
        certificate, at the paths the machine has them (/etc/harness/pki)."""
        for node in self.nodes:
            for kc in pki.kubeconfigs_for(node):
                path = self.kubeconfigs_dir / node.name / f"{kc['name']}.conf"
                if "token" in kc:  # the kubelet's bootstrap kubeconfig, as kubeadm writes it
                    kubeconfig.write(path, KubeConfig(servers=self.apiserver_urls(), cluster=self.name,
                                                      user="tls-bootstrap-token-user",
                                                      ca_file=f"{MACHINE_PKI_DIR}/ca.crt",
                                                      token=pki.bootstrap_token(self.pki_dir)))
                    continue
                on_node = f"{MACHINE_PKI_DIR}/{kc['cert']}"
                kubeconfig.write(path, KubeConfig(servers=self.apiserver_urls(), cluster=self.name, user=kc["name"],
                                                  ca_file=f"{MACHINE_PKI_DIR}/ca.crt", cert_file=f"{on_node}.crt",
                                                  key_file=f"{on_node}.key"))

    def write_kubeconfig(self) -> Path:
        kubeconfig.write(self.kubeconfig, self.admin())
        return self.kubeconfig

    def _phase(self, name: str) -> _Phase:
        return _Phase(self.phases, name)


class _Phase:
    def __init__(self, phases: dict[str, float], name: str) -> None:
        self.phases, self.name = phases, name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.phases[self.name] = time.monotonic() - self.started


def node_states(doc: Mapping[str, Any]) -> dict[str, NodeState]:
    """{name: NodeState} from a NodeList."""
    states = {}
    for node in doc.get("items") or []:
        name = node["metadata"]["name"]
        states[name] = NodeState(name, ready_status(node) == "True", (node.get("spec") or {}).get("podCIDR", ""))
    return states


def list_nodes(credentials: KubeConfig, timeout: float = 5.0) -> dict[str, NodeState]:
    """The Nodes as the first answering apiserver sees them."""
    last: Exception | None = None
    context = kubeconfig.ssl_context(credentials)
    for url in credentials.servers:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/nodes", timeout=timeout, context=context) as resp:
                return node_states(json.loads(resp.read()))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
    raise OSError(f"no apiserver answered ({', '.join(credentials.servers)}): {last}")


def wait_nodes_ready(credentials: KubeConfig, names: list[str], *, timeout: float, interval: float = 0.5,
                     progress: Callable[[str], None] = print) -> list[NodeState]:
    """Wait until every Node in `names` is Ready; return their states. Raises NodesNotReadyError on timeout."""
    deadline = time.monotonic() + timeout
    said: set[str] = set()
    seen: dict[str, NodeState] = {}
    error = ""
    while True:
        try:
            seen = list_nodes(credentials)
            error = ""
        except OSError as exc:
            error = str(exc)
        for name in names:
            if name in seen and seen[name].ready and name not in said:
                progress(f"node {name} Ready (podCIDR {seen[name].pod_cidr or 'none yet'})")
                said.add(name)
        if all(n in seen and seen[n].ready for n in names):
            return [seen[n] for n in names]
        if time.monotonic() >= deadline:
            missing = [f"{n}: {'NotReady' if n in seen else 'not registered'}" for n in names
                       if not (n in seen and seen[n].ready)]
            raise NodesNotReadyError(f"nodes not Ready after {timeout:.0f}s: {', '.join(missing)}"
                                     + (f" (last error: {error})" if error else ""))
        time.sleep(interval)


__all__ = ["BringUp", "NodeState", "NodesNotReadyError", "list_nodes", "node_states", "wait_nodes_ready"]
