"""Run `ansible/site.yml` against a cluster's inventory through ansible-runner, showing progress as it goes.

The playbook runs as `ansible-playbook` would from the project (ansible/ansible.cfg, ansible/group_vars); the
runner's artifacts — the full output, every event — stay under `<cluster dir>/ansible/artifacts/<ident>/`, and the
last run's output is copied to `<cluster dir>/ansible/last-run.log`. A failure raises ProvisionError naming each
failed host, task and message, and where the full log is.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
PLAYBOOK = ANSIBLE_DIR / "site.yml"
RECAP_KEYS = ("ok", "changed", "unreachable", "failures", "skipped", "rescued", "ignored")


class ProvisionError(Exception):
    """The playbook failed: `failures` says on which host, in which task, with what message; `log` is the full log."""

    def __init__(self, message: str, failures: list[TaskFailure], log: Path | None) -> None:
        super().__init__(message)
        self.failures = failures
        self.log = log

    def __str__(self) -> str:
        lines = [self.args[0]]
        lines += [f"  {f.host}: task '{f.task}' {f.kind}: {f.message}" for f in self.failures]
        if self.log:
            lines.append(f"full log: {self.log}")
        return "\n".join(lines)


@dataclass
class TaskFailure:
    host: str
    task: str
    kind: str  # "failed" or "unreachable"
    message: str


@dataclass
class PlaybookRun:
    """What a run did: the per-host recap (ok, changed, failures, ...), its seconds, and its full log."""

    recap: dict[str, dict[str, int]]
    seconds: float
    log: Path
    tasks: int = 0
    failures: list[TaskFailure] = field(default_factory=list)

    def changed(self) -> int:
        return sum(host.get("changed", 0) for host in self.recap.values())


def _message(result: Mapping[str, Any]) -> str:
    """The most useful one-line account of a failed task's result."""
    for key in ("msg", "stderr", "stdout", "module_stderr"):
        value = result.get(key)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.strip().splitlines()[-3:])
            return text if len(text) <= 400 else text[:400] + "..."
    if result.get("results"):  # a loop: the first failed item
        for item in result["results"]:
            if isinstance(item, Mapping) and item.get("failed"):
                return f"item {item.get('item')!r}: {_message(item)}"
    return "(no message)"


class _Progress:
    """Turns runner events into progress lines and failure records."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.failures: list[TaskFailure] = []
        self.recap: dict[str, dict[str, int]] = {}
        self.tasks = 0
        self._last_task = ""

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.say(f"play: {data.get('play', '?')}")
        elif kind == "playbook_on_task_start":
            task = str(data.get("task", "?"))
            self.tasks += 1
            if task != self._last_task:  # include_role repeats names across plays: say each once in a row
                self.say(f"  {task}")
                self._last_task = task
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            self.failures.append(TaskFailure(str(data.get("host")), str(data.get("task")), "failed",
                                             _message(data.get("res") or {})))
        elif kind == "runner_on_unreachable":
            self.failures.append(TaskFailure(str(data.get("host")), str(data.get("task")), "unreachable",
                                             _message(data.get("res") or {})))
        elif kind == "playbook_on_stats":
            for key in RECAP_KEYS:
                for host, count in (data.get(key) or {}).items():
                    self.recap.setdefault(host, dict.fromkeys(RECAP_KEYS, 0))[key] = count
        return True  # keep the event in the artifacts


def run_playbook(inventory: Path, data_dir: Path, *, ident: str = "site", tags: list[str] | None = None,
                 limit: str | None = None, extravars: Mapping[str, Any] | None = None,
                 progress: Callable[[str], None] = print, timeout: int = 1800) -> PlaybookRun:
    """Run site.yml against `inventory`; artifacts under `data_dir`. Raises ProvisionError when it fails."""
    import ansible_runner  # heavy: only `harness up` needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    envvars = {
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
    }
    cmdline = []
    if tags:
        cmdline += ["--tags", ",".join(tags)]
    watcher = _Progress(progress)
    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(data_dir), project_dir=str(ANSIBLE_DIR), playbook=str(PLAYBOOK),
        inventory=str(inventory.resolve()), ident=ident, envvars=envvars, extravars=dict(extravars or {}),
        cmdline=" ".join(cmdline) or None, limit=limit, quiet=True, rotate_artifacts=5,
        suppress_env_files=True, event_handler=watcher, timeout=timeout)
    seconds = time.monotonic() - started
    artifact_log = Path(runner.config.artifact_dir) / "stdout"
    log = data_dir / "last-run.log"
    try:
        shutil.copyfile(artifact_log, log)
    except OSError:
        log = artifact_log
    result = PlaybookRun(recap=watcher.recap, seconds=seconds, log=log, tasks=watcher.tasks,
                         failures=watcher.failures)
    if runner.rc != 0 or runner.status != "successful":
        why = f"ansible-playbook {runner.status} (exit {runner.rc}) after {seconds:.0f}s"
        raise ProvisionError(why, watcher.failures, log)
    return result


__all__ = ["ANSIBLE_DIR", "PLAYBOOK", "PlaybookRun", "ProvisionError", "TaskFailure", "run_playbook"]
