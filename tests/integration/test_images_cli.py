"""`harness images` end to end: the real command in a subprocess, against image stores under tmp_path.

Needs busybox-static (/bin/busybox); the in-use test also needs root (it mounts an overlay, and unmounts it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli import images
from harness.kubelet.images import busybox
from harness.kubelet.images.imagestore import ImageStore
from tests import tools
from tests.tools import needs

REPO = Path(__file__).resolve().parents[2]

pytestmark = needs("busybox")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def harness(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`harness images ARGS...` in this process (the full `harness` command takes a second to import)."""

    def run(*args: str) -> Result:
        parser = argparse.ArgumentParser(prog="harness images")
        images.add_arguments(parser)
        capsys.readouterr()
        code = images.run(parser.parse_args(list(args)))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def test_the_harness_command_runs_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "harness.cli", "images", "list", "--root", str(tmp_path / "s")],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "docker.io/library/busybox" in result.stdout


def rows(output: str) -> list[list[str]]:
    lines = output.strip().splitlines()
    assert re.match(r"IMAGE\s+TAG\s+IMAGE ID\s+SIZE$", lines[0]), lines[0]
    return [line.split() for line in lines[1:]]


def test_list_always_shows_busybox(tmp_path: Path, harness: Callable[..., Result]) -> None:
    root = tmp_path / "store"
    result = harness("list", "--root", str(root))
    assert result.returncode == 0, result.stderr
    version = busybox.inspect().version
    table = rows(result.stdout)
    assert sorted((r[0], r[1]) for r in table) == sorted([("docker.io/library/busybox", "latest"),
                                                          ("docker.io/library/busybox", version)])
    image = ImageStore(root).get("busybox")
    assert image is not None
    for row in table:
        assert row[2] == image.id.removeprefix("sha256:")[:12]
        assert re.fullmatch(r"\d+(\.\d+)?(B|kB|MB|GB)", row[3]), row[3]
    # `harness images` with no action lists too, and --root may come before the action
    assert rows(harness("--root", str(root)).stdout) == table


def test_export_import_and_remove(tmp_path: Path, harness: Callable[..., Result]) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    assert harness("list", "--root", str(source)).returncode == 0
    archive = tmp_path / "busybox.tar"
    exported = harness("export", "busybox:latest", str(archive), "--root", str(source))
    assert exported.returncode == 0, exported.stderr
    with tarfile.open(archive) as tar:
        assert {"oci-layout", "index.json", "manifest.json"} <= set(tar.getnames())

    imported = harness("import", str(archive), "--root", str(target))
    assert imported.returncode == 0, imported.stderr
    assert "imported docker.io/library/busybox:latest" in imported.stdout
    again = harness("import", str(archive), "--root", str(target))
    assert again.returncode == 0 and "already present" in again.stdout

    named = harness("import", str(archive), "--ref", "example.com/tools/box:1", "--root", str(target))
    assert named.returncode == 0, named.stderr
    assert "imported example.com/tools/box:1" in named.stdout
    store = ImageStore(target)
    image = store.get("example.com/tools/box:1")
    assert image is not None and image.id == ImageStore(source).ensure_builtin().id
    ran = subprocess.run([image.rootfs / "bin/sh", "-c", "echo ok"], capture_output=True, text=True, check=True)
    assert ran.stdout == "ok\n"

    removed = harness("rm", "example.com/tools/box:1", "nothing:here", "--root", str(target))
    assert removed.returncode == 1
    assert "Deleted: example.com/tools/box:1" in removed.stdout
    assert 'image "nothing:here" not found' in removed.stderr
    assert store.get("example.com/tools/box:1") is None and image.rootfs.is_dir()


def test_errors_are_one_clear_line(tmp_path: Path, harness: Callable[..., Result]) -> None:
    root = str(tmp_path / "store")
    missing = harness("import", str(tmp_path / "missing.tar"), "--root", root)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "missing.tar: no such file" in missing.stderr and "docker save" in missing.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not an archive\n" * 100)
    not_tar = harness("import", str(text), "--root", root)
    assert not_tar.returncode == 1
    assert "is not a tar file" in not_tar.stderr and "expected an image archive" in not_tar.stderr
    assert "Traceback" not in not_tar.stderr
    bad_ref = harness("import", str(text), "--ref", "Not/Valid", "--root", root)
    assert bad_ref.returncode == 1 and "invalid reference format" in bad_ref.stderr
    export = harness("export", "nope:1", str(tmp_path / "x.tar"), "--root", root)
    assert export.returncode == 1 and 'image "nope:1" not found' in export.stderr


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The builtin image's rootfs mounted as an overlay lower layer, as the runtime mounts it; unmounted after."""
    if os.geteuid() != 0:
        (pytest.fail if tools.required() else pytest.skip)("needs root to mount an overlay")
    root = tmp_path / "store"
    image = ImageStore(root).ensure_builtin()
    target = tmp_path / "merged"
    for d in ("upper", "work", "merged"):
        (tmp_path / d).mkdir()
    options = f"lowerdir={image.rootfs},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)
    try:
        yield root, target
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(target)], check=True)


def test_image_in_use_is_not_removed(overlay: tuple[Path, Path], harness: Callable[..., Result]) -> None:
    root, merged = overlay
    assert (merged / "bin/busybox").is_file()
    result = harness("rm", "sha256:" + ImageStore(root).ensure_builtin().id.removeprefix("sha256:")[:12],
                     "--root", str(root))
    assert result.returncode == 1
    assert "in use by a container" in result.stderr
    assert ImageStore(root).get("busybox") is not None
