"""The cluster spec: the default cluster.yaml, node naming and addressing, overrides, validation errors."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cluster.spec import DEFAULT_SPEC_PATH, ClusterSpec, Node, SpecError, load_spec, parse_spec


def default_data() -> dict[str, Any]:
    data = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    assert isinstance(data, dict)
    return data


def test_default_spec_is_the_documented_cluster() -> None:
    spec = load_spec()
    assert (spec.masters, spec.workers) == (1, 2)
    assert spec.network == ipaddress.IPv4Network("192.168.56.0/24")
    assert spec.gateway == ipaddress.IPv4Address("192.168.56.1")
    assert spec.pod_cidr == ipaddress.IPv4Network("10.244.0.0/16")
    assert spec.service_cidr == ipaddress.IPv4Network("10.96.0.0/12")
    assert spec.cluster_dns == ipaddress.IPv4Address("10.96.0.10")
    assert spec.kubernetes_service_ip == ipaddress.IPv4Address("10.96.0.1")
    assert spec.box == "debian/bookworm64"
    assert set(spec.sizes) == {"masters", "workers"}
    assert all(size.cpus >= 1 and size.memory >= 512 for size in spec.sizes.values())


def test_nodes_are_named_and_addressed_from_the_plan() -> None:
    assert load_spec().nodes() == [
        Node("master-1", "master", "192.168.56.10"),
        Node("worker-1", "worker", "192.168.56.21"),
        Node("worker-2", "worker", "192.168.56.22"),
    ]
    assert [n.group for n in load_spec().nodes()] == ["masters", "workers", "workers"]


def test_overrides_change_counts_and_keep_the_rest() -> None:
    spec = load_spec()
    big = spec.with_overrides(masters=3, workers=20)
    names = [n.name for n in big.nodes()]
    assert names[:4] == ["master-1", "master-2", "master-3", "worker-1"]
    assert names[-1] == "worker-20"
    assert big.nodes()[2].ip == "192.168.56.12"
    assert big.nodes()[-1].ip == "192.168.56.40"
    assert big.network == spec.network and big.sizes == spec.sizes
    assert spec.with_overrides() == spec
    assert spec.with_overrides(workers=0).nodes() == [Node("master-1", "master", "192.168.56.10")]
    assert (spec.masters, spec.workers) == (1, 2), "the original is unchanged"


@pytest.mark.parametrize(
    ("masters", "workers", "field"),
    [(2, None, "masters"), (0, None, "masters"), (None, 21, "workers"), (None, -1, "workers"), (True, None, "masters")],
)
def test_overrides_are_validated(masters: Any, workers: Any, field: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec().with_overrides(masters=masters, workers=workers)
    assert err.value.field == field
    assert str(err.value).startswith(f"cluster spec: {field}: ")


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("dotted", "value", "field", "fragment"),
    [
        ("masters", 2, "masters", "must be 1 or 3"),
        ("masters", "one", "masters", "must be an integer"),
        ("workers", 21, "workers", "between 0 and 20"),
        ("workers", _DELETE, "workers", "is required"),
        ("network.cidr", "192.168.56.1/24", "network.cidr", "not an IPv4 network"),
        ("network.cidr", "192.168.56.0/31", "network.cidr", "too small"),
        ("network.gateway", "192.168.57.1", "network.gateway", "host address of 192.168.56.0/24"),
        ("network.gateway", "192.168.56.255", "network.gateway", "not its network or broadcast"),
        ("network.gateway", "192.168.56.10", "network.first_master", "already used by network.gateway"),
        ("network.first_master", "10.0.0.10", "network.first_master", "master-1 would get 10.0.0.10"),
        ("network.first_worker", "192.168.56.254", "network.first_worker", "worker-2 would get 192.168.56.255"),
        ("network.first_worker", "192.168.56.10", "network.first_worker", "already used by master-1"),
        ("network.first_worker", "bogus", "network.first_worker", "not an IPv4 address"),
        ("network.extra", 1, "network.extra", "unknown field"),
        ("nodes", 3, "nodes", "unknown field"),
        ("pod_cidr", "192.168.0.0/16", "pod_cidr", "overlaps the node network"),
        ("pod_cidr", "10.244.0.0/25", "pod_cidr", "one /24 per node"),
        ("service_cidr", "10.240.0.0/12", "service_cidr", "overlaps pod_cidr"),
        ("cluster_dns", "10.244.0.10", "cluster_dns", "host address of 10.96.0.0/12"),
        ("cluster_dns", "10.96.0.1", "cluster_dns", "`kubernetes` service"),
        ("vagrant.box", "", "vagrant.box", "must not be empty"),
        ("vagrant.sizes.workers.cpus", 0, "vagrant.sizes.workers.cpus", "at least 1"),
        ("vagrant.sizes.masters.memory", 256, "vagrant.sizes.masters.memory", "at least 512"),
        ("vagrant.sizes.masters.memory", _DELETE, "vagrant.sizes.masters.memory", "is required"),
        ("vagrant.sizes.masters", [], "vagrant.sizes.masters", "must be a mapping"),
        ("vagrant.network.cidr", "192.168.57.0/33", "vagrant.network.cidr", "not an IPv4 network"),
        ("vagrant.network.first_worker", "192.168.56.21", "vagrant.network.first_worker", "would get 192.168.56.21"),
        ("vagrant.network.extra", 1, "vagrant.network.extra", "unknown field"),
        ("vagrant.workers", 21, "vagrant.workers", "between 0 and 20"),
        ("vagrant.masters", 2, "vagrant.masters", "must be 1 or 3"),
    ],
)
def test_invalid_specs_name_the_field(dotted: str, value: Any, field: str, fragment: str) -> None:
    data = copy.deepcopy(default_data())
    _set(data, dotted, value)
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert err.value.field == field, str(err.value)
    assert fragment in str(err.value)


def test_three_masters_must_not_run_into_the_workers() -> None:
    data = default_data()
    data["network"]["first_worker"] = "192.168.56.12"
    parse_spec(data)  # one master: fine
    data["masters"] = 3
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert err.value.field == "network.first_worker"
    assert "worker-1 would get 192.168.56.12, already used by master-3" in str(err.value)


def test_vms_have_their_own_network_and_counts() -> None:
    """`vagrant.network` and `vagrant.masters/workers` shape the VMs; the local provider's cluster is unchanged."""
    spec = load_spec()
    vms = spec.for_vms()
    assert (vms.masters, vms.workers) == (1, 1)
    assert vms.network == ipaddress.IPv4Network("192.168.57.0/24")
    assert vms.gateway == ipaddress.IPv4Address("192.168.57.1")
    assert [(n.name, n.ip) for n in vms.nodes()] == [("master-1", "192.168.57.10"), ("worker-1", "192.168.57.21")]
    assert (vms.pod_cidr, vms.service_cidr, vms.sizes) == (spec.pod_cidr, spec.service_cidr, spec.sizes)
    assert vms.with_overrides(masters=3, workers=2).nodes()[-1] == Node("worker-2", "worker", "192.168.57.22")
    data = default_data()
    for key in ("network", "masters", "workers"):
        del data["vagrant"][key]
    plain = parse_spec(data).for_vms()
    assert (plain.network, plain.masters, plain.workers) == (spec.network, spec.masters, spec.workers)


def test_vagrant_section_is_optional_only_in_part() -> None:
    data = default_data()
    del data["vagrant"]
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert err.value.field == "vagrant.sizes.masters"


def test_load_spec_reports_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="cannot read") as err:
        load_spec(missing)
    assert err.value.field == str(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("masters: [1\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(bad)


def test_load_spec_round_trips_a_custom_file(tmp_path: Path) -> None:
    data = default_data()
    data["masters"], data["workers"] = 3, 0
    path = tmp_path / "ha.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    assert isinstance(spec, ClusterSpec)
    assert [n.name for n in spec.nodes()] == ["master-1", "master-2", "master-3"]
