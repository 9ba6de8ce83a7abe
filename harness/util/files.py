"""Replacing a file atomically: a reader sees the old content or the new, never a part.

The content goes to a temporary file in the same directory (or in `tmp_dir`, on the same file system), which is then
renamed over the target; a failure removes the temporary file. Renaming alone is atomic for readers, not across a
crash: after a power loss the new name may point at a file whose data never reached the disk. `durable` adds the
fsyncs (the file before the rename, the directory after) for state that must survive one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import yaml

Pathish = str | os.PathLike[str]


def fsync_dir(directory: Pathish) -> None:
    """Make a directory's entries (created, renamed files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Pathish, data: bytes | str, *, mode: int = 0o644, durable: bool = False,
                 tmp_dir: Pathish | None = None) -> None:
    """Replace the file at `path` with `data` (text is written as UTF-8), with permissions `mode`."""
    directory, name = os.path.split(os.fspath(path))
    parent = os.fspath(tmp_dir) if tmp_dir is not None else directory or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory or ".")


__all__ = ["fsync_dir", "write_atomic"]


class UnreadableFile(Exception):
    """A file that cannot be read or parsed; the message says why, without the path (callers name it)."""


def read_yaml(path: Pathish) -> Any:
    """The YAML document in a file; UnreadableFile with the reason when it cannot be read or is not YAML."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None
    except yaml.YAMLError as exc:
        raise UnreadableFile(f"not YAML: {exc}") from None
