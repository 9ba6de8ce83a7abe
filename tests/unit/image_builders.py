"""Image layers and archives built byte by byte with tarfile, for the image store tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.kubelet.images import oci
from harness.kubelet.images.layers import apply_layer

# -- building layers and archives -------------------------------------------------------------------


@dataclass
class Entry:
    name: str
    kind: str = "file"       # file | dir | symlink | hardlink
    data: bytes = b""
    link: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def layer(*entries: Entry, compress: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, 1_600_000_000
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.link
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.link
            else:
                info.size = len(e.data)
            tar.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
    data = out.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def diff_id(blob: bytes) -> str:
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_blob(layers: list[bytes], **config: Any) -> bytes:
    return json.dumps({"architecture": oci.host_platform()[1], "os": "linux", "config": config,
                       "rootfs": {"type": "layers", "diff_ids": [diff_id(b) for b in layers]}}).encode()


def write_tar(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None,
              compress: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def oci_archive(path: Path, layers: list[bytes], config: bytes, annotations: dict[str, str] | None = None,
                extra_blobs: dict[str, bytes] | None = None) -> tuple[Path, str]:
    """An OCI image layout tar: index.json -> manifest -> config + layers. Returns (path, manifest digest)."""
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": oci.MEDIA_OCI_MANIFEST,
        "config": {"mediaType": oci.MEDIA_OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": oci.MEDIA_OCI_LAYER_GZIP if b[:2] == b"\x1f\x8b" else oci.MEDIA_OCI_LAYER,
                    "digest": sha(b), "size": len(b)} for b in layers],
    }).encode()
    descriptor: dict[str, Any] = {"mediaType": oci.MEDIA_OCI_MANIFEST, "digest": sha(manifest),
                                  "size": len(manifest)}
    if annotations:
        descriptor["annotations"] = annotations
    index = json.dumps({"schemaVersion": 2, "manifests": [descriptor]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for blob in [manifest, config, *layers, *(extra_blobs or {}).values()]:
        files[f"blobs/sha256/{sha(blob).removeprefix('sha256:')}"] = blob
    return write_tar(path, files), sha(manifest)


def base_layers() -> list[bytes]:
    one = layer(Entry("bin", "dir", mode=0o755), Entry("bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o755),
                Entry("etc", "dir", mode=0o755), Entry("etc/keep", data=b"keep"), Entry("etc/gone", data=b"x"),
                Entry("data", "dir", mode=0o755), Entry("data/old1", data=b"1"), Entry("data/sub", "dir"),
                Entry("data/sub/old2", data=b"2"), Entry("link", "symlink", link="bin/tool"),
                Entry("bin/hard", "hardlink", link="bin/tool"), compress=True)
    two = layer(Entry("etc", "dir", mode=0o755), Entry("etc/.wh.gone"), Entry("data", "dir", mode=0o750),
                Entry("data/.wh..wh..opq"), Entry("data/new", data=b"new", mode=0o600, uid=1000, gid=1000))
    return [one, two]


def apply(rootfs: Path, *entries: Entry) -> str:
    rootfs.mkdir(exist_ok=True)
    blob = rootfs.parent / f"layer-{len(list(rootfs.parent.iterdir()))}.tar"
    blob.write_bytes(layer(*entries))
    return apply_layer(rootfs, blob)
