"""The runtime's pure parts: the OCI config built for a request, cgroup layout detection, the shim's arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.kubelet.runtime import cgroups
from harness.kubelet.runtime.shim import ShimError, exit_code_of, parse_args
from harness.kubelet.runtime.spec import DEFAULT_CAPABILITIES, build_spec, cpu_quota, cpu_shares
from harness.kubelet.runtime.types import ContainerRequest, Mount


def request(**kw: Any) -> ContainerRequest:
    fields: dict[str, Any] = {
        "id": "c-123",
        "pod_uid": "uid",
        "pod_namespace": "default",
        "pod_name": "web-0",
        "name": "app",
        "attempt": 0,
        "image_ref": "busybox",
        "image_id": "sha256:0",
        "rootfs": Path("/images/busybox"),
        "args": ["sh", "-c", "echo hi"],
        "env": ["A=1"],
    }
    fields.update(kw)
    return ContainerRequest(**fields)


def test_process() -> None:
    spec = build_spec(request(uid=1000, gid=2000, working_dir="/app"), Path("/state/c-123/rootfs"), False)
    assert spec["ociVersion"] == "1.0.2"
    process = spec["process"]
    assert process["args"] == ["sh", "-c", "echo hi"]
    assert process["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"]
    assert process["cwd"] == "/app"
    assert process["user"] == {"uid": 1000, "gid": 2000}
    assert process["terminal"] is False and process["noNewPrivileges"] is False
    caps = process["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == DEFAULT_CAPABILITIES
    assert "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES and len(DEFAULT_CAPABILITIES) == 14
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
    assert spec["root"] == {"path": "/state/c-123/rootfs", "readonly": False}


def test_env_path_kept_and_nofile_override() -> None:
    spec = build_spec(request(env=["PATH=/bin", "B=2"]), Path("/r"), False, nofile=20000)
    assert spec["process"]["env"] == ["PATH=/bin", "B=2"]
    assert spec["process"]["rlimits"][0]["hard"] == 20000


def test_hostname() -> None:
    assert build_spec(request(hostname="h1"), Path("/r"), False)["hostname"] == "h1"
    assert build_spec(request(), Path("/r"), False)["hostname"] == "web-0"
    assert build_spec(request(pod_name="x" * 62 + "-abc"), Path("/r"), False)["hostname"] == "x" * 62


def test_mounts() -> None:
    mounts = [
        Mount("/data", "/var/lib/vol", read_only=True),
        Mount("/rw", "/var/lib/vol2"),
        Mount("/cache", "", kind="tmpfs"),
    ]
    spec = build_spec(request(mounts=mounts), Path("/r"), False)
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/data",
        "/rw",
        "/cache",
    ]
    by_dest = {m["destination"]: m for m in spec["mounts"]}
    assert "ro" in by_dest["/sys"]["options"] and "ro" in by_dest["/sys/fs/cgroup"]["options"]
    assert by_dest["/data"] == {
        "destination": "/data",
        "type": "bind",
        "source": "/var/lib/vol",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert by_dest["/rw"]["options"] == ["rbind", "rprivate"]
    assert by_dest["/cache"]["type"] == "tmpfs" and "ro" not in by_dest["/cache"]["options"]


def test_namespaces() -> None:
    new = build_spec(request(), Path("/r"), False)["linux"]["namespaces"]
    assert new == [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]
    joined = build_spec(request(netns_path="/run/netns/pod"), Path("/r"), True)["linux"]["namespaces"]
    assert {"type": "network", "path": "/run/netns/pod"} in joined
    assert {"type": "cgroup"} in joined


def test_linux_defaults() -> None:
    linux = build_spec(request(cgroup_parent="/kubepods/pod1"), Path("/r"), False)["linux"]
    assert linux["cgroupsPath"] == "/kubepods/pod1/c-123"
    assert "/proc/kcore" in linux["maskedPaths"] and "/sys/firmware" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"] and "/proc/sysrq-trigger" in linux["readonlyPaths"]
    assert [d["path"] for d in linux["devices"]] == [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ]
    rules = linux["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in rules


def test_resources() -> None:
    r = build_spec(request(memory_limit=64 << 20, cpu_limit_milli=500, cpu_request_milli=250), Path("/r"), False)
    resources = r["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20}
    assert resources["cpu"] == {"shares": 256, "quota": 50000, "period": 100000}
    no_swap = build_spec(request(memory_limit=1 << 20), Path("/r"), False, no_swap=True)["linux"]["resources"]
    assert no_swap["memory"] == {"limit": 1 << 20, "swap": 1 << 20}
    best_effort = build_spec(request(), Path("/r"), False)["linux"]["resources"]
    assert "memory" not in best_effort and best_effort["cpu"] == {"shares": 2}


@pytest.mark.parametrize(
    ("request_milli", "limit_milli", "shares"),
    [(None, None, 2), (0, None, 2), (1, None, 2), (100, None, 102), (1000, None, 1024), (None, 500, 512)],
)
def test_cpu_shares(request_milli: int | None, limit_milli: int | None, shares: int) -> None:
    assert cpu_shares(request_milli, limit_milli) == shares


def test_cpu_quota() -> None:
    assert cpu_quota(1500) == 150000
    assert cpu_quota(5) == 1000  # the kubelet's minimum: 1 ms per period


# --------------------------------------------------------------------------------------------------- cgroups

HYBRID = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""
V1 = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line)
V2 = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_detect_layouts() -> None:
    hybrid = cgroups.detect(HYBRID)
    assert (hybrid.mode, hybrid.v2, hybrid.unified, hybrid.memory) == (
        "hybrid",
        False,
        Path("/sys/fs/cgroup/unified"),
        Path("/sys/fs/cgroup/memory"),
    )
    v1 = cgroups.detect(V1)
    assert (v1.mode, v1.unified) == ("v1", None)
    v2 = cgroups.detect(V2)
    assert (v2.mode, v2.v2, v2.unified, v2.memory) == ("v2", True, Path("/sys/fs/cgroup"), None)
    assert cgroups.detect("").mode == "none"
    assert cgroups.detect().mode in ("v1", "v2", "hybrid", "none")


def test_mountinfo_escapes() -> None:
    text = "34 30 0:30 / /mnt/my\\040cgroups rw - cgroup cgroup rw,memory\n"
    assert cgroups.parse_mountinfo(text) == [("/mnt/my cgroups", "cgroup", "rw,memory")]


def test_read_oom_kill(tmp_path: Path) -> None:
    v1 = cgroups.CgroupLayout("v1", None, tmp_path / "memory")
    leaf = tmp_path / "memory" / "harness" / "c1"
    leaf.mkdir(parents=True)
    (leaf / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroups.memory_cgroup_dir("/harness/c1", v1) == leaf
    assert cgroups.read_oom_kill("/harness/c1", v1) == 2
    assert cgroups.read_oom_kill("/harness/gone", v1) == 0

    v2 = cgroups.CgroupLayout("v2", tmp_path / "unified", None)
    leaf2 = tmp_path / "unified" / "harness" / "c1"
    leaf2.mkdir(parents=True)
    (leaf2 / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cgroups.read_oom_kill("/harness/c1", v2) == 1
    assert cgroups.read_oom_kill("/harness/c1", cgroups.CgroupLayout("none", None, None)) == 0


def test_swap_limit_supported(tmp_path: Path) -> None:
    v1 = cgroups.CgroupLayout("v1", None, tmp_path)
    assert not cgroups.swap_limit_supported(v1)
    (tmp_path / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroups.swap_limit_supported(v1)
    assert cgroups.swap_limit_supported(cgroups.CgroupLayout("v2", tmp_path, None))
    assert not cgroups.swap_limit_supported(cgroups.CgroupLayout("none", None, None))


# --------------------------------------------------------------------------------------------------- shim


def test_shim_args() -> None:
    opts = parse_args(["--id", "c1", "--state-dir=/s", "--runc-root", "/r", "--log-max-files", "3"])
    assert opts["--id"] == "c1" and opts["--state-dir"] == "/s" and opts["--runc-root"] == "/r"
    assert opts["--runc"] == "runc" and opts["--log-max-size"] == str(10 * 1024 * 1024)
    assert opts["--log-max-files"] == "3"
    for bad in (["--id", "c1"], ["--id"], ["--nope", "x", "--id", "c", "--state-dir", "s", "--runc-root", "r"]):
        with pytest.raises(ShimError):
            parse_args(bad)


def test_exit_codes() -> None:
    assert exit_code_of(0) == 0
    assert exit_code_of(3 << 8) == 3
    assert exit_code_of(9) == 137  # killed by SIGKILL
    assert exit_code_of(15) == 143
