"""Named network namespaces kept alive as bind-mounted files, the way `ip netns` does it, under a directory of our own.

The directory defaults to `/run/harness/netns` rather than `/run/netns`: on a node made of namespaces that path is a
node-private bind mount, so two nodes sharing the host's file system never see each other's pods. As `ip netns` does,
the directory is made a shared mount of itself, so that unmounting a namespace file also unmounts the copies that
mount namespaces cloned later (runc containers, `unshare -m`) hold, and the namespace is really freed.

The one idea: namespaces are per *thread* in Linux. A namespace is created by a short-lived thread that unshares its
network namespace and bind-mounts it (`/proc/self/task/<tid>/ns/net`) onto the file; a netlink (or any) socket inside
a namespace is opened by a short-lived thread that `setns`es into it — a socket stays in the namespace it was opened
in. No fork, which matters in a kubelet full of threads. The threads live for a few hundred microseconds.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.kubelet.errors import KubeletError
from harness.util import libc
from harness.util.mounts import MS_BIND, MS_REC, MS_SHARED, mount, unmount

DEFAULT_NETNS_DIR = Path("/run/harness/netns")

CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class NetnsError(KubeletError):
    """A network namespace could not be created, entered or removed."""


def in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a new thread of its own, wait for it, return its result or raise its exception."""
    box: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="harness-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return box[0]


def off_event_loop(fn: Callable[[], T]) -> T:
    """Run `fn` here, or in a thread of its own when this thread runs an asyncio loop.

    pyroute2's synchronous `IPRoute` drives its own event loop with `run_until_complete`, which fails in a thread
    whose loop is already running (the kubelet calls `configure` and `sync` from its loop's callbacks).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    return in_thread(fn)


def is_netns(path: str | Path) -> bool:
    """Whether `path` is a network namespace (an nsfs file: a bind-mounted namespace or /proc/<pid>/ns/net)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _setns(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.call("setns", fd, CLONE_NEWNET, path=path)
    finally:
        os.close(fd)


def enter(path: str | Path) -> None:
    """Move the *calling thread* into the network namespace at `path` (for a process that lives in a node's netns)."""
    try:
        _setns(path)
    except OSError as exc:
        raise NetnsError(f"cannot enter network namespace {path}: {exc.strerror}") from exc


def open_socket(path: str | Path, family: int = socket.AF_NETLINK, kind: int = socket.SOCK_DGRAM,
                proto: int = 0) -> socket.socket:
    """A socket that lives in the network namespace at `path` (default: a NETLINK_ROUTE socket), usable anywhere."""

    def make() -> socket.socket:
        _setns(path)
        return socket.socket(family, kind, proto)

    try:
        return in_thread(make)
    except OSError as exc:
        raise NetnsError(f"cannot open a socket in network namespace {path}: {exc.strerror or exc}") from exc


class NetnsStore:
    """Network namespaces named by files in one directory: create, delete, list, path."""

    def __init__(self, directory: Path = DEFAULT_NETNS_DIR) -> None:
        self.directory = Path(directory)
        self._dir_ready = False
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        if not name or "/" in name or name in (".", ".."):
            raise NetnsError(f"invalid network namespace name {name!r}")
        return self.directory / name

    def exists(self, name: str) -> bool:
        return is_netns(self.path(name))

    def list(self) -> list[str]:
        """Names of the files in the directory that are live namespaces (stale files are left to `delete`)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if is_netns(self.directory / name))

    def create(self, name: str, *, exist_ok: bool = False) -> Path:
        """Create a new network namespace held by the file `<directory>/<name>` and return its path.

        A file left behind without a namespace mounted on it (a crash between the two steps, a reboot) is reused.
        """
        target = self.path(name)
        if is_netns(target):
            if exist_ok:
                return target
            raise NetnsError(f"network namespace {target} already exists")
        self._prepare_dir()
        try:
            os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
        except OSError as exc:
            raise NetnsError(f"cannot create {target}: {exc.strerror}") from exc

        def unshare_and_bind() -> None:
            libc.call("unshare", CLONE_NEWNET, path=target)
            mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", target, fstype="none", flags=MS_BIND)

        try:
            in_thread(unshare_and_bind)
        except OSError as exc:
            if is_netns(target) and exist_ok:  # another thread won the race for the same name
                return target
            self._unlink(target)
            raise NetnsError(f"cannot create network namespace {target}: {exc.strerror or exc}") from exc
        return target

    def delete(self, name: str) -> bool:
        """Unmount and remove the namespace file; True if there was something to remove. Idempotent."""
        target = self.path(name)
        try:
            # Lazily at once, as `ip netns delete` does: the namespace lives on while something still holds it.
            mounted = unmount(target, lazy=True)
        except OSError as exc:
            raise NetnsError(f"cannot unmount network namespace {target}: {exc.strerror}") from exc
        return self._unlink(target) or mounted

    @staticmethod
    def _unlink(target: Path) -> bool:
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise NetnsError(f"cannot remove {target}: {exc.strerror}") from exc
        return True

    def _prepare_dir(self) -> None:
        """Create the directory and make it a shared mount of itself, as `ip netns add` does with /run/netns."""
        if self._dir_ready:
            return
        with self._lock:
            if self._dir_ready:
                return
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                try:
                    mount("", self.directory, fstype="none", flags=MS_SHARED | MS_REC)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: not a mount point yet
                        raise
                    mount(self.directory, self.directory, fstype="none", flags=MS_BIND | MS_REC)
                    mount("", self.directory, fstype="none", flags=MS_SHARED | MS_REC)
            except OSError as exc:
                raise NetnsError(f"cannot prepare {self.directory} for network namespaces: {exc.strerror}") from exc
            self._dir_ready = True


__all__ = ["DEFAULT_NETNS_DIR", "NetnsError", "NetnsStore", "enter", "in_thread", "is_netns", "off_event_loop",
           "open_socket"]
