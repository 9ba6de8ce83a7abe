"""Which libvirt driver VMs get on this machine: `kvm` when KVM really runs a guest, `qemu` (TCG emulation) when
it does not. Probed, not guessed: /dev/kvm can exist while nested KVM fails inside the guest's first instructions
("KVM internal error ... emulation failure"), so the probe boots a kernel under KVM and looks for it to get as far
as mounting its root file system. The answer is kept per host kernel, qemu and probe kernel.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from harness.cluster.box import CACHE_DIR

QEMU = "qemu-system-x86_64"
KVM, TCG = "kvm", "qemu"
#: What a kernel prints once it has booted as far as its root file system (it has none here, and panics).
BOOTED = ("VFS: Unable to mount root", "Kernel panic")
PROBE_SECONDS = 40


class AccelError(Exception):
    """No qemu to run VMs with; the message says what to install."""


def probe_kernel() -> Path | None:
    """A kernel to boot: one kept with a built box, else the host's."""
    found = sorted(CACHE_DIR.glob("*/vmlinuz"), key=lambda p: p.stat().st_mtime)
    found += sorted(Path("/boot").glob("vmlinuz-*"))
    return found[-1] if found else None


def _qemu_version() -> str:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else ""


def kvm_runs(kernel: Path, timeout: float = PROBE_SECONDS) -> bool:
    """Boot `kernel` under KVM with no root file system: True when it gets as far as looking for one."""
    argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nographic", "-no-reboot",
            "-nodefaults", "-serial", "stdio", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
    return any(mark in output for mark in BOOTED)


def driver(*, progress: Callable[[str], None] = print, cache: Path = CACHE_DIR / "accel.json") -> str:
    """`kvm` or `qemu`, for vagrant-libvirt's `driver` (HARNESS_LIBVIRT_DRIVER overrides the probe)."""
    forced = os.environ.get("HARNESS_LIBVIRT_DRIVER")
    if forced in (KVM, TCG):
        return forced
    if shutil.which(QEMU) is None:
        raise AccelError(f"{QEMU} is missing: run `make vagrant-deps` (Debian package qemu-system-x86)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return TCG
    kernel = probe_kernel()
    if kernel is None:
        progress("no kernel to probe KVM with yet (`harness box build` keeps one): using qemu (TCG)")
        return TCG
    key = f"{platform.release()}|{_qemu_version()}|{kernel}"
    try:
        known = json.loads(cache.read_text())
        if known.get("key") == key and known.get("driver") in (KVM, TCG):
            return str(known["driver"])
    except (OSError, ValueError):
        pass
    progress(f"probing KVM: booting {kernel} under it (up to {PROBE_SECONDS} s)")
    answer = KVM if kvm_runs(kernel) else TCG
    progress("KVM runs guests here" if answer == KVM else "KVM cannot run a guest here: VMs use qemu's TCG emulation")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "driver": answer}))
    return answer


__all__ = ["KVM", "TCG", "AccelError", "driver", "kvm_runs"]
