"""OCI image archives: read and write them (the layers themselves are `layers.py`).

- `read_archive(path, staging)` reads what `docker save`, `skopeo copy ... oci-archive:FILE`, `ctr export` and
  `harness images export` write: an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) or a docker
  save archive (`manifest.json` with `Config`, `RepoTags`, `Layers`), as a tar (optionally gzipped) or as a
  directory. It verifies every blob's digest and returns one `StagedImage` per image, with an OCI manifest for it
  (made up from `manifest.json` for a docker save archive).
- `write_archive(path, images, blob_path)` writes an OCI image layout tar, with a docker `manifest.json` beside
  `index.json` as docker >= 25 writes both (meant for `docker load`; skopeo reads it as oci-archive).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.kubelet.images.layers import CHUNK, MAX_SYMLINKS, canonical_json, file_digest, host_platform, sha256_digest
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


EXPECTED_ARCHIVE = ("expected an image archive: a tar of an OCI image layout (oci-layout, index.json, "
                    "blobs/sha256/...) as `skopeo copy ... oci-archive:FILE` writes, "
                    "or a `docker save` tar (manifest.json)")


class ArchiveError(ImageError):
    """A file that is not a usable image archive; the message says what was expected."""


def split_digest(digest: str) -> tuple[str, str]:
    """("sha256", hex) of a digest; ArchiveError for anything we cannot address a blob by."""
    algorithm, sep, hex_part = digest.partition(":")
    if not sep or algorithm not in ("sha256", "sha512") or not hex_part or not all(c in "0123456789abcdef"
                                                                                  for c in hex_part):
        raise ArchiveError(f"unsupported or malformed digest {digest!r}")
    return algorithm, hex_part


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
           "ExportEntry", "StagedImage", "StagedLayer", "canonical_json",
           "file_digest", "host_platform", "read_archive", "sha256_digest", "write_archive"]
