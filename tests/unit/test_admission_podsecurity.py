"""The PodSecurity admission plugin: enforce refuses pods, warn warns, audit annotates; workloads are warned, never
refused; exemptions; namespace labels are validated, and raising a namespace's enforce level warns about its pods."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.api import errors
from harness.apiserver import admission_podsecurity as psa
from harness.apiserver.admission import AdmissionConfigError, Attributes
from harness.apiserver.admission_podsecurity import PodSecurity, load_configuration
from harness.apiserver.metrics import Metrics
from harness.auth.user import UserInfo

P = "pod-security.kubernetes.io/"
ADMIN = UserInfo("admin", ("system:masters",))
NGINX_DETAIL = ('allowPrivilegeEscalation != false (container "nginx" must set securityContext.allowPrivilegeEscalation'
                '=false), unrestricted capabilities (container "nginx" must set securityContext.capabilities.drop='
                '["ALL"]), runAsNonRoot != true (pod or container "nginx" must set securityContext.runAsNonRoot=true), '
                'seccompProfile (pod or container "nginx" must set securityContext.seccompProfile.type to '
                '"RuntimeDefault" or "Localhost")')
SAFE = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"}}


def pod(name: str = "x", *, sc: dict[str, Any] | None = None, image: str = "nginx", **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "nginx", "image": image}
    if sc is not None:
        container["securityContext"] = sc
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [container], **spec}}


def namespace(name: str = "ns", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labelled(**labels)}}


def labelled(**labels: str) -> dict[str, str]:
    return {P + k.replace("_", "-"): v for k, v in labels.items()}


class Cluster:
    """Namespaces and pods the plugin reads, and what it said: warnings, audit annotations, metrics."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.warnings: list[str] = []
        self.annotations: dict[str, str] = {}
        self.metrics = Metrics()
        monkeypatch.setattr(psa.request_warnings, "add", self.warnings.append)
        monkeypatch.setattr(psa.audit, "add_annotations", self.annotations.update)

    async def lookup(self, name: str) -> dict[str, Any] | None:
        return self.namespaces.get(name)

    async def get(self, resource: str, namespace: str, name: str, group: str = "") -> dict[str, Any] | None:
        raise AssertionError("not used")

    async def list(self, resource: str, namespace: str, group: str = "") -> list[dict[str, Any]]:
        assert resource == "pods"
        return self.pods.get(namespace, [])

    async def update_status(self, resource: str, obj: dict[str, Any], group: str = "") -> dict[str, Any]:
        raise AssertionError("not used")

    def plugin(self, configuration: dict[str, Any] | None = None) -> PodSecurity:
        return PodSecurity(self.lookup, self, configuration, metrics=self.metrics)

    def label(self, name: str = "ns", **labels: str) -> None:
        self.namespaces[name] = {"metadata": {"name": name, "labels": labelled(**labels)}}

    def evaluations(self, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value("pod_security_evaluations_total", labels)
        return value or 0.0


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    return Cluster(monkeypatch)


def create(obj: dict[str, Any], *, resource: str = "pods", kind: str = "Pod", user: UserInfo = ADMIN,
           namespace: str = "ns") -> Attributes:
    return Attributes("CREATE", kind, resource, "", namespace, obj["metadata"]["name"], obj, None, user)


def update(new: dict[str, Any], old: dict[str, Any], *, resource: str = "pods", kind: str = "Pod",
           subresource: str = "", namespace: str = "ns") -> Attributes:
    return Attributes("UPDATE", kind, resource, subresource, namespace, new["metadata"]["name"], new, old, ADMIN)


CONFIG = {"apiVersion": "pod-security.admission.config.k8s.io/v1", "kind": "PodSecurityConfiguration"}

# -- pods -----------------------------------------------------------------------------------------------------------


async def test_enforce_refuses_a_breaking_pod_with_upstreams_message(cluster: Cluster) -> None:
    cluster.label(enforce="restricted")
    with pytest.raises(errors.Forbidden) as refused:
        await cluster.plugin().validate(create(pod("x")))
    assert str(refused.value) == f'pods "x" is forbidden: violates PodSecurity "restricted:latest": {NGINX_DETAIL}'
    assert refused.value.to_status()["details"] == {"name": "x", "kind": "pods"}
    assert refused.value.code == 403
    assert cluster.warnings == []  # no warning on a request already refused
    assert cluster.annotations == {P + "enforce-policy": "restricted:latest"}
    assert cluster.evaluations(decision="deny", policy_level="restricted", policy_version="latest", mode="enforce",
                               request_operation="create", resource="pod", subresource="") == 1


async def test_enforce_admits_a_keeping_pod(cluster: Cluster) -> None:
    cluster.label(enforce="restricted")
    await cluster.plugin().validate(create(pod("ok", sc=SAFE)))
    assert cluster.warnings == [] and cluster.annotations == {P + "enforce-policy": "restricted:latest"}
    assert cluster.evaluations(decision="allow", policy_level="restricted", policy_version="latest",
                               mode="enforce", request_operation="create", resource="pod", subresource="") == 1


async def test_warn_and_audit_admit_with_a_warning_and_an_annotation(cluster: Cluster) -> None:
    cluster.label(warn="restricted", audit="baseline", audit_version="v1.30")
    privileged = pod("x", sc={"privileged": True})
    await cluster.plugin().validate(create(privileged))
    assert cluster.warnings == [
        'would violate PodSecurity "restricted:latest": privileged (container "nginx" must not set '
        'securityContext.privileged=true), allowPrivilegeEscalation != false (container "nginx" must set '
        'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "nginx" must set '
        'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "nginx" must set '
        'securityContext.runAsNonRoot=true), seccompProfile (pod or container "nginx" must set '
        'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")']
    assert cluster.annotations == {
        P + "enforce-policy": "privileged:latest",
        P + "audit-violations": 'would violate PodSecurity "baseline:v1.30": privileged (container "nginx" must not '
                                'set securityContext.privileged=true)'}
    assert cluster.evaluations(decision="deny", policy_level="baseline", policy_version="v1.30", mode="audit",
                               request_operation="create", resource="pod", subresource="") == 1


async def test_enforce_baseline_refuses_baseline_breaks_and_warn_follows_enforce(cluster: Cluster) -> None:
    cluster.label(enforce="baseline")
    plugin = cluster.plugin()
    with pytest.raises(errors.Forbidden, match=r'violates PodSecurity "baseline:latest": host namespaces '
                                               r'\(hostNetwork=true\)$'):
        await plugin.validate(create(pod("x", hostNetwork=True)))
    await plugin.validate(create(pod("y")))  # breaks restricted only: nothing to say
    assert cluster.warnings == []


async def test_unlabelled_namespaces_are_privileged_and_quiet(cluster: Cluster) -> None:
    cluster.label()
    await cluster.plugin().validate(create(pod("x", sc={"privileged": True}, hostPID=True)))
    assert cluster.warnings == []
    assert cluster.annotations == {P + "enforce-policy": "privileged:latest"}


async def test_labels_that_do_not_parse_enforce_restricted(cluster: Cluster) -> None:
    cluster.label(enforce="bogus")
    with pytest.raises(errors.Forbidden, match='violates PodSecurity "restricted:latest"'):
        await cluster.plugin().validate(create(pod("x")))
    assert cluster.annotations[P + "error"] == (
        f'Failed to parse policy: metadata.labels[{P}enforce]: Invalid value: "bogus": must be one of privileged, '
        "baseline, restricted")


async def test_pod_updates_are_checked_only_when_an_image_changes(cluster: Cluster) -> None:
    cluster.label(enforce="restricted")
    plugin = cluster.plugin()
    old = pod("x")
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"a": "b"}
    await plugin.validate(update(relabelled, old))
    await plugin.validate(update(pod("x"), old, subresource="status"))
    with pytest.raises(errors.Forbidden, match='pods "x" is forbidden: violates PodSecurity'):
        await plugin.validate(update(pod("x", image="nginx:2"), old))
    debugged = copy.deepcopy(old)
    debugged["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]
    with pytest.raises(errors.Forbidden, match='containers "nginx", "debug" must set'):
        await plugin.validate(update(debugged, old))


async def test_deletes_are_not_checked(cluster: Cluster) -> None:
    cluster.label(enforce="restricted")
    await cluster.plugin().validate(Attributes("DELETE", "Pod", "pods", "", "ns", "x", None, pod("x"), ADMIN))


# -- exemptions ---------------------------------------------------------------------------------------------------

async def test_exempt_users_namespaces_and_runtime_classes_pass_unchecked(cluster: Cluster) -> None:
    config = {**CONFIG, "defaults": {"enforce": "restricted"},
              "exemptions": {"usernames": ["ci"], "namespaces": ["kube-system"], "runtimeClasses": ["kata"]}}
    cluster.label()
    cluster.label("kube-system")
    plugin = cluster.plugin(config)
    with pytest.raises(errors.Forbidden):  # the default enforce level applies to unlabelled namespaces
        await plugin.validate(create(pod("x")))
    cluster.annotations.clear()
    await plugin.validate(create(pod("x"), user=UserInfo("ci")))
    assert cluster.annotations == {P + "exempt": "user"}
    cluster.annotations.clear()
    await plugin.validate(create(pod("x"), namespace="kube-system"))
    assert cluster.annotations == {P + "exempt": "namespace"}
    cluster.annotations.clear()
    await plugin.validate(create(pod("x", runtimeClassName="kata")))
    assert cluster.annotations == {P + "exempt": "runtimeClass"}
    value = cluster.metrics.registry.get_sample_value(
        "pod_security_exemptions_total", {"request_operation": "create", "resource": "pod", "subresource": ""})
    assert value == 3


def test_configuration_is_validated() -> None:
    assert load_configuration(None).defaults == load_configuration(CONFIG).defaults
    with pytest.raises(AdmissionConfigError, match="expected a PodSecurityConfiguration"):
        load_configuration({"apiVersion": "v1", "kind": "ConfigMap"})
    with pytest.raises(AdmissionConfigError) as wrong:
        load_configuration({**CONFIG, "defaults": {"enforce": "strict"},
                            "exemptions": {"usernames": ["a", "a", ""], "namespaces": ["Bad_Name"]}})
    message = str(wrong.value)
    assert message.startswith('PodSecurity invalid: [defaults.enforce: Invalid value: "strict": must be one of '
                              'privileged, baseline, restricted, exemptions.namespaces[0]: Invalid value: "Bad_Name"')
    assert 'exemptions.usernames[1]: Duplicate value: "a"' in message
    assert 'exemptions.usernames[2]: Invalid value: "": username must not be empty' in message


# -- workloads ----------------------------------------------------------------------------------------------------

def deployment(template_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": template_spec}}}


async def test_workloads_are_warned_never_refused(cluster: Cluster) -> None:
    cluster.label(enforce="restricted")
    plugin = cluster.plugin()
    await plugin.validate(create(deployment(pod()["spec"]), resource="deployments", kind="Deployment"))
    assert cluster.warnings == [f'would violate PodSecurity "restricted:latest": {NGINX_DETAIL}']
    assert P + "enforce-policy" not in cluster.annotations
    cluster.warnings.clear()
    await plugin.validate(create(deployment(pod(sc=SAFE)["spec"]), resource="deployments", kind="Deployment"))
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": pod(hostIPC=True)["spec"]}}}}}
    await plugin.validate(create(cron, resource="cronjobs", kind="CronJob"))
    assert len(cluster.warnings) == 1 and cluster.warnings[0].startswith(
        'would violate PodSecurity "restricted:latest": host namespaces (hostIPC=true), allowPrivilegeEscalation')
    cluster.warnings.clear()
    no_template = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"}, "spec": {}}
    await plugin.validate(create(no_template, resource="replicationcontrollers", kind="ReplicationController"))
    scaled = deployment(pod()["spec"])
    await plugin.validate(update(scaled, scaled, resource="deployments", kind="Deployment", subresource="scale"))
    assert cluster.warnings == []


async def test_workloads_in_warn_and_audit_privileged_namespaces_are_not_evaluated(cluster: Cluster) -> None:
    cluster.label(enforce="baseline", warn="privileged")
    await cluster.plugin().validate(create(deployment(pod(hostPID=True)["spec"]), resource="deployments",
                                           kind="Deployment"))
    assert cluster.warnings == [] and cluster.annotations == {}


# -- namespaces ---------------------------------------------------------------------------------------------------

async def test_namespace_labels_must_parse(cluster: Cluster) -> None:
    plugin = cluster.plugin()
    with pytest.raises(errors.Invalid) as refused:
        await plugin.validate(create(namespace("ns", enforce="strict"), resource="namespaces", kind="Namespace",
                                     namespace=""))
    assert str(refused.value) == (f'Namespace "ns" is invalid: metadata.labels[{P}enforce]: Invalid value: "strict": '
                                  "must be one of privileged, baseline, restricted")
    # an update may leave labels that were already wrong as they were, but not change them to other wrong ones
    old = namespace("ns", warn="v1")
    await plugin.validate(update(namespace("ns", warn="v1") | {"spec": {}}, old, resource="namespaces",
                                 kind="Namespace", namespace=""))
    with pytest.raises(errors.Invalid, match=r'-version\]: Invalid value: "1.30": must be "latest" or "v1.x"'):
        await plugin.validate(update(namespace("ns", warn="v1", enforce_version="1.30"), old,
                                     resource="namespaces", kind="Namespace", namespace=""))


def ns_update(cluster: Cluster, old_labels: dict[str, str], new_labels: dict[str, str],
              name: str = "ns") -> Attributes:
    old = {"metadata": {"name": name, "labels": old_labels}}
    new = {"metadata": {"name": name, "labels": new_labels}}
    return Attributes("UPDATE", "Namespace", "namespaces", "", "", name, new, old, ADMIN)


def owned(p: dict[str, Any], uid: str) -> dict[str, Any]:
    p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": True}]
    return p


async def test_raising_enforce_warns_about_existing_pods_grouped_as_upstream(cluster: Cluster) -> None:
    cluster.pods["ns"] = [pod("web-b"), pod("web-a"), pod("ok", sc=SAFE), pod("host-1", hostNetwork=True),
                          pod("c", sc={**SAFE, "runAsNonRoot": False}), pod("d"),
                          owned(pod("kata", runtimeClassName="kata"), "u1")]
    plugin = cluster.plugin({**CONFIG, "exemptions": {"runtimeClasses": ["kata"]}})
    await plugin.validate(ns_update(cluster, {}, labelled(enforce="restricted")))
    assert cluster.warnings == [
        'existing pods in namespace "ns" violate the new PodSecurity enforce level "restricted:latest"',
        "c: runAsNonRoot != true",
        "d (and 2 other pods): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, "
        "seccompProfile",
        "host-1: host namespaces, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, "
        "seccompProfile",
    ]
    cluster.warnings.clear()
    # relaxing, keeping, or leaving enforce privileged checks nothing
    for old, new in ((labelled(enforce="restricted"), labelled(enforce="baseline")),
                     (labelled(enforce="restricted"), labelled(enforce="restricted", warn="baseline")),
                     ({}, labelled(warn="restricted", audit="restricted"))):
        await plugin.validate(ns_update(cluster, old, new))
    assert cluster.warnings == []
    # a stricter level at another version is checked again
    await plugin.validate(ns_update(cluster, labelled(enforce="restricted"),
                                    labelled(enforce="restricted", enforce_version="v1.30")))
    assert cluster.warnings[0] == ('existing pods in namespace "ns" violate the new PodSecurity enforce level '
                                   '"restricted:v1.30"')


async def test_existing_pod_checks_are_bounded(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psa, "MAX_PODS_TO_CHECK", 2)
    cluster.pods["ns"] = [owned(pod("a1"), "a"), owned(pod("a2"), "a"), owned(pod("b1", hostPID=True), "b")]
    await cluster.plugin().validate(ns_update(cluster, {}, labelled(enforce="baseline")))
    # one pod per controller first: the second of "a" is the one left out
    assert cluster.warnings == [
        "new PodSecurity enforce level only checked against the first 2 of 3 existing pods",
        'existing pods in namespace "ns" violate the new PodSecurity enforce level "baseline:latest"',
        "b1: host namespaces"]


async def test_exempt_namespaces_warn_that_their_labels_are_ignored(cluster: Cluster) -> None:
    cluster.pods["kube-system"] = [pod("x", hostPID=True)]
    plugin = cluster.plugin({**CONFIG, "exemptions": {"namespaces": ["kube-system"]}})
    await plugin.validate(ns_update(cluster, {}, labelled(enforce="baseline", warn="restricted"), name="kube-system"))
    assert cluster.warnings == ['namespace "kube-system" is exempt from Pod Security, and the policy '
                                "(enforce=baseline:latest, warn=restricted:latest) will be ignored"]
    cluster.warnings.clear()
    await plugin.validate(create(namespace("kube-system", audit="restricted"), resource="namespaces",
                                 kind="Namespace", namespace=""))
    assert cluster.warnings == ['namespace "kube-system" is exempt from Pod Security, and the policy '
                                "(audit=restricted:latest) will be ignored"]
