"""`harness box build`'s pure parts: what a box is made of, its digest, the files it carries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.cluster import box

KEY = "ssh-rsa AAAAB3Nza vagrant insecure public key\n"


def inputs(**changes: object) -> box.Inputs:
    base = {"packages": ("openssh-server", "runc"), "requirements": ("aiohttp==3.14.5",), "lock": "aiohttp==3.14.5\n",
            "public_key": KEY}
    return box.Inputs(**{**base, **changes})  # type: ignore[arg-type]


def test_the_digest_names_the_inputs() -> None:
    assert inputs().digest == inputs().digest
    assert inputs(packages=("runc", "openssh-server")).digest == inputs().digest, "the order of packages is no input"
    for change in ({"packages": ("openssh-server", "runc", "etcd-server")}, {"lock": "aiohttp==3.14.6\n"},
                   {"requirements": ("aiohttp==3.14.6",)}, {"public_key": "ssh-ed25519 AAAA other\n"},
                   {"suite": "trixie"}):
        assert inputs(**change).digest != inputs().digest, change


def test_the_box_has_what_the_roles_install() -> None:
    """The roles' package variables, read from their defaults: the box and the roles cannot drift apart."""
    packages = box.role_packages()
    assert {"etcd-server", "prometheus", "runc", "iptables", "python3-venv"} <= set(packages)
    made = box.inputs()
    assert set(packages) | set(box.BASE_PACKAGES) == set(made.packages)
    assert "linux-image-amd64" in made.packages and "openssh-server" in made.packages


def test_the_virtualenv_has_the_runtime_dependencies_and_a_build_backend() -> None:
    requirements = box.requirements()
    assert "aiohttp==3.14.5" in requirements and "cryptography==50.0.2" in requirements
    assert any(r.startswith("setuptools") for r in requirements), "the offline install of harness builds with it"
    assert not any(r.startswith(("pytest", "ruff", "mypy")) for r in requirements), "no development tools on VMs"


def test_a_missing_role_variable_is_named(tmp_path: Path) -> None:
    for role, _ in box.ROLE_PACKAGE_VARS:
        (tmp_path / role / "defaults").mkdir(parents=True)
        (tmp_path / role / "defaults" / "main.yml").write_text("other: 1\n")
    with pytest.raises(box.BoxError, match=r"ansible/roles/common/defaults/main\.yml has no common_packages"):
        box.role_packages(tmp_path)


def test_added_digest_reads_the_box_vagrant_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path))
    assert box.added_digest("harness/bookworm") is None
    where = tmp_path / "boxes" / "harness-VAGRANTSLASH-bookworm" / "0" / "libvirt"
    where.mkdir(parents=True)
    (where / "harness-box.json").write_text(json.dumps({"digest": "abc123"}))
    assert box.added_digest("harness/bookworm") == "abc123"
    (where / "harness-box.json").write_text("not json")
    assert box.added_digest("harness/bookworm") is None


def test_the_box_vagrantfile_boots_its_own_kernel_from_a_place_qemu_can_read() -> None:
    made = box.Box(inputs())
    text = box.GUEST_VAGRANTFILE.replace("{digest}", made.digest).replace("{{", "{").replace("}}", "}")
    assert f'"harness-{made.digest}-#{{f}}"' in text
    assert 'boot = "/var/lib/libvirt/boot"' in text
    assert "root=/dev/vda" in text and "lv.kernel = kernel" in text


def test_too_little_space_is_refused_with_what_to_do(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize / 2**30
    with pytest.raises(box.BoxError, match="HARNESS_BOX_CACHE"):
        box.check_space(tmp_path, needed_gib=int(free) + 1000)
    box.check_space(tmp_path, needed_gib=0)


def test_the_pool_images_of_an_unversioned_box() -> None:
    """As vagrant-libvirt 0.11 names them: the box, version 0, the time it was added."""
    image = "harness-VAGRANTSLASH-bookworm_vagrant_box_image_0_1796691605_box.img"
    assert image.startswith(box.pool_image_prefix("harness/bookworm"))
