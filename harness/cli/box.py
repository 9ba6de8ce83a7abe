"""`harness box build`: the vagrant-libvirt box of Debian bookworm with everything the roles install, made here
and added to Vagrant (cached by a digest of its inputs); `harness box status`: which build Vagrant has;
`harness box accel`: which libvirt driver the VMs get here (kvm when KVM really runs a guest, else qemu)."""

from __future__ import annotations

import argparse
import sys

from harness.cluster import accel, box


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    build_p = actions.add_parser(
        "build", help="build the box (debootstrap, the roles' packages, the virtualenv) and `vagrant box add` it",
        description="Build a vagrant-libvirt box of Debian bookworm with the roles' packages and the harness "
                    "virtualenv baked in, and add it to Vagrant. Nothing is done when Vagrant has the current build.")
    build_p.add_argument("--force", action="store_true", help="build again even if the cached build is current")
    build_p.add_argument("--name", default=box.BOX_NAME, help=f"the box's name in Vagrant (default {box.BOX_NAME})")
    status_p = actions.add_parser("status", help="show the current build's digest and whether Vagrant has it")
    status_p.add_argument("--name", default=box.BOX_NAME, help=f"the box's name in Vagrant (default {box.BOX_NAME})")
    actions.add_parser("accel", help="print the libvirt driver VMs get here: kvm if KVM runs a guest, else qemu",
                       description="Probe KVM by booting the box's kernel under it (a few seconds; the answer is "
                                   "kept per kernel and qemu): print kvm when it runs, qemu (TCG) when it does not.")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "build":
            box.ensure(force=args.force, name=args.name)
        elif args.action == "status":
            current = box.Box(box.inputs(), name=args.name)
            added = box.added_digest(args.name)
            state = "current" if added == current.digest else f"stale (Vagrant has {added})" if added else "not added"
            print(f"box {args.name}: build {current.digest} is {state}; cached file "
                  f"{current.box_file if current.box_file.exists() else '(none)'}")
            return 0 if added == current.digest else 1
        else:
            print(accel.driver(progress=lambda line: print(line, file=sys.stderr)))
    except (box.BoxError, accel.AccelError) as exc:
        print(f"harness box: {exc}", file=sys.stderr)
        return 1
    return 0
