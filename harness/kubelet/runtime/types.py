"""What the kubelet asks the runtime for, and what the runtime reports back.

The kubelet resolves everything Kubernetes-specific (image config vs. command/args, env, volumes,
resources) into a `ContainerRequest`; the runtime knows nothing about pods beyond these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

State = Literal["created", "running", "exited", "unknown"]


@dataclass(frozen=True)
class Mount:
    """One mount into the container: a bind mount of `source` unless `kind` says otherwise."""

    destination: str
    source: str
    read_only: bool = False
    kind: Literal["bind", "tmpfs"] = "bind"


@dataclass(frozen=True)
class ContainerRequest:
    """Everything needed to run one attempt of one container of a pod."""

    id: str                      # runtime id, unique on the node: [A-Za-z0-9_.-]+
    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str                    # the container's name in the pod spec
    attempt: int                 # 0 for the first run, +1 on every restart (= restartCount)
    image_ref: str               # as the pod spec names it
    image_id: str                # sha256:...
    rootfs: Path                 # the image's unpacked root file system (read-only lower layer)
    args: list[str]              # the final argv (entrypoint/cmd vs command/args already resolved)
    env: list[str]               # "KEY=value"
    working_dir: str = "/"
    uid: int = 0
    gid: int = 0
    hostname: str = ""
    netns_path: str | None = None        # join this network namespace; None = a new empty one
    mounts: list[Mount] = field(default_factory=list)
    memory_limit: int | None = None      # bytes
    cpu_limit_milli: int | None = None   # CFS quota from limits.cpu
    cpu_request_milli: int | None = None  # shares from requests.cpu
    cgroup_parent: str = "/harness"      # cgroupsPath = <cgroup_parent>/<id>
    log_path: Path | None = None         # CRI-format log file the shim writes
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerInfo:
    """The runtime's view of one container (one attempt), alive or finished."""

    id: str
    pod_uid: str
    name: str
    attempt: int
    state: State
    image_ref: str
    image_id: str
    log_path: str | None = None
    pid: int | None = None
    created_at: str | None = None        # RFC 3339 UTC, e.g. 2026-11-25T23:01:02Z
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None            # exited: Completed | Error | OOMKilled | StartError
    message: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
