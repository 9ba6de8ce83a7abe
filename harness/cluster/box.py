"""`harness box build`: a vagrant-libvirt box of Debian bookworm made here, as Packer makes boxes elsewhere.

The box holds everything the roles install (the Debian packages of `common`, `etcd` and `prometheus`, and a
virtualenv at /opt/harness/venv with harness's pinned dependencies), so provisioning a VM needs no network: the
`common` role then only installs the harness package itself, from the synced folder, offline.

How it is made (each step shown with its time):

1. `debootstrap --variant=minbase` with the kernel, openssh, systemd and the roles' packages;
2. the guest's settings: fstab, DHCP on eth0, virtio drivers in the initramfs, user `vagrant` with Vagrant's
   well-known key and password-less sudo, an empty machine-id, one ed25519 host key made at first boot;
3. the virtualenv, from wheels the host downloads (the guest has no network while it is built);
4. one ext4 file system as the whole disk (`mkfs.ext4 -d`), converted to qcow2;
5. the box: a tar of `box.img`, `metadata.json`, the kernel, the initrd and a Vagrantfile that boots that kernel
   directly (no partitions, no boot loader), then `vagrant box add`.

A box is cached by a digest of its inputs (this module's recipe version, the package list, requirements.lock, the
key): `build` does nothing when the added box has that digest, and rebuilds when an input changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
#: Bump when the recipe below changes in a way the inputs do not show.
RECIPE = 1
BOX_NAME = "harness/bookworm"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Where boxes are built and kept: outside /root, since libvirt's qemu (user libvirt-qemu) reads the kernel.
CACHE_DIR = Path(os.environ.get("HARNESS_BOX_CACHE", "/var/lib/harness/boxes"))
#: The disk's size as the guest sees it (GiB); the qcow2 file holds only what is used.
DISK_GIB = 8
#: Free space a build needs in CACHE_DIR: the root tree, the raw image while it is written, the qcow2 and the box.
NEEDED_GIB = 6
VENV = "/opt/harness/venv"
#: Packages every box has, beyond what the roles install: booting, SSH, Vagrant's needs, Ansible's.
BASE_PACKAGES = (
    "linux-image-amd64", "initramfs-tools", "systemd-sysv", "dbus", "ifupdown", "isc-dhcp-client", "openssh-server",
    "sudo", "python3", "python3-apt", "rsync", "ca-certificates", "procps", "iproute2", "less",
)
#: The roles whose packages are baked in, and the variables that name them (their defaults/main.yml).
ROLE_PACKAGE_VARS = (("common", "common_packages"), ("etcd", "etcd_package"), ("prometheus", "prometheus_package"))
#: Build tools on the host, with their Debian packages.
TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils", "vagrant": "vagrant"}
GUEST_VAGRANTFILE = """\
# The box's own Vagrantfile (made by `harness box build`): boot its kernel directly, with the whole disk as root.
# libvirt's qemu runs as libvirt-qemu and cannot read the box directory (under ~/.vagrant.d), so the kernel and the
# initrd are copied to libvirt's boot directory first.
require "fileutils"

boot = "/var/lib/libvirt/boot"
here = File.dirname(File.expand_path(__FILE__))
kernel, initrd = %w[vmlinuz initrd.img].map do |f|
  target = File.join(boot, "harness-{digest}-#{{f}}")
  unless File.exist?(target)
    FileUtils.mkdir_p(boot)
    FileUtils.cp(File.join(here, f), target + ".part")
    File.chmod(0o644, target + ".part")
    File.rename(target + ".part", target)
  end
  target
end

Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = kernel
    lv.initrd = initrd
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"
    lv.disk_bus = "virtio"
    lv.graphics_type = "none"
  end
end
"""
FIRST_BOOT_HOSTKEY_UNIT = """\
[Unit]
Description=Make the SSH host key of this machine (harness box: made at first boot, not baked)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
"""


class BoxError(Exception):
    """The box cannot be built or added; the message names the cause and what to do."""


@dataclass(frozen=True)
class Inputs:
    """What a box is made of; its digest names the build."""

    packages: tuple[str, ...]
    requirements: tuple[str, ...]
    lock: str
    public_key: str
    mirror: str = DEFAULT_MIRROR
    suite: str = SUITE

    @property
    def digest(self) -> str:
        data = {"recipe": RECIPE, "suite": self.suite, "packages": sorted(self.packages),
                "requirements": sorted(self.requirements), "lock": self.lock, "key": self.public_key.strip(),
                "disk": DISK_GIB}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def role_packages(roles_dir: Path = ROOT / "ansible" / "roles") -> list[str]:
    """The Debian packages the roles install on machines of their own, read from their defaults."""
    names: list[str] = []
    for role, var in ROLE_PACKAGE_VARS:
        value = (yaml.safe_load((roles_dir / role / "defaults" / "main.yml").read_text()) or {}).get(var)
        if value is None:
            raise BoxError(f"ansible/roles/{role}/defaults/main.yml has no {var}")
        names += [value] if isinstance(value, str) else list(value)
    return names


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """What the virtualenv needs to run harness (its runtime dependencies), and setuptools, which the `common`
    role's offline install of harness itself builds with."""
    project = tomllib.loads(pyproject.read_text())
    return [*project["project"]["dependencies"], *project.get("build-system", {}).get("requires", [])]


def vagrant_public_key() -> str:
    """Vagrant's well-known insecure public key, which boxes authorize for user `vagrant` (Vagrant logs in with it
    and, with `config.ssh.insert_key = false`, keeps it)."""
    for path in sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant.pub")):
        return path.read_text()
    raise BoxError("Vagrant's key (keys/vagrant.pub of the vagrant gem) is missing: apt-get install vagrant")


def inputs(mirror: str = DEFAULT_MIRROR) -> Inputs:
    packages = tuple(dict.fromkeys([*BASE_PACKAGES, *role_packages()]))
    return Inputs(packages=packages, requirements=tuple(requirements()), lock=(ROOT / "requirements.lock").read_text(),
                  public_key=vagrant_public_key(), mirror=mirror)


@dataclass
class Box:
    """One build of the box: its files under CACHE_DIR/<digest>/."""

    inputs: Inputs
    name: str = BOX_NAME
    cache: Path = CACHE_DIR
    times: dict[str, float] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.inputs.digest

    @property
    def directory(self) -> Path:
        return self.cache / self.digest

    @property
    def box_file(self) -> Path:
        return self.directory / f"{self.name.replace('/', '-')}.box"

    @property
    def info(self) -> dict[str, object]:
        return {"name": self.name, "digest": self.digest, "suite": self.inputs.suite,
                "packages": list(self.inputs.packages), "requirements": list(self.inputs.requirements)}


# ---- what is there ----

def vagrant_home() -> Path:
    return Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d"))


def added_digest(name: str = BOX_NAME) -> str | None:
    """The digest of the box Vagrant has under `name` (unversioned), or None when it has none or another box."""
    info = vagrant_home() / "boxes" / name.replace("/", "-VAGRANTSLASH-") / "0" / "libvirt" / "harness-box.json"
    try:
        return str(json.loads(info.read_text())["digest"])
    except (OSError, ValueError, KeyError):
        return None


def check_tools() -> None:
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise BoxError(f"cannot build the box without {', '.join(missing)}: run `make vagrant-deps`")


def check_space(directory: Path, needed_gib: int = NEEDED_GIB) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free / 2**30
    if free < needed_gib:
        raise BoxError(f"{directory} has {free:.1f} GiB free; building the box needs {needed_gib} GiB: free some "
                       f"space, or set HARNESS_BOX_CACHE to a directory on a larger file system")


# ---- building ----

Progress = Callable[[str], None]


def _run(argv: list[str], *, step: str, env: dict[str, str] | None = None, echo: Progress | None = None,
         timeout: float = 1800) -> str:
    """Run a build command; on failure, BoxError with the step and the command's last lines."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line.rstrip())
        if echo is not None:
            echo(line.rstrip())
        if time.monotonic() > deadline:
            proc.kill()
            break
    code = proc.wait()
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise BoxError(f"{step} failed ({' '.join(argv[:3])} ... exit {code}):\n{tail}")
    return "\n".join(lines)


def _chroot(root: Path, *argv: str, step: str) -> str:
    return _run(["chroot", str(root), *argv], step=step,
                env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def debootstrap(box: Box, root: Path, progress: Progress) -> None:
    packages = ",".join(box.inputs.packages)
    said: set[str] = set()

    def echo(line: str) -> None:  # debootstrap's stages, not its every package
        stage = line.split(" ", 2)[1] if line.startswith("I: ") and " " in line[3:] else ""
        if stage in {"Retrieving", "Validating", "Extracting", "Installing", "Configuring", "Unpacking"} and \
                stage not in said:
            said.add(stage)
            progress(f"  debootstrap: {stage.lower()} packages")

    _run(["debootstrap", "--variant=minbase", f"--include={packages}", box.inputs.suite, str(root),
          box.inputs.mirror], step="debootstrap", echo=echo)


def configure(box: Box, root: Path) -> None:
    """The guest's settings (see the module docstring)."""
    etc = root / "etc"
    (etc / "fstab").write_text("/dev/vda / ext4 rw,relatime,errors=remount-ro 0 1\n")
    (etc / "hostname").write_text("harness\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 harness\n::1 localhost ip6-localhost ip6-loopback\n")
    (etc / "network" / "interfaces").write_text(
        "# Written by `harness box build`; Vagrant adds the private network (eth1) below.\n"
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
        "allow-hotplug eth0\niface eth0 inet dhcp\n")
    modules = etc / "initramfs-tools" / "modules"
    modules.write_text(modules.read_text() + "virtio_pci\nvirtio_blk\nvirtio_net\next4\n")
    (etc / "apt" / "sources.list").write_text(
        f"deb {box.inputs.mirror} {box.inputs.suite} main\n"
        f"deb {box.inputs.mirror} {box.inputs.suite}-updates main\n"
        f"deb http://security.debian.org/debian-security {box.inputs.suite}-security main\n")
    # user vagrant: Vagrant's key, sudo without a password (what every Vagrant box has)
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--user-group", "vagrant", step="user vagrant")
    ssh_dir = root / "home" / "vagrant" / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(box.inputs.public_key.strip() + "\n")
    _chroot(root, "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh", step="user vagrant")
    (ssh_dir / "authorized_keys").chmod(0o600)
    sudoers = etc / "sudoers.d" / "vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n")
    sudoers.chmod(0o440)
    # SSH: one ed25519 host key, made at first boot (every machine its own); no DNS lookups of clients
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    sshd_conf = etc / "ssh" / "sshd_config.d"
    sshd_conf.mkdir(exist_ok=True)
    (sshd_conf / "harness.conf").write_text("HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n")
    unit = etc / "systemd" / "system" / "harness-ssh-hostkey.service"
    unit.write_text(FIRST_BOOT_HOSTKEY_UNIT)
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    # the packaged daemons the roles run under supervisord instead: never started by systemd
    for service in ("etcd.service", "prometheus.service", "prometheus-node-exporter.service"):
        (etc / "systemd" / "system" / service).unlink(missing_ok=True)
        (etc / "systemd" / "system" / service).symlink_to("/dev/null")
    # each machine gets its own machine-id at first boot
    (etc / "machine-id").write_text("")
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    _chroot(root, "update-initramfs", "-u", "-k", "all", step="initramfs")


def install_venv(box: Box, root: Path, progress: Progress) -> None:
    """The virtualenv: made by the guest's python3 in the root tree, filled from wheels the host downloads."""
    wheels = root / "tmp" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    lock = wheels / "requirements.lock"
    lock.write_text(box.inputs.lock)
    progress(f"  downloading {len(box.inputs.requirements)} requirements and their dependencies (wheels)")
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
          "-d", str(wheels), "-c", str(lock), *box.inputs.requirements], step="pip download")
    progress(f"  installing them into {VENV}")
    _chroot(root, "python3", "-m", "venv", VENV, step="venv")
    _chroot(root, f"{VENV}/bin/pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
            "--find-links", "/tmp/wheels", "-c", "/tmp/wheels/requirements.lock", *box.inputs.requirements,
            step="venv install")
    shutil.rmtree(wheels)


def clean(root: Path) -> None:
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "tmp/*", "var/log/*.log"):
        for path in root.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    (root / "etc" / "resolv.conf").write_text("")


def make_image(root: Path, image: Path) -> None:
    clean(root)
    raw = image.with_suffix(".raw")
    raw.unlink(missing_ok=True)
    with raw.open("wb") as f:
        f.truncate(DISK_GIB * 2**30)
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw)], step="mkfs.ext4")
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(image)], step="qemu-img convert")
    raw.unlink()


def package(box: Box, root: Path, staging: Path) -> None:
    """The .box file: a tar of the image, metadata.json, kernel, initrd, the box Vagrantfile and what it is."""
    boot = root / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BoxError(f"no kernel or initrd in {boot}: was linux-image-amd64 installed?")
    shutil.copy2(kernels[-1], staging / "vmlinuz")
    shutil.copy2(initrds[-1], staging / "initrd.img")
    shutil.copy2(kernels[-1], box.directory / "vmlinuz")  # kept: the KVM probe boots it (harness.cluster.accel)
    (staging / "metadata.json").write_text(json.dumps({"provider": "libvirt", "format": "qcow2",
                                                        "virtual_size": DISK_GIB}))
    (staging / "Vagrantfile").write_text(GUEST_VAGRANTFILE.replace("{digest}", box.digest)
                                         .replace("{{", "{").replace("}}", "}"))
    (staging / "harness-box.json").write_text(json.dumps(box.info, indent=1))
    members = ["metadata.json", "Vagrantfile", "harness-box.json", "vmlinuz", "initrd.img", "box.img"]
    partial = box.box_file.with_suffix(".part")
    _run(["tar", "-cf", str(partial), "-C", str(staging), *members], step="tar")
    partial.rename(box.box_file)


def build(box: Box, progress: Progress = print) -> Path:
    """Build the box file (no `vagrant box add`); return its path."""
    check_tools()
    check_space(box.cache)
    work = box.directory / "work"
    shutil.rmtree(work, ignore_errors=True)
    root, staging = work / "rootfs", work / "box"
    staging.mkdir(parents=True)
    steps: list[tuple[str, Callable[[], None]]] = [
        (f"debootstrap {box.inputs.suite} with {len(box.inputs.packages)} packages",
         lambda: debootstrap(box, root, progress)),
        ("configure the guest (user vagrant, SSH, network, initramfs)", lambda: configure(box, root)),
        (f"virtualenv {VENV}", lambda: install_venv(box, root, progress)),
        (f"disk image ({DISK_GIB} GiB ext4 as qcow2)", lambda: make_image(root, staging / "box.img")),
        ("box file", lambda: package(box, root, staging)),
    ]
    for number, (title, action) in enumerate(steps, 1):
        progress(f"[{number}/{len(steps)}] {title}")
        started = time.monotonic()
        action()
        box.times[title.split(" ")[0]] = time.monotonic() - started
        progress(f"      done in {time.monotonic() - started:.0f} s")
    shutil.rmtree(work)
    return box.box_file


def add(box: Box, progress: Progress = print) -> None:
    """`vagrant box add` the box under its name (replacing an older build of it), and drop the older builds' disk
    images from libvirt's pool."""
    progress(f"vagrant box add {box.name} ({box.box_file})")
    _run(["vagrant", "box", "add", "--force", "--name", box.name, str(box.box_file)], step="vagrant box add")
    remove_pool_images(box.name, progress)


def pool_image_prefix(name: str) -> str:
    """How the volumes vagrant-libvirt uploads an unversioned box to begin (then the box's timestamp, `_box.img`)."""
    return f"{name.replace('/', '-VAGRANTSLASH-')}_vagrant_box_image_0_"


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=False)


def remove_pool_images(name: str, progress: Progress = print) -> None:
    """Drop older builds' images of the box from libvirt's pool, but those VMs still stand on (their disks are
    overlays of it): each `vagrant box add` of an unversioned box uploads a new one and leaves the old."""
    prefix = pool_image_prefix(name)
    volumes = [v for v in _virsh("vol-list", "default").stdout.split() if v.startswith(prefix)]
    if not volumes:
        return
    disks = " ".join(_virsh("dumpxml", domain).stdout for domain in _virsh("list", "--all", "--name").stdout.split())
    for volume in volumes:
        if volume in disks:
            progress(f"keeping {volume} in libvirt's pool: VMs stand on it (`make vagrant-down` frees it)")
        elif _virsh("vol-delete", "--pool", "default", volume).returncode == 0:
            progress(f"removed the older image {volume} from libvirt's pool")


def ensure(progress: Progress = print, *, force: bool = False, name: str = BOX_NAME) -> Box:
    """The box, built and added unless Vagrant already has this very build."""
    box = Box(inputs(), name=name)
    if not force and added_digest(name) == box.digest:
        progress(f"box {name} is current (digest {box.digest})")
        return box
    started = time.monotonic()
    if force or not box.box_file.exists():
        progress(f"building box {name} (digest {box.digest}) in {box.directory}")
        build(box, progress)
    else:
        progress(f"box file {box.box_file} is cached (digest {box.digest})")
    add(box, progress)
    size = box.box_file.stat().st_size / 2**20
    progress(f"box {name} ready in {time.monotonic() - started:.0f} s: {box.box_file} ({size:.0f} MiB); "
             f"use it with HARNESS_BOX={name} vagrant up, or make vagrant-up")
    return box


__all__ = ["BOX_NAME", "Box", "BoxError", "Inputs", "added_digest", "build", "ensure", "inputs"]
