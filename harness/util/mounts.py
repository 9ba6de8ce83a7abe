"""Mounting and unmounting with the system calls themselves (no `mount` binary to start), and one unmount policy.

`unmount` removes everything mounted on a path, however many mounts are stacked there: a plain unmount first, and
when the kernel says the mount is busy (a process still has a file open or its working directory in it), a lazy
one (`MNT_DETACH`): the mount leaves the tree now and is freed when its last user goes, which is what a caller
tearing down a container or a pod wants. A path with nothing (more) mounted on it is not an error.
"""

from __future__ import annotations

import ctypes
import errno
import os

from harness.util import libc

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
#: More mounts stacked on one path than this are not ours to remove.
MAX_STACKED = 8

Pathish = str | os.PathLike[str]


def mount(source: Pathish, target: Pathish, *, fstype: str, flags: int = 0, data: str | None = None) -> None:
    """mount(2) `source` on `target`; OSError("mount: <strerror>", target) when the kernel refuses."""
    libc.call("mount", os.fsencode(source), os.fsencode(target), fstype.encode(), ctypes.c_ulong(flags),
              None if data is None else os.fsencode(data), path=target)


def _umount2(target: Pathish, flags: int) -> None:
    libc.call("umount2", os.fsencode(target), flags, path=target)


def unmount(target: Pathish, *, lazy: bool = False) -> bool:
    """Unmount everything mounted on `target` (lazily when busy, or at once with `lazy`); True if anything was.

    Nothing mounted there, or no such path, is not an error; any other refusal is OSError.
    """
    flags = MNT_DETACH if lazy else 0
    unmounted = False
    for _ in range(MAX_STACKED):
        try:
            _umount2(target, flags)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
                return unmounted
            if exc.errno != errno.EBUSY or lazy:
                raise
            _umount2(target, MNT_DETACH)
        unmounted = True
    return unmounted


__all__ = ["MAX_STACKED", "MNT_DETACH", "MS_BIND", "MS_REC", "MS_SHARED", "mount", "unmount"]
