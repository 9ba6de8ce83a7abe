"""Pod volumes: files and modes, items, atomic updates (..data swap), hostPath types, subPath, tmpfs, cleanup."""

from __future__ import annotations

import base64
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.kubelet.errors import ContainerConfigError, VolumeError
from harness.kubelet.runtime.types import Mount
from harness.kubelet.volumes import DATA_DIR, AtomicWriter, FileProjection, VolumeManager
from harness.util.mountinfo import mount_points
from harness.util.mounts import unmount
from tests.tools import needs

UID = "0b6a3c1e-pod"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Store:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {
            ("ConfigMap", "app"): {"data": {"color": "blue", "size": "L"}, "binaryData": {"blob": b64(b"\x00\x01")}},
            ("Secret", "db"): {"data": {"password": b64(b"s3cret"), "user": b64(b"admin")}},
        }

    async def __call__(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert namespace == "default"
        return self.objects.get((kind, name))


def make_pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None,
             **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "default", "uid": UID,
                     "labels": {"tier": "front", "app": "web"}, "annotations": {"a": "x\ny"}},
        "spec": {"volumes": volumes,
                 "containers": [{"name": "main", "volumeMounts": mounts or [], **container}]},
    }


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[VolumeManager]:
    pods = tmp_path / "pods"
    yield VolumeManager(pods)
    for point in mount_points(tmp_path):  # never leave a tmpfs behind, even when a test failed
        unmount(point)


def lexists(path: Path) -> bool:
    return os.path.lexists(path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def volume_dir(manager: VolumeManager, plugin: str, name: str) -> Path:
    return manager.pods_dir / UID / "volumes" / f"kubernetes.io~{plugin}" / name


# ---------------------------------------------------------------------------------------------- configMap / secret


async def test_configmap_files_layout_and_default_mode(manager: VolumeManager) -> None:
    paths = await manager.prepare(make_pod([{"name": "cfg", "configMap": {"name": "app"}}]), Store())
    target = volume_dir(manager, "configmap", "cfg")
    assert paths == {"cfg": target}
    assert (target / "color").read_text() == "blue"
    assert (target / "blob").read_bytes() == b"\x00\x01"
    assert os.readlink(target / "color") == f"{DATA_DIR}/color"
    data_dir = os.readlink(target / DATA_DIR)
    assert data_dir.startswith("..") and (target / data_dir).is_dir()
    assert sorted(os.listdir(target)) == sorted([DATA_DIR, data_dir, "blob", "color", "size"])
    assert mode(target / "color") == 0o644


async def test_items_modes_and_nested_paths(manager: VolumeManager) -> None:
    volume = {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o600, "items": [
        {"key": "color", "path": "conf/colour.txt", "mode": 0o400}, {"key": "size", "path": "size"}]}}
    await manager.prepare(make_pod([volume]), Store())
    target = volume_dir(manager, "configmap", "cfg")
    assert (target / "conf" / "colour.txt").read_text() == "blue"
    assert mode(target / "conf" / "colour.txt") == 0o400
    assert mode(target / "size") == 0o600
    assert os.readlink(target / "conf") == f"{DATA_DIR}/conf"
    assert not (target / "color").exists()


async def test_secret_values_are_decoded(manager: VolumeManager) -> None:
    await manager.prepare(make_pod([{"name": "s", "secret": {"secretName": "db"}}]), Store())
    target = volume_dir(manager, "secret", "s")
    assert (target / "password").read_bytes() == b"s3cret"
    assert (target / "user").read_bytes() == b"admin"


@pytest.mark.parametrize(("volume", "message"), [
    ({"configMap": {"name": "nope"}}, 'configmap "nope" not found'),
    ({"secret": {"secretName": "nope"}}, 'secret "nope" not found'),
    ({"configMap": {"name": "app", "items": [{"key": "shade", "path": "s"}]}},
     "configmap references non-existent config key: shade"),
    ({"secret": {"secretName": "db", "items": [{"key": "token", "path": "t"}]}},
     "references non-existent secret key: token"),
    ({"hostPath": {"path": "/nonexistent-harness-test/dir", "type": "Directory"}},
     "hostPath type check failed: /nonexistent-harness-test/dir is not a directory"),
    ({"persistentVolumeClaim": {"claimName": "c"}}, 'volume type "persistentVolumeClaim" is not supported by this '
                                                    "kubelet"),
])
async def test_setup_failures_carry_upstream_messages(manager: VolumeManager, volume: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(VolumeError) as caught:
        await manager.prepare(make_pod([{"name": "v", **volume}]), Store())
    assert caught.value.message == message
    assert caught.value.event_message == f'MountVolume.SetUp failed for volume "v" : {message}'
    assert caught.value.reason == "FailedMount"


async def test_optional_sources_tolerate_missing_objects_and_keys(manager: VolumeManager) -> None:
    pod = make_pod([
        {"name": "a", "configMap": {"name": "nope", "optional": True}},
        {"name": "b", "secret": {"secretName": "db", "optional": True,
                                 "items": [{"key": "token", "path": "t"}, {"key": "user", "path": "u"}]}},
    ])
    await manager.prepare(pod, Store())
    empty = volume_dir(manager, "configmap", "a")
    assert sorted(os.listdir(empty)) == sorted([DATA_DIR, os.readlink(empty / DATA_DIR)])
    assert (volume_dir(manager, "secret", "b") / "u").read_text() == "admin"
    assert not (volume_dir(manager, "secret", "b") / "t").exists()


async def test_other_volumes_are_set_up_even_when_one_fails(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "bad", "configMap": {"name": "nope"}}, {"name": "good", "emptyDir": {}}])
    with pytest.raises(VolumeError):
        await manager.prepare(pod, Store())
    assert volume_dir(manager, "empty-dir", "good").is_dir()


# ---------------------------------------------------------------------------------------------- atomic updates


async def test_refresh_swaps_data_atomically(manager: VolumeManager) -> None:
    store = Store()
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}])
    await manager.prepare(pod, store)
    target = volume_dir(manager, "configmap", "cfg")
    first = os.readlink(target / DATA_DIR)

    await manager.prepare(pod, store)  # unchanged content: nothing is rewritten
    assert os.readlink(target / DATA_DIR) == first

    store.objects[("ConfigMap", "app")] = {"data": {"color": "green", "shape": "round"}}
    await manager.prepare(pod, store)
    second = os.readlink(target / DATA_DIR)
    assert second != first
    assert not (target / first).exists()            # the old generation is gone
    assert (target / "color").read_text() == "green"
    assert (target / "shape").read_text() == "round"
    assert not lexists(target / "size")     # a removed key loses its symlink
    assert not lexists(target / "blob")
    assert not lexists(target / "..data_tmp")


def test_atomic_writer_rejects_bad_paths(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    for bad, message in [("../x", "must not contain '..'"), ("/abs", "must be relative path"),
                         ("..x/y", "must not start with '..'"), ("", "must not be empty")]:
        with pytest.raises(ValueError, match=message):
            writer.write({bad: FileProjection(b"", 0o644)})
    assert writer.write({"./a//b": FileProjection(b"1", 0o644)})
    assert (tmp_path / "a" / "b").read_bytes() == b"1"
    assert not writer.write({"a/b": FileProjection(b"1", 0o644)})
    assert writer.write({"a/b": FileProjection(b"1", 0o600)})  # a mode change is a change


# ---------------------------------------------------------------------------------------------- downward API, projected


async def test_downward_api_files(manager: VolumeManager) -> None:
    volume = {"name": "info", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}, "mode": 0o400},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}
    pod = make_pod([volume], resources={"limits": {"memory": "64Mi"}})
    await manager.prepare(pod, Store())
    target = volume_dir(manager, "downward-api", "info")
    assert (target / "labels").read_text() == 'app="web"\ntier="front"'
    assert (target / "annotations").read_text() == 'a="x\\ny"'
    assert (target / "name").read_text() == "web"
    assert (target / "ns").read_text() == "default"
    assert (target / "uid").read_text() == UID
    assert mode(target / "uid") == 0o400
    assert (target / "tier").read_text() == "front"
    assert (target / "mem").read_text() == "64"

    pod["metadata"]["labels"]["tier"] = "back"  # a refresh follows metadata changes
    await manager.prepare(pod, Store())
    assert (target / "tier").read_text() == "back"


async def test_projected_sources(tmp_path: Path, manager: VolumeManager) -> None:
    volume = {"name": "all", "projected": {"defaultMode": 0o640, "sources": [
        {"configMap": {"name": "app", "items": [{"key": "color", "path": "color"}]}},
        {"secret": {"name": "db", "items": [{"key": "user", "path": "creds/user"}]}},
        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
    ]}}
    await manager.prepare(make_pod([volume]), Store())
    target = volume_dir(manager, "projected", "all")
    assert (target / "color").read_text() == "blue"
    assert (target / "creds" / "user").read_text() == "admin"
    assert (target / "name").read_text() == "web"
    assert (target / "token").read_text() == ""  # placeholder without a token source
    assert mode(target / "color") == 0o640

    async def tokens(pod: dict[str, Any], source: dict[str, Any]) -> str:
        return f"token-for-{pod['metadata']['name']}-{source['expirationSeconds']}"

    with_tokens = VolumeManager(tmp_path / "pods2", token_source=tokens)
    await with_tokens.prepare(make_pod([volume]), Store())
    assert (with_tokens.pods_dir / UID / "volumes/kubernetes.io~projected/all/token").read_text() == \
        "token-for-web-3600"


async def test_projected_missing_object_fails(manager: VolumeManager) -> None:
    volume = {"name": "p", "projected": {"sources": [{"configMap": {"name": "nope"}}, {"secret": {"name": "gone"}}]}}
    with pytest.raises(VolumeError) as caught:
        await manager.prepare(make_pod([volume]), Store())
    assert caught.value.message == '[configmap "nope" not found, secret "gone" not found]'


# ---------------------------------------------------------------------------------------------- hostPath


async def test_host_path_types(tmp_path: Path, manager: VolumeManager) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "file").write_text("x")
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(host / "sock"))
        ok = [
            ("DirectoryOrCreate", host / "made/deep"),
            ("Directory", host),
            ("FileOrCreate", host / "newfile"),
            ("File", host / "file"),
            ("Socket", host / "sock"),
            ("CharDevice", Path("/dev/null")),
            ("", host / "untyped"),
        ]
        for kind, path in ok:
            pod = make_pod([{"name": "h", "hostPath": {"path": str(path), "type": kind}}])
            assert await manager.prepare(pod, Store()) == {"h": path}
        assert (host / "made/deep").is_dir() and mode(host / "made/deep") == 0o755
        assert (host / "newfile").is_file()
        assert (host / "untyped").is_dir()

        bad = [
            ("Directory", host / "file", f"hostPath type check failed: {host / 'file'} is not a directory"),
            ("File", host, f"hostPath type check failed: {host} is not a file"),
            ("File", host / "missing", f"hostPath type check failed: {host / 'missing'} is not a file"),
            ("Socket", host / "file", f"hostPath type check failed: {host / 'file'} is not a socket file"),
            ("CharDevice", host / "file", f"hostPath type check failed: {host / 'file'} is not a character device"),
            ("BlockDevice", host / "file", f"hostPath type check failed: {host / 'file'} is not a block device"),
            ("DirectoryOrCreate", host / "file", f"hostPath type check failed: {host / 'file'} is not a directory"),
            ("FileOrCreate", host / "nodir/f", f"open {host / 'nodir/f'}: no such file or directory"),
            ("Weird", host, "Weird is an invalid volume type"),
        ]
        for kind, path, message in bad:
            pod = make_pod([{"name": "h", "hostPath": {"path": str(path), "type": kind}}])
            with pytest.raises(VolumeError) as caught:
                await manager.prepare(pod, Store())
            assert caught.value.message == message, kind
    finally:
        listener.close()


# ---------------------------------------------------------------------------------------------- mounts


async def test_mounts_read_only_and_sub_paths(tmp_path: Path, manager: VolumeManager) -> None:
    host = tmp_path / "host"
    host.mkdir()
    volumes = [{"name": "cfg", "configMap": {"name": "app"}}, {"name": "scratch", "emptyDir": {}},
               {"name": "h", "hostPath": {"path": str(host)}}]
    mounts: list[dict[str, Any]] = [
        {"name": "cfg", "mountPath": "/etc/app"},
        {"name": "cfg", "mountPath": "/etc/color", "subPath": "color", "readOnly": False},
        {"name": "scratch", "mountPath": "/data"},
        {"name": "scratch", "mountPath": "/logs", "subPath": "logs/main"},
        {"name": "scratch", "mountPath": "/per-pod", "subPathExpr": "pods/$(POD_NAME)"},
        {"name": "h", "mountPath": "/host", "readOnly": True},
    ]
    pod = make_pod(volumes, mounts)
    paths = await manager.prepare(pod, Store())
    container = pod["spec"]["containers"][0]
    result = manager.mounts(pod, container, paths, env=["POD_NAME=web"])
    cfg = volume_dir(manager, "configmap", "cfg")
    scratch = volume_dir(manager, "empty-dir", "scratch")
    assert result == [
        Mount("/etc/app", str(cfg), read_only=True),
        Mount("/etc/color", str(cfg / os.readlink(cfg / DATA_DIR) / "color"), read_only=True),
        Mount("/data", str(scratch), read_only=False),
        Mount("/logs", str(scratch / "logs/main"), read_only=False),
        Mount("/per-pod", str(scratch / "pods/web"), read_only=False),
        Mount("/host", str(host), read_only=True),
    ]
    assert (scratch / "logs/main").is_dir()
    assert mode(scratch) == 0o777 and mode(scratch / "logs/main") == 0o777


@pytest.mark.parametrize(("mount", "message"), [
    ({"name": "scratch", "mountPath": "/x", "subPath": "/etc"}, "error SubPath `/etc` must not be an absolute path"),
    ({"name": "scratch", "mountPath": "/x", "subPath": "a/../../b"},
     "unable to provision SubPath `a/../../b`: must not contain '..'"),
    ({"name": "nope", "mountPath": "/x"}, 'cannot find volume "nope" to mount into container "main"'),
    ({"name": "scratch", "mountPath": "/x", "subPath": "escape"},
     'failed to prepare subPath for volumeMount "scratch" of container "main"'),
    ({"name": "scratch", "mountPath": "/x", "subPath": "escape/inner"},
     'failed to create subPath directory for volumeMount "scratch" of container "main"'),
    ({"name": "scratch", "mountPath": "/x", "subPathExpr": "$(MISSING)"}, "missing value for MISSING"),
])
async def test_bad_mounts(manager: VolumeManager, mount: dict[str, Any], message: str) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}}], [mount])
    paths = await manager.prepare(pod, Store())
    (paths["scratch"] / "escape").symlink_to("/etc")  # a symlink planted by the container
    with pytest.raises(ContainerConfigError) as caught:
        manager.mounts(pod, pod["spec"]["containers"][0], paths, env=[])
    assert caught.value.message == message


# ---------------------------------------------------------------------------------------------- tmpfs and cleanup


@needs(root=True)
async def test_memory_empty_dir_is_a_sized_tmpfs_and_cleanup_unmounts(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}},
                    {"name": "cfg", "configMap": {"name": "app"}}])
    paths = await manager.prepare(pod, Store())
    await manager.prepare(pod, Store())  # idempotent: no second mount on top
    target = paths["mem"]
    assert mount_points(manager.pods_dir) == [target]
    fs = os.statvfs(target)
    assert fs.f_blocks * fs.f_frsize == 4 * 2**20
    (target / "f").write_text("in memory")
    assert manager.pods() == [UID]

    manager.cleanup(UID)
    assert mount_points(manager.pods_dir) == []
    assert not (manager.pods_dir / UID).exists()
    assert manager.pods() == []
    manager.cleanup(UID)  # idempotent


async def test_cleanup_keeps_other_pod_files_and_is_idempotent(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}, {"name": "scratch", "emptyDir": {}}])
    await manager.prepare(pod, Store())
    (manager.pods_dir / UID / "etc-hosts").write_text("127.0.0.1 localhost\n")
    assert manager.pods() == [UID]
    manager.cleanup(UID)
    assert not (manager.pods_dir / UID / "volumes").exists()
    assert (manager.pods_dir / UID / "etc-hosts").exists()
    manager.cleanup(UID)
    manager.cleanup("never-seen")
    assert manager.pods() == []
