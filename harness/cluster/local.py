"""The `local` provider: cluster nodes as Linux namespaces on this machine, reachable over real SSH.

A node `<n>` of cluster `<c>` is:

- a named network namespace `hk-<c>-<n>` with `eth0` (the node IP) on a veth whose host side
  (`hkv-<hash>`) is a port of the host bridge `hk-<c>`; the bridge holds the gateway address,
  and the node's default route points at it (the host does not forward: nothing leaves);
- a long-lived "node init" process, `unshare --pid --fork --mount --uts --mount-proc` run under
  `nsenter --net=/run/netns/hk-<c>-<n>` (not `ip netns exec`, which remounts /sys and hides the
  cgroup mounts from runc). It sets the hostname, bind-mounts the node-private directories
  `<state_dir>/nodes/<n>/{etc,lib,log,run,pods}` over `/etc/harness`, `/var/lib/harness`,
  `/var/log/harness`, `/run/harness` and `/var/log/pods`, and becomes the node's sshd
  (`sshd -D`, listening on the node IP only, root login by the cluster key only).

Mounts in a node propagate from the host into the node (slave), never back: the host never
sees a node's bind mounts, and a netns the host deletes disappears from every node too.
Killing a node's init (PID 1 of its PID namespace) ends every process of the node.

The kubelets the node role runs put their pods' cgroups under `/harness/<c>/<n>` (cgroups are the one
kernel resource the nodes share with the host); `destroy()` removes `/harness/<c>` in every hierarchy.

Everything the provider made is recorded in `<state_dir>/state.json` before it is made, so
`destroy()` works from a new process, after a failed `create()`, twice, and with no state.
On the host, the cluster ranges 10.244.0.0/16 and 10.96.0.0/12 are `unreachable` while any
harness bridge exists: they never leave by the default route.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.cluster import hostpackages
from harness.cluster.sshkeys import ensure_keypair, public_key
from harness.kubelet.runtime import cgroups
from harness.util import mountinfo
from harness.util.files import write_atomic
from harness.util.mounts import unmount

GUARD_ROUTES = ("10.244.0.0/16", "10.96.0.0/12")
HARNESS_BRIDGE_PREFIXES = ("hk-", "hkb-")  # ours, and the integration tests' node networks
SSHD = "/usr/sbin/sshd"
SSH_PORT = 22
# node-private directory (under the node's state dir) -> where the node sees it
NODE_MOUNTS = {
    "etc": "/etc/harness",
    "lib": "/var/lib/harness",
    "log": "/var/log/harness",
    "run": "/run/harness",
    "pods": "/var/log/pods",
}
# the node init: $1 hostname, $2 node state dir, $3 sshd_config; then pairs of (source, target) to bind-mount
INIT_SCRIPT = """set -e
hostname "$1"
cfg="$3"
shift 3
while [ "$#" -gt 1 ]; do mount --bind "$1" "$2"; shift 2; done
exec /usr/sbin/sshd -D -e -f "$cfg"
"""


class LocalProviderError(Exception):
    """Creating, inspecting or removing local nodes failed."""


@dataclass(frozen=True)
class NodeSpec:
    """One machine of the cluster: its name (also its hostname), role and node IP."""

    name: str
    role: str  # "master" | "worker"
    ip: str


def preflight() -> None:
    """Refuse to start when a tool the nodes need is missing, naming its package (as kubeadm's preflight checks do)."""
    lacking = hostpackages.missing(hostpackages.executables(hostpackages.MASTER))
    if lacking:
        raise LocalProviderError("missing on this machine: " + ", ".join(lacking)
                                 + ". Run `make deps` (it installs them), or apt-get install the packages named.")


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LocalProviderError(f"{' '.join(argv)}: {err}") from err
    if check and done.returncode != 0:
        raise LocalProviderError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a reused PID apart), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and _start_time(pid) == start


def _sshd_answers(ip: str, timeout: float = 0.5) -> bool:
    """True when something on ip:22 sends an SSH banner."""
    try:
        with socket.create_connection((ip, SSH_PORT), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _links() -> dict[str, str]:
    """Host links: name -> kind ("bridge", "veth", ...)."""
    out = json.loads(_run("ip", "-j", "-d", "link", "show").stdout or "[]")
    return {link["ifname"]: link.get("linkinfo", {}).get("info_kind", "") for link in out}


def harness_bridges(links: dict[str, str] | None = None) -> list[str]:
    """The node-network bridges of local clusters (and of the integration tests): while any exists, the host keeps
    its guard routes (GUARD_ROUTES), which VM clusters use too."""
    return [name for name, kind in (_links() if links is None else links).items()
            if kind == "bridge" and name.startswith(HARNESS_BRIDGE_PREFIXES)]


def _netns_names() -> set[str]:
    out = _run("ip", "-j", "netns", "list", check=False).stdout.strip()
    return {entry["name"] for entry in json.loads(out)} if out else set()


class LocalProvider:
    """Create, inspect and remove one cluster's namespace nodes; state in `state_dir`."""

    def __init__(self, cluster: str, *, state_dir: Path, bridge: str | None = None,
                 network: str = "192.168.56.0/24", gateway: str | None = None) -> None:
        if not cluster or not cluster.replace("-", "").isalnum():
            raise LocalProviderError(f"cluster name {cluster!r} must be letters, digits and '-'")
        self.cluster = cluster
        self.state_dir = Path(state_dir).absolute()
        self.bridge = bridge or f"hk-{cluster}"[:15]
        if len(self.bridge) > 15:
            raise LocalProviderError(f"bridge name {self.bridge!r} is longer than 15 characters")
        self.network = ipaddress.ip_network(network)
        self.gateway = ipaddress.ip_address(gateway) if gateway else next(self.network.hosts())
        if self.gateway not in self.network:
            raise LocalProviderError(f"gateway {self.gateway} is not in {self.network}")
        self.key = self.state_dir / "ssh" / "id_ed25519"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}  # node -> its unshare, when made by this process

    # ---- state ----

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _load(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"cluster": self.cluster, "bridge": self.bridge, "network": str(self.network),
                    "gateway": str(self.gateway), "nodes": {}}
        except ValueError as err:
            raise LocalProviderError(f"{self.state_file} is not valid JSON: {err}") from err
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_file, json.dumps(state, indent=2) + "\n")

    def netns(self, node: str) -> str:
        """The node's network namespace name (enter it with `nsenter --net=/run/netns/<name>`)."""
        return f"hk-{self.cluster}-{node}"

    @property
    def cgroup_root(self) -> str:
        """Where the cluster's pods' cgroups are (the node role's kubelet --cgroup-root is <this>/<node>)."""
        return f"/harness/{self.cluster}"

    def veth(self, node: str) -> str:
        """The host side of the node's veth: a stable name of 14 characters."""
        return "hkv-" + hashlib.sha1(f"{self.cluster}/{node}".encode()).hexdigest()[:10]

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    # ---- create ----

    def create(self, nodes: list[NodeSpec], *, progress: Callable[[str], None] = print) -> None:
        """Make the bridge, guard routes and every node, then wait until each node's sshd answers.

        Nodes already running (same IP) are left alone. On failure, what was made stays recorded:
        call destroy() to remove it.
        """
        self._validate(nodes)
        preflight()
        started = time.monotonic()
        ensure_keypair(self.key, comment=f"harness-{self.cluster}")
        state = self._load()
        if state.get("bridge", self.bridge) != self.bridge:
            raise LocalProviderError(f"cluster {self.cluster} already uses bridge {state['bridge']}")
        self._save(state)
        self._make_bridge(state)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for target in NODE_MOUNTS.values():
            Path(target).mkdir(parents=True, exist_ok=True)  # mount points; the host leaves them empty
        waiting: list[NodeSpec] = []
        for spec in nodes:
            known = state["nodes"].get(spec.name)
            if known and known.get("ip") == spec.ip and _alive(known.get("init_pid"), known.get("init_start")):
                progress(f"node {spec.name}: already running at {spec.ip}")
                continue
            if known:
                self._remove_node(spec.name, known)
            self._make_node(state, spec)
            waiting.append(spec)
        self._wait_sshd(state, waiting, progress)
        progress(f"cluster {self.cluster}: {len(nodes)} node(s) up in {time.monotonic() - started:.1f}s")

    def _validate(self, nodes: list[NodeSpec]) -> None:
        names: set[str] = set()
        ips: set[str] = set()
        for spec in nodes:
            if spec.role not in ("master", "worker"):
                raise LocalProviderError(f"node {spec.name}: role must be master or worker, not {spec.role!r}")
            if not spec.name or not spec.name.replace("-", "").isalnum():
                raise LocalProviderError(f"node name {spec.name!r} must be letters, digits and '-'")
            ip = ipaddress.ip_address(spec.ip)
            if ip not in self.network or ip == self.gateway or ip in (self.network.network_address,
                                                                     self.network.broadcast_address):
                raise LocalProviderError(f"node {spec.name}: {spec.ip} is not a free host address of {self.network}")
            if spec.name in names or spec.ip in ips:
                raise LocalProviderError(f"node {spec.name} ({spec.ip}): duplicate name or IP")
            names.add(spec.name)
            ips.add(spec.ip)

    def _make_bridge(self, state: dict[str, Any]) -> None:
        links = _links()
        if self.bridge not in links:
            self._check_subnet_free()
            state["bridge_created"] = True
            self._save(state)
            _run("ip", "link", "add", self.bridge, "type", "bridge")
        elif links[self.bridge] != "bridge":
            raise LocalProviderError(f"{self.bridge} exists and is not a bridge")
        gateway = f"{self.gateway}/{self.network.prefixlen}"
        if gateway not in _run("ip", "-o", "-4", "addr", "show", "dev", self.bridge).stdout:
            _run("ip", "addr", "add", gateway, "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for cidr in GUARD_ROUTES:  # cluster ranges never leave by the default route
            _run("ip", "route", "replace", "unreachable", cidr)

    def _check_subnet_free(self) -> None:
        for line in _run("ip", "-o", "-4", "addr", "show").stdout.splitlines():
            fields = line.split()
            addr = ipaddress.ip_interface(fields[3])
            if addr.network.overlaps(self.network):
                raise LocalProviderError(f"{self.network} overlaps {addr} on {fields[1]}: pick another network")

    def _make_node(self, state: dict[str, Any], spec: NodeSpec) -> None:
        netns, veth, root = self.netns(spec.name), self.veth(spec.name), self.node_dir(spec.name)
        record: dict[str, Any] = {**asdict(spec), "netns": netns, "veth": veth}
        state["nodes"][spec.name] = record
        self._save(state)  # recorded before it exists: destroy() finds partial nodes
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        inside = ("ip", "-n", netns)
        _run(*inside, "addr", "add", f"{spec.ip}/{self.network.prefixlen}", "dev", "eth0")
        _run(*inside, "link", "set", "lo", "up")
        _run(*inside, "link", "set", "eth0", "up")
        _run(*inside, "route", "add", "default", "via", str(self.gateway))
        config = self._write_node_files(spec, root)
        self._start_init(record, spec, root, config)
        self._save(state)

    def _write_node_files(self, spec: NodeSpec, root: Path) -> Path:
        for sub in NODE_MOUNTS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        ssh = root / "ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        host_key = ssh / "ssh_host_ed25519_key"
        if not host_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{spec.name}", "-f", str(host_key))
        # its own /etc/hosts: the node's name resolves (getfqdn, sudo, Ansible facts) without any DNS
        (root / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                                    f"{spec.ip}\t{spec.name}\n")
        authorized = ssh / "authorized_keys"
        authorized.write_text(public_key(self.key) + "\n")
        authorized.chmod(0o600)
        config = ssh / "sshd_config"
        config.write_text("\n".join([
            f"# sshd of node {spec.name} (cluster {self.cluster}), written by harness",
            f"ListenAddress {spec.ip}",
            f"Port {SSH_PORT}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized}",
            f"PidFile {root / 'run' / 'sshd.pid'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 100:30:200",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]))
        return config

    def _start_init(self, record: dict[str, Any], spec: NodeSpec, root: Path, config: Path) -> None:
        mounts = [arg for sub, target in NODE_MOUNTS.items() for arg in (str(root / sub), target)]
        mounts += [str(root / "hosts"), "/etc/hosts"]
        argv = ["nsenter", f"--net=/run/netns/{record['netns']}",
                "unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--mount-proc",
                "--propagation", "slave",
                "/bin/sh", "-c", INIT_SCRIPT, "node-init", spec.name, str(root), str(config), *mounts]
        with open(root / "init.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        self._procs[spec.name] = proc
        record["unshare_pid"] = proc.pid
        record["unshare_start"] = _start_time(proc.pid)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the forked child is the node's PID 1
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    record["init_pid"] = int(pids[0])
                    record["init_start"] = _start_time(int(pids[0]))
                    return
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        raise LocalProviderError(f"node {spec.name}: init did not start: {self._log_tail(spec.name)}")

    def _wait_sshd(self, state: dict[str, Any], specs: list[NodeSpec], progress: Callable[[str], None],
                   within: float = 15.0) -> None:
        pending = list(specs)
        deadline = time.monotonic() + within
        while pending:
            for spec in list(pending):
                record = state["nodes"][spec.name]
                if not _alive(record.get("init_pid"), record.get("init_start")):
                    raise LocalProviderError(f"node {spec.name}: init exited: {self._log_tail(spec.name)}")
                if _sshd_answers(spec.ip, timeout=0.2):
                    progress(f"node {spec.name} ({spec.role}): {spec.ip}, sshd answering")
                    pending.remove(spec)
            if pending and time.monotonic() > deadline:
                names = ", ".join(spec.name for spec in pending)
                raise LocalProviderError(f"sshd not answering within {within}s on {names}: "
                                         f"{self._log_tail(pending[0].name)}")
            if pending:
                time.sleep(0.02)

    def _log_tail(self, node: str, lines: int = 10) -> str:
        log = self.node_dir(node) / "init.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    # ---- inspect ----

    def nodes(self) -> list[NodeSpec]:
        """The nodes recorded in the state, in creation order."""
        return [NodeSpec(name=n["name"], role=n["role"], ip=n["ip"]) for n in self._load()["nodes"].values()]

    def status(self) -> dict[str, dict[str, Any]]:
        """Per node: role, ip, netns, init pid, whether the init is alive and whether sshd answers."""
        result: dict[str, dict[str, Any]] = {}
        for name, record in self._load()["nodes"].items():
            alive = _alive(record.get("init_pid"), record.get("init_start"))
            result[name] = {"role": record["role"], "ip": record["ip"], "netns": record["netns"],
                            "pid": record.get("init_pid"), "alive": alive,
                            "sshd": alive and _sshd_answers(record["ip"])}
        return result

    def ssh_command(self, node: str, command: list[str] | None = None) -> list[str]:
        """The argv of `ssh` into `node` as root with the cluster key (a command, or an interactive shell)."""
        record = self._load()["nodes"].get(node)
        if record is None:
            raise LocalProviderError(f"node {node!r} not found in cluster {self.cluster}")
        argv = ["ssh", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]
        if command:
            argv += ["-o", "BatchMode=yes"]
        else:
            argv += ["-t"]
        return [*argv, f"root@{record['ip']}", *(command or [])]

    # ---- destroy ----

    def destroy(self) -> None:
        """Remove every process, namespace, link, route and mount of the cluster, then the state dir."""
        state = self._load()
        records: dict[str, dict[str, Any]] = dict(state["nodes"])
        prefix = f"hk-{self.cluster}-"
        if not self.state_file.exists():  # no state: find the namespaces by name
            for netns in _netns_names():
                if netns.startswith(prefix):
                    node = netns[len(prefix):]
                    records.setdefault(node, {"netns": netns, "veth": self.veth(node)})
        for node, record in records.items():
            self._remove_node(node, record)
        links = _links()
        if state.get("bridge", self.bridge) in links:
            for name in self._bridge_ports(self.bridge):
                if name.startswith("hkv-"):
                    _run("ip", "link", "delete", name, check=False)
            _run("ip", "link", "delete", self.bridge, check=False)
            links.pop(self.bridge, None)
        if not harness_bridges(links):
            for cidr in GUARD_ROUTES:
                _run("ip", "route", "delete", "unreachable", cidr, check=False)
        self._unmount_under(self.state_dir)
        deadline = time.monotonic() + 5
        while (busy := cgroups.remove_tree(self.cgroup_root)) and time.monotonic() < deadline:
            time.sleep(0.1)  # the killed containers' last exits
        cgroups.remove_if_empty(str(Path(self.cgroup_root).parent))  # /harness, when no other cluster uses it
        if busy:
            raise LocalProviderError(f"cgroups still in use after the nodes were stopped: {busy[:3]}")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _bridge_ports(self, bridge: str) -> list[str]:
        out = _run("ip", "-j", "link", "show", "master", bridge, check=False).stdout.strip()
        return [link["ifname"] for link in json.loads(out)] if out else []

    def _remove_node(self, node: str, record: dict[str, Any]) -> None:
        pids: list[int] = []
        for key in ("init", "unshare"):
            pid, start = record.get(f"{key}_pid"), record.get(f"{key}_start")
            if pid is not None and _alive(pid, start):
                pids.append(pid)
        netns = record.get("netns", self.netns(node))
        if netns in _netns_names():  # anything else still in the node's network namespace
            pids += [int(p) for p in _run("ip", "netns", "pids", netns, check=False).stdout.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc = self._procs.pop(node, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        deadline = time.monotonic() + 5
        while any(_start_time(pid) is not None for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        _run("ip", "link", "delete", record.get("veth", self.veth(node)), check=False)
        _run("ip", "netns", "delete", netns, check=False)

    @staticmethod
    def _unmount_under(root: Path) -> None:
        for point in mountinfo.mount_points(root):
            with contextlib.suppress(OSError):  # what cannot be unmounted is reported by whoever needs it gone
                unmount(point, lazy=True)
