"""`harness dev up|down|status`: a local control plane on loopback, with simulated workers.

The walking skeleton's cluster, until namespace nodes and Ansible provisioning land: etcd,
the apiserver, the scheduler and the controller-manager run detached on 127.0.0.1, plus a
`hollow-nodes` process that registers simulated workers (they mark pods Running without
running anything; the real kubelet comes next). State, logs and pid files live under
`inventory/<name>/`, with a kubeconfig for real kubectl. `down` stops what it started, by
the PIDs it recorded, and removes that directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.client import kubeconfig
from harness.storage.local import LocalEtcd

ETCD_PORT, ETCD_PEER_PORT, API_PORT = 2379, 2380, 6443
SCHEDULER_PORT, CONTROLLER_MANAGER_PORT = 10259, 10257


@dataclass(frozen=True)
class Program:
    name: str
    args: list[str]
    health: str  # URL answering 200 once the program is up


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--name", default="dev", help="cluster name: state lives in inventory/NAME (default dev)")
    p.add_argument("--inventory", default="inventory", help="inventory directory (default ./inventory)")
    p.add_argument("--port", type=int, default=API_PORT, help=f"apiserver port (default {API_PORT})")
    p.add_argument("--hollow-nodes", type=int, default=2,
                   help="simulated worker nodes to register (default 2; 0 for none)")


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.inventory).resolve() / args.name


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _pid_alive(pid_file: Path) -> int:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return 0
    return pid if b"harness" in cmdline else 0


def _phase(text: str, start: float) -> None:
    print(f"[{time.monotonic() - start:5.1f}s] {text}", flush=True)


def _programs(args: argparse.Namespace, etcd: LocalEtcd, kc: Path) -> list[Program]:
    url = f"http://127.0.0.1:{args.port}"
    programs = [
        Program("apiserver", ["apiserver", "--etcd-servers", etcd.endpoint, "--bind-address", "127.0.0.1",
                              "--port", str(args.port)], url + "/readyz"),
        Program("scheduler", ["scheduler", "--kubeconfig", str(kc), "--secure-port", str(SCHEDULER_PORT)],
                f"http://127.0.0.1:{SCHEDULER_PORT}/healthz"),
        Program("controller-manager", ["controller-manager", "--kubeconfig", str(kc),
                                       "--secure-port", str(CONTROLLER_MANAGER_PORT)],
                f"http://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz"),
    ]
    if args.hollow_nodes:
        programs.append(Program("hollow-nodes", ["hollow-nodes", "--kubeconfig", str(kc), "--count",
                                                 str(args.hollow_nodes), "--prefix", "hollow"], ""))
    return programs


def _start(program: Program, home: Path, start: float) -> bool:
    pid_file, log_file = home / f"{program.name}.pid", home / f"{program.name}.log"
    if _pid_alive(pid_file) and (not program.health or _ok(program.health)):
        _phase(f"{program.name} already running (pid {pid_file.read_text().strip()})", start)
        return True
    _phase(f"starting {program.name}", start)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *program.args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while program.health and not _ok(program.health):
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"harness dev up: {program.name} did not come up; see {log_file}", file=sys.stderr)
            print("\n".join(log_file.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
            return False
        time.sleep(0.2)
    return True


def up(args: argparse.Namespace) -> int:
    start = time.monotonic()
    home = _dir(args)
    home.mkdir(parents=True, exist_ok=True)
    etcd = LocalEtcd(data_dir=home / "etcd", port=ETCD_PORT, peer_port=ETCD_PEER_PORT)
    if etcd.running_pid():
        _phase(f"etcd already running (pid {etcd.running_pid()})", start)
    else:
        _phase(f"starting etcd on {etcd.endpoint}", start)
        etcd.start_sync(detach=True)
    url = f"http://127.0.0.1:{args.port}"
    kc = home / "kubeconfig"
    kubeconfig.write(kc, kubeconfig.KubeConfig(servers=[url], cluster=args.name))
    programs = _programs(args, etcd, kc)
    for program in programs:
        if not _start(program, home, start):
            return 1
    _phase("cluster ready", start)
    kubectl = Path(sys.executable).with_name("kubectl")
    rows = "\n".join(f"  {p.name:<19} pid {(home / f'{p.name}.pid').read_text().strip():<8} log {home}/{p.name}.log"
                     for p in programs)
    print(f"""
Cluster "{args.name}" is up ({args.hollow_nodes} simulated workers: pods are scheduled and reported Running,
but no containers run until the kubelet lands):
  etcd                {etcd.endpoint}   data {etcd.directory}
  API                 {url}
{rows}
  kubeconfig          {kc}

Use it with:
  export KUBECONFIG={kc}
  {kubectl} get nodes
  {kubectl} apply -f examples/web.yaml && {kubectl} rollout status deploy/web
Stop it with: make down   (or: harness dev down --name {args.name})""")
    return 0


def _stop(pid_file: Path, name: str) -> None:
    pid = _pid_alive(pid_file)
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _pid_alive(pid_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid_file):
        os.kill(pid, signal.SIGKILL)
    print(f"stopped {name} (pid {pid})")


def down(args: argparse.Namespace) -> int:
    home = _dir(args)
    if not home.exists():
        print(f"nothing to do: {home} does not exist")
        return 0
    for name in ("hollow-nodes", "controller-manager", "scheduler", "apiserver"):
        _stop(home / f"{name}.pid", name)
    LocalEtcd(data_dir=home / "etcd").stop()
    shutil.rmtree(home)
    print(f"removed {home}")
    return 0


def status(args: argparse.Namespace) -> int:
    home = _dir(args)
    etcd_pid = LocalEtcd(data_dir=home / "etcd").running_pid()
    print(f"{'etcd':<19} {f'running (pid {etcd_pid})' if etcd_pid else 'stopped'}")
    healthy = bool(etcd_pid)
    for name in ("apiserver", "scheduler", "controller-manager", "hollow-nodes"):
        pid = _pid_alive(home / f"{name}.pid")
        print(f"{name:<19} {f'running (pid {pid})' if pid else 'stopped'}")
        healthy = healthy and (bool(pid) or name == "hollow-nodes")
    return 0 if healthy else 1


def run(args: argparse.Namespace) -> int:
    return {"up": up, "down": down, "status": status}[args.action](args)
