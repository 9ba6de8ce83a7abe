"""Pod volumes on the node: set them up under the pod's directory, turn volumeMounts into runtime mounts, tear down.

Layout, as the kubelet's: `<pods_dir>/<uid>/volumes/kubernetes.io~<plugin>/<name>`.

- emptyDir: a directory (mode 0777); `medium: Memory` mounts a tmpfs on it, sized by `sizeLimit` (else by the
  sum of the pod's memory limits, else the kernel's default).
- configMap, secret, downwardAPI, projected: files written the way upstream's AtomicWriter writes them: the data
  lives in a timestamped `..<ts>` directory, `..data` is a symlink to it, and each top-level name is a symlink
  `name -> ..data/name`. A refresh writes a new `..<ts>`, swaps `..data` with one rename and removes the old one,
  so a reader never sees half an update. Unchanged content is not rewritten.
- hostPath: the host path itself, after upstream's type check (`DirectoryOrCreate`, `FileOrCreate`, ...).
  An untyped path that does not exist is created as a directory (what containerd does for bind mounts).
- serviceAccountToken projections come from the `token_source` given to the manager; without one an empty
  placeholder file is written.

Errors that keep a volume from being set up are `VolumeError` (upstream's FailedMount); errors building a
container's mounts (bad subPath, unknown volume) are `ContainerConfigError`.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.quantity import int_value
from harness.kubelet.env import (
    Fetch,
    decode_secret_value,
    expand_subpath_expr,
    field_path_value,
    find_container,
    not_found_message,
    resource_field_value,
)
from harness.kubelet.errors import ContainerConfigError, KubeletError, VolumeError
from harness.kubelet.runtime.types import Mount
from harness.util import mountinfo, mounts

#: The plugin directory of each volume source that lives under the pod's directory.
PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}
#: Volumes the container always gets read-only, whatever the volumeMount says.
READ_ONLY_SOURCES = frozenset({"configMap", "secret", "downwardAPI", "projected"})
SUPPORTED_SOURCES = frozenset({*PLUGIN_DIRS, "hostPath"})
DEFAULT_MODE = 0o644

DATA_DIR = "..data"
_DATA_TMP = "..data_tmp"
_MAX_PATH = 4096
_MAX_NAME = 255

#: Produces the token of a projected serviceAccountToken source: token_source(pod, source) -> token.
TokenSource = Callable[[dict[str, Any], dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int


# ---------------------------------------------------------------------------------------------- atomic writer


class AtomicWriter:
    """Writes a set of files into `target` so that readers switch from the old set to the new one at once."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def write(self, payload: Mapping[str, FileProjection]) -> bool:
        """Publish `payload` (relative path -> content); True if anything on disk changed."""
        clean = {_validate_path(path): projection for path, projection in payload.items()}
        old_name = self._current()
        old_dir = self.target / old_name if old_name else None
        changed = old_dir is None or _read_dir(old_dir) != clean
        if changed:
            new_dir = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()),
                                            dir=self.target))
            try:
                os.chmod(new_dir, 0o755)
                for path, projection in clean.items():
                    _write_file(new_dir / path, projection)
                tmp_link = self.target / _DATA_TMP
                with contextlib.suppress(FileNotFoundError):
                    tmp_link.unlink()
                tmp_link.symlink_to(new_dir.name)
                os.replace(tmp_link, self.target / DATA_DIR)
            except BaseException:
                shutil.rmtree(new_dir, ignore_errors=True)
                raise
        visible = {path.split("/", 1)[0] for path in clean}
        for name in sorted(visible):
            link = self.target / name
            if not os.path.lexists(link):
                link.symlink_to(f"{DATA_DIR}/{name}")
        for entry in os.listdir(self.target):
            if entry.startswith("..") or entry in visible:
                continue
            stale = self.target / entry
            if stale.is_symlink():
                stale.unlink()
        if changed and old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
        return changed

    def _current(self) -> str | None:
        try:
            name = os.readlink(self.target / DATA_DIR)
        except (FileNotFoundError, OSError):
            return None
        return name if (self.target / name).is_dir() else None


def _validate_path(path: str) -> str:
    """upstream atomic_writer.validatePath, on the cleaned path."""
    if path == "":
        raise ValueError('invalid path: must not be empty: ""')
    if path.startswith("/"):
        raise ValueError(f"invalid path: must be relative path: {path}")
    if len(path) > _MAX_PATH:
        raise ValueError(f"invalid path: must be less than or equal to {_MAX_PATH} characters")
    items = path.split("/")
    for item in items:
        if item == "..":
            raise ValueError(f"invalid path: must not contain '..': {path}")
        if len(item) > _MAX_NAME:
            raise ValueError(f"invalid path: filenames must be less than or equal to {_MAX_NAME} characters")
    if items[0].startswith("..") and len(items[0]) > 2:
        raise ValueError(f"invalid path: must not start with '..': {path}")
    return posixpath.normpath(path)


def _write_file(path: Path, projection: FileProjection) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, projection.mode)
    try:
        os.write(fd, projection.data)
        os.fchmod(fd, projection.mode)
    finally:
        os.close(fd)


def _read_dir(root: Path) -> dict[str, FileProjection]:
    found: dict[str, FileProjection] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            info = full.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            found[full.relative_to(root).as_posix()] = FileProjection(full.read_bytes(), stat.S_IMODE(info.st_mode))
    return found


# ---------------------------------------------------------------------------------------------- payloads


def _mode(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def configmap_payload(configmap: dict[str, Any], items: list[dict[str, Any]] | None, default_mode: int,
                      optional: bool) -> dict[str, FileProjection]:
    """upstream configmap.MakePayload: every key (data, then binaryData) or just `items`."""
    contents: dict[str, bytes] = {str(k): str(v).encode() for k, v in (configmap.get("data") or {}).items()}
    for key, value in (configmap.get("binaryData") or {}).items():
        contents.setdefault(str(key), decode_secret_value(value))
    return _payload(contents, items, default_mode, optional, "configmap references non-existent config key: {}")


def secret_payload(secret: dict[str, Any], items: list[dict[str, Any]] | None, default_mode: int,
                   optional: bool) -> dict[str, FileProjection]:
    """upstream secret.MakePayload: every key, base64-decoded, or just `items`."""
    contents = {str(k): decode_secret_value(v) for k, v in (secret.get("data") or {}).items()}
    return _payload(contents, items, default_mode, optional, "references non-existent secret key: {}")


def _payload(contents: dict[str, bytes], items: list[dict[str, Any]] | None, default_mode: int, optional: bool,
             missing: str) -> dict[str, FileProjection]:
    if not items:
        return {key: FileProjection(value, default_mode) for key, value in contents.items()}
    payload: dict[str, FileProjection] = {}
    for item in items:
        key = str(item.get("key") or "")
        if key not in contents:
            if optional:
                continue
            raise ValueError(missing.format(key))
        payload[str(item.get("path") or key)] = FileProjection(contents[key], _mode(item.get("mode"), default_mode))
    return payload


def downward_payload(pod: dict[str, Any], items: list[dict[str, Any]], default_mode: int,
                     node_allocatable: Mapping[str, str | int] | None) -> dict[str, FileProjection]:
    """upstream downwardapi.CollectData: one file per item, from a metadata fieldRef or a resourceFieldRef."""
    payload: dict[str, FileProjection] = {}
    errors: list[str] = []
    for item in items:
        path = posixpath.normpath(str(item.get("path") or ""))
        mode = _mode(item.get("mode"), default_mode)
        value = ""
        try:
            if item.get("fieldRef") is not None:
                value = field_path_value(pod, str(item["fieldRef"].get("fieldPath") or ""))
            elif item.get("resourceFieldRef") is not None:
                ref = item["resourceFieldRef"]
                container = find_container(pod, str(ref.get("containerName") or ""))
                value = resource_field_value(container, ref, node_allocatable)
        except ValueError as err:
            errors.append(str(err))
        payload[path] = FileProjection(value.encode(), mode)
    if errors:
        raise ValueError(_aggregate(errors))
    return payload


def _aggregate(errors: list[str]) -> str:
    """How upstream's utilerrors.NewAggregate prints."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


# ---------------------------------------------------------------------------------------------- hostPath


def check_host_path(path: str, kind: str) -> None:
    """upstream hostPath type check; creates the path for the *OrCreate types. Raises ValueError."""
    target = Path(path)
    if kind == "":
        if not os.path.lexists(target):
            target.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    info = _stat(target)
    if kind == "DirectoryOrCreate":
        if info is None:
            target.mkdir(mode=0o755, parents=True, exist_ok=True)
            return
        kind = "Directory"
    if kind == "FileOrCreate":
        if info is None:
            try:
                os.close(os.open(target, os.O_CREAT | os.O_RDONLY, 0o644))
            except OSError as err:
                raise ValueError(f"open {path}: {_go_errno(err)}") from None
            return
        kind = "File"
    checks: dict[str, tuple[Callable[[int], bool], str]] = {
        "Directory": (stat.S_ISDIR, "a directory"),
        "File": (stat.S_ISREG, "a file"),
        "Socket": (stat.S_ISSOCK, "a socket file"),
        "CharDevice": (stat.S_ISCHR, "a character device"),
        "BlockDevice": (stat.S_ISBLK, "a block device"),
    }
    if kind not in checks:
        raise ValueError(f"{kind} is an invalid volume type")
    test, what = checks[kind]
    if info is None or not test(info.st_mode):
        raise ValueError(f"hostPath type check failed: {path} is not {what}")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _go_errno(err: OSError) -> str:
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


# ---------------------------------------------------------------------------------------------- the manager


def volume_kind(volume: dict[str, Any]) -> str:
    """The source of a pod volume: the one key besides `name`."""
    for key in volume:
        if key != "name":
            return key
    return ""


class VolumeManager:
    """Sets up, describes and removes the volumes of the pods on this node."""

    def __init__(self, pods_dir: Path, *, token_source: TokenSource | None = None) -> None:
        self.pods_dir = Path(pods_dir)
        self.token_source = token_source

    def volumes_dir(self, pod_uid: str) -> Path:
        return self.pods_dir / pod_uid / "volumes"

    async def prepare(self, pod: dict[str, Any], fetch: Fetch, *, pod_ip: str = "", host_ip: str = "",
                      node_name: str = "", node_allocatable: Mapping[str, str | int] | None = None) -> dict[str, Path]:
        """Set up (or refresh) every volume of the pod; volume name -> host path.

        Every volume is attempted; the first failure is raised as VolumeError after the others are done.
        pod_ip/host_ip/node_name are accepted for symmetry with env: downward API volumes only expose metadata.
        """
        del pod_ip, host_ip, node_name
        uid = str(pod["metadata"]["uid"])
        namespace = str(pod["metadata"].get("namespace") or "default")
        root = self.volumes_dir(uid)
        root.mkdir(mode=0o750, parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        first_error: VolumeError | None = None
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = str(volume["name"])
            try:
                paths[name] = await self._setup(pod, volume, namespace, fetch, node_allocatable)
            except VolumeError as err:
                first_error = first_error or err
            except (ValueError, OSError) as err:
                message = str(err) if isinstance(err, ValueError) else f"{err.strerror or err}"
                first_error = first_error or VolumeError(name, message)
        if first_error is not None:
            raise first_error
        return paths

    async def _setup(self, pod: dict[str, Any], volume: dict[str, Any], namespace: str, fetch: Fetch,
                     node_allocatable: Mapping[str, str | int] | None) -> Path:
        name = str(volume["name"])
        kind = volume_kind(volume)
        source = volume.get(kind) or {}
        if kind == "hostPath":
            path = str(source.get("path") or "")
            check_host_path(path, str(source.get("type") or ""))
            return Path(path)
        if kind not in PLUGIN_DIRS:
            raise VolumeError(name, f'volume type "{kind}" is not supported by this kubelet')
        target = self.volumes_dir(str(pod["metadata"]["uid"])) / PLUGIN_DIRS[kind] / name
        if not target.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o777)
        if kind == "emptyDir":
            self._setup_empty_dir(pod, name, source, target)
            return target
        default_mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
        if kind == "configMap":
            payload = await _object_payload(fetch, "ConfigMap", namespace, source, default_mode)
        elif kind == "secret":
            secret_source = {**source, "name": source.get("secretName")}
            payload = await _object_payload(fetch, "Secret", namespace, secret_source, default_mode)
        elif kind == "downwardAPI":
            payload = downward_payload(pod, source.get("items") or [], default_mode, node_allocatable)
        else:
            payload = await self._projected_payload(pod, source, namespace, fetch, default_mode, node_allocatable)
        AtomicWriter(target).write(payload)
        return target

    def _setup_empty_dir(self, pod: dict[str, Any], name: str, source: dict[str, Any], target: Path) -> None:
        medium = str(source.get("medium") or "")
        if medium == "":
            return
        if medium != "Memory":
            raise VolumeError(name, f"emptyDir medium {medium} is not supported by this kubelet")
        if Path(os.path.realpath(target)) in mountinfo.mount_points(target):
            return
        size = _tmpfs_size(pod, source)
        mounts.mount("tmpfs", target, fstype="tmpfs", data=f"size={size}" if size else None)

    async def _projected_payload(self, pod: dict[str, Any], source: dict[str, Any], namespace: str, fetch: Fetch,
                                 default_mode: int,
                                 node_allocatable: Mapping[str, str | int] | None) -> dict[str, FileProjection]:
        payload: dict[str, FileProjection] = {}
        errors: list[str] = []
        for item in source.get("sources") or []:
            try:
                if item.get("configMap") is not None:
                    payload.update(await _object_payload(fetch, "ConfigMap", namespace, item["configMap"],
                                                         default_mode))
                elif item.get("secret") is not None:
                    payload.update(await _object_payload(fetch, "Secret", namespace, item["secret"], default_mode))
                elif item.get("downwardAPI") is not None:
                    payload.update(downward_payload(pod, item["downwardAPI"].get("items") or [], default_mode,
                                                    node_allocatable))
                elif item.get("serviceAccountToken") is not None:
                    token_spec = item["serviceAccountToken"]
                    token = await self.token_source(pod, token_spec) if self.token_source else ""
                    payload[str(token_spec.get("path") or "token")] = FileProjection(token.encode(), default_mode)
                else:
                    errors.append(f"projected source {sorted(item)} is not supported by this kubelet")
            except ValueError as err:
                errors.append(str(err))
        if errors:
            raise ValueError(_aggregate(errors))
        return payload

    def mounts(self, pod: dict[str, Any], container: dict[str, Any], paths: Mapping[str, Path], *,
               env: list[str] | None = None) -> list[Mount]:
        """The container's volumeMounts as runtime mounts (upstream makeMounts, without /etc/hosts).

        `env` (the container's final environment) is needed only for `subPathExpr`.
        """
        kinds = {str(v["name"]): volume_kind(v) for v in (pod.get("spec") or {}).get("volumes") or []}
        container_name = str(container.get("name") or "")
        result: list[Mount] = []
        for mount in container.get("volumeMounts") or []:
            name = str(mount.get("name") or "")
            if name not in paths or name not in kinds:
                raise ContainerConfigError(f'cannot find volume "{name}" to mount into container "{container_name}"')
            volume_path = Path(paths[name])
            sub_path = str(mount.get("subPath") or "")
            if mount.get("subPathExpr"):
                sub_path = expand_subpath_expr(str(mount["subPathExpr"]), env or [])
            source = volume_path
            if sub_path:
                source = _sub_path_source(volume_path, sub_path, name, container_name)
            read_only = bool(mount.get("readOnly")) or kinds[name] in READ_ONLY_SOURCES
            result.append(Mount(destination=str(mount.get("mountPath") or ""), source=str(source),
                                read_only=read_only))
        return result

    def cleanup(self, pod_uid: str) -> None:
        """Unmount the pod's tmpfs volumes and remove its volumes directory (and the pod dir if left empty)."""
        root = self.volumes_dir(pod_uid)
        for point in mountinfo.mount_points(root):
            try:
                mounts.unmount(point)
            except OSError as err:
                raise KubeletError(f"cannot clean up volumes of pod {pod_uid}: {err}") from None
        if root.exists():
            if mountinfo.mount_points(root):
                raise KubeletError(f"cannot clean up volumes of pod {pod_uid}: still mounted")
            shutil.rmtree(root)
        with contextlib.suppress(OSError):
            root.parent.rmdir()

    def pods(self) -> list[str]:
        """UIDs of the pods that have a volumes directory (to collect after a kubelet restart)."""
        if not self.pods_dir.is_dir():
            return []
        return sorted(entry.name for entry in self.pods_dir.iterdir() if (entry / "volumes").is_dir())


async def _object_payload(fetch: Fetch, kind: str, namespace: str, source: dict[str, Any],
                          default_mode: int) -> dict[str, FileProjection]:
    name = str(source.get("name") or "")
    optional = bool(source.get("optional"))
    obj = await fetch(kind, namespace, name)
    if obj is None:
        if not optional:
            raise ValueError(not_found_message(kind, name))
        obj = {}
    items = source.get("items") or None
    if kind == "ConfigMap":
        return configmap_payload(obj, items, default_mode, optional)
    return secret_payload(obj, items, default_mode, optional)


def _tmpfs_size(pod: dict[str, Any], source: dict[str, Any]) -> int | None:
    """sizeLimit, else the pod's memory limit (sum over its containers), else None (the kernel's default)."""
    if source.get("sizeLimit") not in (None, ""):
        return int_value(source["sizeLimit"]) or None
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is not None:
            total += int_value(limit)
    return total or None


def _sub_path_source(volume_path: Path, sub_path: str, volume: str, container: str) -> Path:
    """The host path a subPath mount binds: created as a directory if missing, never outside the volume."""
    if sub_path.startswith("/"):
        raise ContainerConfigError(f"error SubPath `{sub_path}` must not be an absolute path")
    if ".." in sub_path.split("/"):
        raise ContainerConfigError(f"unable to provision SubPath `{sub_path}`: must not contain '..'")
    base = Path(os.path.realpath(volume_path))
    full = volume_path / sub_path
    if not os.path.lexists(full):
        try:
            _safe_make_dir(base, sub_path, stat.S_IMODE(base.stat().st_mode))
        except (OSError, ValueError):
            raise ContainerConfigError(f'failed to create subPath directory for volumeMount "{volume}" of '
                                       f'container "{container}"') from None
    resolved = Path(os.path.realpath(full))
    if resolved != base and base not in resolved.parents:
        raise ContainerConfigError(f'failed to prepare subPath for volumeMount "{volume}" of container "{container}"')
    return resolved


def _safe_make_dir(base: Path, sub_path: str, mode: int) -> None:
    """mkdir -p of sub_path under base, refusing to follow a symlink out of base."""
    current = base
    for part in [p for p in sub_path.split("/") if p not in ("", ".")]:
        current = current / part
        if os.path.lexists(current):
            real = Path(os.path.realpath(current))
            if real != base and base not in real.parents:
                raise ValueError(f"{current} is outside the volume")
            current = real
            continue
        current.mkdir()
        os.chmod(current, mode)


__all__ = [
    "DATA_DIR",
    "DEFAULT_MODE",
    "PLUGIN_DIRS",
    "READ_ONLY_SOURCES",
    "AtomicWriter",
    "FileProjection",
    "TokenSource",
    "VolumeManager",
    "check_host_path",
    "configmap_payload",
    "downward_payload",
    "secret_payload",
    "volume_kind",
]
