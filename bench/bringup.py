"""Cluster bring-up: `harness up` phase by phase, for 1 master + 2 workers and 3 masters + 2 workers.

For each shape, on a free 192.168.<192-223>.0/24 with its own cluster name (a user's cluster is untouched):

1. machines: namespaces, veths, sshd per node, the inventory;
2. provision: ansible/site.yml through ansible-runner (packages already installed: local nodes share the host's);
3. nodes Ready: until every worker is a Ready Node;
then a second `up` (the idempotent re-run: changed=0), and `harness down`.

Baseline in the same run: Ansible's floor, one `ping` module on every node of the cluster (what any task costs
at least), so `provision / floor` is the playbook's cost in task-equivalents. For scale: kind takes 12-17 s for
one node, k3s about 30 s, kubespray about 15 minutes for 10 nodes. Figures, not pass/fail; needs root.

    .venv/bin/python bench/bringup.py [--shapes 1x2,3x2] [--runs 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness.cluster.bringup import BringUp
from harness.cluster.spec import DEFAULT_SPEC_PATH, ClusterSpec, load_spec

SUBNETS = range(192, 224)
VENV_BIN = Path(sys.executable).parent


def free_subnet() -> int:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    used = {int(f.split(".")[2]) for line in out.splitlines() for f in line.split()
            if f.startswith("192.168.") and "/" in f}
    return random.choice([n for n in SUBNETS if n not in used])


def spec_for(masters: int, workers: int, subnet: int) -> ClusterSpec:
    spec = load_spec(DEFAULT_SPEC_PATH).with_overrides(masters=masters, workers=workers)
    return dataclasses.replace(
        spec, network=ipaddress.IPv4Network(f"192.168.{subnet}.0/24"),
        gateway=ipaddress.IPv4Address(f"192.168.{subnet}.1"),
        first_master=ipaddress.IPv4Address(f"192.168.{subnet}.10"),
        first_worker=ipaddress.IPv4Address(f"192.168.{subnet}.21"))


def ansible_floor(cluster: BringUp) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(Path(__file__).resolve().parents[1] / "ansible" / "ansible.cfg")}
    started = time.monotonic()
    subprocess.run([str(VENV_BIN / "ansible"), "-i", str(cluster.hosts), "all", "-m", "ping"], env=env,
                   capture_output=True, check=True, timeout=120)
    return time.monotonic() - started


def bring_up(masters: int, workers: int, workdir: Path) -> dict[str, float]:
    cluster = BringUp(f"b{uuid.uuid4().hex[:4]}", spec_for(masters, workers, free_subnet()),
                      workdir / "inventory" / "bench")
    quiet = lambda _message: None  # noqa: E731
    figures: dict[str, float] = {}
    try:
        started = time.monotonic()
        cluster.make_machines(quiet)
        cluster.make_pki(quiet)
        cluster.provision(quiet)
        cluster.wait_nodes_ready(quiet)
        cluster.write_kubeconfig()
        figures.update(cluster.phases)
        figures["total"] = time.monotonic() - started
        again = time.monotonic()
        run = cluster.provision(quiet)
        figures["re-run"] = time.monotonic() - again
        figures["re-run changes"] = run.changed()
        figures["ansible floor"] = ansible_floor(cluster)
    finally:
        gone = time.monotonic()
        cluster.provider().destroy()
        figures["down"] = time.monotonic() - gone
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="1x2,3x2", help="MASTERSxWORKERS,... (default 1x2,3x2)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/bringup.py needs root (it makes network namespaces)", file=sys.stderr)
        return 2
    print(f"{'shape':<8} {'machines':>9} {'pki':>6} {'provision':>10} {'ready':>7} {'total':>7} {'re-run':>8} "
          f"{'down':>6} {'floor':>6} {'prov/floor':>10}")
    for shape in args.shapes.split(","):
        masters, workers = (int(n) for n in shape.split("x"))
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="harness-bringup-") as tmp:
                f = bring_up(masters, workers, Path(tmp))
            print(f"{shape:<8} {f['machines']:>8.1f}s {f['pki']:>5.1f}s {f['provision']:>9.1f}s "
                  f"{f['nodes Ready']:>6.1f}s "
                  f"{f['total']:>6.1f}s {f['re-run']:>7.1f}s {f['down']:>5.1f}s {f['ansible floor']:>5.1f}s "
                  f"{f['provision'] / f['ansible floor']:>9.1f}x   (re-run changes: {f['re-run changes']:.0f})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
