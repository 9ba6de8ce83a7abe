"""Every machine: supervisord runs every program its groups need, none FATAL or in BACKOFF; the machine is
who the inventory says (hostname, IP); the harness virtualenv is there."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.support import CONTROL_PLANE_PROGRAMS, NODE_PROGRAMS, InfraCluster

testinfra_hosts = ["ansible://all"]


def expected_programs(cluster: InfraCluster, machine: Any) -> set[str]:
    groups = machine.groups
    programs = {"harness-log-agent"}
    if "masters" in groups:
        programs |= set(CONTROL_PLANE_PROGRAMS)
    if machine.name == cluster.masters[0].name:
        programs |= {"harness-prometheus", "harness-log-aggregator"}
    if "workers" in groups:
        programs |= set(NODE_PROGRAMS)
    return programs


@pytest.fixture
def machine(host: Any, cluster: InfraCluster) -> Any:
    return cluster.machines[host.backend.get_hostname()]


def test_supervisord_runs(host: Any, cluster: InfraCluster) -> None:
    pid = host.run(f"{cluster.supervisorctl} pid")
    assert pid.rc == 0 and pid.stdout.strip().isdigit(), f"supervisord does not answer: {pid.stdout}{pid.stderr}"


def test_every_expected_program_is_running(host: Any, cluster: InfraCluster, machine: Any) -> None:
    for program in sorted(expected_programs(cluster, machine)):
        supervised = host.supervisor(program, supervisorctl_path=f"{cluster.venv}/bin/supervisorctl",
                                     supervisorctl_conf="/etc/harness/supervisor/supervisord.conf")
        assert supervised.is_running, (f"{program} on {machine.name} is {supervised.status}\n"
                                       + cluster.log_tail(machine.name, program))


def test_no_program_is_fatal_or_backing_off(cluster: InfraCluster, machine: Any) -> None:
    programs = cluster.programs(machine.name)
    assert set(programs) == expected_programs(cluster, machine), programs
    bad = {p: state for p, (state, _pid) in programs.items() if state in ("FATAL", "BACKOFF", "EXITED", "STOPPED")}
    assert not bad, f"{machine.name}: {bad}\n" + "\n".join(cluster.log_tail(machine.name, p) for p in bad)


def test_hostname_and_ip_match_the_inventory(host: Any, machine: Any) -> None:
    assert host.check_output("hostname") == machine.name
    addresses = host.check_output("ip -o -4 addr show")
    assert f" {machine.ip}/" in addresses, addresses


def test_the_harness_virtualenv_is_there(host: Any, cluster: InfraCluster) -> None:
    harness = host.file(f"{cluster.venv}/bin/harness")
    assert harness.exists and harness.mode & 0o111, f"{cluster.venv}/bin/harness is missing or not executable"
    assert host.run(f"{cluster.venv}/bin/python -c 'import harness, supervisor'").rc == 0
