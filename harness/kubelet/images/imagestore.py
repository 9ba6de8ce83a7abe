"""The node's image store: OCI images unpacked into root file systems the runtime uses as overlay lower layers.

Images come from the builtin busybox (`ensure_builtin`), from archives (`import_archive`: `docker save`,
`skopeo copy ... oci-archive:`), and, where a registry is reachable, from a `Puller` (here only
`NoRegistryPuller`, which explains how to import instead).

Layout under `root` (default /var/lib/harness/images); the store is itself an OCI image layout:

    oci-layout, index.json     index.json names every tagged image: one manifest descriptor per reference,
                               annotated with the reference (io.containerd.image.name and
                               org.opencontainers.image.ref.name) and the image id (dev.harness.image.id)
    blobs/sha256/<hex>         manifests, configs and layers, by digest (what `export_archive` writes out)
    images/<hex>/image.json    one image, <hex> being its id (the digest of its config): its config, unpacked
                               size, manifests and the blobs it needs
    images/<hex>/rootfs/       its root file system: the runtime mounts it read-only as an overlay lower layer
    builtin.json               which busybox binary (path and stat) the builtin image was made from, so that
                               `ensure_builtin` on a ready store is a stat and two small reads
    store.lock                 every writer holds an flock on it while it changes the store
    tmp/                       staging directories (each flock'd by the process that owns it; one nobody holds
                               is left over from a crash and removed by the next writer) and temporary files

Atomicity: an image is unpacked in a staging directory under tmp/ and renamed into images/ complete, with its
image.json inside; blobs are renamed into place; index.json and image.json are replaced by rename. Readers take
no lock: whatever they see is complete. An image appears in images/ before any reference to it does, and on
removal loses its references first. Removal refuses an image whose rootfs is an overlay lower layer of a mount
this process can see (/proc/self/mountinfo): a best effort, blind to other mount namespaces.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.kubelet.images import busybox, layers, oci
from harness.kubelet.images.refs import ImageError, InvalidReference, normalize_ref, parse_ref
from harness.util import mountinfo, rfc3339
from harness.util.files import write_atomic

DEFAULT_ROOT = Path("/var/lib/harness/images")
ANNOTATION_IMAGE_ID = "dev.harness.image.id"
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")
SHORT_ID_MIN = 12  # a bare hex id prefix must be this long, so that an image named `cafe` never finds an id


class ImageNotFound(ImageError):
    """No image answers to a reference or id."""


class ImageInUse(ImageError):
    """The image's root file system is mounted by a container."""


class ImagePullError(ImageError):
    """An image could not be pulled; `reason` is the container's waiting reason, `message` upstream's text."""

    def __init__(self, message: str, reason: str = "ErrImagePull") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config the kubelet uses."""

    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    working_dir: str
    user: str

    @classmethod
    def from_oci(cls, config: dict[str, Any]) -> ImageConfig:
        c = config.get("config") or {}
        return cls(entrypoint=[str(a) for a in c.get("Entrypoint") or []], cmd=[str(a) for a in c.get("Cmd") or []],
                   env=[str(e) for e in c.get("Env") or []], working_dir=str(c.get("WorkingDir") or ""),
                   user=str(c.get("User") or ""))

    def to_json(self) -> dict[str, Any]:
        return {"entrypoint": self.entrypoint, "cmd": self.cmd, "env": self.env, "working_dir": self.working_dir,
                "user": self.user}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageConfig:
        return cls(entrypoint=list(data.get("entrypoint") or []), cmd=list(data.get("cmd") or []),
                   env=list(data.get("env") or []), working_dir=str(data.get("working_dir") or ""),
                   user=str(data.get("user") or ""))


@dataclass(frozen=True)
class Image:
    id: str                  # "sha256:<hex of the config blob>"
    refs: tuple[str, ...]    # normalized references, sorted
    rootfs: Path
    config: ImageConfig
    size: int                # bytes unpacked

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


class Puller(Protocol):
    async def pull(self, ref: str, store: ImageStore) -> Image: ...


class NoRegistryPuller:
    """The puller of a node without registry access: every pull fails, saying how to get the image instead."""

    async def pull(self, ref: str, store: ImageStore) -> Image:
        try:
            name = normalize_ref(ref)
        except InvalidReference as exc:
            raise ImagePullError(f'Failed to apply default image tag "{ref}": {exc.message}',
                                 reason="InvalidImageName") from exc
        raise ImagePullError(f'failed to pull and unpack image "{name}": no registry is reachable from this node; '
                             "import the image with `harness images import FILE`")


def _stat_signature(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _hex(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def overlay_lower_dirs() -> set[str]:
    """The lower directories of the overlay mounts this process can see."""
    lowers: set[str] = set()
    for mount in mountinfo.read():
        if mount.fstype != "overlay":
            continue
        for option in mountinfo.options(mount.super_options):
            if option.startswith("lowerdir="):
                lowers.update(d for d in option.removeprefix("lowerdir=").split(":") if d)
    return lowers


class ImageStore:
    def __init__(self, root: Path = DEFAULT_ROOT, *, busybox_binary: Path = busybox.BUSYBOX) -> None:
        self.root = Path(root).absolute()
        self.busybox_binary = busybox_binary
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.images_dir = self.root / "images"
        self.tmp_dir = self.root / "tmp"
        self.index_path = self.root / "index.json"
        self.lock_path = self.root / "store.lock"
        self.builtin_path = self.root / "builtin.json"

    # -- reading ------------------------------------------------------------------------------------

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ImageError(f"{path} is corrupt: {exc}") from exc

    def _read_index(self) -> dict[str, dict[str, Any]]:
        """reference -> its descriptor in index.json (with the image id in its annotations)."""
        data = self._read_json(self.index_path) or {}
        refs: dict[str, dict[str, Any]] = {}
        for descriptor in data.get("manifests") or []:
            annotations = descriptor.get("annotations") or {}
            ref = annotations.get(oci.ANNOTATION_CONTAINERD_NAME) or annotations.get(oci.ANNOTATION_REF_NAME)
            if ref and annotations.get(ANNOTATION_IMAGE_ID):
                refs[ref] = descriptor
        return refs

    @staticmethod
    def _id_of(descriptor: dict[str, Any]) -> str:
        return str(descriptor["annotations"][ANNOTATION_IMAGE_ID])

    def _meta(self, hex_id: str) -> dict[str, Any] | None:
        data = self._read_json(self.images_dir / hex_id / "image.json")
        return data if isinstance(data, dict) else None

    def _image(self, hex_id: str, meta: dict[str, Any], index: dict[str, dict[str, Any]]) -> Image:
        image_id = f"sha256:{hex_id}"
        refs = tuple(sorted(ref for ref, d in index.items() if self._id_of(d) == image_id))
        return Image(id=image_id, refs=refs, rootfs=self.images_dir / hex_id / "rootfs",
                     config=ImageConfig.from_json(meta.get("config") or {}), size=int(meta.get("size") or 0))

    def _ids(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.images_dir) if len(name) == 64)
        except FileNotFoundError:
            return []

    def list(self) -> list[Image]:
        """Every image, tagged ones first, by reference."""
        index = self._read_index()
        images = []
        for hex_id in self._ids():
            meta = self._meta(hex_id)
            if meta is not None:
                images.append(self._image(hex_id, meta, index))
        return sorted(images, key=lambda i: (not i.refs, i.refs[:1], i.id))

    def _match(self, ref: str, index: dict[str, dict[str, Any]]) -> tuple[str, str | None]:
        """(hex id, the index reference that matched or None for a match by id); ImageNotFound or
        ImageError (ambiguous id prefix) otherwise."""
        try:
            parsed = parse_ref(ref)
        except InvalidReference:
            parsed = None
        if parsed is not None:
            name = str(parsed)
            if name in index:
                return _hex(self._id_of(index[name])), name
            if parsed.digest is not None:  # repository@digest: a manifest digest of an image of that repository
                for candidate, descriptor in sorted(index.items()):
                    if (parse_ref(candidate).name == parsed.name
                            and parsed.digest in (descriptor.get("digest"), self._id_of(descriptor))):
                        return _hex(self._id_of(descriptor)), None
        prefix = ref.removeprefix("sha256:")
        if _HEX_PREFIX.fullmatch(prefix) and (ref.startswith("sha256:") or len(prefix) >= SHORT_ID_MIN):
            found = [hex_id for hex_id in self._ids() if hex_id.startswith(prefix)]
            if len(found) == 1 and self._meta(found[0]) is not None:
                return found[0], None
            if len(found) > 1:
                raise ImageError(f'image id prefix "{ref}" is ambiguous: {len(found)} images start with it')
        raise ImageNotFound(f'image "{ref}" not found')

    def get(self, ref: str) -> Image | None:
        """The image named `ref` (normalized: "busybox" finds docker.io/library/busybox:latest), or with id
        "sha256:<hex>", a unique prefix of that, or a unique bare hex prefix of at least 12 digits (as `harness
        images list` shows ids); None if there is none (or `ref` is neither a reference nor an id)."""
        index = self._read_index()
        try:
            hex_id, _ = self._match(ref, index)
        except ImageError:
            return None
        meta = self._meta(hex_id)
        return self._image(hex_id, meta, index) if meta is not None else None

    # -- writing: plumbing ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        for d in (self.blobs_dir, self.images_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            layout = self.root / "oci-layout"
            if not layout.exists():
                self._write_atomic(layout, oci.canonical_json({"imageLayoutVersion": "1.0.0"}))
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _staging(self, *, holding_lock: bool = False) -> Iterator[Path]:
        """A private directory under tmp/, flock'd while it lives so that cleaners know it is in use. It is made
        and locked under the store lock, which cleaners hold: none can see it unlocked."""
        with contextlib.nullcontext() if holding_lock else self._lock():
            path = Path(tempfile.mkdtemp(prefix="stage-", dir=self.tmp_dir))
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)

    def _clean_tmp(self) -> None:
        """Remove what crashed writers left in tmp/ (call with the store lock held)."""
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)  # temporary files are only written under the store lock
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live writer's staging directory
            try:
                shutil.rmtree(entry.path, ignore_errors=True)
            finally:
                os.close(fd)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        # The temporary file goes to tmp/, where a writer that crashed leaves it for the next one to remove.
        write_atomic(path, data, durable=True, tmp_dir=self.tmp_dir)

    def _write_index(self, index: dict[str, dict[str, Any]]) -> None:
        manifests = [index[ref] for ref in sorted(index)]
        self._write_atomic(self.index_path, oci.canonical_json(
            {"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_INDEX, "manifests": manifests}))

    def _put_blob(self, digest: str, source: Path, *, move: bool) -> None:
        dest = self.blobs_dir / _hex(digest)
        if dest.exists():
            return
        if move:
            os.chmod(source, 0o644)
            os.replace(source, dest)
            return
        fd, tmp = tempfile.mkstemp(prefix="blob.", dir=self.tmp_dir)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _unpack(self, staged: oci.StagedImage, staging: Path) -> Path:
        """Unpack `staged` under `staging`; returns the image directory (rootfs/ and image.json) to commit."""
        image_dir = staging / f"image-{_hex(staged.config_digest)}"
        rootfs = image_dir / "rootfs"
        rootfs.mkdir(parents=True)
        os.chmod(image_dir, 0o755)
        os.chmod(rootfs, 0o755)
        for layer in staged.layers:
            source = staged.blobs[layer.digest]
            if not source.exists():  # a blob shared with an image committed before: moved into the store
                source = self.blobs_dir / _hex(layer.digest)
            layers.apply_layer(rootfs, source, diff_id=layer.diff_id, name=layer.digest)
        meta = {
            "id": staged.config_digest,
            "config": ImageConfig.from_oci(staged.config).to_json(),
            "os": staged.config.get("os", ""),
            "architecture": staged.config.get("architecture", ""),
            "size": layers.disk_usage(rootfs),
            "manifests": [self._descriptor(staged)],
            "blobs": sorted(staged.blobs),
            "added": rfc3339.format_time(time.time()),
        }
        (image_dir / "image.json").write_bytes(json.dumps(meta, indent=1).encode())
        return image_dir

    @staticmethod
    def _descriptor(staged: oci.StagedImage) -> dict[str, Any]:
        return {"mediaType": staged.manifest_media_type, "digest": staged.manifest_digest,
                "size": staged.manifest_size}

    def _commit(self, staged: oci.StagedImage, unpacked: Path | None, staging: Path, *, move_blobs: bool,
                index: dict[str, dict[str, Any]], names: builtins.list[str]) -> str:
        """Put a staged image into the store and point `names` at it (store lock held; `index` is updated in
        memory, the caller writes it). Returns the hex id."""
        hex_id = _hex(staged.config_digest)
        if unpacked is None and self._meta(hex_id) is None:
            unpacked = self._unpack(staged, staging)  # removed since we looked: unpack it now
        for digest, source in staged.blobs.items():
            self._put_blob(digest, source, move=move_blobs)
        dest = self.images_dir / hex_id
        meta = self._meta(hex_id)
        if meta is None:
            assert unpacked is not None
            if dest.exists():  # cannot be half an image (it is renamed in whole), but be sure
                self._discard(dest)
            os.replace(unpacked, dest)
        else:
            descriptor = self._descriptor(staged)
            if descriptor not in meta.get("manifests", []) or set(staged.blobs) - set(meta.get("blobs", [])):
                if descriptor not in meta.setdefault("manifests", []):
                    meta["manifests"].append(descriptor)
                meta["blobs"] = sorted(set(meta.get("blobs", [])) | set(staged.blobs))
                self._write_atomic(dest / "image.json", json.dumps(meta, indent=1).encode())
        for name in names:
            index[name] = {**self._descriptor(staged), "annotations": {
                oci.ANNOTATION_CONTAINERD_NAME: name, oci.ANNOTATION_REF_NAME: name,
                ANNOTATION_IMAGE_ID: staged.config_digest}}
        return hex_id

    def _discard(self, image_dir: Path) -> None:
        """Move a directory out of sight (into tmp/, where nobody holds it) and delete it."""
        trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.tmp_dir))
        os.replace(image_dir, trash / "image")
        shutil.rmtree(trash, ignore_errors=True)

    def _collect_blobs(self) -> None:
        """Delete blobs no image needs any more (store lock held)."""
        wanted = {d["digest"] for d in self._read_index().values()}
        for hex_id in self._ids():
            meta = self._meta(hex_id)
            if meta is not None:
                wanted.update(meta.get("blobs") or [])
                wanted.update(d.get("digest") for d in meta.get("manifests") or [])
        wanted_hex = {_hex(d) for d in wanted if isinstance(d, str)}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.blobs_dir):
                if name not in wanted_hex:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.blobs_dir / name)

    # -- writing: the public operations ---------------------------------------------------------------

    def _builtin_if_ready(self) -> Image | None:
        record = self._read_json(self.builtin_path)
        if not isinstance(record, dict):
            return None
        hex_id = _hex(str(record.get("id", "")))
        try:
            st = os.stat(self.busybox_binary)
        except FileNotFoundError:
            st = None  # busybox-static went away: the image made from it still serves
        if st is not None and (record.get("binary") != str(self.busybox_binary)
                               or record.get("stat") != _stat_signature(st)):
            return None
        meta = self._meta(hex_id) if len(hex_id) == 64 else None
        if meta is None:
            return None
        return self._image(hex_id, meta, self._read_index())

    def ensure_builtin(self) -> Image:
        """The builtin busybox image, made from the busybox binary the first time (or when it changed).

        On a ready store this is a stat and two small reads. References to it are added when missing, or when
        they point at the image made from a previous binary; a reference the user imported is left alone.
        """
        ready = self._builtin_if_ready()
        if ready is not None:
            return ready
        self._prepare()
        with self._lock():
            ready = self._builtin_if_ready()
            if ready is not None:
                return ready
            self._clean_tmp()
            previous = self._read_json(self.builtin_path)
            previous_id = previous.get("id") if isinstance(previous, dict) else None
            st = os.stat(self.busybox_binary) if self.busybox_binary.exists() else None
            with self._staging(holding_lock=True) as staging:
                staged = busybox.stage(self.busybox_binary, staging / "blobs")
                hex_id = _hex(staged.config_digest)
                unpacked = None if self._meta(hex_id) is not None else self._unpack(staged, staging)
                index = self._read_index()
                names = [n for n in staged.names
                         if n not in index or self._id_of(index[n]) in (previous_id, staged.config_digest)
                         or self._meta(_hex(self._id_of(index[n]))) is None]
                self._commit(staged, unpacked, staging, move_blobs=True, index=index, names=names)
                self._write_index(index)
            if st is not None:
                self._write_atomic(self.builtin_path, json.dumps({
                    "binary": str(self.busybox_binary), "stat": _stat_signature(st), "id": staged.config_digest,
                    "refs": staged.names}).encode())
            meta = self._meta(hex_id)
            assert meta is not None
            return self._image(hex_id, meta, self._read_index())

    def import_archive(self, path: Path, *, ref: str | None = None) -> builtins.list[Image]:
        """Import the images of an archive (`docker save`, OCI layout tar such as `skopeo copy ...
        oci-archive:FILE` writes, or such a layout as a directory). `ref` names the image too (the archive must
        then hold exactly one); without names the image is imported untagged, reachable by id."""
        extra = normalize_ref(ref) if ref else None
        path = Path(path)
        if not path.exists():
            raise oci.ArchiveError(f"{path}: no such file")
        self._prepare()
        with self._staging() as staging:
            staged_images = oci.read_archive(path, staging / "archive")
            if extra is not None:
                if len(staged_images) != 1:
                    raise oci.ArchiveError(f"{path} holds {len(staged_images)} images; a reference can only name one")
                if extra not in staged_images[0].names:
                    staged_images[0].names.append(extra)
            unpacked = {s.config_digest: (None if self._meta(_hex(s.config_digest)) is not None
                                          else self._unpack(s, staging)) for s in staged_images}
            with self._lock():
                self._clean_tmp()
                index = self._read_index()
                ids = [self._commit(s, unpacked[s.config_digest], staging, move_blobs=path.is_file(), index=index,
                                    names=s.names)
                       for s in staged_images]
                self._write_index(index)
        index = self._read_index()
        result = []
        for hex_id in ids:
            meta = self._meta(hex_id)
            if meta is not None:
                result.append(self._image(hex_id, meta, index))
        return result

    def remove(self, ref: str) -> None:
        """Remove a reference; the image goes with its last one. By id, the image goes with all its references.
        ImageNotFound if nothing matches, ImageInUse if a container's overlay uses the image."""
        if not self.root.is_dir():
            raise ImageNotFound(f'image "{ref}" not found')
        self._prepare()
        with self._lock():
            index = self._read_index()
            hex_id, matched = self._match(ref, index)
            image_id = f"sha256:{hex_id}"
            others = [r for r, d in index.items() if self._id_of(d) == image_id and r != matched]
            if matched is not None and others:
                del index[matched]
                self._write_index(index)
                return
            rootfs = self.images_dir / hex_id / "rootfs"
            if str(rootfs) in overlay_lower_dirs():
                raise ImageInUse(f'image "{ref}" ({image_id}) is in use by a container; stop it first')
            for r in [r for r, d in index.items() if self._id_of(d) == image_id]:
                del index[r]
            self._write_index(index)
            if (self.images_dir / hex_id).exists():
                self._discard(self.images_dir / hex_id)
            self._collect_blobs()

    def export_archive(self, image: Image | str, path: Path) -> None:
        """Write `image` (or the image a reference names) as an OCI image layout tar at `path`, with a docker
        manifest.json too: `harness images import`, `docker load` and `skopeo copy oci-archive:` read it."""
        index = self._read_index()
        if isinstance(image, str):
            hex_id, _ = self._match(image, index)
        else:
            hex_id = _hex(image.id)
        meta = self._meta(hex_id)
        if meta is None:
            raise ImageNotFound(f'image "{image if isinstance(image, str) else image.id}" not found')
        image_id = f"sha256:{hex_id}"
        by_manifest: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for ref, descriptor in sorted(index.items()):
            if self._id_of(descriptor) == image_id:
                by_manifest.setdefault(descriptor["digest"], (descriptor, []))[1].append(ref)
        if not by_manifest:
            first = (meta.get("manifests") or [None])[0]
            if first is None:
                raise ImageError(f"image {image_id} has no manifest; cannot export it")
            by_manifest[first["digest"]] = (first, [])
        entries = [oci.ExportEntry(refs=tuple(refs), manifest_digest=d["digest"], manifest_media_type=d["mediaType"],
                                   manifest_size=int(d["size"])) for d, refs in by_manifest.values()]
        oci.write_archive(Path(path), entries, lambda digest: self.blobs_dir / _hex(digest))


__all__ = ["DEFAULT_ROOT", "Image", "ImageConfig", "ImageError", "ImageInUse", "ImageNotFound", "ImagePullError",
           "ImageStore", "InvalidReference", "NoRegistryPuller", "Puller", "overlay_lower_dirs"]
