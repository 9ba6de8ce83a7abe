"""Host-local IPAM: which addresses are handed out, in which order, and that the files are the only state."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.kubelet.network.ipam import (
    HostLocalIPAM,
    IPAMError,
    IPAMExhausted,
    all_allocations,
    dir_name,
    release_everywhere,
)


def test_gateway_is_the_first_host_and_is_never_handed_out(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    assert ipam.gateway == "10.244.1.1"
    assert ipam.prefix_len == 24
    assert ipam.size == 253
    assert ipam.allocate("pod-a") == "10.244.1.2"


def test_every_address_but_network_gateway_and_broadcast_is_handed_out_once(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/29", root=tmp_path)
    got = [ipam.allocate(f"pod-{i}") for i in range(5)]
    assert got == [f"10.244.1.{i}" for i in range(2, 7)]
    with pytest.raises(IPAMExhausted, match=r"10\.244\.1\.0/29.*all 5"):
        ipam.allocate("pod-6")


def test_the_same_owner_gets_the_address_it_already_holds(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    first = ipam.allocate("pod-a")
    ipam.allocate("pod-b")
    assert ipam.allocate("pod-a") == first
    assert ipam.ip_of("pod-a") == first
    assert ipam.ip_of("pod-z") is None


def test_a_freed_address_is_not_reused_at_once(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    a = ipam.allocate("pod-a")
    ipam.allocate("pod-b")
    assert ipam.release("pod-a") == [a]
    assert ipam.allocate("pod-c") == "10.244.1.4"


def test_the_search_wraps_round_to_the_start_of_the_range(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/29", root=tmp_path)
    for i in range(5):
        ipam.allocate(f"pod-{i}")
    ipam.release("pod-1")  # 10.244.1.3
    ipam.release("pod-3")  # 10.244.1.5
    assert ipam.allocate("pod-x") == "10.244.1.3"
    assert ipam.allocate("pod-y") == "10.244.1.5"


def test_state_lives_in_files_and_survives_a_new_object(tmp_path: Path) -> None:
    HostLocalIPAM("10.244.1.0/24", root=tmp_path).allocate("pod-a")
    again = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    assert again.allocated() == {"10.244.1.2": "pod-a"}
    assert again.allocate("pod-b") == "10.244.1.3"
    assert (tmp_path / "10.244.1.0_24" / "10.244.1.3").read_text().strip() == "pod-b"
    assert (tmp_path / "10.244.1.0_24" / "last_reserved_ip").read_text().strip() == "10.244.1.3"


def test_a_garbled_last_reserved_file_restarts_from_the_beginning(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    ipam.allocate("pod-a")
    (ipam.dir / "last_reserved_ip").write_text("not an ip")
    assert ipam.allocate("pod-b") == "10.244.1.3"
    (ipam.dir / "last_reserved_ip").write_text("192.168.0.1")  # outside the range
    assert ipam.allocate("pod-c") == "10.244.1.4"


def test_release_ip_frees_one_address_and_checks_its_owner(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    a = ipam.allocate("pod-a")
    b = ipam.allocate("pod-b")
    assert ipam.release_ip(a, owner="pod-b") is False
    assert ipam.release_ip(a) is True
    assert ipam.release_ip(a) is False
    assert ipam.release_ip(b, owner="pod-b") is True
    assert ipam.allocated() == {}
    with pytest.raises(IPAMError):
        ipam.release_ip("../etc")


def test_release_of_an_owner_without_addresses_is_a_no_op(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    assert ipam.release("nobody") == []
    assert ipam.allocated() == {}


def test_ranges_of_an_earlier_pod_cidr_are_kept_apart_and_released_everywhere(tmp_path: Path) -> None:
    old = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    new = HostLocalIPAM("10.244.7.0/24", root=tmp_path)
    old.allocate("pod-a")
    new.allocate("pod-a")
    new.allocate("pod-b")
    assert all_allocations(tmp_path) == {"10.244.1.0/24": {"10.244.1.2": "pod-a"},
                                         "10.244.7.0/24": {"10.244.7.2": "pod-a", "10.244.7.3": "pod-b"}}
    assert sorted(release_everywhere("pod-a", root=tmp_path)) == ["10.244.1.2", "10.244.7.2"]
    assert new.allocated() == {"10.244.7.3": "pod-b"}
    assert old.allocated() == {}


def test_the_directory_is_named_after_the_normalised_cidr(tmp_path: Path) -> None:
    assert dir_name("10.244.1.7/24") == "10.244.1.0_24"
    ipam = HostLocalIPAM("10.244.1.7/24", root=tmp_path)
    assert ipam.cidr == "10.244.1.0/24"
    assert ipam.dir == tmp_path / "10.244.1.0_24"


@pytest.mark.parametrize("cidr", ["nonsense", "10.244.1.0/31", "10.244.1.1/32", "fd00::/64"])
def test_unusable_ranges_are_refused(tmp_path: Path, cidr: str) -> None:
    with pytest.raises(IPAMError):
        HostLocalIPAM(cidr, root=tmp_path)


def test_a_slash_30_has_exactly_one_pod_address(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/30", root=tmp_path)
    assert ipam.allocate("pod-a") == "10.244.1.2"
    with pytest.raises(IPAMExhausted):
        ipam.allocate("pod-b")


def test_an_owner_with_a_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IPAMError):
        HostLocalIPAM("10.244.1.0/24", root=tmp_path).allocate("a\nb")


def test_concurrent_threads_never_share_an_address(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/24", root=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ipam.allocate, [f"pod-{i}" for i in range(100)]))
    assert len(set(got)) == 100
    assert len(ipam.allocated()) == 100


def _allocate_many(args: tuple[str, int]) -> list[str]:
    root, worker = args
    ipam = HostLocalIPAM("10.244.1.0/24", root=Path(root))
    return [ipam.allocate(f"w{worker}-pod-{i}") for i in range(30)]


def test_concurrent_processes_never_share_an_address(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_allocate_many, [(str(tmp_path), w) for w in range(4)])
    everything = [ip for batch in results for ip in batch]
    assert len(everything) == 120
    assert len(set(everything)) == 120
    owners = HostLocalIPAM("10.244.1.0/24", root=tmp_path).allocated()
    assert sorted(owners) == sorted(everything)
    assert not [p for p in (tmp_path / "10.244.1.0_24").iterdir() if p.name.startswith(".")]


def test_exhaustion_when_all_taken_by_racers_reports_full(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.1.0/28", root=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: _try(ipam, f"pod-{i}"), range(20)))
    assert sum(1 for o in outcomes if o == "full") == 20 - 13
    assert len({o for o in outcomes if o != "full"}) == 13


def _try(ipam: HostLocalIPAM, owner: str) -> str:
    try:
        return ipam.allocate(owner)
    except IPAMExhausted:
        return "full"


def test_a_gratuitous_arp_announces_the_address_from_itself() -> None:
    from harness.kubelet.network.pods import gratuitous_arp

    frame = gratuitous_arp("0a:58:0a:f4:01:05", "10.244.1.5")
    mac, ip = bytes.fromhex("0a580af40105"), bytes([10, 244, 1, 5])
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[:8] == b"\x00\x01\x08\x00\x06\x04\x00\x01"  # Ethernet/IPv4, request
    assert arp[8:14] == mac and arp[14:18] == ip and arp[18:24] == b"\x00" * 6 and arp[24:28] == ip
    assert len(frame) == 42
