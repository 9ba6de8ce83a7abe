"""The per-container shim: starts one container with runc, copies its output to the CRI log, records its exit.

Run as `python -m harness.kubelet.runtime.shim --id ID --state-dir DIR --runc-root DIR [--runc runc]
[--log-max-size BYTES] [--log-max-files N]`; `<state-dir>/<id>/` is the bundle (config.json, rootfs/, meta.json).
The process that is started forks and exits at once; the daemon child becomes a session leader and a child
subreaper (so the container's init is re-parented to it when `runc create` exits), which lets it outlive the
kubelet. It then

1. `runc create`s the container with stdin /dev/null and stdout/stderr pipes of its own (on failure: writes
   `exit.json` with reason StartError and runc's error message, deletes the container and exits);
2. `runc start`s it and writes `started` (the kubelet waits for `started` or `exit.json`);
3. copies both pipes to the CRI log file (`meta.json`'s log_path), rotating it by size;
4. when the init exits: drains the pipes, reads the memory cgroup's OOM-kill counter, writes `exit.json`
   (exit_code, finished_at, reason Completed | Error | OOMKilled, message, oom_killed), `runc delete`s the
   container and exits. The overlay root file system stays mounted until the runtime removes the container.

Stdlib-only. Everything up to `started` uses only builtin modules (posix_spawn, no subprocess) so that a
container starts fast; the heavier imports come after. So it keeps its own small copies of `now_rfc3339` and
`write_atomic`, which mirror harness.util.rfc3339.format_ns and harness.util.files.write_atomic.
"""

from __future__ import annotations

import os
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
# SIGPIPE and SIGXFSZ (Python ignores them; programs we start get them back). Numbers, not the `signal`
# module: it imports enum, a sixth of the shim's start-up time.
RESET_SIGNALS = (13, 25)
DRAIN_TIMEOUT = 5.0
START_ERROR_CODE = 128
UNKNOWN_EXIT_CODE = 255


class ShimError(Exception):
    """Bad command line or an unusable bundle."""


def now_rfc3339() -> str:
    """RFC3339Nano UTC, nine fractional digits."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def parse_args(argv: list[str]) -> dict[str, str]:
    """`--name value` pairs (argparse costs ~10 ms of startup we do not want)."""
    known = {"--id", "--state-dir", "--runc-root", "--runc", "--log-max-size", "--log-max-files"}
    opts = {"--runc": "runc", "--log-max-size": str(10 * 1024 * 1024), "--log-max-files": "5"}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name not in known:
            raise ShimError(f"unknown argument {argv[i]!r}")
        if not eq:
            if i + 1 >= len(argv):
                raise ShimError(f"{name} needs a value")
            i += 1
            value = argv[i]
        opts[name] = value
        i += 1
    for required in ("--id", "--state-dir", "--runc-root"):
        if required not in opts:
            raise ShimError(f"{required} is required")
    return opts


def set_subreaper() -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """Start a program with these descriptors as 0, 1, 2 and default signal dispositions; its pid."""
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawnp(
        argv[0],
        argv,
        os.environ,
        file_actions=actions,
        setsigdef=RESET_SIGNALS,
        setsid=False,
    )


def wait_exit(pid: int) -> int:
    """Wait for one child; its exit code (128+N when killed by signal N)."""
    _, status = os.waitpid(pid, 0)
    return exit_code_of(status)


def exit_code_of(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Shim:
    """One container's lifetime, from `runc create` to `exit.json`."""

    def __init__(self, opts: dict[str, str]) -> None:
        self.id = opts["--id"]
        self.dir = os.path.join(opts["--state-dir"], self.id)
        self.runc = [opts["--runc"], "--root", opts["--runc-root"]]
        self.log_max_size = int(opts["--log-max-size"])
        self.log_max_files = int(opts["--log-max-files"])
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def runc_cmd(self, *args: str) -> list[str]:
        return [*self.runc, "--log", self.path("runc.log"), "--log-format", "json", *args]

    def run_runc(self, *args: str) -> int:
        return wait_exit(spawn(self.runc_cmd(*args), self.devnull, self.devnull, self.devnull))

    def runc_error(self, fallback: str) -> str:
        """The last error runc logged (its json log), else `fallback`."""
        import json

        message = ""
        try:
            with open(self.path("runc.log"), encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                        message = str(entry.get("msg", ""))
        except OSError:
            pass
        return message or fallback.strip() or "runc failed"

    def write_exit(self, exit_code: int, reason: str, message: str | None, oom_killed: bool) -> None:
        import json

        record = {
            "exit_code": exit_code,
            "finished_at": now_rfc3339(),
            "reason": reason,
            "message": message,
            "oom_killed": oom_killed,
        }
        write_atomic(self.path("exit.json"), json.dumps(record).encode())

    def start_error(self, message: str) -> int:
        self.write_exit(START_ERROR_CODE, "StartError", message, False)
        self.run_runc("delete", "--force", self.id)
        return 1

    def run(self) -> int:
        write_atomic(self.path("shim.pid"), str(os.getpid()).encode())
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        create = self.runc_cmd("create", "--bundle", self.dir, "--pid-file", self.path("pid"), self.id)
        code = wait_exit(spawn(create, self.devnull, out_w, err_w))
        os.close(out_w)
        os.close(err_w)
        if code != 0:
            os.set_blocking(err_r, False)
            try:
                text = os.read(err_r, 65536).decode("utf-8", "replace")
            except OSError:
                text = ""
            return self.start_error(self.runc_error(text))
        with open(self.path("pid"), encoding="ascii") as f:
            init_pid = int(f.read().strip())
        if self.run_runc("start", self.id) != 0:
            return self.start_error(self.runc_error(""))
        write_atomic(self.path("started"), now_rfc3339().encode())
        # The pipes buffer the first 64 KiB the container writes meanwhile; the runtime created the log file.
        return self.supervise(init_pid, out_r, err_r)

    def supervise(self, init_pid: int, out_r: int, err_r: int) -> int:
        import json
        import threading

        from harness.kubelet.runtime import cgroups
        from harness.kubelet.runtime.crilog import CriLogWriter, LineSplitter

        with open(self.path("meta.json"), encoding="utf-8") as f:
            log_path = json.load(f).get("log_path") or None
        writer = CriLogWriter(log_path, max_size=self.log_max_size, max_files=self.log_max_files)

        def copy(fd: int, stream: str) -> None:
            splitter = LineSplitter()
            try:
                while data := os.read(fd, 65536):
                    writer.write(stream, splitter.feed(data))
            except OSError:
                pass
            writer.write(stream, splitter.flush())
            os.close(fd)

        copiers = [
            threading.Thread(target=copy, args=(out_r, "stdout"), daemon=True),
            threading.Thread(target=copy, args=(err_r, "stderr"), daemon=True),
        ]
        for t in copiers:
            t.start()

        status = self.reap(init_pid)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for t in copiers:
            t.join(max(deadline - time.monotonic(), 0))
        writer.close()

        with open(self.path("config.json"), encoding="utf-8") as f:
            cgroups_path = json.load(f).get("linux", {}).get("cgroupsPath", "")
        oom_kills = cgroups.read_oom_kill(cgroups_path) if cgroups_path else 0
        if status is None:
            code, reason, message = UNKNOWN_EXIT_CODE, "Error", "container exit status unknown"
        else:
            code, message = exit_code_of(status), None
            reason = "OOMKilled" if oom_kills > 0 else ("Completed" if code == 0 else "Error")
        self.write_exit(code, reason, message, oom_kills > 0)
        self.run_runc("delete", self.id)
        self.reap_zombies()
        return 0

    def reap(self, init_pid: int) -> int | None:
        """Reap children until the container's init exits; its wait status (None if it was not our child)."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == init_pid:
                return status
        # Not our child (no subreaper): all we can do is watch it go away.
        while os.path.exists(f"/proc/{init_pid}"):
            time.sleep(0.05)
        return None

    @staticmethod
    def reap_zombies() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except ShimError as exc:
        print(f"shim: {exc}", file=sys.stderr)
        return 2
    if os.fork() > 0:
        os._exit(0)  # the kubelet's child returns at once; the daemon below carries on
    os.setsid()
    os.chdir("/")
    set_subreaper()
    shim = Shim(opts)
    try:
        return shim.run()
    except Exception as exc:
        # Record the failure rather than leave the runtime to guess (the traceback goes to shim.log).
        if not os.path.exists(shim.path("exit.json")):
            started = os.path.exists(shim.path("started"))
            code, reason = (UNKNOWN_EXIT_CODE, "Error") if started else (START_ERROR_CODE, "StartError")
            shim.write_exit(code, reason, f"container runtime shim failed: {exc}", False)
        raise


if __name__ == "__main__":
    sys.exit(main())
