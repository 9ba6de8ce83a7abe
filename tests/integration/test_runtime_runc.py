"""The runc runtime end to end: real containers from a busybox root file system built here, under real shims.

Needs root, runc and busybox-static. Every test gets its own state directory and runc root under tmp_path;
the `runtime` fixture removes whatever a test leaves behind (containers, shims, mounts, runc state).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.kubelet.runtime import cgroups
from harness.kubelet.runtime.crilog import read_log
from harness.kubelet.runtime.runc import ContainerRuntimeError, ExecTimeoutError, RuncRuntime, unmount
from harness.kubelet.runtime.types import ContainerInfo, ContainerRequest, Mount
from harness.util import mountinfo
from harness.util.rotation import rotated_files
from tests.tools import needs

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
REPO = Path(__file__).resolve().parents[2]

pytestmark = needs("runc", "busybox", root=True)

CRI_LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([FP]) (.*)$")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal image: busybox and its applets as symlinks."""
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "tmp").mkdir(mode=0o1777)
    return root


def runc_ids(runc_root: Path) -> list[str]:
    if not runc_root.exists():
        return []
    out = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True)
    return out.stdout.split()


async def cleanup(rt: RuncRuntime) -> None:
    """Remove everything a test may have left, even after failures."""
    for info in rt.list():
        with contextlib.suppress(Exception):
            await rt.remove(info.id)
    force_cleanup(rt)


def force_cleanup(rt: RuncRuntime) -> None:
    """What remove() could not: shims, runc containers, mounts, files."""
    if rt.state_dir.exists():
        for d in rt.state_dir.iterdir():
            pid_text = (d / "shim.pid").read_text() if (d / "shim.pid").exists() else ""
            if pid_text.strip().isdigit():
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{pid_text.strip()}/cmdline").read_bytes()
                    if d.name.encode() in cmdline:
                        os.kill(int(pid_text), signal.SIGKILL)
    for id in runc_ids(rt.runc_root):
        subprocess.run(["runc", "--root", str(rt.runc_root), "delete", "--force", id], capture_output=True)
    if rt.state_dir.exists():
        for d in rt.state_dir.iterdir():
            with contextlib.suppress(Exception):
                unmount(d / "rootfs")
        shutil.rmtree(rt.state_dir, ignore_errors=True)


def process_exists(pid: int | str) -> bool:
    """A live (not zombie) process with this pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def mounted_under(path: Path) -> bool:
    return any(m.mount_point == str(path) or m.mount_point.startswith(f"{path}/") for m in mountinfo.read())


@pytest_asyncio.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[RuncRuntime]:
    rt = RuncRuntime(tmp_path / "state", tmp_path / "runc")
    try:
        yield rt
    finally:
        await cleanup(rt)


@pytest.fixture
def make_req(rootfs: Path, tmp_path: Path) -> Callable[..., ContainerRequest]:
    def make(args: list[str], **kw: Any) -> ContainerRequest:
        id = f"hkt-{uuid.uuid4().hex[:12]}"
        fields: dict[str, Any] = {
            "id": id,
            "pod_uid": "uid-1",
            "pod_namespace": "default",
            "pod_name": "pod-1",
            "name": "c1",
            "attempt": 0,
            "image_ref": "busybox",
            "image_id": "sha256:" + "0" * 64,
            "rootfs": rootfs,
            "args": args,
            "env": [],
            "log_path": tmp_path / "logs" / f"{id}.log",
            "labels": {"app": "test"},
        }
        fields.update(kw)
        return ContainerRequest(**fields)

    return make


def log_records(path: Path | None) -> list[tuple[str, str, bytes]]:
    assert path is not None
    records = []
    for line in path.read_bytes().splitlines():
        m = CRI_LINE.match(line)
        assert m, f"not a CRI log line: {line!r}"
        records.append((m.group(2).decode(), m.group(3).decode(), m.group(4)))
    return records


def stdout_lines(path: Path | None) -> list[bytes]:
    return [content for stream, tag, content in log_records(path) if stream == "stdout" and tag == "F"]


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def run_to_end(rt: RuncRuntime, req: ContainerRequest) -> ContainerInfo:
    await rt.start(req)
    return await asyncio.wait_for(rt.wait(req.id), 20)


# --------------------------------------------------------------------------------------------------- tests


async def test_echo_writes_cri_log_and_completes(
    runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]
) -> None:
    script = "echo hello; echo oops >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; printf partial"
    req = make_req(["sh", "-c", script])
    started = await runtime.start(req)
    assert started.state in ("running", "exited")
    assert started.started_at is not None
    info = await asyncio.wait_for(runtime.wait(req.id), 20)
    assert (info.state, info.exit_code, info.reason) == ("exited", 0, "Completed")
    assert info.pod_uid == "uid-1" and info.name == "c1" and info.labels == {"app": "test"}
    assert info.finished_at and info.created_at and info.log_path == str(req.log_path)

    records = log_records(req.log_path)
    assert ("stderr", "F", b"oops") in records
    out = [(tag, content) for stream, tag, content in records if stream == "stdout"]
    assert out == [("F", b"hello"), ("P", b"x" * 16384), ("F", b"x" * (20000 - 16384)), ("P", b"partial")]

    assert req.log_path is not None
    shown = b"".join([chunk async for chunk in read_log(req.log_path, follow=False, stream="stdout")])
    assert shown == b"hello\n" + b"x" * 20000 + b"\npartial"


async def test_nonzero_exit_is_error(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    info = await run_to_end(runtime, make_req(["sh", "-c", "exit 3"]))
    assert (info.state, info.exit_code, info.reason) == ("exited", 3, "Error")


async def test_missing_binary_is_start_error(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    req = make_req(["nosuch"])
    info = await runtime.start(req)
    assert (info.state, info.exit_code, info.reason) == ("exited", 128, "StartError")
    assert info.message is not None and 'exec: "nosuch": executable file not found in $PATH' in info.message
    assert info.started_at is None
    await runtime.remove(req.id)
    assert runtime.info(req.id) is None
    assert runc_ids(runtime.runc_root) == []


async def test_stop_sends_term_first(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    # The init of a pid namespace only gets signals it handles, so this one traps TERM (as an app would).
    req = make_req(["sh", "-c", "trap 'exit 143' TERM; echo ready; sleep 1000 & wait"])
    await runtime.start(req)
    await until(lambda: b"ready" in stdout_lines(req.log_path))
    began = time.monotonic()
    await runtime.stop(req.id, grace=10)
    assert time.monotonic() - began < 5
    info = runtime.info(req.id)
    assert info is not None and (info.state, info.exit_code, info.reason) == ("exited", 143, "Error")
    await runtime.stop(req.id, grace=10)  # no-op once exited


async def test_stop_kills_after_grace(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    req = make_req(["sh", "-c", "trap '' TERM; echo ready; sleep 1000"])
    await runtime.start(req)
    await until(lambda: b"ready" in stdout_lines(req.log_path))
    began = time.monotonic()
    await runtime.stop(req.id, grace=0.5)
    assert 0.5 <= time.monotonic() - began < 5
    info = runtime.info(req.id)
    assert info is not None and (info.state, info.exit_code, info.reason) == ("exited", 137, "Error")


async def test_memory_limit_oom_kill(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    info = await run_to_end(runtime, make_req(["tail", "/dev/zero"], memory_limit=20 * 1024 * 1024))
    assert (info.state, info.exit_code, info.reason) == ("exited", 137, "OOMKilled")


async def test_exec(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    req = make_req(["sleep", "1000"], env=["FROM_SPEC=1"])
    await runtime.start(req)
    result = await runtime.exec(req.id, ["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    result = await runtime.exec(req.id, ["sh", "-c", "echo $FROM_SPEC $EXTRA"], timeout=10, env=["EXTRA=2"])
    assert (result.exit_code, result.stdout) == (0, b"1 2\n")

    with pytest.raises(ExecTimeoutError):
        await runtime.exec(req.id, ["sleep", "99"], timeout=0.3)
    ps = await runtime.exec(req.id, ["ps", "-o", "args"], timeout=10)
    assert b"sleep 99" not in ps.stdout and b"sleep 1000" in ps.stdout

    with pytest.raises(ContainerRuntimeError):
        await runtime.exec(req.id, ["nosuch"], timeout=10)
    await runtime.stop(req.id, grace=0)
    with pytest.raises(ContainerRuntimeError):
        await runtime.exec(req.id, ["true"], timeout=10)


async def test_user_env_and_cwd(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    req = make_req(
        ["sh", "-c", "id -u; id -g; echo $FOO; pwd; hostname"],
        uid=1000,
        gid=1000,
        env=["FOO=bar"],
        working_dir="/work/dir",
        hostname="myhost",
    )
    info = await run_to_end(runtime, req)
    assert info.exit_code == 0
    assert stdout_lines(req.log_path) == [b"1000", b"1000", b"bar", b"/work/dir", b"myhost"]


async def test_mounts(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest], tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hi\n")
    script = (
        "cat /data/in/hello.txt; (touch /data/in/x 2>/dev/null && echo rw) || echo ro;"
        " grep -q ' /scratch tmpfs ' /proc/mounts && echo tmpfs; echo w > /scratch/f && cat /scratch/f"
    )
    req = make_req(
        ["sh", "-c", script],
        mounts=[Mount("/data/in", str(shared), read_only=True), Mount("/scratch", "", kind="tmpfs")],
    )
    info = await run_to_end(runtime, req)
    assert info.exit_code == 0
    assert stdout_lines(req.log_path) == [b"hi", b"ro", b"tmpfs", b"w"]
    assert not (shared / "x").exists()


async def test_follow_log_until_exit(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    req = make_req(["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.05; done"])
    await runtime.start(req)
    assert req.log_path is not None

    def exited() -> bool:
        info = runtime.info(req.id)
        return info is not None and info.state == "exited"

    chunks = read_log(req.log_path, follow=True, until_exited=exited, poll_interval=0.02)
    shown = b"".join([chunk async for chunk in chunks])
    assert shown == b"line1\nline2\nline3\n"


async def test_log_rotation_by_shim(tmp_path: Path, make_req: Callable[..., ContainerRequest]) -> None:
    rt = RuncRuntime(tmp_path / "state", tmp_path / "runc", log_max_size=2000, log_max_files=3)
    try:
        req = make_req(["sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done"])
        info = await run_to_end(rt, req)
        assert info.exit_code == 0
        assert req.log_path is not None
        rotated = rotated_files(req.log_path)
        assert 1 <= len(rotated) <= 2
        assert all(p.stat().st_size <= 2000 + 100 for p in [*rotated, req.log_path])
        shown = b"".join([c async for c in read_log(req.log_path, follow=False, tail=60)])
        assert shown == b"".join(b"line%d\n" % i for i in range(240, 300))
    finally:
        await cleanup(rt)


async def test_shim_survives_its_starter(
    runtime: RuncRuntime, make_req: Callable[..., ContainerRequest], tmp_path: Path
) -> None:
    """The kubelet-restart guarantee: a container started by a process that then exits keeps running."""
    req = make_req(["sleep", "1000"])
    starter = f"""
import asyncio, sys
from pathlib import Path
from harness.kubelet.runtime.runc import RuncRuntime
from harness.kubelet.runtime.types import ContainerRequest
rt = RuncRuntime(Path({str(runtime.state_dir)!r}), Path({str(runtime.runc_root)!r}))
req = ContainerRequest(id={req.id!r}, pod_uid="u", pod_namespace="default", pod_name="p", name="c", attempt=0,
                       image_ref="busybox", image_id="sha256:0", rootfs=Path({str(req.rootfs)!r}),
                       args=["sleep", "1000"], env=[], log_path=Path({str(req.log_path)!r}))
info = asyncio.run(rt.start(req))
print(info.state, info.pid)
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", starter, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    state, pid = out.decode().split()
    assert state == "running"

    fresh = RuncRuntime(runtime.state_dir, runtime.runc_root)
    [info] = fresh.list()
    assert (info.id, info.state, info.pid) == (req.id, "running", int(pid))
    assert process_exists(pid)
    await fresh.stop(req.id, grace=0)
    info2 = fresh.info(req.id)
    assert info2 is not None and (info2.state, info2.exit_code) == ("exited", 137)


async def test_shim_death_is_reported(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    req = make_req(["sleep", "1000"])
    info = await runtime.start(req)
    shim_pid = int((runtime.state_dir / req.id / "shim.pid").read_text())
    os.kill(shim_pid, signal.SIGKILL)
    await until(lambda: not process_exists(shim_pid))
    still = runtime.info(req.id)
    assert still is not None and (still.state, still.pid) == ("running", info.pid)
    await runtime.stop(req.id, grace=0)
    dead = runtime.info(req.id)
    assert dead is not None and (dead.state, dead.reason, dead.message) == (
        "exited",
        "Error",
        "container runtime shim died",
    )
    await runtime.remove(req.id)
    assert runc_ids(runtime.runc_root) == []


async def test_remove_leaves_nothing(runtime: RuncRuntime, make_req: Callable[..., ContainerRequest]) -> None:
    req = make_req(["sleep", "1000"])
    await runtime.start(req)
    directory = runtime.state_dir / req.id
    assert [i.id for i in runtime.list()] == [req.id]
    assert runc_ids(runtime.runc_root) == [req.id]
    memory_dir = cgroups.memory_cgroup_dir(f"/harness/{req.id}")
    assert memory_dir is not None and memory_dir.exists()

    await runtime.remove(req.id)  # running: killed first
    assert not directory.exists()
    assert not mounted_under(directory)
    assert runc_ids(runtime.runc_root) == []
    assert not memory_dir.exists()
    assert runtime.list() == [] and runtime.info(req.id) is None
    await runtime.remove(req.id)  # idempotent
