"""The Pod Security Standards' checks (harness.api.podsecurity): every check passes a pod that keeps to it and
fails one that does not with upstream's words; levels and versions pick the checks upstream's registry does; and
namespace labels read as upstream's PolicyToEvaluate reads them."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api.podsecurity import (
    BASELINE,
    CHECKS,
    LATEST,
    PRIVILEGED,
    RESTRICTED,
    LevelVersion,
    Policy,
    Version,
    defaults_from_configuration,
    evaluate,
    forbidden_detail,
    forbidden_reasons,
    policy_from_labels,
)
from harness.api.podsecurity.checks import NEWEST, Violation


def c(name: str, **sc: Any) -> dict[str, Any]:
    """A container, with a securityContext when given fields of one."""
    out: dict[str, Any] = {"name": name, "image": "nginx"}
    if sc:
        out["securityContext"] = sc
    return out


def spec(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"containers": list(containers), **fields}


def check(check_id: str, metadata: dict[str, Any], pod_spec: dict[str, Any], minor: int = NEWEST) -> Violation | None:
    """Run one check of the table as it reads at v1.<minor>."""
    (found,) = [c for c in CHECKS if c.id == check_id]
    step = [s for s in found.steps if s.since <= minor][-1]
    return step.check(metadata, pod_spec)


RESTRICTED_OK = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                 "seccompProfile": {"type": "RuntimeDefault"}}
PROBE = {"httpGet": {"path": "/", "port": 80}}

# (check, passing (metadata, spec), failing (metadata, spec), reason, detail)
CASES: list[tuple[str, tuple[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]], str, str]] = [
    ("windowsHostProcess",
     ({}, spec(c("a", windowsOptions={"hostProcess": False}))),
     ({}, spec(c("e", windowsOptions={"hostProcess": True}), c("f", windowsOptions={"hostProcess": True}),
               securityContext={"windowsOptions": {"hostProcess": True}})),
     "hostProcess", 'pod and containers "e", "f" must not set securityContext.windowsOptions.hostProcess=true'),
    ("hostNamespaces",
     ({}, spec(c("a"), hostNetwork=False)),
     ({}, spec(c("a"), hostNetwork=True, hostPID=True, hostIPC=True)),
     "host namespaces", "hostNetwork=true, hostPID=true, hostIPC=true"),
    ("privileged",
     ({}, spec(c("a", privileged=False))),
     ({}, spec(c("a"), c("d", privileged=True), c("e", privileged=True))),
     "privileged", 'containers "d", "e" must not set securityContext.privileged=true'),
    ("capabilities_baseline",
     ({}, spec(c("a", capabilities={"add": ["NET_BIND_SERVICE", "CHOWN", "KILL"]}))),
     ({}, spec(c("a", capabilities={"add": ["FOO", "BAR"]}), c("b", capabilities={"add": ["BAZ", "CHOWN"]}))),
     "non-default capabilities",
     'containers "a", "b" must not include "BAR", "BAZ", "FOO" in securityContext.capabilities.add'),
    ("hostPathVolumes",
     ({}, spec(c("a"), volumes=[{"name": "data", "emptyDir": {}}])),
     ({}, spec(c("a"), volumes=[{"name": "a", "hostPath": {"path": "/a"}}, {"name": "b", "hostPath": {"path": "/b"}},
                                {"name": "c", "emptyDir": {}}])),
     "hostPath volumes", 'volumes "a", "b"'),
    ("hostPorts",
     ({}, spec(c("a") | {"ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 0}]})),
     ({}, spec(c("a"), c("b") | {"ports": [{"containerPort": 1, "hostPort": 20}, {"containerPort": 2, "hostPort": 10}]},
               c("c") | {"ports": [{"containerPort": 3, "hostPort": 30}]})),
     "hostPort", 'containers "b", "c" use hostPorts 10, 20, 30'),
    ("hostProbesAndHostLifecycle",
     ({}, spec(c("a") | {"livenessProbe": PROBE, "lifecycle": {"preStop": {"httpGet": {"port": 80, "host": ""}}}})),
     ({}, spec(c("invalid2") | {"readinessProbe": {"tcpSocket": {"port": 1, "host": "b.com"}}},
               c("invalid1") | {"lifecycle": {"postStart": {"httpGet": {"port": 1, "host": "a.com"}}}})),
     "probe or lifecycle host", 'containers "invalid1", "invalid2" use probe or lifecycle hosts "a.com", "b.com"'),
    ("appArmorProfile",
     ({"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "localhost/foo"}},
      spec(c("a", appArmorProfile={"type": "Localhost", "localhostProfile": "foo"}),
           securityContext={"appArmorProfile": {"type": "RuntimeDefault"}})),
     ({"annotations": {"container.apparmor.security.beta.kubernetes.io/e": "unconfined",
                       "container.apparmor.security.beta.kubernetes.io/b": "runtime/default"}},
      spec(c("foo", appArmorProfile={"type": "Unconfined"}), securityContext={"appArmorProfile": {"type": "Bad"}})),
     "forbidden AppArmor profiles",
     'pod and container "foo" and annotation must not set AppArmor profile type to "Bad", "Unconfined", '
     '"container.apparmor.security.beta.kubernetes.io/e="unconfined""'),
    ("seLinuxOptions",
     ({}, spec(c("a", seLinuxOptions={"type": "container_engine_t", "level": "s0:c1"}),
               securityContext={"seLinuxOptions": {"type": "container_t"}})),
     ({}, spec(c("e", seLinuxOptions={"type": "bar"}), c("f", seLinuxOptions={"user": "me"}),
               c("g", seLinuxOptions={"role": "r"}), securityContext={"seLinuxOptions": {"type": "foo"}})),
     "seLinuxOptions", 'pod and containers "e", "f", "g" set forbidden securityContext.seLinuxOptions: '
                       'types "bar", "foo"; user may not be set; role may not be set'),
    ("procMount",
     ({}, spec(c("a", procMount="Default"))),
     ({}, spec(c("a"), c("d", procMount="Unmasked"), c("e", procMount="other"))),
     "procMount", 'containers "d", "e" must not set securityContext.procMount to "Unmasked", "other"'),
    ("seccompProfile_baseline",
     ({}, spec(c("a", seccompProfile={"type": "Localhost", "localhostProfile": "p.json"}))),
     ({}, spec(c("c", seccompProfile={"type": "Unconfined"}), c("d", seccompProfile={"type": "Unconfined"}),
               securityContext={"seccompProfile": {"type": "Unconfined"}})),
     "seccompProfile", 'pod and containers "c", "d" must not set securityContext.seccompProfile.type to "Unconfined"'),
    ("sysctls",
     ({}, spec(c("a"), securityContext={"sysctls": [{"name": "net.ipv4.tcp_notsent_lowat", "value": "1"}]})),
     ({}, spec(c("a"), securityContext={"sysctls": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]})),
     "forbidden sysctls", "a, b"),
    ("allowPrivilegeEscalation",
     ({}, spec(c("a", allowPrivilegeEscalation=False))),
     ({}, spec(c("a"), c("b", allowPrivilegeEscalation=True), c("c", privileged=False))),
     "allowPrivilegeEscalation != false",
     'containers "a", "b", "c" must set securityContext.allowPrivilegeEscalation=false'),
    ("capabilities_restricted",
     ({}, spec(c("a", capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}))),
     ({}, spec(c("a", capabilities={"add": ["FOO", "BAR"]}), c("b", capabilities={"drop": ["NET_RAW"],
                                                                                    "add": ["BAZ"]}),
               c("c", capabilities={"drop": ["ALL"], "add": ["CHOWN"]}))),
     "unrestricted capabilities",
     'containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; '
     'containers "a", "b", "c" must not include "BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add'),
    ("procMount_restricted",
     ({}, spec(c("a"), c("b", procMount="Default"))),
     ({}, spec(c("d", procMount="Unmasked"), hostUsers=False)),
     "procMount", 'container "d" must not set securityContext.procMount to "Unmasked"'),
    ("restrictedVolumes",
     ({}, spec(c("a"), volumes=[{"name": n, k: {}} for n, k in (
         ("a", "configMap"), ("b", "csi"), ("c", "downwardAPI"), ("d", "emptyDir"), ("e", "ephemeral"),
         ("f", "image"), ("g", "persistentVolumeClaim"), ("h", "projected"), ("i", "secret"))])),
     ({}, spec(c("a"), volumes=[{"name": "b1", "hostPath": {"path": "/"}}, {"name": "b2", "nfs": {}},
                                {"name": "c1"}, {"name": "d", "secret": {}}])),
     "restricted volume types",
     'volumes "b1", "b2", "c1" use restricted volume types "hostPath", "nfs", "unknown"'),
    ("runAsNonRoot",
     ({}, spec(c("a"), c("b", runAsNonRoot=True), securityContext={"runAsNonRoot": True})),
     ({}, spec(c("a"), c("b"))),
     "runAsNonRoot != true", 'pod or containers "a", "b" must set securityContext.runAsNonRoot=true'),
    ("runAsUser",
     ({}, spec(c("a", runAsUser=1000), securityContext={"runAsUser": 1})),
     ({}, spec(c("a"), c("c", runAsUser=0), c("d", runAsUser=0), securityContext={"runAsUser": 0})),
     "runAsUser=0", 'pod and containers "c", "d" must not set runAsUser=0'),
    ("seccompProfile_restricted",
     ({}, spec(c("a"), c("b", seccompProfile={"type": "Localhost"}),
               securityContext={"seccompProfile": {"type": "RuntimeDefault"}})),
     ({}, spec(c("a"), c("b"))),
     "seccompProfile",
     'pod or containers "a", "b" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'),
]


def test_every_check_has_cases() -> None:
    assert sorted(case[0] for case in CASES) == sorted(c.id for c in CHECKS)


@pytest.mark.parametrize(("check_id", "passing", "failing", "reason", "detail"), CASES, ids=[c[0] for c in CASES])
def test_check_passes_a_keeping_pod_and_fails_a_breaking_one_with_upstreams_words(
        check_id: str, passing: tuple[dict[str, Any], dict[str, Any]], failing: tuple[dict[str, Any], dict[str, Any]],
        reason: str, detail: str) -> None:
    assert check(check_id, *passing) is None
    assert check(check_id, *failing) == Violation(reason, detail)


@pytest.mark.parametrize(("check_id", "pod_spec", "detail"), [
    ("runAsNonRoot", spec(c("a"), securityContext={"runAsNonRoot": False}),
     "pod must not set securityContext.runAsNonRoot=false"),
    ("runAsNonRoot", spec(c("a"), c("c", runAsNonRoot=False), c("d", runAsNonRoot=False),
                          securityContext={"runAsNonRoot": True}),
     'containers "c", "d" must not set securityContext.runAsNonRoot=false'),
    ("seccompProfile_restricted", spec(c("a"), securityContext={"seccompProfile": {"type": "Unconfined"}}),
     'pod must not set securityContext.seccompProfile.type to "Unconfined"'),
    ("capabilities_restricted", spec(c("a")), 'container "a" must set securityContext.capabilities.drop=["ALL"]'),
    ("hostPorts", spec(c("b") | {"ports": [{"containerPort": 1, "hostPort": 20}]}), 'container "b" uses hostPort 20'),
    ("seLinuxOptions", spec(c("a"), securityContext={"seLinuxOptions": {"type": "bad"}}),
     'pod set forbidden securityContext.seLinuxOptions: type "bad"'),
])
def test_check_words_other_ways_to_break_it(check_id: str, pod_spec: dict[str, Any], detail: str) -> None:
    violation = check(check_id, {}, pod_spec)
    assert violation is not None and violation.detail == detail


def test_seccomp_annotations_are_the_baseline_check_before_v1_19() -> None:
    md = {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                          "container.seccomp.security.alpha.kubernetes.io/a": "unconfined",
                          "container.seccomp.security.alpha.kubernetes.io/b": "unknown",
                          "container.seccomp.security.alpha.kubernetes.io/c": "docker/default"}}
    assert check("seccompProfile_baseline", md, spec(c("a"), c("b"), c("c")), minor=18) == Violation(
        "seccompProfile", 'forbidden annotations container.seccomp.security.alpha.kubernetes.io/a="unconfined", '
        'container.seccomp.security.alpha.kubernetes.io/b="unknown", '
        'seccomp.security.alpha.kubernetes.io/pod="unconfined"')
    assert evaluate(LevelVersion(BASELINE, Version(19)), md, spec(c("a"), c("b"), c("c"))) == []


NGINX = spec(c("nginx"))
NGINX_DETAIL = ('allowPrivilegeEscalation != false (container "nginx" must set securityContext.allowPrivilegeEscalation'
                '=false), unrestricted capabilities (container "nginx" must set securityContext.capabilities.drop='
                '["ALL"]), runAsNonRoot != true (pod or container "nginx" must set securityContext.runAsNonRoot=true), '
                'seccompProfile (pod or container "nginx" must set securityContext.seccompProfile.type to '
                '"RuntimeDefault" or "Localhost")')


def test_a_plain_pod_breaks_restricted_in_upstreams_order_and_keeps_baseline() -> None:
    violations = evaluate(LevelVersion(RESTRICTED, LATEST), {}, NGINX)
    assert forbidden_detail(violations) == NGINX_DETAIL
    assert forbidden_reasons(violations) == ("allowPrivilegeEscalation != false, unrestricted capabilities, "
                                             "runAsNonRoot != true, seccompProfile")
    assert evaluate(LevelVersion(BASELINE, LATEST), {}, NGINX) == []
    assert evaluate(LevelVersion(PRIVILEGED, LATEST), {}, spec(c("a", privileged=True), hostPID=True)) == []
    assert evaluate(LevelVersion(RESTRICTED, LATEST), {}, spec(c("nginx", **RESTRICTED_OK))) == []


def test_restricted_runs_baseline_checks_first_and_replaces_those_it_overrides() -> None:
    pod = spec(c("a", **{**RESTRICTED_OK, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}, privileged=True),
               hostNetwork=True, volumes=[{"name": "h", "hostPath": {"path": "/"}}])
    reasons = [v.reason for v in evaluate(LevelVersion(RESTRICTED, LATEST), {}, pod)]
    # non-default capabilities and hostPath volumes give way to their restricted versions
    assert reasons == ["host namespaces", "privileged", "unrestricted capabilities", "restricted volume types"]
    assert [v.reason for v in evaluate(LevelVersion(BASELINE, LATEST), {}, pod)] == [
        "non-default capabilities", "host namespaces", "hostPath volumes", "privileged"]


@pytest.mark.parametrize(("level", "pod_spec", "older", "newer"), [
    (BASELINE, spec(c("a"), securityContext={"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"}]}), 31, 32),
    (BASELINE, spec(c("a", seLinuxOptions={"type": "container_engine_t"})), 30, 31),
    (BASELINE, spec(c("a") | {"startupProbe": {"httpGet": {"port": 1, "host": "x"}}}), 34, 33),
    (BASELINE, spec(c("a", procMount="Unmasked"), hostUsers=False), 34, 35),
    (RESTRICTED, spec(c("a", allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]}), hostUsers=False,
                      securityContext={"seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": 0},
                      initContainers=[c("i", allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]})]), 34,
     35),
    (RESTRICTED, spec(c("a", runAsNonRoot=True), os={"name": "windows"}), 24, 25),
])
def test_versions_pick_the_check_as_it_read_then(level: str, pod_spec: dict[str, Any], older: int,
                                                  newer: int) -> None:
    """Each row breaks the policy at one version and keeps it at the other (the check changed in between);
    `latest` and versions past the newest read as the newest."""
    breaks_at = {older: bool(evaluate(LevelVersion(level, Version(older)), {}, pod_spec)),
                 newer: bool(evaluate(LevelVersion(level, Version(newer)), {}, pod_spec))}
    assert breaks_at[min(older, newer)] != breaks_at[max(older, newer)], breaks_at
    newest = max(older, newer)
    for version in (LATEST, Version(99)):
        assert bool(evaluate(LevelVersion(level, version), {}, pod_spec)) == breaks_at[newest]


def test_restricted_before_v1_8_asks_nothing_of_privilege_escalation() -> None:
    reasons = [v.reason for v in evaluate(LevelVersion(RESTRICTED, Version(7)), {}, NGINX)]
    assert reasons == ["runAsNonRoot != true"]


# -- namespace labels ---------------------------------------------------------------------------------------------

P = "pod-security.kubernetes.io/"


def lv(level: str, version: Version = LATEST) -> LevelVersion:
    return LevelVersion(level, version)


def test_labels_over_defaults() -> None:
    policy, causes = policy_from_labels({P + "enforce": "baseline", P + "audit": "restricted",
                                         P + "audit-version": "v1.30"}, Policy())
    assert causes == []
    # warn follows the explicitly stricter enforce level
    assert policy == Policy(lv(BASELINE), lv(RESTRICTED, Version(30)), lv(BASELINE))
    policy, _ = policy_from_labels({P + "enforce": "baseline", P + "enforce-version": "v1.29",
                                    P + "warn-version": "v1.31"}, Policy())
    assert policy.warn == lv(BASELINE, Version(31))
    policy, _ = policy_from_labels({P + "enforce": "baseline", P + "warn": "privileged"}, Policy())
    assert policy.warn == lv(PRIVILEGED)
    assert policy_from_labels({}, Policy(warn=lv(RESTRICTED)))[0] == Policy(warn=lv(RESTRICTED))
    assert str(lv(RESTRICTED)) == "restricted:latest" and str(lv(BASELINE, Version(0))) == "baseline:v1.0"


def test_labels_that_do_not_parse_are_reported_and_fail_closed_for_enforce_open_for_the_rest() -> None:
    policy, causes = policy_from_labels({P + "enforce": "bogus", P + "audit": "Restricted", P + "warn-version": "1.2",
                                         P + "enforce-version": "v1.02"}, Policy())
    assert policy == Policy(lv(RESTRICTED), lv(PRIVILEGED), lv(PRIVILEGED))
    assert [f"{x.field}: {x.message}" for x in causes] == [
        f'metadata.labels[{P}enforce]: Invalid value: "bogus": must be one of privileged, baseline, restricted',
        f'metadata.labels[{P}enforce-version]: Invalid value: "v1.02": must be "latest" or "v1.x"',
        f'metadata.labels[{P}audit]: Invalid value: "Restricted": must be one of privileged, baseline, restricted',
        f'metadata.labels[{P}warn-version]: Invalid value: "1.2": must be "latest" or "v1.x"',
    ]


def test_configuration_defaults() -> None:
    assert defaults_from_configuration(None) == (Policy(), [])
    policy, problems = defaults_from_configuration({"enforce": "baseline", "warn": "restricted",
                                                    "warn-version": "v1.30"})
    assert (policy, problems) == (Policy(lv(BASELINE), lv(PRIVILEGED), lv(RESTRICTED, Version(30))), [])
    assert defaults_from_configuration({"audit": "nope"})[1] == [
        'defaults.audit: Invalid value: "nope": must be one of privileged, baseline, restricted']
