"""Applying OCI layers to a root file system: modes, links, owners, whiteouts, escapes refused, diff_ids."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness.kubelet.images.layers import LayerError, apply_layer
from tests.unit.image_builders import Entry, apply, diff_id, layer

# -- layers ---------------------------------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def test_layer_keeps_modes_links_and_owners(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    apply(rootfs, Entry("bin", "dir", mode=0o755), Entry("bin/x", data=b"hello", mode=0o4755),
          Entry("bin/y", "symlink", link="x"), Entry("bin/z", "hardlink", link="bin/x"),
          Entry("tmp", "dir", mode=0o1777), Entry("home/u/f", data=b"u", mode=0o600, uid=1000, gid=1001))
    x = (rootfs / "bin/x").lstat()
    assert (rootfs / "bin/x").read_bytes() == b"hello"
    assert stat.S_IMODE(x.st_mode) == 0o4755
    assert os.readlink(rootfs / "bin/y") == "x"
    assert (rootfs / "bin/z").lstat().st_ino == x.st_ino
    assert stat.S_IMODE((rootfs / "tmp").lstat().st_mode) == 0o1777
    assert stat.S_IMODE((rootfs / "home").lstat().st_mode) == 0o755  # implied parent
    assert int((rootfs / "bin/x").stat().st_mtime) == 1_600_000_000
    if os.geteuid() == 0:
        f = (rootfs / "home/u/f").lstat()
        assert (f.st_uid, f.st_gid) == (1000, 1001)


def test_layer_replaces_entries_of_lower_layers(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    apply(rootfs, Entry("a", data=b"file"), Entry("b", "dir"), Entry("b/inner", data=b"i"),
          Entry("c", "symlink", link="/etc"))
    apply(rootfs, Entry("a", "dir", mode=0o755), Entry("b", data=b"now a file"), Entry("c", data=b"not a link"))
    assert (rootfs / "a").is_dir()
    assert (rootfs / "b").read_bytes() == b"now a file"
    assert not (rootfs / "c").is_symlink() and (rootfs / "c").read_bytes() == b"not a link"


def test_whiteouts(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    apply(rootfs, Entry("etc/keep", data=b"k"), Entry("etc/gone", data=b"g"), Entry("etc/dir/x", data=b"x"),
          Entry("opq/old", data=b"o"), Entry("opq/sub/older", data=b"o"), Entry("opq/sub/deeper/f", data=b"o"))
    apply(rootfs, Entry("etc/.wh.gone"), Entry("etc/.wh.dir"), Entry("opq/sub", "dir", mode=0o755),
          Entry("opq/sub/mine", data=b"m"), Entry("opq/.wh..wh..opq"), Entry("opq/fresh", data=b"f"),
          Entry("nowhere/.wh.thing"), Entry("etc/.wh..wh.plnk"))
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == ["keep"]
    # the opaque whiteout hides what the lower layer had, not what this layer wrote (before or after it)
    assert sorted(str(p.relative_to(rootfs)) for p in (rootfs / "opq").rglob("*")) == [
        "opq/fresh", "opq/sub", "opq/sub/mine"]
    assert not (rootfs / "nowhere").exists()


@pytest.mark.parametrize("entries", [
    [Entry("/etc/evil", data=b"x")],
    [Entry("../evil", data=b"x")],
    [Entry("a/../../evil", data=b"x")],
    [Entry("esc", "symlink", link="../../.."), Entry("esc/evil", data=b"x")],
    [Entry("esc", "symlink", link="a/../../outside"), Entry("esc/evil", data=b"x")],
    [Entry("hard", "hardlink", link="/etc/passwd")],
    [Entry("hard", "hardlink", link="../outside/secret")],
    [Entry("esc", "symlink", link="/.."), Entry("esc/evil", data=b"x")],
    [Entry("loop", "symlink", link="loop"), Entry("loop/evil", data=b"x")],
])
def test_paths_escaping_the_rootfs_are_refused(tmp_path: Path, entries: list[Entry]) -> None:
    rootfs = tmp_path / "a" / "b" / "rootfs"
    rootfs.parent.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    before = sorted(str(p) for p in tmp_path.rglob("*") if rootfs not in p.parents and p != rootfs)
    with pytest.raises(LayerError) as caught:
        apply(rootfs, *entries)
    assert "layer" in str(caught.value)
    after = sorted(str(p) for p in tmp_path.rglob("*") if rootfs not in p.parents and p != rootfs
                   and not p.name.startswith("layer-"))
    assert after == before
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))


def test_absolute_symlinks_resolve_inside_the_rootfs(tmp_path: Path) -> None:
    """A path through `abs -> /etc` lands in <rootfs>/etc, as the container sees it; never in the host's /etc."""
    rootfs = tmp_path / "rootfs"
    apply(rootfs, Entry("etc", "dir", mode=0o755), Entry("abs", "symlink", link="/etc"),
          Entry("abs/harness-test-file", data=b"inside"), Entry("rel", "symlink", link="etc/../etc"),
          Entry("rel/second", data=b"2"))
    assert (rootfs / "etc/harness-test-file").read_bytes() == b"inside"
    assert (rootfs / "etc/second").read_bytes() == b"2"
    assert not Path("/etc/harness-test-file").exists()


def test_layer_diff_id_is_checked(tmp_path: Path) -> None:
    blob = tmp_path / "layer.tar.gz"
    blob.write_bytes(layer(Entry("f", data=b"x"), compress=True))
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    good = diff_id(blob.read_bytes())
    assert apply_layer(rootfs, blob, diff_id=good) == good
    with pytest.raises(LayerError, match="digest"):
        apply_layer(rootfs, blob, diff_id=DIGEST)


def test_corrupt_and_unsupported_layers(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(layer(Entry("f", data=os.urandom(100_000)), compress=True)[:5000])
    with pytest.raises(LayerError, match="cannot unpack"):
        apply_layer(rootfs, truncated)
    zstd = tmp_path / "layer.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    with pytest.raises(LayerError, match="zstd"):
        apply_layer(rootfs, zstd)
