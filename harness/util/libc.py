"""The C library, for the few Linux system calls Python's `os` module lacks (mount, umount2, setns, unshare).

Loaded once, from the symbols already in this process (`CDLL(None)`): libc is always there, and
`ctypes.util.find_library` would start `ldconfig` to look for it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def call(name: str, *args: Any, path: str | os.PathLike[str] | None = None) -> int:
    """Call the libc function `name`; OSError(errno, "<name>: <strerror>", path) when it returns -1."""
    result: int = getattr(_libc(), name)(*args)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}", None if path is None else os.fspath(path))
    return result


__all__ = ["call"]
