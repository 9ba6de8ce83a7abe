"""The Vagrant provider's pure parts: its machines from the inventory, SSH as user vagrant, what it shows."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.cluster import hostpackages, vagrant
from harness.cluster.inventory import write_inventory
from harness.cluster.local import NodeSpec

NODES = [NodeSpec("master-1", "master", "192.168.57.10"), NodeSpec("worker-1", "worker", "192.168.57.21")]


def provider(tmp_path: Path) -> vagrant.VagrantProvider:
    hosts = write_inventory(tmp_path / "hosts.yml", "vagrant", NODES, Path("/k"), ssh_user="vagrant")
    return vagrant.VagrantProvider("vagrant", spec_path=Path("cluster.yaml"), root=tmp_path, hosts=hosts)


def test_machines_come_from_the_inventory(tmp_path: Path) -> None:
    assert provider(tmp_path).machines() == {"master-1": {"role": "master", "ip": "192.168.57.10"},
                                             "worker-1": {"role": "worker", "ip": "192.168.57.21"}}
    assert vagrant.VagrantProvider("x", spec_path=Path("c"), hosts=tmp_path / "none.yml").machines() == {}


def test_ssh_is_user_vagrant_with_sudo_for_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAGRANT_HOME", "/vh")
    argv = provider(tmp_path).ssh_command("worker-1", ["supervisorctl", "status"])
    assert argv[:3] == ["ssh", "-i", "/vh/insecure_private_key"]
    assert argv[-5:] == ["vagrant@192.168.57.21", "sudo", "sh", "-c", "'supervisorctl status'"]
    assert "-t" in provider(tmp_path).ssh_command("worker-1")
    with pytest.raises(vagrant.VagrantError, match="machine 'worker-9' not found"):
        provider(tmp_path).ssh_command("worker-9")


def test_status_reads_vagrants_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(tmp_path)
    monkeypatch.setattr(vagrant.VagrantProvider, "states", lambda self: {"master-1": "running",
                                                                         "worker-1": "shutoff"})
    monkeypatch.setattr(vagrant, "_port_answers", lambda ip, port: ip == "192.168.57.10")
    status = p.status()
    assert status["master-1"] | {} == {"role": "master", "ip": "192.168.57.10", "state": "running", "alive": True,
                                       "sshd": True}
    assert (status["worker-1"]["alive"], status["worker-1"]["sshd"]) == (False, False)


def test_the_environment_tells_the_vagrantfile_the_shape_and_the_box(tmp_path: Path) -> None:
    env = provider(tmp_path).env(NODES)
    assert (env["HARNESS_MASTERS"], env["HARNESS_WORKERS"], env["HARNESS_BOX"]) == ("1", "1", "harness/bookworm")
    assert env["HARNESS_DRIVER"] == "1" and env["VAGRANT_DEFAULT_PROVIDER"] == "libvirt"


def test_progress_shows_what_happens_not_every_domain_setting() -> None:
    assert vagrant._worth_showing("==> master-1: Waiting for domain to get an IP address...")
    assert not vagrant._worth_showing("==> master-1:  -- Memory:            2048M")
    assert not vagrant._worth_showing("==> master-1: No version detected for harness/bookworm, using timestamp")
    assert not vagrant._worth_showing("    master-1: an indented detail")


def test_a_cluster_larger_than_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(vagrant.VagrantError, match="fewer workers"):
        vagrant.check_memory(NODES, {"master": 10**8, "worker": 10**8})
    vagrant.check_memory(NODES, {"master": 1, "worker": 1})


def test_vm_tools_are_the_tables_vm_packages() -> None:
    vm = set(hostpackages.names(hostpackages.VM))
    assert set(vagrant.TOOLS.values()) - {"vagrant"} <= vm
    assert not vm & set(hostpackages.names(hostpackages.HOST)), "`make deps` does not install VM packages"


def test_missing_tools_are_named_with_their_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vagrant.shutil, "which", lambda name, path=None: None if name == "virsh" else "/x")
    with pytest.raises(vagrant.VagrantError) as err:
        provider(tmp_path).create(NODES, progress=lambda line: None)
    assert str(err.value) == "VMs need virsh (Debian package libvirt-clients): run `make vagrant-deps`"


def test_a_failed_vagrant_command_says_what_it_printed_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "bin" / "vagrant"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho '==> master-1: Waiting for SSH to become available...'\n"
                      "echo 'Timed out while waiting for the machine to boot.' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    seen: list[str] = []
    with pytest.raises(vagrant.VagrantError) as err:
        provider(tmp_path).vagrant("up", nodes=NODES, progress=seen.append)
    assert seen == ["  master-1: Waiting for SSH to become available..."]
    assert "`vagrant up` failed (exit 1)" in str(err.value)
    assert "Timed out while waiting for the machine to boot." in str(err.value)


def test_vms_that_do_not_fit_on_the_disk_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vagrant, "DISK_PER_VM_GIB", 10**9)
    with pytest.raises(vagrant.VagrantError, match=r"GiB free; 2 VMs need about .* GiB for their disks"):
        vagrant.check_disk(NODES, tmp_path / "images")
    monkeypatch.setattr(vagrant, "DISK_PER_VM_GIB", 0)
    vagrant.check_disk(NODES, tmp_path / "images")


def test_libvirts_chains_and_the_rules_that_jump_to_them_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = {"filter": "-P INPUT ACCEPT\n-N LIBVIRT_INP\n-N LIBVIRT_FWO\n-A INPUT -j LIBVIRT_INP\n"
                       "-A FORWARD -j LIBVIRT_FWO\n-A LIBVIRT_INP -i virbr1 -p udp -m udp --dport 53 -j ACCEPT\n"
                       "-A INPUT -i hk-x -j ACCEPT\n",
             "nat": "-P POSTROUTING ACCEPT\n-N LIBVIRT_PRT\n-A POSTROUTING -j LIBVIRT_PRT\n",
             "mangle": "-P PREROUTING ACCEPT\n"}

    def fake_run(*argv: str, **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), 0, rules[argv[2]], "")

    monkeypatch.setattr(vagrant, "_run", fake_run)
    assert vagrant._libvirt_rules("iptables") == {
        "filter": (["-A INPUT -j LIBVIRT_INP", "-A FORWARD -j LIBVIRT_FWO"], ["LIBVIRT_INP", "LIBVIRT_FWO"]),
        "nat": (["-A POSTROUTING -j LIBVIRT_PRT"], ["LIBVIRT_PRT"])}


def test_a_daemon_runs_when_its_pid_file_names_a_live_process_of_that_name(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path
    pid_file = tmp_path / "virtlogd.pid"

    def fake_path(text: str) -> Path:
        return pid_file if text == "/run/virtlogd.pid" else real(text)

    monkeypatch.setattr(vagrant, "Path", fake_path)
    assert not vagrant._daemon_runs("virtlogd")  # no pid file
    pid_file.write_text(str(os.getpid()))
    assert not vagrant._daemon_runs("virtlogd"), "a live process of another name is no virtlogd"
    pid_file.write_text("not a pid")
    assert not vagrant._daemon_runs("virtlogd")
