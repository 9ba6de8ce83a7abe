"""Finding the rotated copies of a log file, oldest first.

Two writers rotate our logs, each by renaming the file away: supervisord (`x.log` -> `x.log.1`, shifting older
copies to `.2`, `.3`...: a higher number is older) and the container runtime (`0.log` -> `0.log.<YYYYmmdd-HHMMSS.f>`:
the time stamp sorts as text). A copy compressed by logrotate (`.gz`, ...) is another file, not the one renamed.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Rotated copies with these suffixes are compressed, not the renamed file itself.
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def rotation_key(suffix: str) -> tuple[int, int, str]:
    """Orders rotated copies by their suffix after `<name>.`, oldest first: `.N` (higher is older) before the
    runtime's `.<timestamp>` (as text)."""
    return (0, -int(suffix), "") if suffix.isdigit() else (1, 0, suffix)


def rotated_files(path: str | os.PathLike[str], *, compressed: bool = False) -> list[Path]:
    """The rotated copies of the log file at `path` (`<name>.<suffix>` beside it), oldest first; compressed copies
    only with `compressed`; none when the directory cannot be listed."""
    directory, name = os.path.split(os.fspath(path))
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    prefix = name + "."
    found = []
    for candidate in names:
        suffix = candidate[len(prefix) :]
        if candidate.startswith(prefix) and suffix and (compressed or not suffix.endswith(COMPRESSED)):
            found.append((rotation_key(suffix), candidate))
    return [Path(directory, candidate) for _, candidate in sorted(found)]


__all__ = ["COMPRESSED", "rotated_files", "rotation_key"]
