"""The Pod Security Standards' checks (upstream's `policy` package), as one table, `CHECKS`.

Each check reads a pod's metadata and spec (decoded JSON, so any field may be missing) and returns None when the
pod passes, else a `Violation` worded as upstream words it: a short reason (`runAsNonRoot != true`) and the detail
of what to change (`pod or container "nginx" must set securityContext.runAsNonRoot=true`). A check has one step per
policy version that changed it; `restricted` runs every restricted check plus the baseline checks no restricted
check overrides at that version, baseline ones first, each level's in the order of their IDs, so that messages
come out in upstream's order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from harness.api.podsecurity.levels import BASELINE, PRIVILEGED, LevelVersion

Meta = Mapping[str, Any]
Spec = Mapping[str, Any]


@dataclass(frozen=True)
class Violation:
    reason: str
    detail: str = ""


CheckFn = Callable[[Meta, Spec], Violation | None]


@dataclass(frozen=True)
class Step:
    """How a check reads from policy version v1.<since> on; `overrides` are baseline checks it replaces."""

    since: int
    check: CheckFn
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    id: str
    level: str
    steps: tuple[Step, ...]


# -- reading a pod spec ------------------------------------------------------------------------------------------

def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [_dict(v) for v in value] if isinstance(value, list) else []


def containers(spec: Spec) -> list[dict[str, Any]]:
    """Init containers, containers, then ephemeral containers, as upstream visits them."""
    return [c for key in ("initContainers", "containers", "ephemeralContainers") for c in _dicts(spec.get(key))]


def _name(container: Mapping[str, Any]) -> str:
    return str(container.get("name") or "")


def _sc(owner: Mapping[str, Any]) -> dict[str, Any]:
    return _dict(owner.get("securityContext"))


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _quote(items: Iterable[str]) -> str:
    """`"a", "b"` (upstream's joinQuote)."""
    return ", ".join(f'"{i}"' for i in items)


def _go_quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _containers(names: list[str]) -> str:
    return f"{_plural('container', 'containers', len(names))} {_quote(names)}"


def _setters(pod_bad: bool, names: list[str], *more: str) -> list[str]:
    """`pod`, `container(s) "a"`, ...: who set a forbidden value."""
    return (["pod"] if pod_bad else []) + ([_containers(names)] if names else []) + list(more)


def _windows(spec: Spec) -> bool:
    return _dict(spec.get("os")).get("name") == "windows"


def _user_namespace(spec: Spec) -> bool:
    return spec.get("hostUsers") is False


def _unless_windows(check: CheckFn) -> CheckFn:
    """From v1.25, a pod whose spec.os.name is windows may leave Linux-only fields unset."""
    return lambda md, spec: None if _windows(spec) else check(md, spec)


def _unless_user_namespace(check: CheckFn) -> CheckFn:
    """From v1.35, a pod in a user namespace (hostUsers: false) is not held to this."""
    return lambda md, spec: None if _user_namespace(spec) else check(md, spec)


# -- baseline ----------------------------------------------------------------------------------------------------

def host_process(md: Meta, spec: Spec) -> Violation | None:
    def on(sc: Mapping[str, Any]) -> bool:
        return _dict(sc.get("windowsOptions")).get("hostProcess") is True

    bad = [_name(c) for c in containers(spec) if on(_sc(c))]
    setters = _setters(on(_sc(spec)), bad)
    if setters:
        return Violation("hostProcess", f"{' and '.join(setters)} must not set "
                                        "securityContext.windowsOptions.hostProcess=true")
    return None


def host_namespaces(md: Meta, spec: Spec) -> Violation | None:
    shared = [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field) is True]
    return Violation("host namespaces", ", ".join(shared)) if shared else None


def privileged(md: Meta, spec: Spec) -> Violation | None:
    bad = [_name(c) for c in containers(spec) if _sc(c).get("privileged") is True]
    return Violation("privileged", f"{_containers(bad)} must not set securityContext.privileged=true") if bad else None


BASELINE_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def capabilities_baseline(md: Meta, spec: Spec) -> Violation | None:
    bad, added = [], set()
    for c in containers(spec):
        extra = [str(cap) for cap in _capabilities(c, "add") if str(cap) not in BASELINE_CAPABILITIES]
        if extra:
            bad.append(_name(c))
            added.update(extra)
    if bad:
        return Violation("non-default capabilities", f"{_containers(bad)} must not include {_quote(sorted(added))} "
                                                     "in securityContext.capabilities.add")
    return None


def _capabilities(container: Mapping[str, Any], which: str) -> list[Any]:
    value = _dict(_sc(container).get("capabilities")).get(which)
    return value if isinstance(value, list) else []


def host_path_volumes(md: Meta, spec: Spec) -> Violation | None:
    bad = [str(v.get("name") or "") for v in _dicts(spec.get("volumes")) if v.get("hostPath") is not None]
    return Violation("hostPath volumes", f"{_plural('volume', 'volumes', len(bad))} {_quote(bad)}") if bad else None


def host_ports(md: Meta, spec: Spec) -> Violation | None:
    bad, ports = [], set()
    for c in containers(spec):
        used = {str(p.get("hostPort")) for p in _dicts(c.get("ports")) if p.get("hostPort") not in (None, 0)}
        if used:
            bad.append(_name(c))
            ports |= used
    if bad:
        # upstream sorts the ports as strings
        return Violation("hostPort", f"{_containers(bad)} {_plural('uses', 'use', len(bad))} "
                                     f"{_plural('hostPort', 'hostPorts', len(ports))} {', '.join(sorted(ports))}")
    return None


def _handler_hosts(handler: Any) -> list[str]:
    handler = _dict(handler)
    return [str(host) for kind in ("httpGet", "tcpSocket") if (host := _dict(handler.get(kind)).get("host"))]


def probe_hosts(md: Meta, spec: Spec) -> Violation | None:
    bad, hosts = set(), set()
    for c in containers(spec):
        lifecycle = _dict(c.get("lifecycle"))
        handlers = [c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe"),
                    lifecycle.get("postStart"), lifecycle.get("preStop")]
        found = [h for handler in handlers for h in _handler_hosts(handler)]
        if found:
            bad.add(_name(c))
            hosts.update(found)
    if bad:
        return Violation("probe or lifecycle host", f"{_containers(sorted(bad))} {_plural('uses', 'use', len(bad))} "
                         f"{_plural('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} "
                         f"{_quote(sorted(hosts))}")
    return None


def _apparmor_ok(sc: Mapping[str, Any]) -> tuple[bool, str]:
    profile = sc.get("appArmorProfile")
    if profile is None:
        return True, ""
    kind = str(_dict(profile).get("type") or "")
    return kind in ("RuntimeDefault", "Localhost"), kind


APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def apparmor(md: Meta, spec: Spec) -> Violation | None:
    values: set[str] = set()
    pod_ok, kind = _apparmor_ok(_sc(spec))
    if not pod_ok:
        values.add(kind)
    bad = []
    for c in containers(spec):
        ok, kind = _apparmor_ok(_sc(c))
        if not ok:
            bad.append(_name(c))
            values.add(kind)
    annotations = sorted(f"{k}={_go_quote(str(v))}" for k, v in _dict(md.get("annotations")).items()
                         if k.startswith(APPARMOR_ANNOTATION)
                         and not (not v or v == "runtime/default" or str(v).startswith("localhost/")))
    listed = sorted(values) + annotations
    setters = _setters(not pod_ok, bad, *([_plural("annotation", "annotations", len(annotations))]
                                          if annotations else []))
    if setters:
        return Violation(_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(listed)),
                         f"{' and '.join(setters)} must not set AppArmor profile type to {_quote(listed)}")
    return None


def _selinux(allowed_types: frozenset[str]) -> CheckFn:
    def check(md: Meta, spec: Spec) -> Violation | None:
        types: set[str] = set()
        user = role = False

        def bad(sc: Mapping[str, Any]) -> bool:
            nonlocal user, role
            if sc.get("seLinuxOptions") is None:
                return False
            opts = _dict(sc.get("seLinuxOptions"))
            kind = str(opts.get("type") or "")
            wrong = kind not in allowed_types
            if wrong:
                types.add(kind)
            user, role = user or bool(opts.get("user")), role or bool(opts.get("role"))
            return wrong or bool(opts.get("user")) or bool(opts.get("role"))

        pod_bad = bad(_sc(spec))
        setters = _setters(pod_bad, [_name(c) for c in containers(spec) if bad(_sc(c))])
        if not setters:
            return None
        data = ([f"{_plural('type', 'types', len(types))} {_quote(sorted(types))}"] if types else []) \
            + (["user may not be set"] if user else []) + (["role may not be set"] if role else [])
        return Violation("seLinuxOptions", f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: "
                                           f"{'; '.join(data)}")
    return check


SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})


def proc_mount(md: Meta, spec: Spec) -> Violation | None:
    bad, kinds = [], set()
    for c in containers(spec):
        mount = _sc(c).get("procMount")
        if mount is not None and mount != "Default":
            bad.append(_name(c))
            kinds.add(str(mount))
    if bad:
        return Violation("procMount", f"{_containers(bad)} must not set securityContext.procMount to "
                                      f"{_quote(sorted(kinds))}")
    return None


SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"


def seccomp_annotations(md: Meta, spec: Spec) -> Violation | None:
    """Before v1.19: the alpha annotations may name only the runtime's default or a localhost profile."""
    annotations = _dict(md.get("annotations"))
    keys = [SECCOMP_POD_ANNOTATION] + [SECCOMP_CONTAINER_ANNOTATION + _name(c) for c in containers(spec)]
    bad = {f"{k}={_go_quote(str(annotations[k]))}" for k in keys if k in annotations
           and not (annotations[k] in ("runtime/default", "docker/default")
                    or str(annotations[k]).startswith("localhost/"))}
    if bad:
        return Violation("seccompProfile", f"forbidden {_plural('annotation', 'annotations', len(bad))} "
                                           f"{', '.join(sorted(bad))}")
    return None


def _seccomp(sc: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """(set, allowed, type) of a security context's seccompProfile."""
    profile = sc.get("seccompProfile")
    if profile is None:
        return False, False, ""
    kind = str(_dict(profile).get("type") or "")
    return True, kind in ("RuntimeDefault", "Localhost"), kind


def _seccomp_check(required: bool) -> CheckFn:
    """Baseline: a profile set must be RuntimeDefault or Localhost. Restricted: and every container must have
    one, its own or the pod's."""
    def check(md: Meta, spec: Spec) -> Violation | None:
        values: set[str] = set()
        pod_set, pod_ok, kind = _seccomp(_sc(spec))
        if pod_set and not pod_ok:
            values.add(kind)
        explicit, implicit = [], []
        for c in containers(spec):
            is_set, ok, kind = _seccomp(_sc(c))
            if is_set and not ok:
                explicit.append(_name(c))
                values.add(kind)
            elif not is_set and not (pod_set and pod_ok):
                implicit.append(_name(c))
        setters = _setters(pod_set and not pod_ok, explicit)
        if setters:
            return Violation("seccompProfile", f"{' and '.join(setters)} must not set "
                                               f"securityContext.seccompProfile.type to {_quote(sorted(values))}")
        if required and implicit:
            return Violation("seccompProfile", f"pod or {_containers(implicit)} must set securityContext."
                                               'seccompProfile.type to "RuntimeDefault" or "Localhost"')
        return None
    return check


SAFE_SYSCTLS = {
    0: frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                  "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"}),
    27: frozenset({"net.ipv4.ip_local_reserved_ports"}),
    29: frozenset({"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                   "net.ipv4.tcp_keepalive_probes"}),
    32: frozenset({"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}),
    37: frozenset({"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}),
}


def _sysctls(since: int) -> CheckFn:
    allowed = frozenset().union(*(names for version, names in SAFE_SYSCTLS.items() if version <= since))

    def check(md: Meta, spec: Spec) -> Violation | None:
        bad = [str(s.get("name") or "") for s in _dicts(_sc(spec).get("sysctls")) if str(s.get("name")) not in allowed]
        return Violation("forbidden sysctls", ", ".join(bad)) if bad else None
    return check


# -- restricted --------------------------------------------------------------------------------------------------

def allow_privilege_escalation(md: Meta, spec: Spec) -> Violation | None:
    bad = [_name(c) for c in containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return Violation("allowPrivilegeEscalation != false",
                         f"{_containers(bad)} must set securityContext.allowPrivilegeEscalation=false")
    return None


def capabilities_restricted(md: Meta, spec: Spec) -> Violation | None:
    no_drop, adding, added = [], [], set()
    for c in containers(spec):
        if "ALL" not in _capabilities(c, "drop"):
            no_drop.append(_name(c))
        extra = [str(cap) for cap in _capabilities(c, "add") if str(cap) != "NET_BIND_SERVICE"]
        if extra:
            adding.append(_name(c))
            added.update(extra)
    details = ([f'{_containers(no_drop)} must set securityContext.capabilities.drop=["ALL"]'] if no_drop else []) \
        + ([f"{_containers(adding)} must not include {_quote(sorted(added))} in securityContext.capabilities.add"]
           if adding else [])
    return Violation("unrestricted capabilities", "; ".join(details)) if details else None


#: Inline volume sources the restricted level allows; any other is named by its field (or "unknown").
ALLOWED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim",
                   "projected", "secret")
RESTRICTED_VOLUMES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
                      "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
                      "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO",
                      "storageos")


def restricted_volumes(md: Meta, spec: Spec) -> Violation | None:
    bad, kinds = [], set()
    for volume in _dicts(spec.get("volumes")):
        if any(volume.get(k) is not None for k in ALLOWED_VOLUMES):
            continue
        bad.append(str(volume.get("name") or ""))
        kinds.add(next((k for k in RESTRICTED_VOLUMES if volume.get(k) is not None), "unknown"))
    if bad:
        return Violation("restricted volume types", f"{_plural('volume', 'volumes', len(bad))} {_quote(bad)} "
                         f"{_plural('uses', 'use', len(bad))} "
                         f"{_plural('restricted volume type', 'restricted volume types', len(kinds))} "
                         f"{_quote(sorted(kinds))}")
    return None


def run_as_non_root(md: Meta, spec: Spec) -> Violation | None:
    pod = _sc(spec).get("runAsNonRoot")
    explicit = [_name(c) for c in containers(spec) if _sc(c).get("runAsNonRoot") is False]
    implicit = [_name(c) for c in containers(spec) if _sc(c).get("runAsNonRoot") is None and pod is not True]
    setters = _setters(pod is False, explicit)
    if setters:
        return Violation("runAsNonRoot != true", f"{' and '.join(setters)} must not set "
                                                 "securityContext.runAsNonRoot=false")
    if implicit:
        return Violation("runAsNonRoot != true", f"pod or {_containers(implicit)} must set "
                                                 "securityContext.runAsNonRoot=true")
    return None


def _is_root(value: Any) -> bool:
    return value == 0 and not isinstance(value, bool)


def run_as_user(md: Meta, spec: Spec) -> Violation | None:
    bad = [_name(c) for c in containers(spec) if _is_root(_sc(c).get("runAsUser"))]
    setters = _setters(_is_root(_sc(spec).get("runAsUser")), bad)
    if setters:
        return Violation("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0")
    return None


# -- the table ---------------------------------------------------------------------------------------------------

_B, _R = BASELINE, "restricted"

CHECKS: tuple[Check, ...] = (
    Check("appArmorProfile", _B, (Step(0, apparmor),)),
    Check("capabilities_baseline", _B, (Step(0, capabilities_baseline),)),
    Check("hostNamespaces", _B, (Step(0, host_namespaces),)),
    Check("hostPathVolumes", _B, (Step(0, host_path_volumes),)),
    Check("hostPorts", _B, (Step(0, host_ports),)),
    Check("hostProbesAndHostLifecycle", _B, (Step(34, probe_hosts),)),
    Check("privileged", _B, (Step(0, privileged),)),
    Check("procMount", _B, (Step(0, proc_mount), Step(35, _unless_user_namespace(proc_mount)))),
    Check("seLinuxOptions", _B, (Step(0, _selinux(SELINUX_TYPES)),
                                 Step(31, _selinux(SELINUX_TYPES | {"container_engine_t"})))),
    Check("seccompProfile_baseline", _B, (Step(0, seccomp_annotations), Step(19, _seccomp_check(required=False)))),
    Check("sysctls", _B, tuple(Step(v, _sysctls(v)) for v in sorted(SAFE_SYSCTLS))),
    Check("windowsHostProcess", _B, (Step(0, host_process),)),
    Check("allowPrivilegeEscalation", _R, (Step(8, allow_privilege_escalation),
                                           Step(25, _unless_windows(allow_privilege_escalation)))),
    Check("capabilities_restricted", _R, (Step(22, capabilities_restricted, ("capabilities_baseline",)),
                                          Step(25, _unless_windows(capabilities_restricted),
                                               ("capabilities_baseline",)))),
    Check("procMount_restricted", _R, (Step(35, proc_mount, ("procMount",)),)),
    Check("restrictedVolumes", _R, (Step(0, restricted_volumes, ("hostPathVolumes",)),)),
    Check("runAsNonRoot", _R, (Step(0, run_as_non_root), Step(35, _unless_user_namespace(run_as_non_root)))),
    Check("runAsUser", _R, (Step(23, run_as_user), Step(35, _unless_user_namespace(run_as_user)))),
    Check("seccompProfile_restricted", _R, (Step(19, _seccomp_check(required=True), ("seccompProfile_baseline",)),
                                            Step(25, _unless_windows(_seccomp_check(required=True)),
                                                 ("seccompProfile_baseline",)))),
)

#: The newest policy version any check knows: `latest`, and any later v1.X, evaluate as this one.
NEWEST = max(step.since for check in CHECKS for step in check.steps)


def _step_at(check: Check, minor: int) -> Step | None:
    steps = [s for s in check.steps if s.since <= minor]
    return steps[-1] if steps else None


@cache
def checks_for(level: str, minor: int) -> tuple[CheckFn, ...]:
    """The checks a level runs at policy version v1.<minor>, in upstream's order."""
    if level == PRIVILEGED:
        return ()
    active = {c.id: (c, step) for c in CHECKS if (step := _step_at(c, minor)) is not None
              and (c.level == BASELINE or level != BASELINE)}
    overridden = {o for c, step in active.values() if c.level != BASELINE for o in step.overrides}
    ordered = sorted((c for c, _ in active.values() if c.id not in overridden), key=lambda c: (c.level != BASELINE,
                                                                                               c.id))
    return tuple(active[c.id][1].check for c in ordered)


def evaluate(policy: LevelVersion, metadata: Meta | None, spec: Spec | None) -> list[Violation]:
    """What a pod (or pod template) breaks of a level at a version: empty when it passes."""
    minor = NEWEST if policy.version.latest else min(policy.version.minor or 0, NEWEST)
    md, sp = _dict(metadata), _dict(spec)
    return [v for check in checks_for(policy.level, minor) if (v := check(md, sp)) is not None]


def forbidden_reasons(violations: list[Violation]) -> str:
    """`reason, reason` (the per-pod lines of a namespace's warnings)."""
    return ", ".join(v.reason or "unknown forbidden reason" for v in violations)


def forbidden_detail(violations: list[Violation]) -> str:
    """`reason (detail), reason (detail)` (refusals and warnings)."""
    return ", ".join(f"{v.reason or 'unknown forbidden reason'} ({v.detail})" if v.detail
                     else v.reason or "unknown forbidden reason" for v in violations)
