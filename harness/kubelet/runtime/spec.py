"""The OCI runtime config (config.json) that runc runs for one ContainerRequest.

Defaults follow containerd's for Linux containers (the same capabilities, /dev and /sys mounts, masked and
read-only paths, device nodes); resources are computed the way the kubelet computes them (CPU shares from the
request, CFS quota from the limit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.kubelet.runtime.types import ContainerRequest

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]

READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# (path, major, minor) of the character devices every container gets.
DEFAULT_DEVICES = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
]

NOFILE_LIMIT = 1048576
CFS_PERIOD_US = 100000
MIN_CFS_QUOTA_US = 1000
MIN_SHARES = 2
MAX_SHARES = 262144
HOSTNAME_MAX = 63


def cpu_shares(request_milli: int | None, limit_milli: int | None) -> int:
    """CPU shares as the kubelet computes them: from the request, else from the limit, at least 2."""
    milli = request_milli if request_milli is not None else (limit_milli or 0)
    if milli <= 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli * 1024 // 1000))


def cpu_quota(limit_milli: int) -> int:
    """CFS quota in microseconds per 100 ms period for a limit in millicores (at least 1 ms, as the kubelet)."""
    return max(MIN_CFS_QUOTA_US, limit_milli * CFS_PERIOD_US // 1000)


def _hostname(req: ContainerRequest) -> str:
    name = (req.hostname or req.pod_name or req.id)[:HOSTNAME_MAX]
    return name.rstrip("-.") or "localhost"


def _env(req: ContainerRequest) -> list[str]:
    env = list(req.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, DEFAULT_PATH)
    return env


def _default_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def _request_mounts(req: ContainerRequest) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for m in req.mounts:
        if m.kind == "tmpfs":
            options = ["nosuid", "nodev", "mode=1777"]
            if m.read_only:
                options.append("ro")
            mounts.append({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": options})
        else:
            options = ["rbind", "rprivate"]
            if m.read_only:
                options.append("ro")
            mounts.append({"destination": m.destination, "type": "bind", "source": m.source, "options": options})
    return mounts


def _resources(req: ContainerRequest, no_swap: bool) -> dict[str, Any]:
    cpu: dict[str, Any] = {"shares": cpu_shares(req.cpu_request_milli, req.cpu_limit_milli)}
    if req.cpu_limit_milli is not None and req.cpu_limit_milli > 0:
        cpu["quota"] = cpu_quota(req.cpu_limit_milli)
        cpu["period"] = CFS_PERIOD_US
    devices: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    devices += [
        {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
        for _, major, minor in DEFAULT_DEVICES
    ]
    resources: dict[str, Any] = {"devices": devices, "cpu": cpu}
    if req.memory_limit is not None and req.memory_limit > 0:
        resources["memory"] = {"limit": req.memory_limit}
        if no_swap:
            resources["memory"]["swap"] = req.memory_limit
    return resources


def build_spec(
    req: ContainerRequest, rootfs: Path, cgroups_v2: bool, *, nofile: int = NOFILE_LIMIT, no_swap: bool = False
) -> dict[str, Any]:
    """The OCI runtime config for `req`, with `rootfs` as the container's root file system.

    `cgroups_v2` (pure unified mode) adds a private cgroup namespace, as containerd does on v2 hosts. `nofile`
    is the RLIMIT_NOFILE to set (lower it where the runtime cannot raise limits: no CAP_SYS_RESOURCE).
    `no_swap` makes a memory limit cover swap too (memory+swap = limit), as the kubelet asks when the node
    does not use swap; pass it only where the node's cgroups can enforce it (cgroups.swap_limit_supported).
    """
    namespaces: list[dict[str, str]] = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if req.netns_path:
        namespaces.append({"type": "network", "path": req.netns_path})
    else:
        namespaces.append({"type": "network"})
    if cgroups_v2:
        namespaces.append({"type": "cgroup"})
    parent = req.cgroup_parent.rstrip("/")
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": req.uid, "gid": req.gid},
            "args": list(req.args),
            "env": _env(req),
            "cwd": req.working_dir or "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPABILITIES),
                "effective": list(DEFAULT_CAPABILITIES),
                "permitted": list(DEFAULT_CAPABILITIES),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": _hostname(req),
        "mounts": _default_mounts() + _request_mounts(req),
        "annotations": {
            "io.kubernetes.pod.namespace": req.pod_namespace,
            "io.kubernetes.pod.name": req.pod_name,
            "io.kubernetes.pod.uid": req.pod_uid,
            "io.kubernetes.container.name": req.name,
        },
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": f"{parent}/{req.id}",
            "resources": _resources(req, no_swap),
            "devices": [
                {"path": path, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
                for path, ma, mi in DEFAULT_DEVICES
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
