"""The Vagrantfile: `vagrant validate` passes and Vagrant sees the machines the cluster spec plans.

Nothing is written to the user's home or the repository: VAGRANT_HOME and VAGRANT_DOTFILE_PATH
point into a temporary directory, and the inventory-writing test works on a copy of the files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cluster.spec import load_spec
from tests.tools import needs

REPO = Path(__file__).resolve().parents[2]
VAGRANT = shutil.which("vagrant")

pytestmark = needs("vagrant", packages=("vagrant-libvirt",))


@pytest.fixture(scope="module")
def vagrant_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("vagrant")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "HARNESS_"))}
    env.update(
        VAGRANT_HOME=str(tmp / "home"),
        VAGRANT_DOTFILE_PATH=str(tmp / "dotfile"),
        VAGRANT_DEFAULT_PROVIDER="libvirt",
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_CWD=str(REPO),
    )
    yield env


def vagrant(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    assert VAGRANT is not None
    return subprocess.run(
        [VAGRANT, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def machines(env: dict[str, str], **extra: str) -> list[str]:
    """Machine names from `vagrant status --machine-readable` (works with no hypervisor running)."""
    done = vagrant(env, "status", "--machine-readable", **extra)
    assert done.returncode == 0, done.stderr + done.stdout
    names: list[str] = []
    for line in done.stdout.splitlines():
        fields = line.split(",")
        if len(fields) >= 4 and fields[2] == "metadata" and fields[3] == "provider":
            names.append(fields[1])
    return names


def test_vagrant_validate_passes(vagrant_env: dict[str, str], tmp_path: Path) -> None:
    for name in ("Vagrantfile", "cluster.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    done = vagrant({**vagrant_env, "VAGRANT_CWD": str(tmp_path)}, "validate")
    assert done.returncode == 0, done.stderr + done.stdout
    assert not (tmp_path / "inventory").exists(), "only up/provision/reload write the inventory"
    done = vagrant(vagrant_env, "validate")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "validated successfully" in done.stdout


def test_vagrant_sees_the_spec_machines(vagrant_env: dict[str, str]) -> None:
    """The VMs are the spec's `vagrant` section's: its counts and its own node network."""
    assert machines(vagrant_env) == [n.name for n in load_spec().for_vms().nodes()]


def test_count_overrides_match_the_spec_overrides(vagrant_env: dict[str, str]) -> None:
    expected = [n.name for n in load_spec().for_vms().with_overrides(masters=3, workers=2).nodes()]
    assert machines(vagrant_env, HARNESS_MASTERS="3", HARNESS_WORKERS="2") == expected


def test_invalid_counts_are_refused(vagrant_env: dict[str, str]) -> None:
    done = vagrant(vagrant_env, "validate", HARNESS_MASTERS="2")
    assert done.returncode != 0
    assert "masters: must be 1 or 3, got 2" in done.stdout + done.stderr


def test_up_writes_the_static_inventory_from_the_spec(vagrant_env: dict[str, str], tmp_path: Path) -> None:
    """On `up`, the Vagrantfile has harness write inventory/vagrant/hosts.yml, the PKI and the admin kubeconfig (what
    Vagrant's Ansible provisioner then uses); `up --help` loads it without creating machines."""
    for name in ("Vagrantfile", "cluster.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    done = vagrant({**vagrant_env, "VAGRANT_CWD": str(tmp_path)}, "up", "--help",
                   HARNESS_BIN=str(Path(sys.executable).parent / "harness"),
                   HARNESS_LIBVIRT_DRIVER="qemu")  # no KVM probe: this test makes no VM
    assert done.returncode == 0, done.stderr + done.stdout
    home = tmp_path / "inventory" / "vagrant"
    inventory = yaml.safe_load((home / "hosts.yml").read_text())
    groups = inventory["all"]["children"]
    spec = load_spec().for_vms()
    nodes = spec.nodes()
    for group in ("masters", "workers"):
        hosts = groups[group]["hosts"]
        assert {name: h["ansible_host"] for name, h in hosts.items()} == {
            n.name: n.ip for n in nodes if n.group == group
        }
        for host in hosts.values():
            assert (host["ansible_user"], host["ansible_become"]) == ("vagrant", True)
            assert host["ansible_ssh_private_key_file"].startswith(vagrant_env["VAGRANT_HOME"])
            assert host["pki_files"] and host["kubeconfig_files"]
    assert list(groups["etcd"]["hosts"]) == [n.name for n in nodes if n.role == "master"]
    cluster_vars = {k: v for k, v in inventory["all"]["vars"].items() if k in spec.cluster_vars()}
    assert cluster_vars == spec.cluster_vars()  # what `harness up` puts in a local inventory
    assert cluster_vars["node_network"] == "192.168.57.0/24"
    assert (inventory["all"]["vars"]["harness_source_dir"], inventory["all"]["vars"]["harness_venv_dir"]) == (
        "/vagrant", "/opt/harness/venv")
    assert (home / "pki" / "ca.crt").is_file() and (home / "kubeconfig").is_file()
    assert (home / "provider").read_text().strip() == "vagrant"
    assert inventory["all"]["vars"]["vm_accel"] == "qemu"
    assert not (tmp_path / ".vagrant").exists(), "machine state goes to VAGRANT_DOTFILE_PATH"
