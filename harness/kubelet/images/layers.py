"""OCI layers: apply layer tars to a root file system, with whiteouts and checks; digests shared with archives.

- `apply_layer(rootfs, layer)` unpacks one layer (tar, or tar compressed with gzip, bzip2 or xz) on top of what
  the layers before it left in `rootfs`, with the OCI whiteouts (`.wh.<name>` deletes `<name>` from the layers
  below, `.wh..wh..opq` empties its directory of them). It keeps modes, owners (when run as root), symlinks,
  hardlinks, device nodes, fifos, extended attributes and times, and checks the layer's diff_id (the sha256 of the
  uncompressed tar). Entries that could write outside `rootfs` are refused with `LayerError`: absolute names,
  names with `..`, hardlinks to such names, and paths through a symlink that climbs out of the root. A path through a
  symlink that stays inside (`lib -> usr/lib`, or an absolute `var/run -> /run`) is followed the way the container
  would see it, relative to `rootfs`, never to the host's root.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import platform
import shutil
import stat
import tarfile
import zlib
from pathlib import Path
from typing import IO, Any

from harness.kubelet.images.refs import ImageError

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
WHITEOUT_META_PREFIX = ".wh..wh."
MAX_SYMLINKS = 40
CHUNK = 1 << 20


class LayerError(ImageError):
    """A layer that cannot be applied: corrupt, unsupported, or trying to write outside the root file system."""


# -- digests and small helpers ------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The bytes we write for a JSON blob: sorted keys, no spaces (stable, so digests are too)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()



def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms: ("linux", "amd64") on x86_64."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
            "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return "linux", arch


# -- applying layers --------------------------------------------------------------------------------


class _HashingReader:
    """A read()-only file that hashes what passes through it (the uncompressed layer: its diff_id)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self.hash.hexdigest()


def _decompressed(f: IO[bytes], name: str) -> IO[bytes]:
    magic = f.read(6)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(f)
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(f)
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        raise LayerError(f"layer {name}: zstd-compressed layers are not supported; "
                         "re-export the image with gzip layers (e.g. `skopeo copy --dest-compress-format gzip`)")
    return f


def _clean_parts(name: str, what: str) -> list[str]:
    """The components of an entry name, refusing names that point outside the root file system."""
    if name.startswith("/"):
        raise LayerError(f"{what}: absolute path {name!r}; refusing to write outside the root file system")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what}: path {name!r} contains '..'; refusing to write outside the root file system")
    return parts


def _remove(path: str) -> None:
    """Delete a file, symlink or directory tree; never follows a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _LayerApplier:
    """Applies the entries of one layer, in order, to a root file system."""

    def __init__(self, rootfs: Path, name: str) -> None:
        self.root = os.fspath(rootfs.absolute())
        self.name = name
        self.is_root = os.geteuid() == 0
        self.seen: set[str] = set()          # resolved relative paths this layer wrote (and their parents)
        self.dirs: dict[str, tuple[int, float]] = {}  # mode and mtime, set once the layer is in

    def _host(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)

    def resolve_dir(self, parts: list[str], entry: str, *, create: bool) -> list[str] | None:
        """The real (symlink-free) components of directory `parts` inside the root, following symlinks as the
        container would (absolute targets from the root). Missing directories are created (mode 0755) when
        `create`, else None is returned. A symlink that climbs above the root is refused."""
        resolved: list[str] = []
        pending = list(parts)
        links = 0
        while pending:
            comp = pending.pop(0)
            if comp in ("", "."):
                continue
            if comp == "..":
                if not resolved:
                    raise LayerError(f"layer {self.name}: entry {entry!r} goes through a symbolic link that leaves "
                                     "the root file system; refusing it")
                resolved.pop()
                continue
            path = self._host([*resolved, comp])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                os.chmod(path, 0o755)
                resolved.append(comp)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise LayerError(f"layer {self.name}: entry {entry!r}: too many levels of symbolic links")
                target = os.readlink(path)
                if target.startswith("/"):
                    resolved = []
                pending = target.split("/") + pending
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"layer {self.name}: entry {entry!r}: /{'/'.join([*resolved, comp])} is not a "
                                 "directory")
            resolved.append(comp)
        return resolved

    def _mark(self, parts: list[str]) -> None:
        for i in range(1, len(parts) + 1):
            self.seen.add("/".join(parts[:i]))

    def _opaque(self, dir_parts: list[str]) -> None:
        """Empty a directory of everything the layers below put there (keep what this layer wrote)."""

        def walk(path: str, rel: str) -> None:
            with os.scandir(path) as entries:
                children = list(entries)
            for child in children:
                child_rel = f"{rel}/{child.name}" if rel else child.name
                if child_rel not in self.seen:
                    _remove(child.path)
                elif child.is_dir(follow_symlinks=False):
                    walk(child.path, child_rel)

        walk(self._host(dir_parts), "/".join(dir_parts))

    def apply(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self.entry(tar, member)
        for path, (mode, mtime) in self.dirs.items():  # last: a 0555 directory must take its entries first
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, mode)
                os.utime(path, (mtime, mtime), follow_symlinks=False)

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        what = f"layer {self.name}"
        parts = _clean_parts(member.name, what)
        if not parts:  # the root directory itself
            if member.isdir():
                self._metadata(self.root, member)
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, member.name)
            return
        parent = self.resolve_dir(parts[:-1], member.name, create=True)
        assert parent is not None
        rel = [*parent, base]
        path = self._host(rel)
        self._mark(rel)
        link_target: str | None = None
        if member.islnk():
            link_target = self._hardlink_target(member)
            if link_target == path:
                return
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove(path)
            self.dirs.pop(path, None)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
        elif member.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                if source is not None:
                    shutil.copyfileobj(source, out, CHUNK)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            assert link_target is not None
            os.link(link_target, path, follow_symlinks=False)
            return  # same inode as the target: its metadata is the target's
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            except PermissionError:
                return  # not root: a device node cannot be made; skip it as unprivileged unpackers do
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            return  # other types (e.g. GNU volume headers) carry nothing for a root file system
        self._metadata(path, member)

    def _hardlink_target(self, member: tarfile.TarInfo) -> str:
        what = f"layer {self.name}: hardlink {member.name!r}"
        parts = _clean_parts(member.linkname, what)
        if not parts:
            raise LayerError(f"{what} points at the root directory")
        parent = self.resolve_dir(parts[:-1], member.name, create=False)
        target = self._host([*parent, parts[-1]]) if parent is not None else ""
        try:
            st = os.lstat(target) if target else None
        except FileNotFoundError:
            st = None
        if st is None:
            raise LayerError(f"{what} points at {member.linkname!r}, which is not in the image")
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{what} points at the directory {member.linkname!r}")
        return target

    def _whiteout(self, parts: list[str], name: str) -> None:
        base = parts[-1]
        parent = self.resolve_dir(parts[:-1], name, create=False)
        if parent is None:
            return  # nothing below to hide
        if base == WHITEOUT_OPAQUE:
            self._opaque(parent)
        elif base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, ...): nothing to apply
        else:
            hidden = base[len(WHITEOUT_PREFIX):]
            if hidden in ("", ".", ".."):
                raise LayerError(f"layer {self.name}: bad whiteout {name!r}")
            _remove(self._host([*parent, hidden]))

    def _metadata(self, path: str, member: tarfile.TarInfo) -> None:
        if self.is_root:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
            for key, value in member.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    with contextlib.suppress(OSError):
                        os.setxattr(path, key.removeprefix("SCHILY.xattr."),
                                    value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        if member.issym():
            with contextlib.suppress(OSError):
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
            return
        if member.isdir():
            self.dirs[path] = (member.mode & 0o7777, member.mtime)
            return
        os.chmod(path, member.mode & 0o7777)  # after chown, which clears set-id bits
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def apply_layer(rootfs: Path, layer: Path, *, diff_id: str | None = None, name: str | None = None) -> str:
    """Apply the layer tar at `layer` to `rootfs` (which holds the layers below it); return its diff_id.

    `diff_id`, when given, is checked against the sha256 of the uncompressed tar (LayerError on a mismatch).
    """
    label = name or layer.name
    with open(layer, "rb") as raw:
        stream = _decompressed(raw, label)
        reader = _HashingReader(stream)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                _LayerApplier(rootfs, label).apply(tar)
            got = reader.drain()
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise LayerError(f"layer {label}: cannot unpack it: {exc}") from exc
        finally:
            if stream is not raw:
                stream.close()
    if diff_id is not None and got != diff_id:
        raise LayerError(f"layer {label}: its content has digest {got}, but the image config says {diff_id}")
    return got


def disk_usage(rootfs: Path) -> int:
    """Bytes used by the files of a root file system (each hardlinked file once, symlinks by their length)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(rootfs)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(st.st_mode):
                    if st.st_nlink > 1:
                        key = (st.st_dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    total += st.st_size
                elif stat.S_ISLNK(st.st_mode):
                    total += st.st_size
    return total
