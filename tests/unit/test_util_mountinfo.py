"""The mount table (harness.util.mountinfo): proc(5)'s fields, octal escapes, mount points under a directory."""

from __future__ import annotations

from pathlib import Path

from harness.util import mountinfo
from harness.util.mountinfo import Mount

TEXT = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    "34 30 0:30 / /mnt/my\\040cgroups rw - cgroup cgroup rw,memory\n"
    "40 22 0:40 /sub\\134dir /srv/a\\011tab rw,nosuid master:3 shared:7 - tmpfs my\\040source rw,size=4096k\n"
    "41 22 0:41 / /srv/a\\011tab/inner rw - tmpfs tmpfs rw\n"
    "50 22 0:50 / /var/lib/o ro - overlay overlay rw,lowerdir=/l\\040one:/l2,upperdir=/u,workdir=/w\n"
    "not a mountinfo line\n"
    "x 22 0:51 / /bad rw - tmpfs tmpfs rw\n"
)


def test_parse_fields_per_proc5() -> None:
    mounts = mountinfo.parse(TEXT)
    assert [m.mount_id for m in mounts] == [22, 34, 40, 41, 50]  # lines not in the format are skipped
    assert mounts[0] == Mount(22, 1, "8:1", "/", "/", "rw,relatime", ("shared:1",), "ext4", "/dev/sda1",
                              "rw,errors=remount-ro")
    tmpfs = mounts[2]
    assert tmpfs.optional_fields == ("master:3", "shared:7")
    assert tmpfs.mount_options == "rw,nosuid"
    assert (tmpfs.fstype, tmpfs.super_options) == ("tmpfs", "rw,size=4096k")


def test_octal_escapes_are_decoded_in_path_fields() -> None:
    mounts = mountinfo.parse(TEXT)
    assert mounts[1].mount_point == "/mnt/my cgroups"
    assert mounts[2].root == "/sub\\dir"
    assert mounts[2].mount_point == "/srv/a\ttab"
    assert mounts[2].source == "my source"
    assert mountinfo.unescape("a\\012b\\134\\040") == "a\nb\\ "
    assert mountinfo.unescape("no escapes") == "no escapes"
    assert mountinfo.unescape("\\9999 not octal") == "\\9999 not octal"


def test_options_are_split_before_they_are_decoded() -> None:
    overlay = mountinfo.parse(TEXT)[4]
    assert overlay.super_options.startswith("rw,lowerdir=/l\\040one:")  # as written
    assert mountinfo.options(overlay.super_options) == ["rw", "lowerdir=/l one:/l2", "upperdir=/u", "workdir=/w"]
    # an escaped comma belongs to its option
    assert mountinfo.options("a=x\\054y,b") == ["a=x,y", "b"]
    assert mountinfo.options("") == []


def test_mount_points_under_a_directory_deepest_first() -> None:
    mounts = mountinfo.parse(TEXT)
    assert mountinfo.mount_points("/srv/a\ttab", mounts=mounts) == [Path("/srv/a\ttab/inner"), Path("/srv/a\ttab")]
    assert mountinfo.mount_points("/srv/a", mounts=mounts) == []  # a prefix of a name is not a parent
    assert Path("/") in mountinfo.mount_points("/", mounts=mounts)
    # the same point twice (stacked mounts) is listed once
    twice = mountinfo.parse(TEXT + "42 41 0:42 / /srv/a\\011tab/inner rw - tmpfs tmpfs rw\n")
    assert mountinfo.mount_points("/srv", mounts=twice) == [Path("/srv/a\ttab/inner"), Path("/srv/a\ttab")]


def test_read_this_process_and_a_missing_file(tmp_path: Path) -> None:
    assert any(m.mount_point == "/" for m in mountinfo.read())
    assert mountinfo.read(path=str(tmp_path / "missing")) == []
    copy = tmp_path / "mountinfo"
    copy.write_text(TEXT)
    assert len(mountinfo.read(path=str(copy))) == 5
