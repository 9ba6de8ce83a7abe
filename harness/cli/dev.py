"""`harness dev up|down|status`: a local control plane (etcd + apiserver) on loopback.

The walking skeleton's cluster, until namespace nodes and Ansible provisioning land: etcd
and the apiserver run detached on 127.0.0.1 with their state, logs and pid files under
`inventory/<name>/`, and a kubeconfig for real kubectl is written there. `down` stops the
processes it started (by the PIDs it recorded) and removes that directory.
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
from pathlib import Path

from harness.client import kubeconfig
from harness.storage.local import LocalEtcd

ETCD_PORT, ETCD_PEER_PORT, API_PORT = 2379, 2380, 6443


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--name", default="dev", help="cluster name: state lives in inventory/NAME (default dev)")
    p.add_argument("--inventory", default="inventory", help="inventory directory (default ./inventory)")
    p.add_argument("--port", type=int, default=API_PORT, help=f"apiserver port (default {API_PORT})")


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.inventory).resolve() / args.name


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
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


def up(args: argparse.Namespace) -> int:
    start = time.monotonic()
    home = _dir(args)
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    etcd = LocalEtcd(data_dir=home / "etcd", port=ETCD_PORT, peer_port=ETCD_PEER_PORT)
    if etcd.running_pid():
        _phase(f"etcd already running (pid {etcd.running_pid()})", start)
    else:
        _phase(f"starting etcd on {etcd.endpoint or f'http://127.0.0.1:{ETCD_PORT}'}", start)
        etcd.start_sync(detach=True)
    pid_file, log_file = home / "apiserver.pid", home / "apiserver.log"
    if _pid_alive(pid_file) and _ready(url):
        _phase(f"apiserver already running (pid {pid_file.read_text().strip()})", start)
    else:
        _phase(f"starting the apiserver on {url}", start)
        with open(log_file, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "apiserver", "--etcd-servers",
                                     etcd.endpoint, "--bind-address", "127.0.0.1", "--port", str(args.port)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 30
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"harness dev up: the apiserver did not become ready; see {log_file}", file=sys.stderr)
                print("\n".join(log_file.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
                return 1
            time.sleep(0.2)
    kc = home / "kubeconfig"
    kubeconfig.write(kc, kubeconfig.KubeConfig(servers=[url], cluster=args.name))
    _phase("control plane ready", start)
    kubectl = Path(sys.executable).with_name("kubectl")
    print(f"""
Cluster "{args.name}" is up:
  etcd        {etcd.endpoint}   data {etcd.directory}
  apiserver   {url}   log {log_file}
  kubeconfig  {kc}

Use it with:
  export KUBECONFIG={kc}
  {kubectl} get namespaces
Stop it with: make down   (or: harness dev down --name {args.name})""")
    return 0


def down(args: argparse.Namespace) -> int:
    home = _dir(args)
    if not home.exists():
        print(f"nothing to do: {home} does not exist")
        return 0
    pid = _pid_alive(home / "apiserver.pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _pid_alive(home / "apiserver.pid") and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"stopped the apiserver (pid {pid})")
    LocalEtcd(data_dir=home / "etcd").stop()
    shutil.rmtree(home)
    print(f"removed {home}")
    return 0


def status(args: argparse.Namespace) -> int:
    home = _dir(args)
    etcd = LocalEtcd(data_dir=home / "etcd")
    api_pid = _pid_alive(home / "apiserver.pid")
    url = f"http://127.0.0.1:{args.port}"
    etcd_pid = etcd.running_pid()
    print(f"etcd       {f'running (pid {etcd_pid})' if etcd_pid else 'stopped'}")
    print(f"apiserver  {f'running (pid {api_pid})' if api_pid else 'stopped'}"
          f"{', ready' if api_pid and _ready(url) else ''}")
    return 0 if api_pid and etcd_pid else 1


def run(args: argparse.Namespace) -> int:
    return {"up": up, "down": down, "status": status}[args.action](args)
