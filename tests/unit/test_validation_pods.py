"""Validation of pods: containers, volumes, resources, probes, updates, status.

Every cause on upstream's field path, with its reason and wording."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api.defaults import apply_defaults
from harness.api.validation import (
    check_create,
)
from tests.unit.validation_support import (
    KINDS,
    UPDATABLE,
    container,
    created,
    find,
    only,
    pod,
    prepared,
    status_updated,
    stored,
    updated,
)

# -- pods: containers -----------------------------------------------------------------------


def test_a_pod_needs_a_container() -> None:
    only(created("Pod", pod(containers=[])), "spec.containers", "FieldValueRequired", "Required value")


def test_container_names_are_unique_dns_labels_across_containers_and_init_containers() -> None:
    obj = pod(initContainers=[{"name": "web", "image": "busybox"}, {"name": "init", "image": "busybox"}])
    obj["spec"]["containers"].append({"name": "init_2", "image": "busybox"})
    causes = created("Pod", obj)
    find(causes, "spec.initContainers[0].name", "FieldValueDuplicate", 'Duplicate value: "web"')
    find(causes, "spec.containers[1].name", "FieldValueInvalid", "a lowercase RFC 1123 label must consist")
    assert len(causes) == 2
    find(created("Pod", pod(containers=[{"image": "x"}])), "spec.containers[0].name", "FieldValueRequired")


def test_image_is_required() -> None:
    only(created("Pod", pod(containers=[{"name": "web"}])), "spec.containers[0].image", "FieldValueRequired")
    only(created("Pod", pod(containers=[{"name": "web", "image": " nginx"}])), "spec.containers[0].image",
         "FieldValueInvalid", "must not have leading or trailing whitespace")


@pytest.mark.parametrize(("port", "field", "reason", "message"), [
    ({"containerPort": 0}, "containerPort", "FieldValueRequired", "Required value"),
    ({}, "containerPort", "FieldValueRequired", "Required value"),
    ({"containerPort": 65536}, "containerPort", "FieldValueInvalid",
     "Invalid value: 65536: must be between 1 and 65535, inclusive"),
    ({"containerPort": -1}, "containerPort", "FieldValueInvalid", "must be between 1 and 65535, inclusive"),
    ({"containerPort": "80"}, "containerPort", "FieldValueInvalid", 'Invalid value: "80": must be an integer'),
    ({"containerPort": 80, "hostPort": 70000}, "hostPort", "FieldValueInvalid",
     "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ({"containerPort": 80, "protocol": "HTTP"}, "protocol", "FieldValueNotSupported",
     'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
    ({"containerPort": 80, "name": "http-metrics-port"}, "name", "FieldValueInvalid",
     'Invalid value: "http-metrics-port": must be no more than 15 characters'),
    ({"containerPort": 80, "name": "HTTP"}, "name", "FieldValueInvalid",
     "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
    ({"containerPort": 80, "name": "8080"}, "name", "FieldValueInvalid", "must contain at least one letter (a-z)"),
    ({"containerPort": 80, "name": "a--b"}, "name", "FieldValueInvalid", "must not contain consecutive hyphens"),
    ({"containerPort": 80, "name": "-ab"}, "name", "FieldValueInvalid", "must not begin or end with a hyphen"),
])
def test_container_ports(port: dict[str, Any], field: str, reason: str, message: str) -> None:
    obj = pod()
    container(obj)["ports"] = [port]
    find(created("Pod", obj), f"spec.containers[0].ports[0].{field}", reason, message)


def test_sctp_udp_and_host_ports_are_fine() -> None:
    obj = pod()
    container(obj)["ports"] = [{"containerPort": 53, "protocol": "UDP", "hostPort": 53, "name": "dns"},
                               {"containerPort": 53, "protocol": "TCP", "hostPort": 53, "name": "dns-tcp"},
                               {"containerPort": 9999, "protocol": "SCTP"}]
    assert created("Pod", obj) == []


def test_port_names_are_unique_within_a_container_only() -> None:
    obj = pod()
    container(obj)["ports"] = [{"containerPort": 80, "name": "http"}, {"containerPort": 81, "name": "http"}]
    only(created("Pod", obj), "spec.containers[0].ports[1].name", "FieldValueDuplicate", 'Duplicate value: "http"')
    obj["spec"]["containers"] = [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "http"}]},
                                 {"name": "b", "image": "x", "ports": [{"containerPort": 81, "name": "http"}]}]
    assert created("Pod", obj) == []


def test_host_ports_may_not_collide_across_containers() -> None:
    obj = pod()
    obj["spec"]["containers"] = [{"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]},
                                 {"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]}]
    only(created("Pod", obj), "spec.containers[1].ports[0].hostPort", "FieldValueDuplicate",
         'Duplicate value: "TCP//8080"')


@pytest.mark.parametrize("name", ["MY_VAR", "my.var-1", "1ABC", "with space", "$weird!"])
def test_env_names_follow_the_relaxed_rule(name: str) -> None:
    obj = pod()
    container(obj)["env"] = [{"name": name, "value": "x"}]
    assert created("Pod", obj) == []


@pytest.mark.parametrize(("name", "reason", "message"), [
    ("A=B", "FieldValueInvalid", 'Invalid value: "A=B": a valid environment variable name must consist only of '
                                 "printable ASCII characters other than '='"),
    ("tab\there", "FieldValueInvalid", "printable ASCII characters other than '='"),
    ("é", "FieldValueInvalid", "printable ASCII characters other than '='"),
    ("", "FieldValueRequired", "Required value"),
])
def test_bad_env_names(name: str, reason: str, message: str) -> None:
    obj = pod()
    container(obj)["env"] = [{"name": name, "value": "x"}]
    only(created("Pod", obj), "spec.containers[0].env[0].name", reason, message)


@pytest.mark.parametrize(("value_from", "extra", "field", "reason", "message"), [
    ({}, {}, "valueFrom", "FieldValueInvalid", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                               "`configMapKeyRef` or `secretKeyRef`"),
    ({"fieldRef": {"fieldPath": "metadata.name"}}, {"value": "x"}, "valueFrom", "FieldValueInvalid",
     "may not be specified when `value` is not empty"),
    ({"fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"name": "s", "key": "k"}}, {}, "valueFrom",
     "FieldValueInvalid", "may not have more than one field specified at a time"),
    ({"secretKeyRef": {"name": "s"}}, {}, "valueFrom.secretKeyRef.key", "FieldValueRequired", "Required value"),
    ({"configMapKeyRef": {"name": "c", "key": "bad key"}}, {}, "valueFrom.configMapKeyRef.key", "FieldValueInvalid",
     "a valid config key must consist of alphanumeric characters"),
])
def test_env_value_from(value_from: dict[str, Any], extra: dict[str, Any], field: str, reason: str,
                        message: str) -> None:
    obj = pod()
    container(obj)["env"] = [{"name": "X", "valueFrom": value_from, **extra}]
    only(created("Pod", obj), f"spec.containers[0].env[0].{field}", reason, message)


def test_env_from_names_one_source() -> None:
    obj = pod()
    container(obj)["envFrom"] = [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "s"}}]
    assert created("Pod", obj) == []
    container(obj)["envFrom"] = [{"prefix": "X_"}]
    only(created("Pod", obj), "spec.containers[0].envFrom", "FieldValueInvalid",
         "must specify one of: `configMapRef` or `secretRef`")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("restartPolicy", "Sometimes", 'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'),
    ("dnsPolicy", "Google", 'Unsupported value: "Google": supported values: "ClusterFirstWithHostNet", '
                            '"ClusterFirst", "Default", "None"'),
])
def test_pod_policies_have_supported_values(field: str, value: str, message: str) -> None:
    only(created("Pod", pod(**{field: value})), f"spec.{field}", "FieldValueNotSupported", message)


def test_policies_are_required_once_defaulting_has_run() -> None:
    obj = pod()
    container(obj)["terminationMessagePolicy"] = "File"
    causes = created("Pod", obj, default=False)
    for field in ("spec.restartPolicy", "spec.dnsPolicy", "spec.terminationGracePeriodSeconds",
                  "spec.containers[0].imagePullPolicy"):
        find(causes, field, "FieldValueRequired")


def test_image_pull_policy_and_termination_message_policy() -> None:
    obj = pod()
    container(obj).update(imagePullPolicy="Foo", terminationMessagePolicy="Log")
    causes = created("Pod", obj)
    only([c for c in causes if c.field.endswith("imagePullPolicy")], "spec.containers[0].imagePullPolicy",
         "FieldValueNotSupported", 'Unsupported value: "Foo": supported values: "Always", "IfNotPresent", "Never"')
    find(causes, "spec.containers[0].terminationMessagePolicy", "FieldValueNotSupported",
         'supported values: "File", "FallbackToLogsOnError"')


def test_dns_policy_none_needs_a_dns_config() -> None:
    only(created("Pod", pod(dnsPolicy="None")), "spec.dnsConfig", "FieldValueRequired",
         "must provide `dnsConfig` when `dnsPolicy` is None")
    assert created("Pod", pod(dnsPolicy="None", dnsConfig={"nameservers": ["10.96.0.10"]})) == []


def test_active_deadline_and_node_fields() -> None:
    find(created("Pod", pod(activeDeadlineSeconds=0)), "spec.activeDeadlineSeconds", "FieldValueInvalid",
         "Invalid value: 0: must be between 1 and 2147483647, inclusive")
    find(created("Pod", pod(nodeName="Worker_1")), "spec.nodeName", "FieldValueInvalid", "RFC 1123 subdomain")
    find(created("Pod", pod(hostname="a.b")), "spec.hostname", "FieldValueInvalid", "must not contain dots")
    find(created("Pod", pod(nodeSelector={"disk": "-ssd"})), "spec.nodeSelector", "FieldValueInvalid",
         'Invalid value: "-ssd": a valid label must be')
    find(created("Pod", pod(serviceAccountName="Builder")), "spec.serviceAccountName", "FieldValueInvalid")


# -- pods: volumes --------------------------------------------------------------------------


def test_volume_names_are_unique_dns_labels() -> None:
    vols = [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}, {"name": "Cache", "emptyDir": {}}]
    causes = created("Pod", pod(volumes=vols))
    find(causes, "spec.volumes[1].name", "FieldValueDuplicate", 'Duplicate value: "data"')
    find(causes, "spec.volumes[2].name", "FieldValueInvalid", "RFC 1123 label")
    find(created("Pod", pod(volumes=[{"emptyDir": {}}])), "spec.volumes[0].name", "FieldValueRequired")


def test_a_volume_has_exactly_one_source() -> None:
    two = {"name": "v", "emptyDir": {}, "hostPath": {"path": "/data"}, "secret": {"secretName": "s"}}
    causes = created("Pod", pod(volumes=[two]))
    find(causes, "spec.volumes[0].hostPath", "FieldValueForbidden",
         "Forbidden: may not specify more than 1 volume type")
    find(causes, "spec.volumes[0].secret", "FieldValueForbidden")
    assert len(causes) == 2
    # Defaulting turns a sourceless volume into an emptyDir; without that, the source is missing.
    assert created("Pod", pod(volumes=[{"name": "v"}])) == []
    obj = prepared("Pod", pod(volumes=[{"name": "v"}]), default=False)
    apply_defaults(KINDS["Pod"], obj)
    del obj["spec"]["volumes"][0]["emptyDir"]
    only(check_create(KINDS["Pod"], obj), "spec.volumes[0]", "FieldValueRequired",
         "Required value: must specify a volume type")


def test_volume_sources_need_their_key_fields() -> None:
    only(created("Pod", pod(volumes=[{"name": "s", "secret": {}}])), "spec.volumes[0].secret.secretName",
         "FieldValueRequired")
    only(created("Pod", pod(volumes=[{"name": "h", "hostPath": {}}])), "spec.volumes[0].hostPath.path",
         "FieldValueRequired")
    only(created("Pod", pod(volumes=[{"name": "c", "configMap": {}}])), "spec.volumes[0].configMap.name",
         "FieldValueRequired")


def test_volume_mounts_refer_to_volumes() -> None:
    obj = pod(volumes=[{"name": "data", "emptyDir": {}}])
    container(obj)["volumeMounts"] = [{"name": "data", "mountPath": "/data"}, {"name": "logs", "mountPath": "/logs"},
                                      {"name": "data", "mountPath": "/data"}, {"name": "data"},
                                      {"name": "data", "mountPath": "/x", "subPath": "../etc"}]
    causes = created("Pod", obj)
    find(causes, "spec.containers[0].volumeMounts[1].name", "FieldValueNotFound", 'Not found: "logs"')
    find(causes, "spec.containers[0].volumeMounts[2].mountPath", "FieldValueInvalid", "must be unique")
    find(causes, "spec.containers[0].volumeMounts[3].mountPath", "FieldValueRequired")
    find(causes, "spec.containers[0].volumeMounts.subPath", "FieldValueInvalid", "must not contain '..'")
    assert len(causes) == 4


def test_mounting_an_invalid_volume_is_also_not_found() -> None:
    obj = pod(volumes=[{"name": "data", "emptyDir": {}, "hostPath": {"path": "/d"}}])
    container(obj)["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    find(created("Pod", obj), "spec.containers[0].volumeMounts[0].name", "FieldValueNotFound")


# -- pods: resources and probes -------------------------------------------------------------


def with_resources(**resources: Any) -> dict[str, Any]:
    obj = pod()
    container(obj)["resources"] = resources
    return obj


def test_quantities_must_parse() -> None:
    cause = only(created("Pod", with_resources(limits={"cpu": "lots"}, requests={"cpu": "1"})),
                 "spec.containers[0].resources.limits[cpu]", "FieldValueInvalid")
    assert cause.message == ('Invalid value: "lots": quantities must match the regular expression '
                             "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


def test_quantities_may_not_be_negative() -> None:
    only(created("Pod", with_resources(requests={"memory": "-1Mi"})), "spec.containers[0].resources.requests[memory]",
         "FieldValueInvalid", 'Invalid value: "-1Mi": must be greater than or equal to 0')


def test_requests_may_not_exceed_limits() -> None:
    cause = only(created("Pod", with_resources(requests={"cpu": "1", "memory": "64Mi"},
                                               limits={"cpu": "500m", "memory": "1Gi"})),
                 "spec.containers[0].resources.requests", "FieldValueInvalid")
    assert cause.message == 'Invalid value: "1": must be less than or equal to cpu limit of 500m'
    assert created("Pod", with_resources(requests={"cpu": "0.5"}, limits={"cpu": "500m"})) == []
    assert created("Pod", with_resources(requests={"cpu": 1}, limits={"cpu": 2})) == []


def test_resource_names_must_be_standard_or_qualified() -> None:
    causes = created("Pod", with_resources(limits={"gpu": "1", "pods": "1"}))
    find(causes, "spec.containers[0].resources.limits[gpu]", "FieldValueInvalid",
         'Invalid value: "gpu": must be a standard resource type or fully qualified')
    find(causes, "spec.containers[0].resources.limits[gpu]", "FieldValueInvalid",
         "must be a standard resource for containers")
    only([c for c in causes if c.field.endswith("limits[pods]")], "spec.containers[0].resources.limits[pods]",
         "FieldValueInvalid", "must be a standard resource for containers")
    assert created("Pod", with_resources(limits={"example.com/gpu": "2", "hugepages-2Mi": "4Mi", "memory": "1Gi",
                                                 "ephemeral-storage": "1G"})) == []


def test_extended_resources_are_whole_and_not_overcommitted() -> None:
    find(created("Pod", with_resources(limits={"example.com/gpu": "0.5"})),
         "spec.containers[0].resources.limits[example.com/gpu]", "FieldValueInvalid", "must be an integer")
    only(created("Pod", with_resources(limits={"example.com/gpu": "2"}, requests={"example.com/gpu": "1"})),
         "spec.containers[0].resources.requests", "FieldValueInvalid", "must be equal to example.com/gpu limit of 2")
    only(created("Pod", with_resources(requests={"example.com/gpu": "1"})), "spec.containers[0].resources.limits",
         "FieldValueRequired", "Limit must be set for non overcommitable resources")


def probe_pod(name: str, probe: dict[str, Any]) -> dict[str, Any]:
    obj = pod()
    container(obj)[name] = probe
    return obj


def test_probes_have_exactly_one_handler() -> None:
    only(created("Pod", probe_pod("livenessProbe", {"periodSeconds": 5})), "spec.containers[0].livenessProbe",
         "FieldValueRequired", "Required value: must specify a handler type")
    only(created("Pod", probe_pod("readinessProbe", {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}})),
         "spec.containers[0].readinessProbe.tcpSocket", "FieldValueForbidden",
         "Forbidden: may not specify more than 1 handler type")


@pytest.mark.parametrize(("probe", "field", "reason", "message"), [
    ({"exec": {}}, "exec.command", "FieldValueRequired", "Required value"),
    ({"httpGet": {"port": "Web"}}, "httpGet.port", "FieldValueInvalid", "must contain only alpha-numeric"),
    ({"httpGet": {"port": 0}}, "httpGet.port", "FieldValueInvalid", "must be between 1 and 65535, inclusive"),
    ({"httpGet": {"port": 80, "scheme": "FTP"}}, "httpGet.scheme", "FieldValueNotSupported",
     'Unsupported value: "FTP": supported values: "HTTP", "HTTPS"'),
    ({"tcpSocket": {"port": 99999}}, "tcpSocket.port", "FieldValueInvalid", "must be between 1 and 65535, inclusive"),
    ({"grpc": {"port": 9090}, "periodSeconds": -1}, "periodSeconds", "FieldValueInvalid",
     "must be greater than or equal to 0"),
    ({"tcpSocket": {"port": 80}, "successThreshold": 2}, "successThreshold", "FieldValueInvalid",
     "Invalid value: 2: must be 1"),
])
def test_probe_fields(probe: dict[str, Any], field: str, reason: str, message: str) -> None:
    only(created("Pod", probe_pod("livenessProbe", probe)), f"spec.containers[0].livenessProbe.{field}", reason,
         message)


def test_readiness_probes_may_succeed_more_than_once() -> None:
    assert created("Pod", probe_pod("readinessProbe", {"tcpSocket": {"port": 80}, "successThreshold": 3})) == []


def test_lifecycle_hooks_need_one_handler() -> None:
    obj = pod()
    container(obj)["lifecycle"] = {"preStop": {"sleep": {"seconds": 5}}, "postStart": {}}
    only(created("Pod", obj), "spec.containers[0].lifecycle.postStart", "FieldValueRequired",
         "must specify a handler type")


def test_init_containers_take_probes_only_as_sidecars() -> None:
    init = {"name": "init", "image": "busybox", "readinessProbe": {"tcpSocket": {"port": 80}}}
    only(created("Pod", pod(initContainers=[init])), "spec.initContainers[0].readinessProbe", "FieldValueForbidden",
         "may not be set for init containers without restartPolicy=Always")
    assert created("Pod", pod(initContainers=[{**init, "restartPolicy": "Always"}])) == []
    only(created("Pod", pod(initContainers=[{"name": "i", "image": "x", "restartPolicy": "Never"}])),
         "spec.initContainers[0].restartPolicy", "FieldValueNotSupported", 'supported values: "Always"')
    obj = pod()
    container(obj)["restartPolicy"] = "Always"
    only(created("Pod", obj), "spec.containers[0].restartPolicy", "FieldValueForbidden",
         "may not be set for non-init containers")


@pytest.mark.parametrize(("toleration", "field", "reason", "message"), [
    ({"key": "k", "operator": "Exists", "value": "v"}, "operator", "FieldValueInvalid",
     "value must be empty when `operator` is 'Exists'"),
    ({"key": "k", "operator": "Sometimes"}, "operator", "FieldValueNotSupported",
     'Unsupported value: "Sometimes": supported values: "Equal", "Exists"'),
    ({"operator": "Equal", "value": "v"}, "operator", "FieldValueInvalid",
     'operator must be Exists when `key` is empty, which means "match all values and all keys"'),
    ({"key": "k", "effect": "NoRun"}, "effect", "FieldValueNotSupported",
     'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'),
    ({"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30}, "effect", "FieldValueInvalid",
     "effect must be 'NoExecute' when `tolerationSeconds` is set"),
    ({"key": "bad key"}, "key", "FieldValueInvalid", "name part must consist of"),
])
def test_tolerations(toleration: dict[str, Any], field: str, reason: str, message: str) -> None:
    only(created("Pod", pod(tolerations=[toleration])), f"spec.tolerations[0].{field}", reason, message)


def test_common_tolerations_are_fine() -> None:
    tolerations = [{"operator": "Exists"},
                   {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 300},
                   {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
                   {"key": "dedicated", "value": "gpu"}]
    assert created("Pod", pod(tolerations=tolerations)) == []


# -- pods: updates --------------------------------------------------------------------------


def test_images_may_change() -> None:
    old = stored("Pod", pod(initContainers=[{"name": "init", "image": "busybox:1"}]))

    def change(new: dict[str, Any]) -> None:
        container(new)["image"] = "nginx:1.28"
        new["spec"]["initContainers"][0]["image"] = "busybox:2"
        new["metadata"]["labels"] = {"changed": "yes"}
        new["metadata"]["annotations"] = {"note": "ok"}
    assert updated("Pod", old, change) == []


def test_other_spec_changes_are_forbidden_with_upstreams_message() -> None:
    obj = pod()
    container(obj)["ports"] = [{"containerPort": 80}]
    old = stored("Pod", obj)
    cause = only(updated("Pod", old, lambda new: container(new)["ports"][0].update(containerPort=8080)), "spec",
                 "FieldValueForbidden")
    assert cause.message.startswith(f"Forbidden: {UPDATABLE}\n")
    assert "spec.containers[0].ports[0].containerPort: 80 -> 8080" in cause.message


def test_containers_may_not_be_added_or_removed() -> None:
    old = stored("Pod", pod())
    only(updated("Pod", old, lambda new: new["spec"]["containers"].append({"name": "b", "image": "x"})),
         "spec.containers", "FieldValueForbidden", "pod updates may not add or remove containers")


def test_images_may_not_be_removed() -> None:
    old = stored("Pod", pod())
    find(updated("Pod", old, lambda new: container(new).update(image="")), "spec.containers[0].image",
         "FieldValueRequired")


def test_tolerations_may_only_be_added() -> None:
    old = stored("Pod", pod(tolerations=[{"key": "a", "operator": "Exists", "effect": "NoExecute",
                                          "tolerationSeconds": 10}]))
    assert updated("Pod", old, lambda new: new["spec"]["tolerations"].append({"key": "b", "operator": "Exists"})) == []
    assert updated("Pod", old, lambda new: new["spec"]["tolerations"][0].update(tolerationSeconds=5)) == []
    only(updated("Pod", old, lambda new: new["spec"].update(tolerations=[])), "spec.tolerations",
         "FieldValueForbidden", "existing toleration can not be modified except its tolerationSeconds")


def test_active_deadline_may_be_set_or_lowered() -> None:
    old = stored("Pod", pod())
    assert updated("Pod", old, lambda new: new["spec"].update(activeDeadlineSeconds=60)) == []
    old = stored("Pod", pod(activeDeadlineSeconds=60))
    assert updated("Pod", old, lambda new: new["spec"].update(activeDeadlineSeconds=30)) == []
    only(updated("Pod", old, lambda new: new["spec"].update(activeDeadlineSeconds=120)),
         "spec.activeDeadlineSeconds", "FieldValueInvalid", "must be less than or equal to previous value")
    only(updated("Pod", old, lambda new: new["spec"].pop("activeDeadlineSeconds")), "spec.activeDeadlineSeconds",
         "FieldValueInvalid", "must not update from a positive integer to nil value")


def test_negative_grace_period_may_become_one() -> None:
    old = stored("Pod", pod())
    old["spec"]["terminationGracePeriodSeconds"] = -1
    assert updated("Pod", old, lambda new: new["spec"].update(terminationGracePeriodSeconds=1)) == []
    old["spec"]["terminationGracePeriodSeconds"] = 30
    find(updated("Pod", old, lambda new: new["spec"].update(terminationGracePeriodSeconds=1)), "spec",
         "FieldValueForbidden")


def test_scheduling_gates_may_only_be_removed() -> None:
    old = stored("Pod", pod(schedulingGates=[{"name": "example.com/wait"}]))
    assert updated("Pod", old, lambda new: new["spec"].pop("schedulingGates")) == []
    only(updated("Pod", old, lambda new: new["spec"]["schedulingGates"].append({"name": "example.com/more"})),
         "spec.schedulingGates[1].name", "FieldValueForbidden",
         "only deletion is allowed, but found new scheduling gate 'example.com/more'")


def test_only_binding_sets_the_node_name() -> None:
    old = stored("Pod", pod())
    find(updated("Pod", old, lambda new: new["spec"].update(nodeName="worker-1")), "spec", "FieldValueForbidden")
    assert updated("Pod", old, lambda new: new["spec"].update(nodeName="worker-1"), subresource="binding") == []
    bound = stored("Pod", pod(nodeName="worker-1"))
    find(updated("Pod", bound, lambda new: new["spec"].update(nodeName="worker-2"), subresource="binding"), "spec",
         "FieldValueForbidden")


def test_the_updated_pod_is_validated_as_a_whole() -> None:
    old = stored("Pod", pod())
    find(updated("Pod", old, lambda new: container(new).update(image="nginx:2", imagePullPolicy="Sometimes")),
         "spec.containers[0].imagePullPolicy", "FieldValueNotSupported")


# -- pods: status ---------------------------------------------------------------------------


def test_pod_status_updates() -> None:
    old = stored("Pod", pod(restartPolicy="Never"))
    old["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    running = {"phase": "Running", "qosClass": "BestEffort", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
               "hostIP": "192.168.56.21", "conditions": [{"type": "Ready", "status": "True"},
                                                         {"type": "example.com/Custom", "status": "True"}],
               "containerStatuses": [{"name": "web", "state": {"running": {}}}]}
    assert status_updated("Pod", old, running) == []
    only(status_updated("Pod", old, {**running, "qosClass": "Guaranteed"}), "status.qosClass", "FieldValueInvalid",
         'Invalid value: "Guaranteed": field is immutable')
    only(status_updated("Pod", old, {**running, "podIP": "10.244.1"}), "status.podIP", "FieldValueInvalid",
         "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    only(status_updated("Pod", old, {**running, "conditions": [{"type": "bad type"}]}), "status.conditions[0].type",
         "FieldValueInvalid")


def test_terminated_containers_stay_terminated_unless_the_pod_restarts_them() -> None:
    done = {"phase": "Succeeded", "containerStatuses": [{"name": "web", "state": {"terminated": {"exitCode": 0}}}]}
    again = {"phase": "Running", "containerStatuses": [{"name": "web", "state": {"running": {}}}]}
    never = stored("Pod", pod(restartPolicy="Never"))
    never["status"] = done
    only(status_updated("Pod", never, again), "status.containerStatuses[0].state", "FieldValueForbidden",
         "may not be transitioned to non-terminated state")
    always = stored("Pod", pod())
    always["status"] = done
    assert status_updated("Pod", always, again) == []
    on_failure = stored("Pod", pod(restartPolicy="OnFailure"))
    on_failure["status"] = {"containerStatuses": [{"name": "web", "state": {"terminated": {"exitCode": 1}}}]}
    assert status_updated("Pod", on_failure, again) == []
