"""From a container of a pod spec to a `ContainerRequest`: image, argv, env, mounts, user, resources.

Also the lifecycle hooks (postStart, preStop), which share the probes' handlers (exec, httpGet,
tcpSocket) plus `sleep`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api.quantity import milli_value, parse_quantity
from harness.kubelet import env as envs
from harness.kubelet import podfiles
from harness.kubelet.runtime.types import ContainerRequest, Mount

if TYPE_CHECKING:
    from harness.kubelet.images.imagestore import Image

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def container_id(pod_uid: str, name: str, attempt: int) -> str:
    """A runtime id unique on the node and readable in `runc list`: <uid prefix>-<container>-<attempt>."""
    return _ID_UNSAFE.sub("-", f"{pod_uid.replace('-', '')[:12]}-{name}-{attempt}")


def pull_policy(spec: dict[str, Any]) -> str:
    """imagePullPolicy, defaulted as the apiserver does: Always for :latest or no tag, else IfNotPresent."""
    policy = spec.get("imagePullPolicy")
    if policy:
        return str(policy)
    image = str(spec.get("image") or "")
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


def _security(pod: dict[str, Any], spec: dict[str, Any], key: str) -> Any:
    own = (spec.get("securityContext") or {}).get(key)
    if own is not None:
        return own
    return ((pod.get("spec") or {}).get("securityContext") or {}).get(key)


def _user(image: Image) -> tuple[int | None, int | None]:
    """The image's USER if numeric ("1000" or "1000:1000")."""
    user, _, group = (image.config.user or "").partition(":")
    try:
        return (int(user) if user else None), (int(group) if group else None)
    except ValueError:
        return None, None


def log_dir(pod_log_dir: Path, pod: dict[str, Any]) -> Path:
    md = pod["metadata"]
    return pod_log_dir / f"{md.get('namespace', 'default')}_{md['name']}_{md['uid']}"


@dataclass
class PodSandbox:
    """What every container of a pod shares: its network namespace, IP and managed files."""

    netns_path: str | None
    pod_ip: str
    files: dict[str, Path]        # /etc/hosts etc. -> file on the node
    pod_dir: Path                 # node-private per-pod directory
    volume_paths: dict[str, Path]


def build_request(pod: dict[str, Any], spec: dict[str, Any], *, attempt: int, image: Image, env: list[str],
                  sandbox: PodSandbox, mounts: list[Mount], cgroup_root: str, pod_log_dir: Path) -> ContainerRequest:
    md = pod["metadata"]
    uid = md["uid"]
    argv = envs.resolve_argv(spec, image.config.entrypoint, image.config.cmd)
    argv = envs.expand_command(argv, env)
    full_env = envs.merge_image_env(image.config.env, env)
    image_uid, image_gid = _user(image)
    run_as = _security(pod, spec, "runAsUser")
    run_as_group = _security(pod, spec, "runAsGroup")
    uid_ = int(run_as) if run_as is not None else (image_uid or 0)
    gid_ = int(run_as_group) if run_as_group is not None else (image_gid or 0)
    all_mounts = [Mount(target, str(path), read_only=False) for target, path in sandbox.files.items()
                  if not any(m.destination == target for m in mounts)]
    term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
    term_file = termination_log(sandbox.pod_dir, spec["name"], attempt)
    term_file.parent.mkdir(parents=True, exist_ok=True)
    term_file.touch()
    all_mounts += [*mounts, Mount(term_path, str(term_file))]
    resources = spec.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    memory = int(parse_quantity(limits["memory"])) if "memory" in limits else None
    cpu_limit = milli_value(limits["cpu"]) if "cpu" in limits else None
    cpu_request = milli_value(requests["cpu"]) if "cpu" in requests else cpu_limit
    name = spec["name"]
    return ContainerRequest(
        id=container_id(uid, name, attempt), pod_uid=uid, pod_namespace=md.get("namespace", "default"),
        pod_name=md["name"], name=name, attempt=attempt, image_ref=str(spec.get("image") or ""),
        image_id=image.id, rootfs=image.rootfs, args=argv, env=full_env,
        working_dir=spec.get("workingDir") or image.config.working_dir or "/", uid=uid_, gid=gid_,
        hostname=podfiles.hostname_of(pod),
        netns_path=sandbox.netns_path, mounts=all_mounts, memory_limit=memory, cpu_limit_milli=cpu_limit,
        cpu_request_milli=cpu_request, cgroup_parent=f"{cgroup_root}/pod{uid}",
        log_path=log_dir(pod_log_dir, pod) / name / f"{attempt}.log",
        labels={"io.kubernetes.pod.name": md["name"], "io.kubernetes.pod.namespace": md.get("namespace", ""),
                "io.kubernetes.pod.uid": uid, "io.kubernetes.container.name": name})


def termination_log(pod_dir: Path, name: str, attempt: int) -> Path:
    return pod_dir / "containers" / name / f"{attempt}-termination-log"


def termination_message(pod_dir: Path, spec: dict[str, Any], attempt: int, exit_code: int | None,
                        log_tail: str = "") -> str:
    """What the container wrote to its terminationMessagePath (max 4 KiB), or its log tail if the policy says so."""
    try:
        text = termination_log(pod_dir, spec["name"], attempt).read_bytes()[:4096].decode(errors="replace")
    except OSError:
        text = ""
    if not text and exit_code not in (0, None) and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        text = log_tail[-2048:]
    return text


async def sleep_hook(seconds: float) -> None:
    await asyncio.sleep(seconds)
