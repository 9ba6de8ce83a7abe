"""The node's container runtime: runc, one detached shim per container, all state in files.

`<state_dir>/<id>/` holds everything about one container: `config.json` (the OCI bundle config), `rootfs/`
(an overlay of the image's root file system with `upper/` and `work/` beside it), `meta.json` (what
ContainerInfo reports), and what the shim writes: `shim.pid`, `pid` (the container's init), `started`,
`exit.json`. Nothing is kept in memory, so a restarted kubelet (a new RuncRuntime) sees the same containers,
which go on running under their shims meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal as signals
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import harness
from harness.kubelet.runtime import cgroups
from harness.kubelet.runtime.spec import NOFILE_LIMIT, build_spec
from harness.kubelet.runtime.types import ContainerInfo, ContainerRequest, ExecResult
from harness.util import mounts, rfc3339
from harness.util.files import write_atomic

Argv = list[str]  # (`list` is a method name inside RuncRuntime)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(harness.__file__)))
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SHIM_MODULE = "harness.kubelet.runtime.shim"
# Same as `python -m harness.kubelet.runtime.shim` without runpy's imports (~8 ms); -S skips site (~20 ms).
SHIM_BOOT = f"import sys; from {SHIM_MODULE} import main; sys.exit(main())"
SHIM_DIED = "container runtime shim died"
SHIM_DIED_EXIT_CODE = 255
START_POLL = 0.005
KILL_TIMEOUT = 10.0
SHIM_EXIT_TIMEOUT = 5.0


class ContainerRuntimeError(Exception):
    """The runtime could not do what was asked (runc failed, bad request, no such container...)."""


class ContainerNotFoundError(ContainerRuntimeError):
    """No container with this id in the runtime's state directory."""


class ExecTimeoutError(ContainerRuntimeError, TimeoutError):
    """An exec did not finish in time; its process was killed."""


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _proc_state(pid: int) -> str | None:
    """The one-letter state of a process (`R`, `S`, `Z`...), None if there is none with this pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3].decode() if end > 0 else None


def _alive(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _in_cgroup(pid: int, id: str) -> bool:
    """Whether a process is in a cgroup named after this container (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return any(line.rstrip("\n").endswith(f"/{id}") for line in f)
    except OSError:
        return False


CAP_SYS_RESOURCE = 24


def _nofile_limit() -> int:
    """RLIMIT_NOFILE for containers: containerd's 1048576, or our own hard limit if we cannot raise limits."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            caps = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    except OSError:
        caps = 0
    if caps & (1 << CAP_SYS_RESOURCE):
        return NOFILE_LIMIT
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    for p in (lower, upper, work):
        if any(c in str(p) for c in ",:\n"):
            raise ContainerRuntimeError(f"cannot use {p} in an overlay mount (',' or ':' in the path)")
    try:
        mounts.mount("overlay", target, fstype="overlay", data=f"lowerdir={lower},upperdir={upper},workdir={work}")
    except OSError as exc:
        raise ContainerRuntimeError(f"mounting the overlay root file system at {target}: {exc.strerror}") from exc


def unmount(target: Path) -> None:
    """Unmount everything mounted at `target` (lazily when busy); nothing if nothing is mounted."""
    try:
        mounts.unmount(target)
    except OSError as exc:
        raise ContainerRuntimeError(f"unmounting {target}: {exc.strerror}") from exc


class RuncRuntime:
    """Runs ContainerRequests with runc under per-container shims; all state under `state_dir`."""

    def __init__(
        self,
        state_dir: Path,
        runc_root: Path,
        *,
        runc: str = "runc",
        python: str = sys.executable,
        log_max_size: int = 10 * 1024 * 1024,
        log_max_files: int = 5,
        start_timeout: float = 30.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.runc_root = Path(runc_root)
        self.runc = runc
        self.python = python
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.start_timeout = start_timeout
        self._layout: cgroups.CgroupLayout | None = None
        self._no_swap = False
        self._nofile = NOFILE_LIMIT

    # ------------------------------------------------------------------------------------------- start

    async def start(self, req: ContainerRequest) -> ContainerInfo:
        """Create and start a container; returns it running, or exited with reason StartError."""
        directory = self._claim(req)
        try:
            return await self._start(req, directory)
        except BaseException:
            await self._discard(req.id, directory)
            raise

    def _claim(self, req: ContainerRequest) -> Path:
        """The container's new state directory (the id must be new)."""
        if not _ID.fullmatch(req.id):
            raise ContainerRuntimeError(f"invalid container id {req.id!r}")
        if not os.path.isdir(req.rootfs):
            raise ContainerRuntimeError(f"root file system {req.rootfs} is not a directory")
        directory = self.state_dir / req.id
        try:
            directory.mkdir(parents=True)
        except FileExistsError as exc:
            raise ContainerRuntimeError(f"container {req.id} already exists") from exc
        return directory

    async def _start(self, req: ContainerRequest, directory: Path) -> ContainerInfo:
        self._prepare(req, directory)
        launcher = await self._launch_shim(req.id, directory)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        started, exited = directory / "started", directory / "exit.json"
        while not (started.exists() or exited.exists()):
            if launcher.returncode not in (None, 0):
                log = _read_text(directory / "shim.log") or ""
                raise ContainerRuntimeError(f"shim for {req.id} failed ({launcher.returncode}): {log.strip()[-2000:]}")
            if loop.time() > deadline:
                raise ContainerRuntimeError(f"container {req.id} did not start within {self.start_timeout} s")
            await asyncio.sleep(START_POLL)
        await launcher.wait()
        info = self.info(req.id)
        if info is None:
            raise ContainerRuntimeError(f"container {req.id} vanished while starting")
        return info

    def _prepare(self, req: ContainerRequest, directory: Path) -> None:
        """The bundle: overlay root file system, config.json, meta.json; and the (empty) log file."""
        created_at = rfc3339.format_ns()
        rootfs = directory / "rootfs"
        for sub in ("upper", "work", "rootfs"):
            (directory / sub).mkdir()
        mount_overlay(Path(req.rootfs).absolute(), directory / "upper", directory / "work", rootfs)
        if self._layout is None:
            self._layout = cgroups.detect()
            self._no_swap = cgroups.swap_limit_supported(self._layout)
            self._nofile = _nofile_limit()
        spec = build_spec(req, rootfs, self._layout.v2, nofile=self._nofile, no_swap=self._no_swap)
        write_atomic(directory / "config.json", json.dumps(spec).encode())
        meta = {
            "id": req.id,
            "pod_uid": req.pod_uid,
            "pod_namespace": req.pod_namespace,
            "pod_name": req.pod_name,
            "name": req.name,
            "attempt": req.attempt,
            "image_ref": req.image_ref,
            "image_id": req.image_id,
            "log_path": str(req.log_path) if req.log_path else None,
            "labels": dict(req.labels),
            "created_at": created_at,
            "cgroups_path": spec["linux"]["cgroupsPath"],
        }
        write_atomic(directory / "meta.json", json.dumps(meta).encode())
        if req.log_path:
            # Created here so that a log reader finds it as soon as the container runs.
            Path(req.log_path).parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(req.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))

    async def _launch_shim(self, id: str, directory: Path) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log_fd = os.open(directory / "shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            return await asyncio.create_subprocess_exec(
                self.python,
                "-S",
                "-c",
                SHIM_BOOT,
                "--id",
                id,
                "--state-dir",
                str(self.state_dir),
                "--runc-root",
                str(self.runc_root),
                "--runc",
                self.runc,
                "--log-max-size",
                str(self.log_max_size),
                "--log-max-files",
                str(self.log_max_files),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                cwd="/",
                env=env,
            )
        finally:
            os.close(log_fd)

    # ------------------------------------------------------------------------------------------- state

    def list(self) -> list[ContainerInfo]:
        """Every container in the state directory, alive or exited."""
        try:
            names = sorted(os.listdir(self.state_dir))
        except FileNotFoundError:
            return []
        infos = []
        for name in names:
            info = self._load(name)
            if info is not None:
                infos.append(info)
        return infos

    def info(self, id: str) -> ContainerInfo | None:
        """One container, or None if the runtime does not know it."""
        if not _ID.fullmatch(id):
            return None
        return self._load(id)

    def _shim_alive(self, directory: Path, id: str) -> bool:
        text = _read_text(directory / "shim.pid")
        if not text or not text.strip().isdigit():
            return False
        pid = int(text)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            return False
        module = SHIM_MODULE.encode()
        return any(module in arg for arg in cmdline) and id.encode() in cmdline and _alive(pid)

    def _load(self, id: str) -> ContainerInfo | None:
        directory = self.state_dir / id
        meta = _read_json(directory / "meta.json")
        if meta is None:
            return None
        info = ContainerInfo(
            id=id,
            pod_uid=meta.get("pod_uid", ""),
            name=meta.get("name", ""),
            attempt=int(meta.get("attempt", 0)),
            state="unknown",
            image_ref=meta.get("image_ref", ""),
            image_id=meta.get("image_id", ""),
            log_path=meta.get("log_path"),
            created_at=meta.get("created_at"),
            labels=dict(meta.get("labels") or {}),
        )
        started = _read_text(directory / "started")
        info.started_at = started.strip() if started else None
        exit_record = _read_json(directory / "exit.json")
        if exit_record is None:
            pid_text = _read_text(directory / "pid")
            pid = int(pid_text) if pid_text and pid_text.strip().isdigit() else None
            if self._shim_alive(directory, id):
                info.state = "running" if started else "created"
                info.pid = pid
                return info
            if started and pid is not None and _alive(pid) and _in_cgroup(pid, id):
                info.state = "running"  # the shim is gone but the container still runs
                info.pid = pid
                return info
            if not (directory / "shim.pid").exists() and self._recent(directory / "meta.json"):
                info.state = "created"  # start() is launching the shim right now
                return info
            exit_record = _read_json(directory / "exit.json")  # the shim may have just finished
            if exit_record is None:
                exit_record = self._record_shim_death(directory)
        info.state = "exited"
        info.exit_code = exit_record.get("exit_code")
        info.finished_at = exit_record.get("finished_at")
        info.reason = exit_record.get("reason")
        info.message = exit_record.get("message")
        return info

    def _recent(self, path: Path) -> bool:
        try:
            return time.time() - path.stat().st_mtime < self.start_timeout + 5
        except FileNotFoundError:
            return False

    @staticmethod
    def _record_shim_death(directory: Path) -> dict[str, Any]:
        record = {
            "exit_code": SHIM_DIED_EXIT_CODE,
            "finished_at": rfc3339.format_ns(),
            "reason": "Error",
            "message": SHIM_DIED,
            "oom_killed": False,
        }
        with contextlib.suppress(OSError):
            write_atomic(directory / "exit.json", json.dumps(record).encode())
        return record

    # ------------------------------------------------------------------------------------------- lifecycle

    async def _runc(self, *args: str) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            self.runc,
            "--root",
            str(self.runc_root),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out, err

    async def _wait_exited(self, id: str, within: float | None) -> ContainerInfo | None:
        """Poll until the container has exited; its info, or None if it has not within `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        exit_file = self.state_dir / id / "exit.json"
        delay = START_POLL
        polls = 0
        while True:
            if exit_file.exists() or polls % 10 == 0:
                info = self._load(id)
                if info is None:
                    raise ContainerNotFoundError(f"no container {id}")
                if info.state == "exited":
                    return info
            if deadline is not None and loop.time() >= deadline:
                return None
            polls += 1
            pause = delay if deadline is None else min(delay, max(deadline - loop.time(), 0))
            await asyncio.sleep(pause)
            delay = min(delay * 1.5, 0.05)

    async def stop(self, id: str, grace: float, signal: int = signals.SIGTERM) -> None:
        """Signal the container's init, and SIGKILL it if it has not exited after `grace` seconds."""
        info = self.info(id)
        if info is None:
            raise ContainerNotFoundError(f"no container {id}")
        if info.state == "exited":
            return
        if signal != signals.SIGKILL:
            await self._runc("kill", id, str(int(signal)))
            if grace > 0 and await self._wait_exited(id, grace) is not None:
                return
        await self._runc("kill", id, "KILL")
        if await self._wait_exited(id, KILL_TIMEOUT) is None:
            raise ContainerRuntimeError(f"container {id} did not exit after SIGKILL")

    async def wait(self, id: str) -> ContainerInfo:
        """Until the container has exited; its final info."""
        info = await self._wait_exited(id, None)
        assert info is not None
        return info

    def exec_command(self, id: str, argv: Argv) -> Argv:
        """The `runc exec` command line that runs argv in container `id` (for streaming callers)."""
        return [self.runc, "--root", str(self.runc_root), "exec", id, *argv]

    async def exec(
        self, id: str, argv: Argv, timeout: float, env: Argv | None = None  # noqa: ASYNC109 (as CRI's)
    ) -> ExecResult:
        """Run a command in the running container (as its user, in its cwd); its exit code and output."""
        info = self.info(id)
        if info is None:
            raise ContainerNotFoundError(f"no container {id}")
        if info.state != "running":
            raise ContainerRuntimeError(f"container {id} is not running ({info.state})")
        directory = self.state_dir / id
        tag = uuid.uuid4().hex[:12]
        pid_file, log_file = directory / f"exec-{tag}.pid", directory / f"exec-{tag}.log"
        args = [self.runc, "--root", str(self.runc_root), "--log", str(log_file), "--log-format", "json"]
        args += ["exec", "--pid-file", str(pid_file)]
        for item in env or []:
            args += ["--env", item]
        args += [id, *argv]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                await self._kill_exec(proc, pid_file, id)
                raise ExecTimeoutError(f"exec {argv!r} in {id} timed out after {timeout} s") from None
            error = _runc_logged_error(log_file)
            if error is not None:
                raise ContainerRuntimeError(f"exec {argv!r} in {id}: {error}")
            assert proc.returncode is not None
            return ExecResult(exit_code=proc.returncode, stdout=out, stderr=err)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            for f in (pid_file, log_file):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()

    @staticmethod
    async def _kill_exec(proc: asyncio.subprocess.Process, pid_file: Path, id: str) -> None:
        """Kill the exec'd process in the container, then `runc exec` (which would wait for it)."""

        def kill_target() -> None:
            text = _read_text(pid_file)
            if text and text.strip().isdigit():
                pid = int(text)
                if _alive(pid) and _in_cgroup(pid, id):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signals.SIGKILL)

        kill_target()
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            kill_target()

    async def remove(self, id: str) -> None:
        """Forget a container: stop it if needed, delete it from runc, unmount and delete its state. Idempotent."""
        directory = self.state_dir / id
        if not _ID.fullmatch(id) or not directory.exists():
            return
        info = self._load(id)
        if info is not None and info.state != "exited":
            await self.stop(id, 0, signals.SIGKILL)
        await self._discard(id, directory)

    async def _discard(self, id: str, directory: Path) -> None:
        """Whatever is left of a container: its shim, runc's state, the overlay mount, the directory."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHIM_EXIT_TIMEOUT
        while self._shim_alive(directory, id):
            if loop.time() > deadline:
                text = _read_text(directory / "shim.pid") or ""
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(text), signals.SIGKILL)
                break
            await asyncio.sleep(START_POLL)
        if (self.runc_root / id).exists():
            code, _, err = await self._runc("delete", "--force", id)
            if code != 0 and (self.runc_root / id).exists():
                raise ContainerRuntimeError(f"runc delete {id}: {err.decode(errors='replace').strip()}")
        unmount(directory / "rootfs")
        await asyncio.to_thread(shutil.rmtree, directory, True)


def _runc_logged_error(log_file: Path) -> str | None:
    """The last error runc wrote to its json log, if any."""
    text = _read_text(log_file)
    if not text:
        return None
    message = None
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", ""))
    return message
