"""What a test needs from the machine: `@needs("runc", root=True)` marks it.

Where something is missing, a plain `pytest` run skips the test and says what to install. Under `make` (which sets
HARNESS_REQUIRE_TOOLS=1 after installing everything) a missing tool fails the test instead: a skip there would hide
an install step that `make deps` lacks, and CI would be green on a machine where a developer installed it by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from harness.cluster import hostpackages

REQUIRE_ENV = "HARNESS_REQUIRE_TOOLS"


def package_installed(name: str) -> bool:
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True,
                              check=False, timeout=30)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.endswith(" installed")


def lacking(*executables: str, packages: tuple[str, ...] = (), root: bool = False) -> list[str]:
    """What of these is missing here, each said with the package to install."""
    what = hostpackages.missing(list(executables))
    what += [f"Debian package {name}" for name in packages if not package_installed(name)]
    if root and os.geteuid() != 0:
        what.append("root")
    return what


def needs(*executables: str, packages: tuple[str, ...] = (), root: bool = False) -> pytest.MarkDecorator:
    """Mark a test (or `pytestmark` a module) as needing these executables, Debian packages, or root."""
    return pytest.mark.needs_tools(lacking(*executables, packages=packages, root=root))


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def check(item: pytest.Item) -> None:
    """Skip, or under `make` fail, a test whose needs are not met (called from the root conftest)."""
    for mark in item.iter_markers("needs_tools"):
        if mark.args and mark.args[0]:
            message = f"missing: {', '.join(mark.args[0])} (`make deps` installs them)"
            if required():
                pytest.fail(f"{message}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
            pytest.skip(message)


# ---------------------------------------------------------------------------------------------- what tests ran

# Essential Debian packages are on every system; these are what a user has before `make` can run at all.
PREREQUISITE_PACKAGES = {"make", "git"}


class SpawnRecorder:
    """Every program this test process starts (components run in-process in the integration tests, so their
    `runc`, `ip` and `iptables-restore` count too), recorded through Python's audit hook; `unowned()` names those
    that no package of `make` ships, so a tool installed by hand cannot carry a green run."""

    def __init__(self) -> None:
        self.programs: set[str] = set()

    def hook(self, event: str, args: tuple[object, ...]) -> None:
        if event == "subprocess.Popen":
            executable, argv = args[0], args[1]
            first = executable or (argv[0] if isinstance(argv, list | tuple) and argv else argv)
            if isinstance(first, str | bytes | os.PathLike):
                self.programs.add(os.fsdecode(first))
        elif event in ("os.exec", "os.posix_spawn") and isinstance(args[0], str | bytes | os.PathLike):
            self.programs.add(os.fsdecode(args[0]))

    def unowned(self) -> dict[str, str]:
        """Each recorded program that comes from neither the virtualenv, a test's own files, nor a package that
        `make` installs or every Debian system has, with the package it does come from."""
        prefix = os.path.realpath(sys.prefix)
        found: dict[str, str] = {}
        for program in sorted(self.programs):
            path = shutil.which(program, path=f"{os.environ.get('PATH', '')}:{hostpackages.SEARCH_PATH}")
            if path is None:
                continue  # it failed to start, which the test that ran it saw
            real = os.path.realpath(path)
            if real.startswith((prefix + os.sep, os.path.realpath(sys.base_prefix) + os.sep)) or not real.startswith(
                    ("/usr/", "/bin/", "/sbin/", "/opt/", "/snap/")):
                continue  # the virtualenv or the Python that runs it, or a file a test made
            package = dpkg_owner(path)
            if package in hostpackages.names() or package in PREREQUISITE_PACKAGES or (
                    package is not None and essential(package)):
                continue
            found[program] = package or f"no package ({real})"
        return found


def dpkg_owner(path: str) -> str | None:
    """The Debian package that ships a file, or None. dpkg knows a file by the name its package gave it: it is
    asked for the path and its link target, each with and without the usr-merge `/usr` prefix."""
    names = [path, os.path.realpath(path)]
    for candidate in dict.fromkeys([*names, *(name.removeprefix("/usr") for name in names)]):
        try:
            done = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False,
                                  timeout=30)
        except OSError:
            return None
        if done.returncode == 0 and not done.stdout.startswith("diversion"):
            return done.stdout.split(":")[0].split(",")[0].strip()
    return None


def essential(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package], capture_output=True, text=True,
                          check=False, timeout=30)
    return done.stdout.strip() == "yes"
