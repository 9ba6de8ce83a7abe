"""OCI layers and image archives: apply layer tars to a root file system, read and write image archives.

- `apply_layer(rootfs, layer)` unpacks one layer (tar, or tar compressed with gzip, bzip2 or xz) on top of what
  the layers before it left in `rootfs`, with the OCI whiteouts (`.wh.<name>` deletes `<name>` from the layers
  below, `.wh..wh..opq` empties its directory of them). It keeps modes, owners (when run as root), symlinks,
  hardlinks, device nodes, fifos, extended attributes and times, and checks the layer's diff_id (the sha256 of the
  uncompressed tar). Entries that could write outside `rootfs` are refused with `LayerError`: absolute names,
  names with `..`, hardlinks to such names, and paths through a symlink that climbs out of the root. A path through a
  symlink that stays inside (`lib -> usr/lib`, or an absolute `var/run -> /run`) is followed the way the container
  would see it, relative to `rootfs`, never to the host's root.
- `read_archive(path, staging)` reads what `docker save`, `skopeo copy ... oci-archive:FILE`, `ctr export` and
  `harness images export` write: an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) or a docker
  save archive (`manifest.json` with `Config`, `RepoTags`, `Layers`), as a tar (optionally gzipped) or as a
  directory. It verifies every blob's digest and returns one `StagedImage` per image, with an OCI manifest for it
  (made up from `manifest.json` for a docker save archive).
- `write_archive(path, images, blob_path)` writes an OCI image layout tar, with a docker `manifest.json` beside
  `index.json` as docker >= 25 writes both (meant for `docker load`; skopeo reads it as oci-archive).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.kubelet.images.refs import ImageError, InvalidReference, normalize_ref, parse_ref

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = {MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST}
MANIFEST_TYPES = {MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST}

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
WHITEOUT_META_PREFIX = ".wh..wh."
MAX_SYMLINKS = 40
CHUNK = 1 << 20

EXPECTED_ARCHIVE = ("expected an image archive: a tar of an OCI image layout (oci-layout, index.json, "
                    "blobs/sha256/...) as `skopeo copy ... oci-archive:FILE` writes, "
                    "or a `docker save` tar (manifest.json)")


class LayerError(ImageError):
    """A layer that cannot be applied: corrupt, unsupported, or trying to write outside the root file system."""


class ArchiveError(ImageError):
    """A file that is not a usable image archive; the message says what was expected."""


# -- digests and small helpers ------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The bytes we write for a JSON blob: sorted keys, no spaces (stable, so digests are too)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def split_digest(digest: str) -> tuple[str, str]:
    """("sha256", hex) of a digest; ArchiveError for anything we cannot address a blob by."""
    algorithm, sep, hex_part = digest.partition(":")
    if not sep or algorithm not in ("sha256", "sha512") or not hex_part or not all(c in "0123456789abcdef"
                                                                                  for c in hex_part):
        raise ArchiveError(f"unsupported or malformed digest {digest!r}")
    return algorithm, hex_part


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


# -- reading archives -----------------------------------------------------------------------------


@dataclass
class StagedLayer:
    digest: str          # of the blob as stored (compressed or not)
    media_type: str
    size: int
    diff_id: str | None  # from the image config: of the uncompressed tar


@dataclass
class StagedImage:
    """One image ready to be added to a store: its blobs sit in files, its layers still to be applied."""

    names: list[str]                 # normalized references the archive gives it
    config_digest: str               # the image id
    config: dict[str, Any]
    manifest_digest: str
    manifest_media_type: str
    manifest_size: int
    layers: list[StagedLayer]
    blobs: dict[str, Path] = field(default_factory=dict)   # digest -> file holding it (manifest, config, layers)


class _ArchiveFiles:
    """The files of an archive by their name in it, with symlinks and hardlinks resolved inside it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.files: dict[str, Path] = {}
        self.links: dict[str, str] = {}  # name -> name of what it points to

    def has(self, name: str) -> bool:
        return self.lookup(name) is not None

    def lookup(self, name: str) -> Path | None:
        name = posixpath.normpath(name).lstrip("/")
        for _ in range(MAX_SYMLINKS):
            if name in self.files:
                return self.files[name]
            if name not in self.links:
                return None
            name = self.links[name]
        return None

    def path(self, name: str) -> Path:
        found = self.lookup(name)
        if found is None:
            raise ArchiveError(f"{self.label}: {name} is missing from the archive")
        return found

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def blob_name(self, digest: str) -> str:
        algorithm, hex_part = split_digest(digest)
        return f"blobs/{algorithm}/{hex_part}"

    def read_blob(self, digest: str) -> bytes:
        data = self.read(self.blob_name(digest))
        algorithm, hex_part = split_digest(digest)
        if hashlib.new(algorithm, data).hexdigest() != hex_part:
            raise ArchiveError(f"{self.label}: blob {digest} is corrupt (its content has another digest)")
        return data

    def json(self, name: str, data: bytes | None = None) -> Any:
        try:
            return json.loads(self.read(name) if data is None else data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{self.label}: {name} is not valid JSON: {exc}") from exc


def _safe_name(name: str) -> str | None:
    """An archive member's name relative to the archive root, or None for names that leave it."""
    norm = posixpath.normpath("/" + name.lstrip("/")).lstrip("/")
    if not norm or norm == "." or ".." in name.split("/"):
        return None
    return norm


def _extract(path: Path, into: Path) -> _ArchiveFiles:
    """Copy the regular files of an archive tar into `into` (flat, numbered) and remember their names."""
    files = _ArchiveFiles(str(path))
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for n, member in enumerate(tar):
                name = _safe_name(member.name)
                if name is None:
                    continue
                if member.isreg():
                    target = into / str(n)
                    source = tar.extractfile(member)
                    with open(target, "wb") as out:
                        if source is not None:
                            shutil.copyfileobj(source, out, CHUNK)
                    files.files[name] = target
                elif member.issym():
                    linked = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
                    if not member.linkname.startswith("/") and not linked.startswith(".."):
                        files.links[name] = linked
                elif member.islnk():
                    linked_name = _safe_name(member.linkname)
                    if linked_name is not None:
                        files.links[name] = linked_name
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise ArchiveError(f"{path} is not a tar file ({exc}); {EXPECTED_ARCHIVE}") from exc
    return files


def _directory(path: Path) -> _ArchiveFiles:
    files = _ArchiveFiles(str(path))
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in [*dirnames, *filenames]:
            full = Path(dirpath) / entry
            name = full.relative_to(path).as_posix()
            if full.is_symlink():
                target = os.readlink(full)
                linked = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                if not target.startswith("/") and not linked.startswith(".."):
                    files.links[name] = linked
            elif full.is_file():
                files.files[name] = full
    return files


def _names_from_annotations(annotations: dict[str, Any] | None, label: str) -> list[str]:
    """The reference an index entry gives its image: containerd's full name, else an OCI ref.name that is a full
    reference (`name:tag`, `registry/name`); a bare ref.name is only a tag and names nothing by itself."""
    annotations = annotations or {}
    for key in (ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME):
        value = annotations.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key == ANNOTATION_REF_NAME and not any(c in value for c in ":/@"):
            continue
        try:
            return [normalize_ref(value)]
        except InvalidReference as exc:
            raise ArchiveError(f"{label}: the archive names an image {value!r}: {exc}") from exc
    return []


def _platform_matches(descriptor: dict[str, Any]) -> bool:
    plat = descriptor.get("platform")
    if not isinstance(plat, dict):
        return True
    os_name, arch = host_platform()
    return plat.get("os", os_name) == os_name and plat.get("architecture", arch) == arch


def _pick_manifests(files: _ArchiveFiles, descriptors: list[dict[str, Any]], depth: int = 0
                    ) -> list[dict[str, Any]]:
    """Manifest descriptors for this node's platform, going down nested indexes (multi-platform images)."""
    if depth > 4:
        raise ArchiveError(f"{files.label}: image indexes nested too deep")
    present = [d for d in descriptors if isinstance(d, dict) and isinstance(d.get("digest"), str)
               and files.has(files.blob_name(d["digest"]))]
    if not present:
        return []
    matching = [d for d in present if _platform_matches(d)]
    if not matching:
        os_name, arch = host_platform()
        raise ArchiveError(f"{files.label}: the archive has no image for {os_name}/{arch}")
    picked: list[dict[str, Any]] = []
    for d in matching:
        media_type = d.get("mediaType")
        if media_type in INDEX_TYPES:
            nested = files.json(d["digest"], files.read_blob(d["digest"]))
            inner = _pick_manifests(files, list(nested.get("manifests") or []), depth + 1)
            picked.extend({**i, "annotations": {**(i.get("annotations") or {}), **(d.get("annotations") or {})}}
                          for i in inner[:1])
        else:
            picked.append(d)
    return picked


def _layer_media_type(path: Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(2)
    return MEDIA_OCI_LAYER_GZIP if magic == b"\x1f\x8b" else MEDIA_OCI_LAYER


def _read_oci(files: _ArchiveFiles) -> list[StagedImage]:
    index = files.json("index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError(f"{files.label}: index.json has no manifests list; {EXPECTED_ARCHIVE}")
    images: dict[str, StagedImage] = {}
    for descriptor in _pick_manifests(files, index["manifests"]):
        digest = descriptor["digest"]
        data = files.read_blob(digest)
        manifest = files.json(digest, data)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
            raise ArchiveError(f"{files.label}: manifest {digest} has no config")
        config_digest = manifest["config"].get("digest", "")
        config_data = files.read_blob(config_digest)
        config = files.json(config_digest, config_data)
        diff_ids = ((config.get("rootfs") or {}).get("diff_ids") or []) if isinstance(config, dict) else []
        layer_descs = manifest.get("layers") or []
        if len(diff_ids) != len(layer_descs):
            raise ArchiveError(f"{files.label}: manifest {digest} has {len(layer_descs)} layers but its config "
                               f"lists {len(diff_ids)} diff_ids")
        image = StagedImage(names=_names_from_annotations(descriptor.get("annotations"), files.label),
                            config_digest=config_digest, config=config, manifest_digest=digest,
                            manifest_media_type=manifest.get("mediaType") or descriptor.get("mediaType")
                            or MEDIA_OCI_MANIFEST, manifest_size=len(data), layers=[])
        image.blobs[digest] = files.path(files.blob_name(digest))
        image.blobs[config_digest] = files.path(files.blob_name(config_digest))
        for layer, diff_id in zip(layer_descs, diff_ids, strict=True):
            layer_digest = layer.get("digest", "")
            layer_path = files.path(files.blob_name(layer_digest))
            if file_digest(layer_path) != layer_digest:
                raise ArchiveError(f"{files.label}: layer {layer_digest} is corrupt (its content has another digest)")
            image.layers.append(StagedLayer(digest=layer_digest, media_type=layer.get("mediaType") or MEDIA_OCI_LAYER,
                                            size=layer_path.stat().st_size, diff_id=diff_id))
            image.blobs[layer_digest] = layer_path
        previous = images.get(config_digest)
        if previous is not None:  # the same image under several names
            previous.names.extend(n for n in image.names if n not in previous.names)
        else:
            images[config_digest] = image
    if not images:
        raise ArchiveError(f"{files.label}: index.json names no manifest found in the archive")
    if files.has("manifest.json"):  # docker save >= 25 writes both; its RepoTags are names too
        _add_docker_names(files, images)
    return list(images.values())


def _add_docker_names(files: _ArchiveFiles, images: dict[str, StagedImage]) -> None:
    with contextlib.suppress(ImageError):
        for item in files.json("manifest.json") or []:
            config_path = files.lookup(str(item.get("Config", "")))
            if config_path is None:
                continue
            image = images.get(file_digest(config_path))
            if image is None:
                continue
            for tag in item.get("RepoTags") or []:
                with contextlib.suppress(InvalidReference):
                    ref = normalize_ref(tag)
                    if ref not in image.names:
                        image.names.append(ref)


def _read_docker(files: _ArchiveFiles, staging: Path) -> list[StagedImage]:
    items = files.json("manifest.json")
    if not isinstance(items, list) or not items:
        raise ArchiveError(f"{files.label}: manifest.json is not a list of images; {EXPECTED_ARCHIVE}")
    images: dict[str, StagedImage] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise ArchiveError(f"{files.label}: manifest.json entry without Config")
        config_name = item["Config"]
        config_data = files.read(config_name)
        config_digest = sha256_digest(config_data)
        stem = posixpath.basename(config_name).removesuffix(".json")
        if len(stem) == 64 and stem != config_digest.removeprefix("sha256:"):
            raise ArchiveError(f"{files.label}: {config_name} is corrupt (its content has digest {config_digest})")
        config = files.json(config_name, config_data)
        diff_ids = ((config.get("rootfs") or {}).get("diff_ids") or []) if isinstance(config, dict) else []
        layer_names = item.get("Layers") or []
        if len(diff_ids) != len(layer_names):
            raise ArchiveError(f"{files.label}: {config_name} lists {len(diff_ids)} diff_ids for "
                               f"{len(layer_names)} layers")
        names: list[str] = []
        for tag in item.get("RepoTags") or []:
            try:
                ref = normalize_ref(tag)
            except InvalidReference as exc:
                raise ArchiveError(f"{files.label}: manifest.json names an image {tag!r}: {exc}") from exc
            if ref not in names:
                names.append(ref)
        image = StagedImage(names=names, config_digest=config_digest, config=config, manifest_digest="",
                            manifest_media_type=MEDIA_OCI_MANIFEST, manifest_size=0, layers=[])
        image.blobs[config_digest] = files.path(config_name)
        for layer_name, diff_id in zip(layer_names, diff_ids, strict=True):
            layer_path = files.path(layer_name)
            digest = file_digest(layer_path)
            media_type = _layer_media_type(layer_path)
            if media_type == MEDIA_OCI_LAYER and digest != diff_id:
                raise ArchiveError(f"{files.label}: layer {layer_name} is corrupt (digest {digest}, the config "
                                   f"says {diff_id})")
            image.layers.append(StagedLayer(digest=digest, media_type=media_type, size=layer_path.stat().st_size,
                                            diff_id=diff_id))
            image.blobs[digest] = layer_path
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": len(config_data)},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                       for layer in image.layers],
        }
        manifest_data = canonical_json(manifest)
        image.manifest_digest = sha256_digest(manifest_data)
        image.manifest_size = len(manifest_data)
        manifest_path = staging / f"manifest-{image.manifest_digest.removeprefix('sha256:')}"
        manifest_path.write_bytes(manifest_data)
        image.blobs[image.manifest_digest] = manifest_path
        previous = images.get(config_digest)
        if previous is not None:
            previous.names.extend(n for n in names if n not in previous.names)
        else:
            images[config_digest] = image
    return list(images.values())


def read_archive(path: Path, staging: Path) -> list[StagedImage]:
    """The images in the archive (tar or directory) at `path`; its files are copied under `staging`.

    For a tar, the blob files of the returned images live under `staging` (the caller may move them); for a
    directory they are the directory's own files (to be copied). Raises ArchiveError with what was expected.
    """
    if not path.exists():
        raise ArchiveError(f"{path}: no such file")
    if path.is_dir():
        files = _directory(path)
        staging.mkdir(parents=True, exist_ok=True)
    elif path.is_file():
        files = _extract(path, staging)
    else:
        raise ArchiveError(f"{path}: not a regular file; {EXPECTED_ARCHIVE}")
    if files.has("index.json"):
        return _read_oci(files)
    if files.has("manifest.json"):
        return _read_docker(files, staging)
    raise ArchiveError(f"{path} is not an image archive: it has neither index.json nor manifest.json; "
                       f"{EXPECTED_ARCHIVE}")


# -- writing archives -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportEntry:
    """One image to write: the references to name it by and its manifest."""

    refs: tuple[str, ...]
    manifest_digest: str
    manifest_media_type: str
    manifest_size: int


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _tar_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _docker_tag(ref: str) -> str | None:
    parsed = parse_ref(ref)
    if parsed.tag is None or parsed.digest is not None:
        return None
    return f"{parsed.familiar_name}:{parsed.tag}"


def write_archive(path: Path, entries: Iterable[ExportEntry], blob_path: Callable[[str], Path]) -> None:
    """Write an OCI image layout tar (plus a docker manifest.json) holding `entries`; `blob_path(digest)` says
    where each blob is. The tar is written beside `path` and renamed into place."""
    entries = list(entries)
    index_manifests: list[dict[str, Any]] = []
    docker: list[dict[str, Any]] = []
    blobs: dict[str, Path] = {}

    def need(digest: str) -> Path:
        found = blob_path(digest)
        if not found.is_file():
            raise ImageError(f"blob {digest} is missing from the image store; cannot export")
        blobs[digest] = found
        return found

    for entry in entries:
        manifest = json.loads(need(entry.manifest_digest).read_bytes())
        config_digest = manifest["config"]["digest"]
        need(config_digest)
        layer_digests = [layer["digest"] for layer in manifest.get("layers") or []]
        for digest in layer_digests:
            need(digest)
        descriptor = {"mediaType": entry.manifest_media_type, "digest": entry.manifest_digest,
                      "size": entry.manifest_size}
        for ref in entry.refs or ("",):
            annotations = {ANNOTATION_CONTAINERD_NAME: ref, ANNOTATION_REF_NAME: ref} if ref else {}
            index_manifests.append({**descriptor, **({"annotations": annotations} if annotations else {})})
        docker.append({"Config": f"blobs/sha256/{config_digest.removeprefix('sha256:')}",
                       "RepoTags": [t for t in (_docker_tag(r) for r in entry.refs) if t],
                       "Layers": [f"blobs/sha256/{d.removeprefix('sha256:')}" for d in layer_digests]})
    index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index_manifests}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _tar_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
            _tar_bytes(tar, "index.json", canonical_json(index))
            _tar_bytes(tar, "manifest.json", canonical_json(docker))
            _tar_dir(tar, "blobs")
            _tar_dir(tar, "blobs/sha256")
            for digest, source in sorted(blobs.items()):
                info = tarfile.TarInfo(f"blobs/{digest.replace(':', '/', 1)}")
                info.size = source.stat().st_size
                info.mode = 0o644
                with open(source, "rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


__all__ = ["ANNOTATION_CONTAINERD_NAME", "ANNOTATION_REF_NAME", "EXPECTED_ARCHIVE", "MEDIA_OCI_CONFIG",
           "MEDIA_OCI_INDEX", "MEDIA_OCI_LAYER", "MEDIA_OCI_LAYER_GZIP", "MEDIA_OCI_MANIFEST", "ArchiveError",
           "ExportEntry", "LayerError", "StagedImage", "StagedLayer", "apply_layer", "canonical_json", "disk_usage",
           "file_digest", "host_platform", "read_archive", "sha256_digest", "write_archive"]
