"""The node image store: references, archives (OCI layout, docker save), builtin busybox (layers: test_image_layers).

Every store lives under tmp_path; archives are built here, byte by byte, with tarfile.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from harness.kubelet.images import busybox, oci
from harness.kubelet.images.imagestore import (
    ImageInUse,
    ImageNotFound,
    ImagePullError,
    ImageStore,
    NoRegistryPuller,
)
from harness.kubelet.images.layers import LayerError
from harness.kubelet.images.refs import ImageError, InvalidReference, normalize_ref, split_for_display
from tests.tools import needs
from tests.unit.image_builders import Entry, base_layers, config_blob, layer, oci_archive, sha, write_tar

REPO = Path(__file__).resolve().parents[2]
needs_busybox = needs("busybox")
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")



# -- references ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "expected"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("foo/bar:1", "docker.io/foo/bar:1"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/foo/bar", "docker.io/foo/bar:latest"),
    ("registry:5000/x", "registry:5000/x:latest"),
    ("registry:5000/x:v1.2_3", "registry:5000/x:v1.2_3"),
    ("localhost/x", "localhost/x:latest"),
    ("quay.io/a/b/c:tag", "quay.io/a/b/c:tag"),
    ("Example.COM/a", "Example.COM/a:latest"),
    ("[::1]:5000/a", "[::1]:5000/a:latest"),
    ("a-b__c/d.e", "docker.io/a-b__c/d.e:latest"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
    (f"x:1@{DIGEST}", f"docker.io/library/x:1@{DIGEST}"),
    ("localhost:5000", "docker.io/library/localhost:5000"),
])
def test_normalize_ref(ref: str, expected: str) -> None:
    assert normalize_ref(ref) == expected
    assert normalize_ref(expected) == expected  # normalizing is idempotent


@pytest.mark.parametrize("ref", ["", " busybox", "Busybox", "foo/Bar", "a:b:c", "x:", "x@sha256:abc", "-x",
                                 "a//b", "x:" + "t" * 129, "x@sha256:" + "AB" * 32, "a" * 64, "foo/bar:-1",
                                 "registry:port/x", "ex_ample.com/a"])
def test_invalid_references(ref: str) -> None:
    with pytest.raises(InvalidReference, match="invalid reference format") as caught:
        normalize_ref(ref)
    assert isinstance(caught.value, ImageError)
    assert f'"{ref}"' in str(caught.value)


def test_split_for_display() -> None:
    assert split_for_display("docker.io/library/busybox:1.35.0") == ("docker.io/library/busybox", "1.35.0")
    assert split_for_display(f"docker.io/library/busybox@{DIGEST}") == ("docker.io/library/busybox", "<none>")


# -- archives -------------------------------------------------------------------------------------------


def check_base_rootfs(rootfs: Path) -> None:
    assert (rootfs / "bin/tool").read_bytes() == b"#!/bin/sh\necho tool\n"
    assert os.readlink(rootfs / "link") == "bin/tool"
    assert (rootfs / "bin/hard").stat().st_ino == (rootfs / "bin/tool").stat().st_ino
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == ["keep"]
    assert sorted(p.name for p in (rootfs / "data").iterdir()) == ["new"]
    assert stat.S_IMODE((rootfs / "data").stat().st_mode) == 0o750
    assert stat.S_IMODE(rootfs.stat().st_mode) == 0o755


def test_import_oci_archive(store: ImageStore, tmp_path: Path) -> None:
    layers = base_layers()
    config = config_blob(layers, Entrypoint=["/bin/tool"], Cmd=["--flag"], Env=["A=1", "PATH=/bin"],
                         WorkingDir="/data", User="1000:1000")
    archive, manifest_digest = oci_archive(tmp_path / "img.tar", layers, config,
                                           {oci.ANNOTATION_REF_NAME: "example.com/team/app:2.0"})
    [image] = store.import_archive(archive)
    assert image.id == sha(config)
    assert image.refs == ("example.com/team/app:2.0",)
    assert image.config.entrypoint == ["/bin/tool"] and image.config.cmd == ["--flag"]
    assert image.config.env == ["A=1", "PATH=/bin"]
    assert (image.config.working_dir, image.config.user) == ("/data", "1000:1000")
    assert image.size == len(b"#!/bin/sh\necho tool\n") + len("keep") + len("new") + len("bin/tool")
    check_base_rootfs(image.rootfs)
    # by reference, normalized or not, by digest, by id and by id prefix
    assert store.get("example.com/team/app:2.0") == image
    assert store.get(f"example.com/team/app@{manifest_digest}") == image
    assert store.get(image.id) == image
    assert store.get(image.id[:19]) == image
    assert store.get(image.id.removeprefix("sha256:")[:12]) == image
    assert store.get(image.id.removeprefix("sha256:")[:6]) is None  # could be an image name: `image: cafe`
    assert store.get("example.com/team/app:3.0") is None
    assert store.get("Not A Ref") is None
    assert [i.id for i in store.list()] == [image.id]
    assert list((store.root / "tmp").iterdir()) == []
    # importing it again changes nothing
    assert store.import_archive(archive) == [image]
    assert len(list((store.root / "images").iterdir())) == 1


def test_import_names_from_containerd_annotation_and_ref_option(store: ImageStore, tmp_path: Path) -> None:
    layers = [layer(Entry("f", data=b"1"))]
    named, _ = oci_archive(tmp_path / "a.tar", layers, config_blob(layers),
                           {oci.ANNOTATION_CONTAINERD_NAME: "docker.io/library/web:1",
                            oci.ANNOTATION_REF_NAME: "1"})
    assert store.import_archive(named)[0].refs == ("docker.io/library/web:1",)
    layers2 = [layer(Entry("g", data=b"2"))]
    tag_only, _ = oci_archive(tmp_path / "b.tar", layers2, config_blob(layers2), {oci.ANNOTATION_REF_NAME: "latest"})
    [untagged] = store.import_archive(tag_only)
    assert untagged.refs == ()
    assert store.get(untagged.id) == untagged
    [named_now] = store.import_archive(tag_only, ref="local/thing")
    assert named_now.id == untagged.id and named_now.refs == ("docker.io/local/thing:latest",)
    with pytest.raises(InvalidReference):
        store.import_archive(tag_only, ref="Bad Ref")


def test_import_multi_platform_index_picks_this_platform(store: ImageStore, tmp_path: Path) -> None:
    layers = [layer(Entry("mine", data=b"1"))]
    config = config_blob(layers)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_MANIFEST,
                           "config": {"mediaType": oci.MEDIA_OCI_CONFIG, "digest": sha(config), "size": len(config)},
                           "layers": [{"mediaType": oci.MEDIA_OCI_LAYER, "digest": sha(layers[0]),
                                       "size": len(layers[0])}]}).encode()
    os_name, arch = oci.host_platform()
    other = json.dumps({"schemaVersion": 2, "config": {}}).encode()
    inner = json.dumps({"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_INDEX, "manifests": [
        {"mediaType": oci.MEDIA_OCI_MANIFEST, "digest": sha(other), "size": len(other),
         "platform": {"os": "linux", "architecture": "s390x-not-us"}},
        {"mediaType": oci.MEDIA_OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
         "platform": {"os": os_name, "architecture": arch}},
        {"mediaType": oci.MEDIA_OCI_MANIFEST, "digest": DIGEST, "size": 1,   # not in the archive
         "platform": {"os": os_name, "architecture": arch, "variant": "v9"}},
    ]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": oci.MEDIA_OCI_INDEX, "digest": sha(inner), "size": len(inner),
         "annotations": {oci.ANNOTATION_CONTAINERD_NAME: "multi:1"}}]}).encode()
    files = {"oci-layout": b"{}", "index.json": index}
    for blob in (inner, manifest, other, config, *layers):
        files[f"blobs/sha256/{sha(blob).removeprefix('sha256:')}"] = blob
    [image] = store.import_archive(write_tar(tmp_path / "multi.tar", files))
    assert image.id == sha(config) and image.refs == ("docker.io/library/multi:1",)
    assert (image.rootfs / "mine").exists()


def docker_save_archive(path: Path, layers: list[bytes], config: bytes, tags: list[str], *,
                        legacy_symlink: bool = False, compress: bool = False) -> Path:
    """`docker save` as docker < 25 writes it: <config hex>.json, <id>/layer.tar, manifest.json."""
    files = {f"{sha(config).removeprefix('sha256:')}.json": config}
    symlinks = {}
    names = []
    for i, blob in enumerate(layers):
        name = f"{i:064x}/layer.tar"
        if legacy_symlink and i == len(layers) - 1:
            files[f"shared{i}.tar"] = blob
            symlinks[name] = f"../shared{i}.tar"
        else:
            files[name] = blob
        names.append(name)
    files["manifest.json"] = json.dumps([{"Config": f"{sha(config).removeprefix('sha256:')}.json",
                                          "RepoTags": tags, "Layers": names}]).encode()
    files["repositories"] = b"{}"
    return write_tar(path, files, symlinks, compress=compress)


@pytest.mark.parametrize("compress", [False, True])
def test_import_docker_save_archive(store: ImageStore, tmp_path: Path, compress: bool) -> None:
    layers = [layer(*e) for e in ([Entry("bin", "dir", mode=0o755), Entry("bin/a", data=b"a"),
                                   Entry("bin/b", data=b"b")], [Entry("bin/.wh.b"), Entry("bin/c", data=b"c")])]
    config = config_blob(layers, Cmd=["/bin/a"])
    archive = docker_save_archive(tmp_path / "save.tar", layers, config, ["foo/bar:1", "foo/bar:latest"],
                                  legacy_symlink=True, compress=compress)
    [image] = store.import_archive(archive)
    assert image.id == sha(config)
    assert image.refs == ("docker.io/foo/bar:1", "docker.io/foo/bar:latest")
    assert image.config.cmd == ["/bin/a"]
    assert sorted(p.name for p in (image.rootfs / "bin").iterdir()) == ["a", "c"]
    assert store.get("foo/bar") == image


def test_docker_save_layer_is_checked_against_diff_ids(store: ImageStore, tmp_path: Path) -> None:
    layers = [layer(Entry("a", data=b"a"))]
    config = config_blob([layer(Entry("a", data=b"other"))])
    archive = docker_save_archive(tmp_path / "bad.tar", layers, config, ["x:1"])
    with pytest.raises(oci.ArchiveError, match="corrupt"):
        store.import_archive(archive)
    assert store.list() == []


def test_not_image_archives(store: ImageStore, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 200)
    with pytest.raises(oci.ArchiveError, match=r"not a tar file.*expected an image archive"):
        store.import_archive(text)
    plain = write_tar(tmp_path / "plain.tar", {"hello.txt": b"hi"})
    with pytest.raises(oci.ArchiveError, match=r"neither index\.json nor manifest\.json"):
        store.import_archive(plain)
    with pytest.raises(oci.ArchiveError, match="no such file"):
        store.import_archive(tmp_path / "missing.tar")


def test_corrupt_blob_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layers = [layer(Entry("a", data=b"a"))]
    config = config_blob(layers)
    archive, _ = oci_archive(tmp_path / "img.tar", layers, config, {oci.ANNOTATION_REF_NAME: "x:1"})
    files: dict[str, bytes] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            extracted = tar.extractfile(member)
            assert extracted is not None
            files[member.name] = extracted.read()
    files[f"blobs/sha256/{sha(layers[0]).removeprefix('sha256:')}"] = layer(Entry("a", data=b"tampered"))
    with pytest.raises(oci.ArchiveError, match="corrupt"):
        store.import_archive(write_tar(tmp_path / "tampered.tar", files))
    assert store.list() == []


def test_failed_import_leaves_nothing_and_crash_leftovers_are_cleaned(store: ImageStore, tmp_path: Path) -> None:
    good = layer(Entry("ok", data=b"1"))
    bad = layer(Entry("/abs", data=b"1"))
    archive, _ = oci_archive(tmp_path / "img.tar", [good, bad], config_blob([good, bad]),
                             {oci.ANNOTATION_REF_NAME: "x:1"})
    with pytest.raises(LayerError, match="absolute path"):
        store.import_archive(archive)
    assert store.list() == [] and store.get("x:1") is None
    assert list((store.root / "tmp").iterdir()) == []
    assert list((store.root / "images").iterdir()) == []
    # what a writer killed mid-import leaves: a staging directory nobody holds, a temporary file
    (store.root / "tmp" / "stage-crashed" / "image-x" / "rootfs").mkdir(parents=True)
    (store.root / "tmp" / "index.json.tmp").write_text("{")
    layers = [good]
    ok, _ = oci_archive(tmp_path / "ok.tar", layers, config_blob(layers), {oci.ANNOTATION_REF_NAME: "x:2"})
    store.import_archive(ok)
    assert list((store.root / "tmp").iterdir()) == []


def test_export_and_import_round_trip(store: ImageStore, tmp_path: Path) -> None:
    layers = base_layers()
    config = config_blob(layers, Cmd=["sh"])
    archive, _ = oci_archive(tmp_path / "img.tar", layers, config, {oci.ANNOTATION_REF_NAME: "round/trip:1"})
    [image] = store.import_archive(archive)
    exported = tmp_path / "exported.tar"
    store.export_archive("round/trip:1", exported)
    other = ImageStore(tmp_path / "other")
    [again] = other.import_archive(exported)
    assert (again.id, again.refs, again.config, again.size) == (image.id, image.refs, image.config, image.size)
    check_base_rootfs(again.rootfs)
    with tarfile.open(exported) as tar:
        names = tar.getnames()
        docker_manifest = tar.extractfile("manifest.json")
        assert docker_manifest is not None
        assert json.loads(docker_manifest.read())[0]["RepoTags"] == ["round/trip:1"]
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)


def test_remove(store: ImageStore, tmp_path: Path) -> None:
    layers = [layer(Entry("a", data=b"a"))]
    archive = docker_save_archive(tmp_path / "s.tar", layers, config_blob(layers), ["app:1", "app:2"])
    [image] = store.import_archive(archive)
    blobs = set(os.listdir(store.blobs_dir))
    assert len(blobs) == 3  # config, layer, manifest
    store.remove("app:1")  # another tag is left: only untagged
    assert store.get("app:1") is None
    assert store.get("app:2") is not None and image.rootfs.is_dir()
    store.remove("app:2")  # the last one: the image goes
    assert store.get(image.id) is None and not image.rootfs.exists()
    assert os.listdir(store.blobs_dir) == []
    with pytest.raises(ImageNotFound, match='image "app:2" not found'):
        store.remove("app:2")
    [image] = store.import_archive(archive)
    store.remove(image.id.removeprefix("sha256:")[:12])  # by id: every tag goes with it
    assert store.list() == []
    assert list((store.root / "tmp").iterdir()) == []


def test_remove_refuses_an_image_in_use(store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers = [layer(Entry("a", data=b"a"))]
    [image] = store.import_archive(docker_save_archive(tmp_path / "s.tar", layers, config_blob(layers), ["app:1"]))
    from harness.kubelet.images import imagestore as store_module
    monkeypatch.setattr(store_module, "overlay_lower_dirs", lambda: {str(image.rootfs)})
    with pytest.raises(ImageInUse, match="in use"):
        store.remove("app:1")
    assert store.get("app:1") == image


async def test_no_registry_puller(store: ImageStore) -> None:
    with pytest.raises(ImagePullError) as caught:
        await NoRegistryPuller().pull("nginx", store)
    assert caught.value.reason == "ErrImagePull"
    assert caught.value.message == (
        'failed to pull and unpack image "docker.io/library/nginx:latest": no registry is reachable from this node; '
        "import the image with `harness images import FILE`")
    with pytest.raises(ImagePullError) as invalid:
        await NoRegistryPuller().pull("Nginx", store)
    assert invalid.value.reason == "InvalidImageName"
    assert "invalid reference format" in invalid.value.message


def test_reading_an_empty_store_creates_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "none")
    assert store.list() == [] and store.get("busybox") is None
    with pytest.raises(ImageNotFound):
        store.remove("busybox")
    assert not (tmp_path / "none").exists()


# -- the builtin busybox image ------------------------------------------------------------------------------


@needs_busybox
def test_builtin_busybox(store: ImageStore) -> None:
    started = time.perf_counter()
    image = store.ensure_builtin()
    assert time.perf_counter() - started < 2.0
    version = busybox.inspect().version
    assert image.refs == tuple(sorted(["docker.io/library/busybox:latest", f"docker.io/library/busybox:{version}"]))
    assert image.id == sha((store.blobs_dir / image.id.removeprefix("sha256:")).read_bytes())
    assert image.config.cmd == ["sh"] and image.config.entrypoint == []
    assert image.config.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    root = image.rootfs
    ran = subprocess.run([root / "bin/busybox", "echo", "hi"], capture_output=True, check=True)
    assert ran.stdout == b"hi\n"
    ran = subprocess.run([root / "bin/sh", "-c", "echo from sh"], capture_output=True, check=True)
    assert ran.stdout == b"from sh\n"
    assert os.readlink(root / "usr/bin/wget") == "../../bin/busybox"
    assert (root / "usr/bin/wget").resolve() == (root / "bin/busybox").resolve()
    applets = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if "/" in applet:
            assert os.path.lexists(root / applet), applet
    passwd = (root / "etc/passwd").read_text()
    for line in ("root:x:0:0:", "nobody:x:65534:65534:", ":x:1000:1000:"):
        assert line in passwd
    assert "nobody:x:65534:" in (root / "etc/group").read_text()
    for empty in ("etc/hosts", "etc/resolv.conf", "etc/hostname"):
        assert (root / empty).is_file() and (root / empty).stat().st_size == 0
    for d in ("dev", "proc", "sys"):
        assert (root / d).is_dir() and list((root / d).iterdir()) == []
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "root").is_dir() and (root / "home").is_dir()
    assert "<html>" in (root / "var/www/index.html").read_text()
    assert image.size >= (root / "bin/busybox").stat().st_size
    assert store.get("busybox") == image and store.get(f"busybox:{version}") == image
    assert store.list() == [image]


@needs_busybox
def test_builtin_is_idempotent_fast_and_stable(store: ImageStore, tmp_path: Path) -> None:
    first = store.ensure_builtin()
    meta = first.rootfs.parent / "image.json"
    meta_mtime, index_mtime = meta.stat().st_mtime_ns, store.index_path.stat().st_mtime_ns
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        assert store.ensure_builtin() == first
        timings.append(time.perf_counter() - started)
    assert sorted(timings)[2] < 0.005, timings  # a stat and two small reads, no hashing
    assert (meta.stat().st_mtime_ns, store.index_path.stat().st_mtime_ns) == (meta_mtime, index_mtime)
    # the same binary gives the same image id in another store
    assert ImageStore(tmp_path / "elsewhere").ensure_builtin().id == first.id
    # removed, it comes back
    store.remove("busybox")  # the version tag is still there: only untagged
    assert store.get("busybox:latest") is None
    assert store.get(f"busybox:{busybox.inspect().version}") is not None and first.rootfs.is_dir()
    store.remove(first.id)
    assert store.list() == []
    assert store.ensure_builtin() == first


@needs_busybox
def test_builtin_leaves_a_user_imported_busybox_alone(store: ImageStore, tmp_path: Path) -> None:
    builtin = store.ensure_builtin()
    layers = [layer(Entry("mine", data=b"1"))]
    archive = docker_save_archive(tmp_path / "s.tar", layers, config_blob(layers), ["busybox:latest"])
    [mine] = store.import_archive(archive)
    assert store.ensure_builtin().id == builtin.id
    assert store.get("busybox").id == mine.id  # type: ignore[union-attr]
    (store.root / "builtin.json").unlink()  # the slow path must not take the tag back either
    assert store.ensure_builtin().id == builtin.id
    assert store.get("busybox").id == mine.id  # type: ignore[union-attr]


@needs_busybox
def test_builtin_from_two_processes_at_once(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    script = ("import sys; from pathlib import Path; from harness.kubelet.images.imagestore import ImageStore; "
              "print(ImageStore(Path(sys.argv[1])).ensure_builtin().id)")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1] for r in results]
    ids = {r[0].decode().strip() for r in results}
    assert len(ids) == 1
    store = ImageStore(root)
    assert [i.id for i in store.list()] == list(ids)
    assert len(json.loads(store.index_path.read_text())["manifests"]) == 2
    assert list((root / "tmp").iterdir()) == []


def test_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    dynamic = Path(sys.executable).resolve()
    if not busybox.is_dynamic(dynamic):
        pytest.skip("the python binary is static")
    store = ImageStore(tmp_path / "s", busybox_binary=dynamic)
    with pytest.raises(busybox.BusyboxError, match="dynamically linked"):
        store.ensure_builtin()
    with pytest.raises(busybox.BusyboxError, match="busybox-static"):
        ImageStore(tmp_path / "s", busybox_binary=tmp_path / "nope").ensure_builtin()


@needs_busybox
def test_builtin_follows_the_busybox_binary(tmp_path: Path) -> None:
    binary = tmp_path / "busybox"
    binary.write_bytes(busybox.BUSYBOX.read_bytes())
    binary.chmod(0o755)
    store = ImageStore(tmp_path / "store", busybox_binary=binary)
    first = store.ensure_builtin()
    os.utime(binary)  # touched, same bytes: same image
    assert store.ensure_builtin() == first
    with open(binary, "ab") as f:  # a new binary (trailing bytes do not stop an ELF from running)
        f.write(b"\0")
    second = store.ensure_builtin()
    assert second.id != first.id and second.refs == first.refs
    assert store.get("busybox") == second
    assert store.get(first.id) is not None  # the old image stays, untagged, for containers that may use it
    binary.unlink()  # busybox-static uninstalled: the image made from it still serves
    assert store.ensure_builtin() == second


def test_import_an_oci_layout_directory(store: ImageStore, tmp_path: Path) -> None:
    layers = base_layers()
    archive, _ = oci_archive(tmp_path / "img.tar", layers, config_blob(layers), {oci.ANNOTATION_REF_NAME: "dir:1"})
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    before = sorted(layout.rglob("*"))
    [image] = store.import_archive(layout)
    assert image.refs == ("docker.io/library/dir:1",)
    check_base_rootfs(image.rootfs)
    assert sorted(layout.rglob("*")) == before  # the source is left as it was (its blobs are copied)
