"""Where this node's cgroups live (v1, v2 or hybrid) and how to read a container's OOM-kill count.

runc decides the cgroup mode the same way: `/sys/fs/cgroup` itself a cgroup2 mount is pure v2 ("unified");
otherwise the v1 controllers are mounted one per directory under it, with or without a cgroup2 mount beside them
("hybrid", e.g. at `/sys/fs/cgroup/unified`), and runc uses the v1 controllers. A container's cgroup is the
absolute `cgroupsPath` of its OCI config joined to the controller's mount point.

Stdlib-only and cheap to import: the per-container shim uses it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from harness.util import mountinfo

CGROUP_ROOT = "/sys/fs/cgroup"


class CgroupLayout:
    """What `/proc/self/mountinfo` says about the cgroup mounts of this mount namespace."""

    __slots__ = ("memory", "mode", "unified")

    def __init__(self, mode: str, unified: Path | None, memory: Path | None) -> None:
        self.mode = mode          # "v1" | "v2" | "hybrid" | "none"
        self.unified = unified    # the cgroup2 mount point, if any
        self.memory = memory      # the v1 memory controller's mount point, if any

    @property
    def v2(self) -> bool:
        """True when runc drives cgroup v2 (pure unified mode)."""
        return self.mode == "v2"

    def __repr__(self) -> str:
        return f"CgroupLayout(mode={self.mode!r}, unified={self.unified!r}, memory={self.memory!r})"


def _cgroup_mounts(mounts: list[mountinfo.Mount]) -> list[tuple[str, str, str]]:
    return [(m.mount_point, m.fstype, m.super_options) for m in mounts if m.fstype in ("cgroup", "cgroup2")]


def parse_mountinfo(text: str) -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of every cgroup/cgroup2 mount of mountinfo text, in its order."""
    return _cgroup_mounts(mountinfo.parse(text))


def _mounted_cgroups(text: str | None = None) -> list[tuple[str, str, str]]:
    """The cgroup mounts of mountinfo text, or else of this process's mount namespace."""
    return parse_mountinfo(text) if text is not None else _cgroup_mounts(mountinfo.read())


def detect(text: str | None = None) -> CgroupLayout:
    """The cgroup layout of this process's mount namespace (or of the given mountinfo text)."""
    unified: Path | None = None
    memory: Path | None = None
    has_v1 = False
    for point, fstype, options in _mounted_cgroups(text):
        if fstype == "cgroup2":
            # Prefer /sys/fs/cgroup itself (pure v2) over any other cgroup2 mount.
            if unified is None or point == CGROUP_ROOT:
                unified = Path(point)
        else:
            has_v1 = True
            if memory is None and "memory" in options.split(","):
                memory = Path(point)
    if unified is not None and str(unified) == CGROUP_ROOT:
        mode = "v2"
    elif has_v1:
        mode = "hybrid" if unified is not None else "v1"
    elif unified is not None:
        mode = "v2"
    else:
        mode = "none"
    return CgroupLayout(mode, unified, memory)


def memory_cgroup_dir(cgroups_path: str, layout: CgroupLayout | None = None) -> Path | None:
    """The directory of the memory cgroup runc made for `cgroups_path` (absolute, e.g. `/harness/<id>`)."""
    layout = layout or detect()
    inner = "/" + cgroups_path.strip("/")
    if layout.v2:
        assert layout.unified is not None
        return Path(str(layout.unified) + inner)
    if layout.memory is not None:
        return Path(str(layout.memory) + inner)
    return None


def swap_limit_supported(layout: CgroupLayout | None = None) -> bool:
    """Whether runc can be told to forbid swap (memory+swap = memory limit) without failing.

    v1 needs swap accounting (`memory.memsw.limit_in_bytes`); on v2 runc skips `memory.swap.max` when absent.
    """
    layout = layout or detect()
    if layout.v2:
        return True
    return layout.memory is not None and os.path.exists(os.path.join(layout.memory, "memory.memsw.limit_in_bytes"))


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value.strip())
            except ValueError:
                return 0
    return 0


def read_oom_kill(cgroups_path: str, layout: CgroupLayout | None = None) -> int:
    """How many processes the kernel OOM-killed in this container's memory cgroup (0 if unknown).

    v1: `oom_kill N` in `memory.oom_control`; v2: `oom_kill N` in `memory.events`. Read it before runc
    deletes the cgroup.
    """
    layout = layout or detect()
    directory = memory_cgroup_dir(cgroups_path, layout)
    if directory is None:
        return 0
    name = "memory.events" if layout.v2 else "memory.oom_control"
    try:
        with open(os.path.join(directory, name), encoding="ascii", errors="replace") as f:
            return _counter(f.read(), "oom_kill")
    except OSError:
        return 0


def remove_if_empty(cgroups_path: str) -> None:
    """rmdir the cgroup (not its children) in every hierarchy where it has none left; otherwise leave it."""
    for point, _fstype, _options in _mounted_cgroups():
        with contextlib.suppress(OSError):
            (Path(point) / cgroups_path.strip("/")).rmdir()


def remove_tree(cgroups_path: str, text: str | None = None) -> list[Path]:
    """rmdir a cgroup (e.g. a pod's) and its empty children in every hierarchy (of this process's mount namespace,
    or of the given mountinfo text); returns what is left (busy)."""
    left: list[Path] = []
    relative = cgroups_path.strip("/")
    for point, _fstype, _options in _mounted_cgroups(text):
        base = Path(point) / relative
        if not base.is_dir():
            continue
        for path in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir()
            except OSError:
                left.append(path)
        try:
            base.rmdir()
        except OSError:
            left.append(base)
    return left
