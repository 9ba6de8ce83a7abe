"""mount/umount2 (harness.util.mounts) and its one unmount policy: everything stacked, lazily when busy."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from harness.util import mountinfo, mounts
from tests.tools import needs


def mounted(path: Path) -> int:
    real = os.path.realpath(path)
    return sum(1 for m in mountinfo.read() if m.mount_point == real)


def test_unmounting_what_is_not_mounted_is_nothing(tmp_path: Path) -> None:
    assert mounts.unmount(tmp_path) is False
    assert mounts.unmount(tmp_path / "missing") is False
    assert mounts.unmount(tmp_path, lazy=True) is False


@needs(root=True)
def test_mount_and_unmount_stacked_and_busy(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    try:
        mounts.mount("tmpfs", target, fstype="tmpfs", data="size=1m")
        mounts.mount("tmpfs", target, fstype="tmpfs")
        assert mounted(target) == 2
        fs = os.statvfs(target)
        assert fs.f_blocks * fs.f_frsize != 2**20  # the top one, without a size
        busy = os.open(target, os.O_RDONLY)  # a busy mount is detached instead
        try:
            assert mounts.unmount(target) is True
            assert mounted(target) == 0
        finally:
            os.close(busy)
    finally:
        mounts.unmount(target, lazy=True)


@needs(root=True)
def test_mount_errors_name_the_call_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(OSError) as caught:
        mounts.mount("tmpfs", tmp_path / "missing", fstype="tmpfs")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.strerror is not None and caught.value.strerror.startswith("mount: ")
    assert caught.value.filename == str(tmp_path / "missing")
