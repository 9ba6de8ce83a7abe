"""The builtin image: busybox from Debian's busybox-static (`/bin/busybox`), made into a one-layer OCI image.

`stage(binary, staging)` writes the image's blobs (a gzipped layer tar, the config, the manifest) into `staging`
and returns a `StagedImage` the store unpacks and commits like an imported one. Its root file system has
/bin/busybox and a relative symlink for every applet at the path `busybox --list-full` gives (`/linuxrc`, the
one applet outside a directory, is left out), /etc/passwd and /etc/group with root (0), a `user` (1000) and
nobody (65534), /tmp (1777), /root, /home/user, /var/www/index.html (for `httpd -h /var/www`), empty /etc/hosts,
/etc/resolv.conf and /etc/hostname (the kubelet bind-mounts over them), and empty /dev, /proc and /sys.

Everything in the layer is deterministic (sorted entries, fixed times and owners, gzip without a timestamp), so
the image id, the digest of the config, only changes with the busybox binary (or with LAYOUT_VERSION).
References: docker.io/library/busybox:latest and docker.io/library/busybox:<version>, the version from the
binary's banner (`BusyBox v1.35.0 (...)`).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness.kubelet.images.oci import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    StagedImage,
    StagedLayer,
    canonical_json,
    host_platform,
    sha256_digest,
)
from harness.kubelet.images.refs import ImageError

BUSYBOX = Path("/bin/busybox")
REPOSITORY = "docker.io/library/busybox"
LAYOUT_VERSION = 1     # bump when the content of the image changes: a new version is a new image id
MTIME = 946684800      # 2000-01-01T00:00:00Z, the time of every entry
CREATED = "2000-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_UID = 1000

PASSWD = """root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
user:x:1000:
nobody:x:65534:
"""
INDEX_HTML = """<!DOCTYPE html>
<html><head><title>busybox</title></head>
<body><p>Served by busybox httpd from the harness builtin image.</p></body></html>
"""

DIRS: dict[str, tuple[int, int]] = {   # path -> (mode, uid)
    "bin": (0o755, 0), "dev": (0o755, 0), "etc": (0o755, 0), "home": (0o755, 0), "home/user": (0o755, USER_UID),
    "proc": (0o555, 0), "root": (0o700, 0), "sbin": (0o755, 0), "sys": (0o555, 0), "tmp": (0o1777, 0),
    "usr": (0o755, 0), "usr/bin": (0o755, 0), "usr/sbin": (0o755, 0), "var": (0o755, 0), "var/www": (0o755, 0),
}
FILES: dict[str, tuple[str, int]] = {  # path -> (content, mode)
    "etc/passwd": (PASSWD, 0o644), "etc/group": (GROUP, 0o644), "etc/hosts": ("", 0o644),
    "etc/resolv.conf": ("", 0o644), "etc/hostname": ("", 0o644), "var/www/index.html": (INDEX_HTML, 0o644),
}

_PT_INTERP = 3


class BusyboxError(ImageError):
    """The builtin image cannot be built: no busybox, or not a static one."""


@dataclass(frozen=True)
class Busybox:
    """What the builtin image is made of."""

    binary: Path
    banner: str          # "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)"
    version: str         # "1.35.0"
    applets: list[str]   # "bin/sh", "usr/bin/wget", ...

    @property
    def refs(self) -> list[str]:
        return [f"{REPOSITORY}:latest", f"{REPOSITORY}:{self.version}"]


def is_dynamic(binary: Path) -> bool:
    """Whether an ELF executable asks for a program interpreter (a dynamic loader it would not find in the image)."""
    with open(binary, "rb") as f:
        head = f.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF":
            raise BusyboxError(f"{binary} is not an ELF executable")
        bits64, endian = head[4] == 2, "<" if head[5] == 1 else ">"
        if bits64:
            phoff, = struct.unpack_from(endian + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(endian + "I", head, 28)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == _PT_INTERP:
            return True
    return False


def inspect(binary: Path = BUSYBOX) -> Busybox:
    """Check `binary` is a static busybox and ask it for its version and applets."""
    if not binary.is_file():
        raise BusyboxError(f"{binary} not found: the builtin busybox image is made from Debian's busybox-static "
                           "(apt-get install busybox-static)")
    if is_dynamic(binary):
        raise BusyboxError(f"{binary} is dynamically linked and cannot run alone in an image; "
                           "install busybox-static instead of busybox")
    try:
        banner_run = subprocess.run([binary], capture_output=True, check=False, timeout=10)
        listed = subprocess.run([binary, "--list-full"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BusyboxError(f"cannot run {binary}: {exc}") from exc
    first = (banner_run.stdout or banner_run.stderr).decode(errors="replace").splitlines()[:1]
    match = re.match(r"(BusyBox v(\d+(?:\.\d+)*)[^)]*\)?)", first[0] if first else "")
    if not match:
        raise BusyboxError(f"{binary} does not look like busybox (banner {first!r})")
    applets = sorted({line.strip().strip("/") for line in listed.stdout.decode().splitlines()
                      if "/" in line.strip().strip("/") and ".." not in line.split("/")})
    return Busybox(binary=binary, banner=match.group(1).strip(), version=match.group(2), applets=applets)


def _info(name: str, kind: bytes, mode: int, uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = uid
    info.mtime = MTIME
    return info


def layer_tar(box: Busybox) -> bytes:
    """The uncompressed layer: the same bytes for the same busybox binary."""
    entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for path, (mode, uid) in DIRS.items():
        entries[path] = (_info(path, tarfile.DIRTYPE, mode, uid), None)
    for applet in box.applets:
        for i in range(1, applet.count("/") + 1):  # parent directories busybox might add one day
            parent = "/".join(applet.split("/")[:i])
            entries.setdefault(parent, (_info(parent, tarfile.DIRTYPE, 0o755), None))
        if applet == "bin/busybox":
            continue
        link = _info(applet, tarfile.SYMTYPE, 0o777)
        link.linkname = os.path.relpath("bin/busybox", os.path.dirname(applet))
        entries[applet] = (link, None)
    binary = box.binary.read_bytes()
    entries["bin/busybox"] = (_info("bin/busybox", tarfile.REGTYPE, 0o755), binary)
    for path, (text, mode) in FILES.items():
        entries[path] = (_info(path, tarfile.REGTYPE, mode), text.encode())
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries):
            info, data = entries[path]
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def stage(binary: Path, staging: Path) -> StagedImage:
    """Write the builtin image's blobs into `staging`; the StagedImage says what they are."""
    box = inspect(binary)
    tar = layer_tar(box)
    diff_id = sha256_digest(tar)
    layer = gzip.compress(tar, compresslevel=6, mtime=0)
    layer_digest = sha256_digest(layer)
    os_name, arch = host_platform()
    config = {
        "architecture": arch,
        "os": os_name,
        "created": CREATED,
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED,
                     "created_by": f"harness builtin image v{LAYOUT_VERSION} from busybox-static: {box.banner}"}],
    }
    config_data = canonical_json(config)
    config_digest = sha256_digest(config_data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": len(config_data)},
        "layers": [{"mediaType": MEDIA_OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_data = canonical_json(manifest)
    manifest_digest = sha256_digest(manifest_data)
    staging.mkdir(parents=True, exist_ok=True)
    blobs: dict[str, Path] = {}
    for digest, data in ((layer_digest, layer), (config_digest, config_data), (manifest_digest, manifest_data)):
        path = staging / digest.replace(":", "-")
        path.write_bytes(data)
        blobs[digest] = path
    return StagedImage(names=box.refs, config_digest=config_digest, config=config, manifest_digest=manifest_digest,
                       manifest_media_type=MEDIA_OCI_MANIFEST, manifest_size=len(manifest_data),
                       layers=[StagedLayer(digest=layer_digest, media_type=MEDIA_OCI_LAYER_GZIP, size=len(layer),
                                           diff_id=diff_id)],
                       blobs=blobs)


__all__ = ["BUSYBOX", "Busybox", "BusyboxError", "inspect", "is_dynamic", "layer_tar", "stage"]
