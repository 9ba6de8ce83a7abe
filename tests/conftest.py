"""Hooks for every test directory: what a test needs from the machine, and what the tests started (tests/tools.py)."""

from __future__ import annotations

import shutil
import sys

import pytest

from tests import tools

RECORDER = tools.SpawnRecorder()
sys.addaudithook(RECORDER.hook)  # audit hooks cannot be removed: it records until the process ends


def pytest_runtest_setup(item: pytest.Item) -> None:
    tools.check(item)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under `make`, a program the tests started that `make` does not install fails the run."""
    if not tools.required() or shutil.which("dpkg-query") is None:
        return
    unowned = RECORDER.unowned()
    if unowned:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"  {program}: from {package}" for program, package in unowned.items()]
        message = ("The tests started programs that `make deps` does not install (add their packages to "
                   "harness/cluster/hostpackages.py):\n" + "\n".join(lines))
        if reporter is not None:
            reporter.write_line(message, red=True)
        else:
            print(message, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
