"""Run a single-member etcd server on loopback, for tests, benchmarks and `harness dev up`.

`LocalEtcd` owns one directory: etcd's data in `data/`, its log in `etcd.log` and, when
started detached, its PID in `etcd.pid`. Without a `data_dir` the directory is a fresh temp
dir that `stop()` removes; with one, the data survives restarts. Ports default to free ones
picked at start. `start()` returns once the server answers `/health` (polled with a
deadline), so callers can use `.endpoint` right away. Auto-compaction is off: compaction is
the apiserver's job, and tests need history to stay where they left it.

    with LocalEtcd() as etcd: ...              # or: async with LocalEtcd() as etcd: ...
    await LocalEtcd(data_dir=d, port=2379).start(detach=True)   # outlives this process
    LocalEtcd(data_dir=d).stop()                                # later, from any process
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, NoReturn

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
# Picked free ports can be taken before etcd binds them; retry with new ones this often.
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerTLS:
    """etcd's serving certificate and the CA its clients' certificates must be signed by (--client-cert-auth)."""

    ca_file: str
    cert_file: str
    key_file: str


class LocalEtcd:
    """One etcd process on 127.0.0.1; see the module docstring."""

    def __init__(self, *, data_dir: str | os.PathLike[str] | None = None, port: int = 0, peer_port: int = 0,
                 name: str = "harness", binary: str = "etcd", log_level: str = "warn",
                 tls: ServerTLS | None = None) -> None:
        self.tls = tls
        self.metrics_port = 0
        self.port = port
        self.peer_port = peer_port
        self.name = name
        self.binary = binary
        self.log_level = log_level
        self._given_ports = (port, peer_port)
        self._given_dir = Path(data_dir).absolute() if data_dir is not None else None
        self._dir: Path | None = self._given_dir
        self._proc: subprocess.Popen[bytes] | None = None

    # -- where things are ------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The client URL, e.g. `http://127.0.0.1:2379` (`https://` with TLS)."""
        if not self.port:
            raise RuntimeError("LocalEtcd has no port until it is started")
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RuntimeError("LocalEtcd has no directory until it is started")
        return self._dir

    @property
    def log_file(self) -> Path:
        return self.directory / "etcd.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "etcd.pid"

    @property
    def pid(self) -> int | None:
        """The server's PID: the child this object started, else the one in the pid file."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return self.running_pid()

    def running_pid(self) -> int | None:
        """The PID in the pid file, if that process is alive and is etcd serving our data dir."""
        if self._dir is None:
            return None
        try:
            pid = int(self.pid_file.read_text().strip())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        # A recycled PID belongs to some other program: it must be etcd with our data dir.
        ours = "etcd" in os.fsdecode(Path(os.fsdecode(argv[0])).name) and os.fsencode(self._data) in argv
        return pid if ours and _alive(pid) else None

    @property
    def _data(self) -> Path:
        return self.directory / "data"

    def log_tail(self, lines: int = 30) -> str:
        if self._dir is None:
            return ""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- start -----------------------------------------------------------------------------

    async def start(self, *, detach: bool = False, ready_timeout: float = START_TIMEOUT) -> None:
        """Launch etcd and wait until it answers; `detach` lets it outlive this process."""
        loop = asyncio.get_running_loop()
        for attempt in range(PORT_ATTEMPTS):
            self._launch(detach=detach)
            deadline = loop.time() + ready_timeout
            while (state := await asyncio.to_thread(self._probe)) == "starting":
                if loop.time() > deadline:
                    self._fail(f"etcd did not answer within {ready_timeout:.0f}s")
                await asyncio.sleep(POLL_INTERVAL)
            if state == "up":
                return
            self._exited(attempt)

    def start_sync(self, *, detach: bool = False, ready_timeout: float = START_TIMEOUT) -> None:
        """`start()` for callers without an event loop."""
        for attempt in range(PORT_ATTEMPTS):
            self._launch(detach=detach)
            deadline = time.monotonic() + ready_timeout
            while (state := self._probe()) == "starting":
                if time.monotonic() > deadline:
                    self._fail(f"etcd did not answer within {ready_timeout:.0f}s")
                time.sleep(POLL_INTERVAL)
            if state == "up":
                return
            self._exited(attempt)

    def _launch(self, *, detach: bool) -> None:
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"etcd already started (pid {self._proc.pid})")
        if detach and self._given_dir is None:
            raise ValueError("a detached etcd needs a data_dir to outlive this process")
        executable = shutil.which(self.binary)
        if executable is None:
            raise FileNotFoundError(f"etcd binary not found: {self.binary}")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="harness-etcd-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        if (pid := self.running_pid()) is not None:
            raise RuntimeError(f"etcd already running from {self._dir} (pid {pid})")
        self.port = self._given_ports[0] or free_port()
        self.peer_port = self._given_ports[1] or free_port()
        self.metrics_port = free_port() if self.tls else 0
        # ETCD_* variables would silently change the flags below.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(self._command(executable), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=log, env=env, start_new_session=detach)
        if detach:
            self.pid_file.write_text(f"{self._proc.pid}\n")
        else:
            atexit.register(self.stop)

    def _command(self, executable: str) -> list[str]:
        client, peer = self.endpoint, f"http://{HOST}:{self.peer_port}"
        tls = [] if self.tls is None else [
            "--cert-file", self.tls.cert_file, "--key-file", self.tls.key_file, "--client-cert-auth",
            "--trusted-ca-file", self.tls.ca_file, "--listen-metrics-urls", f"http://{HOST}:{self.metrics_port}"]
        return [
            executable,
            "--name", self.name,
            "--data-dir", str(self._data),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"harness-local-{self.name}",
            "--auto-compaction-retention", "0",
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", self.log_level,
            *tls,
        ]

    def _probe(self) -> Literal["up", "starting", "exited"]:
        assert self._proc is not None
        if self._proc.poll() is not None:
            return "exited"
        # with TLS, /health is asked on the plain metrics port (the client port wants a certificate)
        conn = http.client.HTTPConnection(HOST, self.metrics_port or self.port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            healthy = resp.status == 200 and b'"true"' in resp.read()
        except OSError:
            healthy = False
        finally:
            conn.close()
        return "up" if healthy else "starting"

    def _exited(self, attempt: int) -> None:
        """etcd exited while starting: retry on new ports if it lost a race for one, else raise."""
        assert self._proc is not None
        picked = not all(self._given_ports)
        if picked and attempt + 1 < PORT_ATTEMPTS and "address already in use" in self.log_tail():
            self._forget_process()
            return
        self._fail(f"etcd exited with status {self._proc.returncode}")

    def _fail(self, why: str) -> NoReturn:
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{why}; last lines of its log:\n{tail}")

    # -- stop ------------------------------------------------------------------------------

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate the server (by PID; SIGKILL after `timeout`) and remove a temp directory."""
        if self._proc is not None:
            _terminate_child(self._proc, timeout)
            self._forget_process()
        elif (pid := self.running_pid()) is not None:
            _terminate_pid(pid, timeout)
        if self._dir is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        if self._given_dir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _forget_process(self) -> None:
        self._proc = None
        atexit.unregister(self.stop)

    # -- context managers ------------------------------------------------------------------

    def __enter__(self) -> LocalEtcd:
        self.start_sync()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> LocalEtcd:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)


def _terminate_child(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _terminate_pid(pid: int, timeout: float) -> None:
    """Stop a process that is not our child: it cannot be wait()ed for, so poll until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_INTERVAL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
