"""The cluster as VMs against the same cluster as namespace nodes: bring-up phase by phase, and memory.

One shape (default 1 master + 1 worker), twice in one run:

1. baseline: the local provider (namespace nodes on a free 192.168.<192-223>.0/24, its own name);
2. VMs: `harness up --provider vagrant` (the box cached, or built: its time is shown), on 192.168.57.0/24.

For each: machines, provisioning (ansible/site.yml), nodes Ready, total; Ansible's floor (one `ping` to every
machine); and for the VMs the ratio to the baseline, each qemu's resident memory and the guest's used memory after
`--idle` seconds of an idle cluster. Both clusters are removed afterwards. Needs root, libvirt (`make
vagrant-deps`), and no VM cluster of this project running.

    .venv/bin/python bench/vms.py [--shape 1x1] [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bringup import ansible_floor, free_subnet, spec_for  # bench/bringup.py, beside this script

from harness.cluster import box
from harness.cluster.bringup import VAGRANT, BringUp
from harness.cluster.spec import DEFAULT_SPEC_PATH, load_spec
from harness.cluster.vagrant import VagrantProvider

ROOT = Path(__file__).resolve().parents[1]


def bring_up(cluster: BringUp) -> dict[str, float]:
    quiet = lambda _message: None  # noqa: E731
    started = time.monotonic()
    cluster.make_machines(quiet)
    cluster.make_pki(quiet)
    cluster.provision(quiet)
    cluster.wait_nodes_ready(quiet, timeout=1800)
    figures = dict(cluster.phases)
    figures["total"] = time.monotonic() - started
    figures["ansible floor"] = ansible_floor(cluster)
    return figures


def qemu_memory(prefix: str) -> dict[str, float]:
    """{machine: qemu's resident MiB} for the project's domains."""
    found: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "qemu-system" not in cmdline or f"guest={prefix}" not in cmdline:
                continue
            rss = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        machine = re.search(rf"guest={re.escape(prefix)}([\w-]+)", cmdline)
        if machine:
            found[machine.group(1)] = int(rss.split()[1]) / 1024
    return found


def guest_used(machines: VagrantProvider, node: str) -> float:
    out = subprocess.run(machines.ssh_command(node, ["free", "-m"]), capture_output=True, text=True, timeout=120,
                         check=False).stdout.splitlines()
    return float(out[1].split()[2]) if len(out) > 1 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1x1", help="MASTERSxWORKERS (default 1x1)")
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle cluster before memory is read")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/vms.py needs root", file=sys.stderr)
        return 2
    masters, workers = (int(n) for n in args.shape.split("x"))

    started = time.monotonic()
    box.ensure(lambda _message: None)
    box_seconds = time.monotonic() - started

    with tempfile.TemporaryDirectory(prefix="harness-vms-") as tmp:
        local = BringUp(f"b{uuid.uuid4().hex[:4]}", spec_for(masters, workers, free_subnet()),
                        Path(tmp) / "inventory" / "bench")
        try:
            base = bring_up(local)
        finally:
            local.provider().destroy()

    spec = load_spec(DEFAULT_SPEC_PATH).for_vms().with_overrides(masters=masters, workers=workers)
    vms = BringUp(VAGRANT, spec, ROOT / "inventory" / VAGRANT, kind=VAGRANT, spec_path=DEFAULT_SPEC_PATH)
    machines = vms.provider()
    assert isinstance(machines, VagrantProvider)
    try:
        vm = bring_up(vms)
        time.sleep(args.idle)  # the figure is an idle cluster's memory
        memory = qemu_memory(machines.domain_prefix)
        used = {n.name: guest_used(machines, n.name) for n in vms.nodes}
    finally:
        machines.destroy(lambda _message: None)

    print(f"box (ensure, cached or built): {box_seconds:.0f} s; accelerator: {machines.driver}")
    print(f"{'':<12} {'machines':>9} {'provision':>10} {'ready':>7} {'total':>8} {'floor':>7}")
    for name, f in (("local", base), ("vagrant", vm)):
        print(f"{name:<12} {f['machines']:>8.0f}s {f['provision']:>9.0f}s {f['nodes Ready']:>6.0f}s "
              f"{f['total']:>7.0f}s {f['ansible floor']:>6.1f}s")
    print(f"{'VMs/local':<12} {vm['machines'] / base['machines']:>8.1f}x {vm['provision'] / base['provision']:>9.1f}x "
          f"{'':>7} {vm['total'] / base['total']:>7.1f}x {vm['ansible floor'] / base['ansible floor']:>6.1f}x")
    for node in sorted(used):
        print(f"idle {node}: qemu {memory.get(node, float('nan')):.0f} MiB resident, guest uses {used[node]:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
