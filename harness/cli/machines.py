"""`harness up`, `down`, `status` and `ssh`: the machines of a local cluster (Linux-namespace nodes).

Today `up` makes the machines from the cluster spec (`cluster.yaml`), each with its own sshd, and
writes the Ansible inventory `inventory/<name>/hosts.yml`; provisioning them with
`ansible/site.yml` is the next step of this command. `down` removes everything `up` made and
is safe to run twice or after a failed `up`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from harness.cluster import inventory
from harness.cluster.local import LocalProvider, LocalProviderError, NodeSpec
from harness.cluster.spec import DEFAULT_SPEC_PATH, SpecError, load_spec

INVENTORY = Path("inventory")
DEFAULT_NAME = "local"  # not `dev`: that is `make up`'s loopback control plane until provisioning lands


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=DEFAULT_NAME, help=f"the cluster's name (default {DEFAULT_NAME})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`harness up` (the COMMANDS entry for this module)."""
    _common(p)
    p.add_argument("--spec", default=str(DEFAULT_SPEC_PATH), help="the cluster spec (default cluster.yaml)")
    p.add_argument("--masters", type=int, default=None, help="masters, 1 or 3 (default: the spec's)")
    p.add_argument("--workers", type=int, default=None, help="workers, 0..20 (default: the spec's)")


def provider(name: str) -> LocalProvider:
    return LocalProvider(name, state_dir=INVENTORY / name / "machines")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        spec = load_spec(args.spec).with_overrides(masters=args.masters, workers=args.workers)
    except SpecError as exc:
        print(f"harness up: {exc}", file=sys.stderr)
        return 2
    nodes = [NodeSpec(n.name, n.role, n.ip) for n in spec.nodes()]
    machines = LocalProvider(args.name, state_dir=INVENTORY / args.name / "machines", network=str(spec.network),
                             gateway=str(spec.gateway))

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", flush=True)

    progress(f"cluster {args.name}: {spec.masters} master(s), {spec.workers} worker(s) on {spec.network}")
    try:
        machines.create(nodes, progress=progress)
    except LocalProviderError as exc:
        print(f"harness up: {exc}\nwhat was made stays until `harness down --name {args.name}`", file=sys.stderr)
        return 1
    hosts = inventory.write_inventory(INVENTORY / args.name / "hosts.yml", args.name, nodes, machines.key)
    progress(f"inventory written: {hosts}")
    print(f"\nCluster {args.name}: machines ready in {time.monotonic() - started:.1f}s")
    for n in nodes:
        print(f"  {n.name:<10} {n.role:<7} {n.ip}")
    print(f"\nInventory: {hosts}\nLog in:    harness ssh {nodes[0].name} --name {args.name}\n"
          f"Remove:    harness down --name {args.name}\n"
          "(Provisioning the machines with ansible/site.yml is the next step of `harness up`.)")
    return 0


def add_down_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)


def run_down(args: argparse.Namespace) -> int:
    try:
        provider(args.name).destroy()
    except LocalProviderError as exc:
        print(f"harness down: {exc}", file=sys.stderr)
        return 1
    (INVENTORY / args.name / "hosts.yml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else may live there (e.g. the dev control plane's files)
        (INVENTORY / args.name).rmdir()
    print(f"cluster {args.name}: removed")
    return 0


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)


def run_status(args: argparse.Namespace) -> int:
    status = provider(args.name).status()
    if not status:
        print(f"cluster {args.name}: no machines (make them with `harness up --name {args.name}`)")
        return 1
    print(f"{'NODE':<10} {'ROLE':<7} {'IP':<15} {'PID':<8} STATE")
    healthy = True
    for name, s in status.items():
        state = "up" if s["alive"] and s["sshd"] else "running, sshd not answering" if s["alive"] else "down"
        healthy &= state == "up"
        print(f"{name:<10} {s['role']:<7} {s['ip']:<15} {s['pid'] or '-':<8} {state}")
    return 0 if healthy else 1


def add_ssh_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("node", help="the node to log in to, e.g. worker-1")
    p.add_argument("command", nargs=argparse.REMAINDER, help="a command to run instead of a shell")


def run_ssh(args: argparse.Namespace) -> int:
    try:
        argv = provider(args.name).ssh_command(args.node, args.command or None)
    except LocalProviderError as exc:
        print(f"harness ssh: {exc}", file=sys.stderr)
        return 1
    os.execvp(argv[0], argv)
