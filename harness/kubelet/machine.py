"""What the kubelet reads off its machine: CPU and memory capacity, kernel, OS image, IDs."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

import harness

KUBELET_VERSION = "v1.37.0-harness"


def cpu_count() -> str:
    return str(os.cpu_count() or 1)


def memory_capacity() -> str:
    """MemTotal of /proc/meminfo as a quantity in Ki, as cAdvisor reports it."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1])}Ki"
    return "0"


def os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def runc_version(runc: str = "runc") -> str:
    """`runc://1.1.5`: containerRuntimeVersion the way a CRI runtime names itself."""
    path = shutil.which(runc)
    if path is None:
        return "runc://unknown"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "runc://unknown"
    first = out.splitlines()[0] if out else ""
    version = first.rsplit(" ", 1)[-1].split("+", 1)[0] if first else "unknown"
    return f"runc://{version}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def node_info(node_name: str, runc: str = "runc") -> dict[str, str]:
    """`status.nodeInfo` minus the IDs; machineID and systemUUID are per node even when nodes share a machine."""
    return {
        "kernelVersion": platform.release(),
        "osImage": os_image(),
        "containerRuntimeVersion": runc_version(runc),
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": KUBELET_VERSION,
        "operatingSystem": "linux",
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        "bootID": _read("/proc/sys/kernel/random/boot_id"),
        "machineID": hashlib.md5(f"{_read('/etc/machine-id')}/{node_name}".encode(),
                                 usedforsecurity=False).hexdigest(),
    }


def version() -> str:
    return getattr(harness, "__version__", "0.1.0")
