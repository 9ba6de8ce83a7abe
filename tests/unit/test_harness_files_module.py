"""The `harness_files` Ansible module's file logic: modes, private directories, no rewrite of equal files, no escape."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path
from types import ModuleType

import pytest

from tests.tools import needs

MODULE = Path(__file__).resolve().parents[2] / "ansible" / "library" / "harness_files.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("harness_files", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf = load()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@needs(root=True)  # files are given to root, as on the machines
def test_files_get_their_modes_and_new_directories_are_private(tmp_path: Path) -> None:
    parent = tmp_path / "etc"
    parent.mkdir(mode=0o755)
    base = parent / "pki"
    assert hf.ensure_dir(str(base / "etcd"), 0o700, False)
    assert hf.write(str(base / "etcd" / "ca.key"), b"key", 0o600, False)
    assert hf.write(str(base / "ca.crt"), b"cert", 0o644, False)
    assert (mode(base), mode(base / "etcd")) == (0o700, 0o700)
    assert (mode(base / "etcd" / "ca.key"), mode(base / "ca.crt")) == (0o600, 0o644)
    assert mode(parent) == 0o755, "an existing parent keeps its mode"
    assert not hf.write(str(base / "ca.crt"), b"cert", 0o644, False), "an equal file is not written again"
    assert hf.write(str(base / "ca.crt"), b"cert", 0o600, False), "a changed mode is"
    assert [p.name for p in base.iterdir() if p.name.startswith(".")] == [], "no temporary file is left"


def test_check_mode_changes_nothing(tmp_path: Path) -> None:
    assert hf.ensure_dir(str(tmp_path / "new"), 0o700, True)
    assert not (tmp_path / "new").exists()
    assert hf.write(str(tmp_path / "f"), b"x", 0o600, True)
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("dest", ["", "/etc/passwd", "../escape", "etcd/../../escape"])
def test_a_file_must_stay_under_the_directory(dest: str) -> None:
    with pytest.raises(ValueError, match="not a relative path under"):
        hf.target("/etc/harness/pki", dest)


def test_a_nested_file_is_placed_under_the_directory() -> None:
    assert hf.target("/etc/harness/pki", "etcd/server.crt") == os.path.join("/etc/harness/pki", "etcd/server.crt")
