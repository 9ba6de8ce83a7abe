"""The Debian packages harness needs, and what each one gives it: one table for `make deps`, the preflight check of
`harness up`, the machines' `common` role and the test that keeps them honest.

`make deps` installs every package here that is missing (`python3 -m harness.cluster.hostpackages` prints their
names); on machines of their own (VMs) the `common` and component roles install the ones their machines need. The
unit test `tests/unit/test_host_packages.py` proves that every executable the code, the tests and the roles call is
shipped by a package of this table, by an Essential Debian package, or by the virtualenv, and that every Vagrant
provider the `Vagrantfile` configures has its plugin package here. So a tool a developer installed by hand cannot
hide a missing install step: that is how `vagrant-libvirt` once went missing from a fresh machine.

Standard library only: `make` runs this module before the virtualenv exists.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

# Where a package is needed: on the machine that runs `make`/`harness up` and the tests ("host"); on every cluster
# machine ("node"); on masters only ("master"). Namespace nodes share the host's packages, so the host needs all.
# "vm": on the host only to run VMs (`make vagrant-deps`, not `make deps`: libvirt's daemons and qemu are large, and
# a local cluster does not need them).
HOST, NODE, MASTER, VM = "host", "node", "master", "vm"

# Where Debian puts executables; a node's sshd and supervisord PATH may lack the sbin directories.
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Package:
    """A Debian package, the executables (and Vagrant providers) harness uses from it, and why."""

    name: str
    where: str
    why: str
    executables: tuple[str, ...] = ()
    vagrant_providers: tuple[str, ...] = ()


PACKAGES: tuple[Package, ...] = (
    Package("etcd-server", MASTER, "the cluster's store (etcd role; integration tests start their own)", ("etcd",)),
    Package("etcd-client", NODE, "etcd health checks (etcd role, tests)", ("etcdctl",)),
    Package("iproute2", NODE, "namespace nodes, pod networks, routes", ("ip", "bridge", "tc")),
    Package("procps", NODE, "sysctl for forwarding, ps in tests", ("ps", "sysctl")),
    Package("kmod", NODE, "br_netfilter on machines of their own (node role)", ("modprobe",)),
    Package("util-linux", NODE, "entering and making namespaces", ("nsenter", "unshare")),
    Package("mount", NODE, "bind mounts of node-private directories, volumes", ("mount", "umount")),
    Package("runc", NODE, "the container runtime", ("runc",)),
    Package("busybox-static", NODE, "the busybox image every node has, and tests' in-node tools", ("busybox",)),
    Package("iptables", NODE, "kube-proxy's rules, guard rules", ("iptables", "iptables-restore", "iptables-save")),
    Package("openssh-server", NODE, "each machine's sshd, which Ansible and `harness ssh` use", ("sshd",)),
    Package("openssh-client", HOST, "Ansible over SSH, `harness ssh`, the cluster key", ("ssh", "ssh-keygen")),
    Package("prometheus", MASTER, "scrapes every component (prometheus role)", ("prometheus",)),
    Package("vagrant", HOST, "the VM provider (`Vagrantfile`)", ("vagrant",)),
    Package("vagrant-libvirt", HOST, "Vagrant's libvirt provider, the default for VMs here",
            vagrant_providers=("libvirt",)),
    Package("libvirt-daemon-system", VM, "libvirt's configuration, its qemu user and default network"),
    Package("libvirt-daemon", VM, "libvirtd and virtlogd, which run the VMs", ("libvirtd", "virtlogd")),
    Package("libvirt-clients", VM, "virsh: storage pool, networks, cleaning up domains", ("virsh",)),
    Package("qemu-system-x86", VM, "the VMs' emulator (KVM where it works, else TCG)", ("qemu-system-x86_64",)),
    Package("qemu-utils", VM, "the box's disk image as qcow2", ("qemu-img",)),
    Package("dnsmasq-base", VM, "DHCP and DNS of libvirt's networks", ("dnsmasq",)),
    Package("debootstrap", VM, "the box's Debian root file system (`harness box build`)", ("debootstrap",)),
    Package("e2fsprogs", VM, "the box's disk: one ext4 file system made from a tree", ("mkfs.ext4",)),
)

# Providers Vagrant has without a plugin package.
VAGRANT_BUILTIN_PROVIDERS = frozenset({"virtualbox", "docker", "hyperv"})


def packages(where: str = HOST) -> list[Package]:
    """The packages needed at one place: the host needs them all (but the VM ones), a master the node ones and its
    own; VM: what running VMs adds on the host."""
    wanted = {HOST: {HOST, NODE, MASTER}, MASTER: {NODE, MASTER}, NODE: {NODE}, VM: {VM}}[where]
    return [p for p in PACKAGES if p.where in wanted]


def names(where: str = HOST) -> list[str]:
    return [p.name for p in packages(where)]


def executables(where: str = HOST) -> list[str]:
    return [exe for p in packages(where) for exe in p.executables]


def owner(executable: str) -> Package | None:
    """The package of this table that ships an executable, if any."""
    return next((p for p in PACKAGES if executable in p.executables), None)


def missing(executables: tuple[str, ...] | list[str], *, path: str | None = None) -> list[str]:
    """What to tell a user for each executable that is not installed: the executable and the package to install."""
    lines: list[str] = []
    for exe in executables:
        if shutil.which(exe, path=path or SEARCH_PATH) is None:
            pkg = owner(exe)
            hint = f"Debian package {pkg.name}" if pkg else "not a package of harness's table"
            lines.append(f"{exe} ({hint})")
    return lines


def main(argv: list[str]) -> int:
    """`python3 -m harness.cluster.hostpackages [host|node|master|vm]`: the package names, one per line."""
    where = argv[0] if argv else HOST
    if where not in (HOST, NODE, MASTER, VM):
        print(f"usage: python3 -m harness.cluster.hostpackages [{HOST}|{NODE}|{MASTER}|{VM}]", file=sys.stderr)
        return 2
    print("\n".join(names(where)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
