"""The mount table of a mount namespace, read from `/proc/self/mountinfo` (proc(5)).

Each line is `<mount id> <parent id> <major:minor> <root> <mount point> <mount options> [optional fields...] -
<fs type> <source> <super options>`. The kernel writes a space, tab, newline or backslash inside a field as an
octal escape (`\\040` for a space); `parse` decodes the path fields (root, mount point, source). The two option
fields are left as written, since a decoded `\\054` would be a comma that does not separate options: `options`
splits such a field and decodes each option.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    device: str  # major:minor
    root: str  # the directory of the file system mounted here (not `/` for a bind mount of a subdirectory)
    mount_point: str
    mount_options: str  # per-mount options, comma-separated as written (`rw,nosuid,relatime`)
    optional_fields: tuple[str, ...]  # propagation: `shared:N`, `master:N`, ...
    fstype: str
    source: str
    super_options: str  # per-file-system options, comma-separated as written


def unescape(field: str) -> str:
    """A mountinfo field with its octal escapes (`\\040` for a space) decoded."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field) if "\\" in field else field


def options(field: str) -> list[str]:
    """The options of a comma-separated option field, each decoded."""
    return [unescape(option) for option in field.split(",")] if field else []


def parse(text: str) -> list[Mount]:
    """The mounts of mountinfo text, in its order; a line that is not in the format is skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        fields = pre.split(" ")
        tail = post.split(" ")
        if not sep or len(fields) < 6 or len(tail) < 3:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        mounts.append(Mount(mount_id, parent_id, fields[2], unescape(fields[3]), unescape(fields[4]), fields[5],
                            tuple(fields[6:]), tail[0], unescape(tail[1]), tail[2]))
    return mounts


def read(*, path: str = MOUNTINFO) -> list[Mount]:
    """The mounts this process sees (or those of the mountinfo file at `path`); none if it cannot be read."""
    try:
        # surrogateescape: a path that is not UTF-8 survives, and os.fsencode gives its bytes back
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return parse(f.read())
    except OSError:
        return []


def mount_points(under: str | os.PathLike[str], *, mounts: list[Mount] | None = None) -> list[Path]:
    """The mount points at or below the directory `under` (its real path), deepest first, each once; from `mounts`
    or else from what this process sees."""
    base = os.path.realpath(under)
    inside = base.rstrip("/") + "/"
    found = {Path(m.mount_point) for m in (read() if mounts is None else mounts)
             if m.mount_point == base or m.mount_point.startswith(inside)}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


__all__ = ["MOUNTINFO", "Mount", "mount_points", "options", "parse", "read", "unescape"]
