"""Atomic file replacement (harness.util.files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness.util.files import fsync_dir, write_atomic


def test_write_atomic_replaces_with_mode_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old")
    inode = path.stat().st_ino
    write_atomic(path, "néw", mode=0o600, durable=True)
    assert path.read_text() == "néw"
    assert path.stat().st_ino != inode  # a new file renamed over the old one: readers of the old keep it whole
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_atomic_with_a_separate_tmp_dir(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    write_atomic(tmp_path / "index.json", b"{}", tmp_dir=tmp_path / "tmp")
    assert (tmp_path / "index.json").read_bytes() == b"{}"
    assert stat.S_IMODE((tmp_path / "index.json").stat().st_mode) == 0o644
    assert os.listdir(tmp_path / "tmp") == []


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a"]
    fsync_dir(tmp_path)
