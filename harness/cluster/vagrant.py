"""The Vagrant provider: a cluster's machines as libvirt VMs, made by the project's `Vagrantfile`.

`create` gets libvirt ready (virtlogd and libvirtd started when nothing answers, the `default` storage pool), the box
(`harness box build`, cached), the libvirt driver (`harness box accel`), then runs `vagrant up --no-provision`: the
playbook runs afterwards through ansible-runner, as for local clusters, over the same kind of inventory (user
`vagrant` with sudo instead of root). `destroy` is `vagrant destroy -f` and then the leftovers Vagrant and libvirt
keep: the host-only network, the machines' disks in the pool, and the host's guard routes.

One Vagrant environment per project directory (its `.vagrant/`); its libvirt domains are named after the directory.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.cluster import accel, box
from harness.cluster.local import GUARD_ROUTES, NodeSpec, harness_bridges

ROOT = Path(__file__).resolve().parents[2]
VIRSH = ("virsh", "-c", "qemu:///system")
#: The host-only node network the Vagrantfile asks for, and the NAT network vagrant-libvirt reaches VMs by.
NODE_NETWORK = "harness-vagrant"
MANAGEMENT_NETWORK = "vagrant-libvirt"
POOL = "default"
POOL_DIR = "/var/lib/libvirt/images"
#: What running VMs here needs, by executable, with the Debian package (harness.cluster.hostpackages, VM rows).
TOOLS = {"vagrant": "vagrant", "virsh": "libvirt-clients", "libvirtd": "libvirt-daemon",
         "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "dnsmasq": "dnsmasq-base",
         "debootstrap": "debootstrap"}
#: Disk each VM's overlay grows to in the pool (packages are in the box; this is logs, etcd, pods, images).
DISK_PER_VM_GIB = 2
#: Memory each VM needs beyond its guest's: qemu's own (measured: ~0.7 GB RSS over a 1 GB guest under TCG).
QEMU_OVERHEAD_MIB = 768


class VagrantError(Exception):
    """The VMs cannot be made or reached; the message names the cause and what to run."""


Progress = Callable[[str], None]


def _run(*argv: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                                env={**os.environ, **(env or {})}, cwd=cwd)
    except FileNotFoundError as exc:
        raise VagrantError(f"{argv[0]} is missing: run `make vagrant-deps`") from exc
    except subprocess.TimeoutExpired as exc:
        raise VagrantError(f"`{' '.join(argv)}` did not finish in {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise VagrantError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()[-600:]}")
    return result


def missing_tools() -> list[str]:
    return [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items()
            if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]


def libvirt_answers() -> bool:
    try:
        return _run(*VIRSH, "version", check=False, timeout=15).returncode == 0
    except VagrantError:
        return False


def start_libvirt(progress: Progress) -> None:
    """libvirtd and virtlogd: by systemd where it runs, else as daemons by hand (as on machines without systemd)."""
    if libvirt_answers():
        return
    if Path("/run/systemd/system").is_dir():
        progress("starting libvirtd and virtlogd (systemd)")
        _run("systemctl", "start", "virtlogd.socket", "libvirtd.socket", "libvirtd.service", timeout=60)
    else:
        for daemon in ("virtlogd", "libvirtd"):
            if not _daemon_runs(daemon):
                progress(f"starting {daemon} as a daemon (no systemd here)")
                _run(daemon, "-d", timeout=30)
    deadline = time.monotonic() + 30
    while not libvirt_answers():
        if time.monotonic() > deadline:
            raise VagrantError("libvirtd does not answer on qemu:///system after starting it: see "
                               "/var/log/libvirt/libvirtd.log, or run `libvirtd` in the foreground")
        time.sleep(0.5)


def ensure_pool(progress: Progress) -> None:
    """libvirt's `default` storage pool (a directory), where Vagrant puts boxes' and machines' disks."""
    info = _run(*VIRSH, "pool-info", POOL, check=False)
    if info.returncode != 0:
        progress(f"making libvirt's storage pool {POOL} at {POOL_DIR}")
        _run(*VIRSH, "pool-define-as", POOL, "dir", "--target", POOL_DIR)
        _run(*VIRSH, "pool-build", POOL)
        info = _run(*VIRSH, "pool-info", POOL)
    if "running" not in info.stdout:
        _run(*VIRSH, "pool-start", POOL)
    _run(*VIRSH, "pool-autostart", POOL, check=False)


def check_memory(nodes: list[NodeSpec], sizes: dict[str, int]) -> None:
    """Refuse a cluster that does not fit this machine's memory (the VMs would be killed, or swap to a halt)."""
    needed = sum(sizes[n.role] + QEMU_OVERHEAD_MIB for n in nodes)
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable:"))
    if needed > available:
        raise VagrantError(f"{len(nodes)} VMs need about {needed} MiB and this machine has {available} MiB "
                           f"available: fewer workers (--workers), or smaller vagrant.sizes in cluster.yaml")


def check_disk(nodes: list[NodeSpec], pool_dir: Path = Path(POOL_DIR)) -> None:
    """Refuse VMs whose disks would not fit in libvirt's pool (they would stop, paused, when it fills)."""
    where = next((p for p in (pool_dir, *pool_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free / 2**30
    needed = DISK_PER_VM_GIB * len(nodes)
    if free < needed:
        raise VagrantError(f"{where} has {free:.1f} GiB free; {len(nodes)} VMs need about {needed} GiB for their "
                           f"disks: free some space there (or remove old VMs: `virsh -c qemu:///system vol-list "
                           f"{POOL}`)")


@dataclass
class VagrantProvider:
    """A cluster's VMs, from the project's Vagrantfile. `key` is the SSH key its inventory uses."""

    cluster: str
    spec_path: Path
    root: Path = ROOT
    box_name: str = box.BOX_NAME
    ssh_user: str = "vagrant"
    hosts: Path = ROOT / "inventory" / "vagrant" / "hosts.yml"
    #: The virtualenv on each VM (baked into the box).
    venv: str = box.VENV
    #: The libvirt driver the VMs run with (kvm, or qemu: TCG emulation), once known.
    driver: str = ""

    def accelerator(self, progress: Progress = print) -> str:
        if not self.driver:
            self.driver = accel.driver(progress=progress)
        return self.driver

    @property
    def key(self) -> Path:
        return box.vagrant_home() / "insecure_private_key"

    def env(self, nodes: list[NodeSpec]) -> dict[str, str]:
        masters = sum(n.role == "master" for n in nodes)
        return {"HARNESS_CLUSTER_SPEC": str(self.spec_path.resolve()), "HARNESS_MASTERS": str(masters),
                "HARNESS_WORKERS": str(len(nodes) - masters), "HARNESS_BOX": self.box_name, "HARNESS_DRIVER": "1",
                "VAGRANT_DEFAULT_PROVIDER": "libvirt"}

    def vagrant(self, *args: str, nodes: list[NodeSpec], progress: Progress | None = None,
                timeout: float = 1800, extra_env: dict[str, str] | None = None) -> str:
        """Run `vagrant ARGS` in the project; stream its `==>` lines as progress. VagrantError on failure."""
        argv = ["vagrant", *args]
        proc = subprocess.Popen(argv, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **self.env(nodes), **(extra_env or {})})
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            lines.append(line.rstrip())
            if progress is not None and _worth_showing(line):
                progress(f"  {line[4:].rstrip()}")
            if time.monotonic() > deadline:
                proc.kill()
                lines.append(f"(stopped after {timeout:.0f} s)")
        code = proc.wait()
        if code != 0:
            raise VagrantError(f"`vagrant {' '.join(args)}` failed (exit {code}):\n" + "\n".join(lines[-20:]))
        return "\n".join(lines)

    def create(self, nodes: list[NodeSpec], *, progress: Progress = print, sizes: dict[str, int] | None = None,
               gateway: str = "") -> None:
        """Libvirt ready, the box, then `vagrant up --no-provision` of every machine (reused when it is up)."""
        if missing := missing_tools():
            raise VagrantError(f"VMs need {', '.join(missing)}: run `make vagrant-deps`")
        if sizes:
            check_memory(nodes, sizes)
        check_disk(nodes)
        start_libvirt(progress)
        ensure_pool(progress)
        box.ensure(progress, name=self.box_name)
        driver = self.accelerator(progress)
        progress(f"vagrant up {len(nodes)} VMs (libvirt driver {driver}"
                 f"{': TCG emulation, a first boot takes minutes' if driver == accel.TCG else ''})")
        started = time.monotonic()
        try:
            self.vagrant("up", "--no-provision", nodes=nodes, progress=progress,
                         extra_env={"HARNESS_LIBVIRT_DRIVER": driver})
        except VagrantError as exc:
            raise VagrantError(f"{exc}\n\nThe VMs that came up stay for a look (`vagrant status`, "
                               f"`vagrant ssh NODE`, `virsh -c qemu:///system console DOMAIN`); "
                               f"`make vagrant-down` removes them all.") from exc
        # `vagrant up` syncs /vagrant only when it boots a machine: the playbook installs from it, so it is current.
        self.vagrant("rsync", nodes=nodes, timeout=600)
        progress(f"VMs up in {time.monotonic() - started:.0f} s")
        for cidr in GUARD_ROUTES:  # what the VMs send towards cluster ranges ends here, never at the default route
            _run("ip", "route", "replace", "unreachable", cidr)
        if gateway:
            progress(f"node network {NODE_NETWORK}: host at {gateway}")

    def states(self) -> dict[str, str]:
        """{machine: state} as Vagrant sees it (running, shutoff, not_created, ...)."""
        if not (self.root / ".vagrant").is_dir():
            return {}
        out = _run("vagrant", "status", "--machine-readable", cwd=self.root, timeout=120,
                   env={"HARNESS_DRIVER": "1", "HARNESS_CLUSTER_SPEC": str(self.spec_path.resolve())},
                   check=False).stdout
        states: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split(",")
            if len(parts) >= 4 and parts[2] == "state":
                states[parts[1]] = parts[3]
        return states

    def machines(self) -> dict[str, dict[str, str]]:
        """{machine: {role, ip}} from the cluster's inventory (what `harness up` wrote)."""
        try:
            data = yaml.safe_load(self.hosts.read_text()) or {}
        except OSError:
            return {}
        found: dict[str, dict[str, str]] = {}
        for group, role in (("masters", "master"), ("workers", "worker")):
            for name, host in ((data["all"]["children"].get(group) or {}).get("hosts") or {}).items():
                found[name] = {"role": role, "ip": host["node_ip"]}
        return found

    def status(self) -> dict[str, dict[str, Any]]:
        """Per machine, as LocalProvider.status: role, ip, whether it runs and whether its sshd answers."""
        states = self.states()
        result: dict[str, dict[str, Any]] = {}
        for name, machine in self.machines().items():
            alive = states.get(name) == "running"
            result[name] = {**machine, "state": states.get(name, "unknown"), "alive": alive,
                            "sshd": alive and _port_answers(machine["ip"], 22)}
        return result

    def ssh_command(self, node: str, command: list[str] | None = None) -> list[str]:
        """`ssh` into the VM as user vagrant with Vagrant's key; a command runs with sudo."""
        machine = self.machines().get(node)
        if machine is None:
            raise VagrantError(f"machine {node!r} not found in {self.hosts} (`harness up --provider vagrant`)")
        ip = machine["ip"]
        argv = ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]
        argv += ["-o", "BatchMode=yes"] if command else ["-t"]
        # ssh hands the remote shell one line: the command, as root, as the local provider's `ssh root@` runs it
        return [*argv, f"{self.ssh_user}@{ip}", *(["sudo", "sh", "-c", shlex.quote(" ".join(command))]
                                                  if command else [])]

    def destroy(self, progress: Progress = print) -> None:
        """`vagrant destroy -f`, then what Vagrant and libvirt leave: the networks it made, machine disks, routes."""
        if (self.root / ".vagrant").is_dir() and shutil.which("vagrant"):
            progress("vagrant destroy -f")
            result = _run("vagrant", "destroy", "-f", cwd=self.root, timeout=600, check=False,
                          env={"HARNESS_DRIVER": "1", "HARNESS_CLUSTER_SPEC": str(self.spec_path.resolve())})
            if result.returncode != 0:
                progress(f"vagrant destroy failed ({result.stderr.strip()[-300:]}); removing the domains by hand")
        if libvirt_answers():
            self._remove_domains(progress)
            self._remove_volumes(progress)
            for network in (NODE_NETWORK, MANAGEMENT_NETWORK):
                self._remove_network(network, progress)
            remove_libvirt_firewall(progress)
        for cidr in GUARD_ROUTES:
            if not harness_bridges():  # local clusters keep them while any exists
                _run("ip", "route", "delete", "unreachable", cidr, check=False)

    def leftovers(self) -> list[str]:
        """What of this cluster is still on the host: libvirt domains, disk volumes, networks, libvirt's iptables
        chains (with no libvirt network left to need them), guard routes (with no local cluster to need them)."""
        left: list[str] = []
        if libvirt_answers():
            domains = _run(*VIRSH, "list", "--all", "--name", check=False).stdout.split()
            left += [f"domain {d}" for d in domains if d.startswith(self.domain_prefix)]
            volumes = _run(*VIRSH, "vol-list", POOL, check=False).stdout.split()
            left += [f"volume {v}" for v in volumes if v.startswith(self.domain_prefix) and v.endswith(".img")]
            networks = _run(*VIRSH, "net-list", "--all", "--name", check=False).stdout.split()
            left += [f"network {n}" for n in networks if n in (NODE_NETWORK, MANAGEMENT_NETWORK)]
        if not libvirt_answers() or not _run(*VIRSH, "net-list", "--name", check=False).stdout.split():
            left += [f"{tool} LIBVIRT_* chains in {table}" for tool in ("iptables", "ip6tables")
                     for table in _libvirt_rules(tool)]
        if not harness_bridges():
            routes = _run("ip", "route", "show", "type", "unreachable", check=False).stdout
            left += [f"route unreachable {cidr}" for cidr in GUARD_ROUTES if cidr in routes]
        return left

    @property
    def domain_prefix(self) -> str:
        """vagrant-libvirt's default domain names: `<project directory>_<machine>`."""
        return f"{self.root.name}_"

    def _remove_domains(self, progress: Progress) -> None:
        names = _run(*VIRSH, "list", "--all", "--name", check=False).stdout.split()
        for name in names:
            if name.startswith(self.domain_prefix) and name[len(self.domain_prefix):].startswith(("master-",
                                                                                                  "worker-")):
                progress(f"removing libvirt domain {name}")
                _run(*VIRSH, "destroy", name, check=False)
                _run(*VIRSH, "undefine", name, "--remove-all-storage", check=False)

    def _remove_volumes(self, progress: Progress) -> None:
        volumes = _run(*VIRSH, "vol-list", POOL, check=False).stdout.split()
        for volume in volumes:
            if volume.startswith(self.domain_prefix) and volume.endswith(".img"):
                progress(f"removing volume {volume}")
                _run(*VIRSH, "vol-delete", "--pool", POOL, volume, check=False)

    def _remove_network(self, network: str, progress: Progress) -> None:
        if _run(*VIRSH, "net-info", network, check=False).returncode != 0:
            return
        users = _network_users(network)
        if users:
            progress(f"keeping libvirt network {network}: domains {', '.join(users)} use it")
            return
        progress(f"removing libvirt network {network}")
        _run(*VIRSH, "net-destroy", network, check=False)
        _run(*VIRSH, "net-undefine", network, check=False)


#: Vagrant's lines that say nothing to a harness user: the domain's every setting, the unversioned box's advice.
_NOISE = (" -- ", "No version detected", "generating a local metadata", "See https://www.vagrantup.com/docs/boxes")


def _worth_showing(line: str) -> bool:
    return line.startswith("==> ") and not any(noise in line for noise in _NOISE)


def remove_libvirt_firewall(progress: Progress) -> None:
    """libvirt's LIBVIRT_* iptables chains, which it leaves behind when its networks are gone; only when libvirt has
    no domain and no active network left. libvirtd sets its chains up once per run, so it is stopped first (it
    starts again with the next `harness up --provider vagrant`, and makes them again)."""
    if _run(*VIRSH, "list", "--all", "--name", check=False).stdout.split() or \
            _run(*VIRSH, "net-list", "--name", check=False).stdout.split():
        return
    chains = {tool: _libvirt_rules(tool) for tool in ("iptables", "ip6tables")}
    if not any(chains.values()):
        return
    stop_libvirtd(progress)
    for tool, tables in chains.items():
        for table, (jumps, names) in tables.items():
            for rule in jumps:
                _run(tool, "-t", table, "-D", *rule.split()[1:], check=False)
            for name in names:
                _run(tool, "-t", table, "-F", name, check=False)
                _run(tool, "-t", table, "-X", name, check=False)
    progress("removed libvirt's iptables chains (LIBVIRT_*)")


def _libvirt_rules(tool: str) -> dict[str, tuple[list[str], list[str]]]:
    """{table: (rules that jump to a LIBVIRT_ chain, LIBVIRT_ chains)} of iptables or ip6tables."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    for table in ("filter", "nat", "mangle"):
        out = _run(tool, "-t", table, "-S", check=False).stdout.splitlines()
        names = [line.split()[1] for line in out if line.startswith("-N LIBVIRT_")]
        jumps = [line for line in out if line.startswith("-A ") and " -j LIBVIRT_" in line
                 and not line.split()[1].startswith("LIBVIRT_")]
        if names or jumps:
            found[table] = (jumps, names)
    return found


def _daemon_runs(daemon: str) -> bool:
    """Whether the daemon of /run/<daemon>.pid is alive (libvirt's daemons write one)."""
    try:
        pid = int(Path(f"/run/{daemon}.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        return daemon in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def stop_libvirtd(progress: Progress) -> None:
    """Stop libvirtd (by systemd where it runs, else by its pid file) and wait until it is gone."""
    if Path("/run/systemd/system").is_dir():
        _run("systemctl", "stop", "libvirtd.service", check=False, timeout=60)
        return
    try:
        pid = int(Path("/run/libvirtd.pid").read_text().strip())
    except (OSError, ValueError):
        return
    progress(f"stopping libvirtd (pid {pid}): it has nothing left to run")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def _port_answers(ip: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _network_users(network: str) -> list[str]:
    users = []
    for name in _run(*VIRSH, "list", "--all", "--name", check=False).stdout.split():
        xml = _run(*VIRSH, "dumpxml", name, check=False).stdout
        if f"network='{network}'" in xml:
            users.append(name)
    return users


__all__ = ["VagrantError", "VagrantProvider", "start_libvirt"]
