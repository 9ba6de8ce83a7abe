"""Validation answers like the Kubernetes apiserver: every cause, on upstream's field path, with its
reason and wording; manifests that users apply every day pass."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from harness.api import errors, registry
from harness.api.defaults import apply_defaults
from harness.api.errors import Cause
from harness.api.validation import (
    RULES,
    Options,
    check_create,
    check_status_update,
    check_update,
    validate_create,
    validate_status_update,
    validate_update,
)

KINDS = {k.kind: k for k in registry.KINDS}
NS = "default"
UPDATABLE = ("pod updates may not change fields other than `spec.containers[*].image`,"
             "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
             "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
             "previously negative)")


# -- helpers --------------------------------------------------------------------------------


def prepared(kind: str, obj: dict[str, Any], *, default: bool = True) -> dict[str, Any]:
    """The object as the apiserver validates it: defaulted, with its namespace and identity stamped."""
    obj = copy.deepcopy(obj)
    if default:
        apply_defaults(KINDS[kind], obj)
    md = obj.setdefault("metadata", {})
    if KINDS[kind].namespaced:
        md.setdefault("namespace", NS)
    return obj


def created(kind: str, obj: dict[str, Any], *, default: bool = True, **kw: Any) -> list[Cause]:
    return check_create(KINDS[kind], prepared(kind, obj, default=default), **kw)


def stored(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    obj = prepared(kind, obj)
    assert check_create(KINDS[kind], obj) == [], check_create(KINDS[kind], obj)
    obj["metadata"].update(uid="1234", creationTimestamp="2024-01-01T00:00:00Z", resourceVersion="7")
    return obj


def updated(kind: str, old: dict[str, Any], change: Any, **kw: Any) -> list[Cause]:
    """Causes of updating stored `old` by `change(new)` (which edits a copy in place)."""
    new = copy.deepcopy(old)
    change(new)
    apply_defaults(KINDS[kind], new)
    return check_update(KINDS[kind], new, old, **kw)


def status_updated(kind: str, old: dict[str, Any], status: dict[str, Any]) -> list[Cause]:
    new = copy.deepcopy(old)
    new["status"] = status
    return check_status_update(KINDS[kind], new, old)


def find(causes: list[Cause], field: str, reason: str, text: str = "") -> Cause:
    for cause in causes:
        if cause.field == field and cause.reason == reason and text in cause.message:
            return cause
    raise AssertionError(f"no {reason} cause on {field!r} containing {text!r} in:\n" +
                         "\n".join(f"  {c.field}: {c.reason}: {c.message}" for c in causes))


def only(causes: list[Cause], field: str, reason: str, text: str = "") -> Cause:
    cause = find(causes, field, reason, text)
    assert len(causes) == 1, causes
    return cause


# -- objects users apply --------------------------------------------------------------------


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}], **spec}}


def container(pod_obj: dict[str, Any], i: int = 0) -> dict[str, Any]:
    ctr: dict[str, Any] = pod_obj["spec"]["containers"][i]
    return ctr


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "frontend"}},
                "spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.27",
                     "ports": [{"name": "http", "containerPort": 80}, {"name": "https", "containerPort": 443}],
                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                   "limits": {"cpu": "500m", "memory": "128Mi"}},
                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                     "livenessProbe": {"tcpSocket": {"port": 80}, "initialDelaySeconds": 5}},
                    {"name": "metrics", "image": "prom/nginx-exporter:1.1",
                     "args": ["--nginx.scrape-uri=http://localhost/status"],
                     "ports": [{"name": "metrics", "containerPort": 9113}],
                     "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "LOG_LEVEL", "value": "info"}]},
                ]},
            },
        },
    }


def tspec(dep: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


def service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}], **spec}}


def test_every_rule_is_for_a_served_kind() -> None:
    assert set(RULES) <= set(KINDS)


@pytest.mark.parametrize(("kind", "obj"), [
    ("Pod", pod()),
    ("Deployment", deployment()),
    ("Service", service()),
    ("Service", service(type="NodePort", ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                                                {"name": "https", "port": 443, "targetPort": "https"}])),
    ("Service", service(type="LoadBalancer")),
    ("Service", service(clusterIP="None", ports=[])),
    ("Service", {"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "db.example.com."}}),
    ("ConfigMap", {"metadata": {"name": "web-config"},
                   "data": {"nginx.conf": "events {}\n", "LOG_LEVEL": "info", ".hidden": "x"},
                   "binaryData": {"logo.png": base64.b64encode(b"\x89PNG").decode()}}),
    ("Secret", {"metadata": {"name": "creds"}, "data": {"password": base64.b64encode(b"hunter2").decode()}}),
    ("Secret", {"metadata": {"name": "creds"}, "stringData": {"user": "admin"}}),
    ("Secret", {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}),
    ("Namespace", {"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}}}),
    ("Node", {"metadata": {"name": "worker-1.cluster.local", "labels": {"kubernetes.io/hostname": "worker-1"}},
              "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"],
                       "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
              "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                         "addresses": [{"type": "InternalIP", "address": "192.168.56.21"}]}}),
    ("ServiceAccount", {"metadata": {"name": "builder"}}),
    ("Lease", {"metadata": {"name": "kube-scheduler"},
               "spec": {"holderIdentity": "master-1_abc", "leaseDurationSeconds": 15,
                        "acquireTime": "2024-01-01T00:00:00.000000Z", "leaseTransitions": 0}}),
    ("Event", {"metadata": {"name": "web.17a"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": NS},
               "reason": "Scheduled", "message": "assigned", "type": "Normal"}),
    ("Event", {"metadata": {"name": "worker-1.17a"}, "involvedObject": {"kind": "Node", "name": "worker-1"}}),
    ("ReplicaSet", {"metadata": {"name": "web-abc"}, "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                                                              "template": {"metadata": {"labels": {"a": "b"}},
                                                                           "spec": pod()["spec"]}}}),
    ("DaemonSet", {"metadata": {"name": "agent"}, "spec": {
        "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["agent"]}]},
        "template": {"metadata": {"labels": {"app": "agent"}},
                     "spec": {**pod()["spec"], "hostNetwork": True,
                              "tolerations": [{"operator": "Exists"}]}}}}),
    ("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}},
                                                                                 "spec": pod()["spec"]}}}),
    ("Role", {"metadata": {"name": "pod-reader"},
              "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
    ("ClusterRole", {"metadata": {"name": "system:kube-scheduler"},
                     "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
    ("RoleBinding", {"metadata": {"name": "read-pods"}, "roleRef": {"kind": "Role", "name": "pod-reader"},
                     "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "default"}]}),
    ("ClusterRoleBinding", {"metadata": {"name": "system:kube-scheduler"},
                            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                        "name": "system:kube-scheduler"},
                            "subjects": [{"kind": "User", "name": "system:kube-scheduler"},
                                         {"kind": "ServiceAccount", "name": "sa", "namespace": "kube-system"}]}),
    ("ResourceQuota", {"metadata": {"name": "compute"},
                       "spec": {"hard": {"requests.cpu": "4", "limits.memory": "16Gi", "pods": "10",
                                         "count/deployments.apps": "5"}}}),
    ("Endpoints", {"metadata": {"name": "web"},
                   "subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "worker-1"}],
                                "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}]}),
    ("ControllerRevision", {"metadata": {"name": "agent-1"}, "revision": 1, "data": {}}),
])
def test_manifests_users_apply_are_valid(kind: str, obj: dict[str, Any]) -> None:
    assert created(kind, obj) == []


def test_invalid_raises_422_listing_every_cause_in_upstreams_words() -> None:
    obj = prepared("Deployment", deployment())
    tspec(obj)["containers"].append({"name": "nginx", "image": "", "imagePullPolicy": "Sometimes",
                                     "terminationMessagePolicy": "File"})
    tspec(obj)["containers"][0]["ports"][0]["containerPort"] = 70000
    with pytest.raises(errors.Invalid) as caught:
        validate_create(KINDS["Deployment"], obj)
    err = caught.value
    assert err.code == 422
    status = err.to_status()
    assert status["reason"] == "Invalid" and status["details"]["kind"] == "Deployment"
    assert status["details"]["group"] == "apps" and status["details"]["name"] == "web"
    causes = status["details"]["causes"]
    assert {"reason": "FieldValueInvalid", "message": "Invalid value: 70000: must be between 1 and 65535, inclusive",
            "field": "spec.template.spec.containers[0].ports[0].containerPort"} in causes
    assert {"reason": "FieldValueRequired", "message": "Required value",
            "field": "spec.template.spec.containers[2].image"} in causes
    assert {"reason": "FieldValueDuplicate", "message": 'Duplicate value: "nginx"',
            "field": "spec.template.spec.containers[2].name"} in causes
    assert {"reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"',
            "field": "spec.template.spec.containers[2].imagePullPolicy"} in causes
    assert err.message.startswith('Deployment.apps "web" is invalid: [spec.template.spec.containers[0].ports[0].'
                                  'containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive; ')


def test_one_cause_is_reported_without_brackets() -> None:
    obj = prepared("ConfigMap", {"metadata": {"name": "Not_A_Name"}})
    with pytest.raises(errors.Invalid) as caught:
        validate_create(KINDS["ConfigMap"], obj)
    assert caught.value.message.startswith('ConfigMap "Not_A_Name" is invalid: metadata.name: Invalid value: '
                                           '"Not_A_Name": a lowercase RFC 1123 subdomain must consist of')


def test_update_and_status_update_raise_too() -> None:
    old = stored("Pod", pod())
    new = copy.deepcopy(old)
    new["metadata"]["name"] = "other"
    with pytest.raises(errors.Invalid):
        validate_update(KINDS["Pod"], new, old)
    with pytest.raises(errors.Invalid):
        validate_status_update(KINDS["Pod"], new, old)
    validate_update(KINDS["Pod"], copy.deepcopy(old), old)
    validate_status_update(KINDS["Pod"], copy.deepcopy(old), old)


def test_garbage_is_reported_not_crashed_on() -> None:
    for kind in KINDS:
        for body in ({}, {"metadata": None, "spec": "x", "status": 5}, {"spec": {"containers": [None, 3]}},
                     {"metadata": {"name": 5, "labels": [1]}, "spec": {"ports": "x", "selector": 3}}):
            check_create(KINDS[kind], copy.deepcopy(body))
            check_update(KINDS[kind], copy.deepcopy(body), {})
            check_status_update(KINDS[kind], copy.deepcopy(body), {})


# -- metadata -------------------------------------------------------------------------------


def test_name_is_required_unless_generate_name_is_given() -> None:
    only(created("ConfigMap", {"metadata": {}}), "metadata.name", "FieldValueRequired",
         "Required value: name or generateName is required")
    assert created("ConfigMap", {"metadata": {"name": "web-x7k2p", "generateName": "web-"}}) == []


def test_generate_name_prefix_is_validated_and_may_end_in_a_dash() -> None:
    assert created("Pod", {**pod(), "metadata": {"name": "web-abcde", "generateName": "web-"}}) == []
    cause = find(created("Pod", {**pod(), "metadata": {"name": "web-abcde", "generateName": "Web_"}}),
                 "metadata.generateName", "FieldValueInvalid")
    assert cause.message.startswith('Invalid value: "Web_": a lowercase RFC 1123 subdomain must consist of')


@pytest.mark.parametrize(("kind", "name", "message"), [
    ("ConfigMap", "Web", "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                         "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                         "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ("ConfigMap", "x" * 254, "must be no more than 253 characters"),
    ("Namespace", "team.a", "must not contain dots"),
    ("Namespace", "Team", "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                          "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                          "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ("Namespace", "n" * 64, "must be no more than 63 characters"),
    ("Service", "1web", "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                        "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                        "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
    ("Service", "web.svc", "a DNS-1035 label must consist"),
    ("Node", "Worker_1", "a lowercase RFC 1123 subdomain must consist"),
    ("ClusterRole", "a/b", "may not contain '/'"),
    ("Role", "100%", "may not contain '%'"),
    ("ClusterRoleBinding", "..", "may not be '..'"),
])
def test_name_formats_per_kind(kind: str, name: str, message: str) -> None:
    body: dict[str, Any] = {"metadata": {"name": name}}
    if kind == "Service":
        body = {**service(), "metadata": {"name": name}}
    cause = find(created(kind, body), "metadata.name", "FieldValueInvalid", message)
    assert cause.message.startswith(f'Invalid value: "{name}": {message}')


@pytest.mark.parametrize(("kind", "name"), [
    ("Pod", "web.v1"), ("Pod", "1web"), ("ClusterRole", "system:controller:deployment-controller"),
    ("Role", "Weird Name:With Spaces"), ("Node", "192.168.56.21"), ("Namespace", "kube-system"),
])
def test_names_that_are_fine(kind: str, name: str) -> None:
    body = {**pod(), "metadata": {"name": name}} if kind == "Pod" else {"metadata": {"name": name}}
    assert created(kind, body) == []


def test_namespace_is_required_for_namespaced_kinds_and_forbidden_for_the_others() -> None:
    obj = prepared("ConfigMap", {"metadata": {"name": "c"}})
    del obj["metadata"]["namespace"]
    only(check_create(KINDS["ConfigMap"], obj), "metadata.namespace", "FieldValueRequired")
    obj["metadata"]["namespace"] = "Bad_NS"
    only(check_create(KINDS["ConfigMap"], obj), "metadata.namespace", "FieldValueInvalid")
    node = prepared("Node", {"metadata": {"name": "n", "namespace": NS}})
    only(check_create(KINDS["Node"], node), "metadata.namespace", "FieldValueForbidden",
         "Forbidden: not allowed on this type")


@pytest.mark.parametrize(("labels", "value", "message"), [
    ({"Bad Key": "x"}, "Bad Key",
     "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
     "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
     "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
    ({"Bad_Prefix/app": "x"}, "Bad_Prefix/app", "prefix part a lowercase RFC 1123 subdomain must consist of"),
    ({"/app": "x"}, "/app", "prefix part must be non-empty"),
    ({"example.com/": "x"}, "example.com/", "name part must be non-empty"),
    ({"a/b/c": "x"}, "a/b/c", "a qualified name must consist of alphanumeric characters"),
    ({"k" * 64: "x"}, "k" * 64, "name part must be no more than 63 characters"),
    ({"app": "v" * 64}, "v" * 64, "must be no more than 63 characters"),
    ({"app": "-web"}, "-web", "a valid label must be an empty string or consist of alphanumeric characters, '-', "
                              "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  "
                              "or 'my_value',  or '12345', regex used for validation is "
                              "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
])
def test_labels_keys_and_values(labels: dict[str, str], value: str, message: str) -> None:
    cause = find(created("ConfigMap", {"metadata": {"name": "c", "labels": labels}}), "metadata.labels",
                 "FieldValueInvalid", message)
    assert cause.message.startswith(f'Invalid value: "{value}": ')


def test_good_labels() -> None:
    labels = {"app": "web", "app.kubernetes.io/name": "web", "empty": "", "v": "1.2.3_rc-1", "A": "B"}
    assert created("ConfigMap", {"metadata": {"name": "c", "labels": labels}}) == []


def test_annotation_keys_are_qualified_names_in_any_case() -> None:
    ok = {"Example.com/Some-Key": "any value at all: {}", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    assert created("ConfigMap", {"metadata": {"name": "c", "annotations": ok}}) == []
    only(created("ConfigMap", {"metadata": {"name": "c", "annotations": {"bad key": "x"}}}),
         "metadata.annotations", "FieldValueInvalid", 'Invalid value: "bad key": name part must consist')


def test_annotations_may_total_256_kib() -> None:
    fits = {"a": "x" * (256 * 1024 - 1)}
    assert created("ConfigMap", {"metadata": {"name": "c", "annotations": fits}}) == []
    big = {"a": "x" * (256 * 1024)}
    cause = only(created("ConfigMap", {"metadata": {"name": "c", "annotations": big}}), "metadata.annotations",
                 "FieldValueTooLong")
    assert cause.message == "Too long: may not be more than 262144 bytes"


def test_owner_references_must_name_their_owner() -> None:
    causes = created("ConfigMap", {"metadata": {"name": "c", "ownerReferences": [{"controller": True}]}})
    find(causes, "metadata.ownerReferences.apiVersion", "FieldValueInvalid",
         'Invalid value: "": version must not be empty')
    for name in ("kind", "name", "uid"):
        find(causes, f"metadata.ownerReferences.{name}", "FieldValueInvalid", 'Invalid value: "": must not be empty')
    assert len(causes) == 4


def test_only_one_owner_may_be_the_controller() -> None:
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "uid": "u", "controller": True}
    refs = [{**ref, "name": "a"}, {**ref, "name": "b"}]
    only(created("Pod", {**pod(), "metadata": {"name": "p", "ownerReferences": refs}}),
         "metadata.ownerReferences", "FieldValueInvalid",
         'Only one reference can have Controller set to true. Found "true" in references for ReplicaSet/a and '
         'ReplicaSet/b')


def test_events_may_not_own_anything() -> None:
    ref = {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "u"}
    only(created("ConfigMap", {"metadata": {"name": "c", "ownerReferences": [ref]}}), "metadata.ownerReferences",
         "FieldValueInvalid", "/v1, Kind=Event is disallowed from being an owner")


def test_finalizers_are_qualified_or_standard_names() -> None:
    fine = ["kubernetes", "orphan", "example.com/cleanup"]
    assert created("ConfigMap", {"metadata": {"name": "c", "finalizers": fine}}) == []
    only(created("ConfigMap", {"metadata": {"name": "c", "finalizers": ["kubernetes", "cleanup"]}}),
         "metadata.finalizers[1]", "FieldValueInvalid", '"cleanup": name is neither a standard finalizer name nor is '
                                                        'it fully qualified')
    find(created("ConfigMap", {"metadata": {"name": "c", "finalizers": ["example.com/bad name"]}}),
         "metadata.finalizers", "FieldValueInvalid", "name part must consist of")
    find(created("ConfigMap", {"metadata": {"name": "c", "finalizers": ["orphan", "foregroundDeletion"]}}),
         "metadata.finalizers", "FieldValueInvalid", "finalizer orphan and foregroundDeletion cannot be both set")


@pytest.mark.parametrize("field_name", ["name", "namespace", "uid", "creationTimestamp"])
def test_identity_is_immutable_on_update(field_name: str) -> None:
    old = stored("ConfigMap", {"metadata": {"name": "c"}})
    cause = only(updated("ConfigMap", old, lambda new: new["metadata"].update({field_name: "changed"})),
                 f"metadata.{field_name}", "FieldValueInvalid")
    assert cause.message == 'Invalid value: "changed": field is immutable'


def test_metadata_is_revalidated_on_update_and_status_update() -> None:
    old = stored("Deployment", deployment())
    bad_labels = lambda new: new["metadata"].update(labels={"bad key": "x"})  # noqa: E731
    find(updated("Deployment", old, bad_labels), "metadata.labels", "FieldValueInvalid")
    new = copy.deepcopy(old)
    bad_labels(new)
    find(check_status_update(KINDS["Deployment"], new, old), "metadata.labels", "FieldValueInvalid")


def test_no_new_finalizers_once_deletion_started() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "c", "finalizers": ["example.com/a"]}})
    old["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    only(updated("ConfigMap", old, lambda new: new["metadata"]["finalizers"].append("example.com/b")),
         "metadata.finalizers", "FieldValueForbidden",
         "no new finalizers can be added if the object is being deleted, found new finalizers "
         '[]string{"example.com/b"}')
    assert updated("ConfigMap", old, lambda new: new["metadata"].update(finalizers=[])) == []


def test_generation_may_not_go_down() -> None:
    old = stored("Deployment", deployment())
    old["metadata"]["generation"] = 3
    only(updated("Deployment", old, lambda new: new["metadata"].update(generation=2)), "metadata.generation",
         "FieldValueInvalid", "must not be decremented")


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


# -- workloads ------------------------------------------------------------------------------


def test_selector_is_required() -> None:
    dep = deployment()
    del dep["spec"]["selector"]
    only(created("Deployment", dep), "spec.selector", "FieldValueRequired", "Required value")


def test_empty_selector_is_invalid() -> None:
    dep = deployment()
    dep["spec"]["selector"] = {}
    only(created("Deployment", dep), "spec.selector", "FieldValueInvalid",
         "Invalid value: {}: empty selector is invalid for deployment")


def test_selector_must_match_template_labels() -> None:
    dep = deployment()
    dep["spec"]["selector"] = {"matchLabels": {"app": "api"}}
    cause = only(created("Deployment", dep), "spec.template.metadata.labels", "FieldValueInvalid")
    assert cause.message == ('Invalid value: {"app":"web","tier":"frontend"}: '
                             "`selector` does not match template `labels`")


@pytest.mark.parametrize(("expression", "matches"), [
    ({"key": "tier", "operator": "In", "values": ["frontend", "backend"]}, True),
    ({"key": "tier", "operator": "NotIn", "values": ["frontend"]}, False),
    ({"key": "canary", "operator": "DoesNotExist"}, True),
    ({"key": "canary", "operator": "Exists"}, False),
])
def test_match_expressions_select_too(expression: dict[str, Any], matches: bool) -> None:
    dep = deployment()
    dep["spec"]["selector"]["matchExpressions"] = [expression]
    causes = created("Deployment", dep)
    assert (causes == []) is matches, causes


@pytest.mark.parametrize(("expression", "field", "reason", "message"), [
    ({"key": "tier", "operator": "In"}, "values", "FieldValueRequired",
     "must be specified when `operator` is 'In' or 'NotIn'"),
    ({"key": "tier", "operator": "Exists", "values": ["x"]}, "values", "FieldValueForbidden",
     "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
    ({"key": "tier", "operator": "Near", "values": ["x"]}, "operator", "FieldValueInvalid",
     'Invalid value: "Near": not a valid selector operator'),
    ({"key": "bad key", "operator": "Exists"}, "key", "FieldValueInvalid", "name part must consist of"),
    ({"key": "tier", "operator": "In", "values": ["-x"]}, "values[0]", "FieldValueInvalid", "a valid label must be"),
])
def test_bad_match_expressions(expression: dict[str, Any], field: str, reason: str, message: str) -> None:
    dep = deployment()
    dep["spec"]["selector"]["matchExpressions"] = [expression]
    find(created("Deployment", dep), f"spec.selector.matchExpressions[0].{field}", reason, message)


def test_replicas_may_not_be_negative() -> None:
    dep = deployment()
    dep["spec"]["replicas"] = -1
    only(created("Deployment", dep), "spec.replicas", "FieldValueInvalid",
         "Invalid value: -1: must be greater than or equal to 0")


def test_templates_are_validated_like_pods_on_their_own_path() -> None:
    dep = deployment()
    tspec(dep)["containers"][1]["image"] = ""
    tspec(dep)["volumes"] = [{"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}]
    dep["spec"]["template"]["metadata"]["annotations"] = {"bad key": "x"}
    causes = created("Deployment", dep)
    find(causes, "spec.template.spec.containers[1].image", "FieldValueRequired")
    find(causes, "spec.template.spec.volumes[0].hostPath", "FieldValueForbidden")
    find(causes, "spec.template.annotations", "FieldValueInvalid")
    assert len(causes) == 3


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet", "ReplicationController"])
def test_workload_templates_must_restart_always(kind: str) -> None:
    dep = deployment()
    spec = {"selector": dep["spec"]["selector"], "template": dep["spec"]["template"]}
    if kind == "ReplicationController":
        spec["selector"] = {"app": "web"}
    spec["template"]["spec"]["restartPolicy"] = "OnFailure"
    spec["template"]["spec"]["activeDeadlineSeconds"] = 10
    causes = created(kind, {"metadata": {"name": "w"}, "spec": spec})
    find(causes, "spec.template.spec.restartPolicy", "FieldValueNotSupported",
         'Unsupported value: "OnFailure": supported values: "Always"')
    find(causes, "spec.template.spec.activeDeadlineSeconds", "FieldValueForbidden", "is not Supported")
    assert len(causes) == 2


def strategy(**rolling: Any) -> dict[str, Any]:
    dep = deployment()
    dep["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": rolling}
    return dep


@pytest.mark.parametrize(("rolling", "field", "reason", "message"), [
    ({"maxSurge": 0, "maxUnavailable": 0}, "maxUnavailable", "FieldValueInvalid",
     "Invalid value: 0: may not be 0 when `maxSurge` is 0"),
    ({"maxSurge": "0%", "maxUnavailable": 0}, "maxUnavailable", "FieldValueInvalid",
     "may not be 0 when `maxSurge` is 0"),
    ({"maxSurge": "lots"}, "maxSurge", "FieldValueInvalid",
     "Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  "
     "or '93%', regex used for validation is '[0-9]+%')"),
    ({"maxUnavailable": "150%"}, "maxUnavailable", "FieldValueInvalid", "must not be greater than 100%"),
    ({"maxSurge": -1}, "maxSurge", "FieldValueInvalid", "must be greater than or equal to 0"),
    ({"maxSurge": 1.5}, "maxSurge", "FieldValueInvalid", "must be an integer or percentage (e.g '5%')"),
])
def test_rolling_update_parameters(rolling: dict[str, Any], field: str, reason: str, message: str) -> None:
    only(created("Deployment", strategy(**rolling)), f"spec.strategy.rollingUpdate.{field}", reason, message)


def test_rolling_update_parameters_that_are_fine() -> None:
    assert created("Deployment", strategy(maxSurge=0, maxUnavailable=1)) == []
    assert created("Deployment", strategy(maxSurge="100%", maxUnavailable="0%")) == []
    assert created("Deployment", strategy(maxSurge="200%")) == []


def test_recreate_carries_no_rolling_update_and_types_are_known() -> None:
    dep = deployment()
    dep["spec"]["strategy"] = {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}
    only(created("Deployment", dep), "spec.strategy.rollingUpdate", "FieldValueForbidden",
         "may not be specified when strategy `type` is 'Recreate'")
    dep["spec"]["strategy"] = {"type": "Recreate"}
    assert created("Deployment", dep) == []
    dep["spec"]["strategy"] = {"type": "BlueGreen"}
    only(created("Deployment", dep), "spec.strategy", "FieldValueNotSupported",
         'Unsupported value: {"type":"BlueGreen"}: supported values: "Recreate", "RollingUpdate"')


def test_progress_deadline_exceeds_min_ready() -> None:
    dep = deployment()
    dep["spec"].update(minReadySeconds=30, progressDeadlineSeconds=30)
    only(created("Deployment", dep), "spec.progressDeadlineSeconds", "FieldValueInvalid",
         "must be greater than minReadySeconds")
    dep["spec"].update(revisionHistoryLimit=-1, progressDeadlineSeconds=600)
    only(created("Deployment", dep), "spec.revisionHistoryLimit", "FieldValueInvalid")


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_apps_selectors_are_immutable(kind: str) -> None:
    dep = deployment()
    old = stored(kind, {"metadata": {"name": "w"}, "spec": {"selector": dep["spec"]["selector"],
                                                            "template": dep["spec"]["template"]}})

    def change(new: dict[str, Any]) -> None:
        new["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "frontend"}}
    cause = only(updated(kind, old, change), "spec.selector", "FieldValueInvalid")
    assert cause.message == 'Invalid value: {"matchLabels":{"app":"web","tier":"frontend"}}: field is immutable'
    assert updated(kind, old, lambda new: tspec(new)["containers"][0].update(image="nginx:1.28")) == []


def test_scaling_and_template_changes_are_fine() -> None:
    old = stored("Deployment", deployment())

    def change(new: dict[str, Any]) -> None:
        new["spec"]["replicas"] = 10
        new["spec"]["template"]["metadata"]["labels"]["version"] = "2"
        tspec(new)["containers"][0]["ports"][0]["containerPort"] = 8080
    assert updated("Deployment", old, change) == []


def test_deployment_status_updates() -> None:
    old = stored("Deployment", deployment())
    good = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2,
            "unavailableReplicas": 1}
    assert status_updated("Deployment", old, good) == []
    causes = status_updated("Deployment", old, {**good, "readyReplicas": 4, "availableReplicas": 5, "replicas": -1})
    find(causes, "status.replicas", "FieldValueInvalid", "must be greater than or equal to 0")
    find(causes, "status.readyReplicas", "FieldValueInvalid", "cannot be greater than status.replicas")
    find(causes, "status.availableReplicas", "FieldValueInvalid", "cannot be greater than readyReplicas")


def test_replica_set_status_updates() -> None:
    old = stored("ReplicaSet", {"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
                                                                     "template": {"metadata": {"labels": {"a": "b"}},
                                                                                  "spec": pod()["spec"]}}})
    assert status_updated("ReplicaSet", old, {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 1}) == []
    only(status_updated("ReplicaSet", old, {"replicas": 1, "fullyLabeledReplicas": 2}), "status.fullyLabeledReplicas",
         "FieldValueInvalid", "Invalid value: 2: cannot be greater than status.replicas")


def daemon_set(**update_strategy: Any) -> dict[str, Any]:
    dep = deployment()
    return {"metadata": {"name": "agent"}, "spec": {"selector": dep["spec"]["selector"],
                                                    "template": dep["spec"]["template"],
                                                    "updateStrategy": update_strategy}}


def test_daemon_set_update_strategy() -> None:
    assert created("DaemonSet", daemon_set(type="OnDelete")) == []
    assert created("DaemonSet", daemon_set(type="RollingUpdate", rollingUpdate={"maxSurge": "10%",
                                                                                "maxUnavailable": 0})) == []
    only(created("DaemonSet", daemon_set(type="RollingUpdate", rollingUpdate={"maxSurge": 1, "maxUnavailable": 1})),
         "spec.updateStrategy.rollingUpdate.maxSurge", "FieldValueInvalid",
         "may not be set when maxUnavailable is non-zero")
    only(created("DaemonSet", daemon_set(type="RollingUpdate", rollingUpdate={"maxSurge": 0, "maxUnavailable": 0})),
         "spec.updateStrategy.rollingUpdate.maxUnavailable", "FieldValueRequired", "cannot be 0 when maxSurge is 0")
    only(created("DaemonSet", daemon_set(type="Surge")), "spec.updateStrategy", "FieldValueNotSupported",
         'supported values: "RollingUpdate", "OnDelete"')


def test_daemon_set_selector() -> None:
    ds = daemon_set()
    ds["spec"]["selector"] = {}
    only(created("DaemonSet", ds), "spec.selector", "FieldValueInvalid", "empty selector is invalid for daemonset")
    del ds["spec"]["selector"]
    only(created("DaemonSet", ds), "spec.selector", "FieldValueRequired")
    old = stored("DaemonSet", daemon_set())
    find(status_updated("DaemonSet", old, {"numberReady": -1}), "status.numberReady", "FieldValueInvalid")


def test_replication_controller_selector() -> None:
    tmpl = {"metadata": {"labels": {"app": "web"}}, "spec": pod()["spec"]}
    only(created("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"selector": {"app": "api"},
                                                                                "template": tmpl}}),
         "spec.template.metadata.labels", "FieldValueInvalid", "`selector` does not match template `labels`")
    only(created("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"selector": {"app": "web"}}}),
         "spec.template", "FieldValueRequired")
    only(created("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"template": {"spec": pod()["spec"]}}}),
         "spec.selector", "FieldValueRequired")
    old = stored("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"template": tmpl}})

    def change(new: dict[str, Any]) -> None:  # core/v1 selectors may change
        new["spec"]["selector"] = {}
        new["spec"]["template"]["metadata"]["labels"] = {"app": "api"}
    assert updated("ReplicationController", old, change) == []


# -- services -------------------------------------------------------------------------------


def test_ports_are_required_unless_headless_or_external_name() -> None:
    only(created("Service", service(ports=[])), "spec.ports", "FieldValueRequired")
    assert created("Service", service(ports=[], clusterIP="None")) == []


@pytest.mark.parametrize(("port", "field", "reason", "message"), [
    ({"port": 0}, "port", "FieldValueInvalid", "Invalid value: 0: must be between 1 and 65535, inclusive"),
    ({"port": 70000}, "port", "FieldValueInvalid", "must be between 1 and 65535, inclusive"),
    ({"port": 80, "protocol": "HTTP"}, "protocol", "FieldValueNotSupported",
     'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
    ({"port": 80, "targetPort": 70000}, "targetPort", "FieldValueInvalid", "must be between 1 and 65535, inclusive"),
    ({"port": 80, "targetPort": "HTTP"}, "targetPort", "FieldValueInvalid", "must contain only alpha-numeric"),
    ({"port": 80, "name": "Web"}, "name", "FieldValueInvalid", "a lowercase RFC 1123 label must consist of"),
    ({"port": 80, "appProtocol": "bad proto"}, "appProtocol", "FieldValueInvalid", "name part must consist of"),
])
def test_service_ports(port: dict[str, Any], field: str, reason: str, message: str) -> None:
    find(created("Service", service(ports=[port])), f"spec.ports[0].{field}", reason, message)


def test_several_ports_need_unique_names() -> None:
    causes = created("Service", service(ports=[{"name": "http", "port": 80}, {"port": 443},
                                               {"name": "http", "port": 8080}]))
    find(causes, "spec.ports[1].name", "FieldValueRequired")
    find(causes, "spec.ports[2].name", "FieldValueDuplicate", 'Duplicate value: "http"')
    assert len(causes) == 2


def test_the_same_port_and_protocol_only_once() -> None:
    only(created("Service", service(ports=[{"name": "a", "port": 53, "protocol": "UDP"},
                                           {"name": "b", "port": 53, "protocol": "TCP"},
                                           {"name": "c", "port": 53, "protocol": "UDP"}])),
         "spec.ports[2]", "FieldValueDuplicate", 'Duplicate value: {"port":53,"protocol":"UDP"}')


def test_node_ports_are_in_range_and_only_on_node_port_services() -> None:
    only(created("Service", service(type="NodePort", ports=[{"port": 80, "nodePort": 80}])),
         "spec.ports[0].nodePort", "FieldValueInvalid",
         "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767")
    only(created("Service", service(ports=[{"port": 80, "nodePort": 30080}])), "spec.ports[0].nodePort",
         "FieldValueForbidden", "may not be used when `type` is 'ClusterIP'")
    only(created("Service", service(type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 30080},
                                                            {"name": "b", "port": 81, "nodePort": 30080}])),
         "spec.ports[1].nodePort", "FieldValueDuplicate", "Duplicate value: 30080")


def test_node_port_range_is_an_option() -> None:
    svc = service(type="NodePort", ports=[{"port": 80, "nodePort": 8080}])
    assert created("Service", svc, options=Options(node_port_range=(8000, 9000))) == []
    find(created("Service", svc, options=Options(node_port_range=(30000, 31000))), "spec.ports[0].nodePort",
         "FieldValueInvalid", "The range of valid ports is 30000-31000")


def test_service_type_session_affinity_and_selector() -> None:
    only(created("Service", service(type="Internal")), "spec.type", "FieldValueNotSupported",
         'Unsupported value: "Internal": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"')
    only(created("Service", service(sessionAffinity="Sticky")), "spec.sessionAffinity", "FieldValueNotSupported",
         'supported values: "ClientIP", "None"')
    only(created("Service", service(selector={"app": "-web"})), "spec.selector", "FieldValueInvalid",
         "a valid label must be")
    assert created("Service", service(sessionAffinity="ClientIP")) == []
    only(created("Service", service(sessionAffinity="ClientIP",
                                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}})),
         "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "FieldValueInvalid",
         "must be greater than 0 and less than 86400")


def test_cluster_ips_are_ip_addresses_or_none() -> None:
    assert created("Service", service(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])) == []
    only(created("Service", service(clusterIP="10.96.0")), "spec.clusterIPs[0]", "FieldValueInvalid",
         'Invalid value: "10.96.0": must be a valid IP address')
    only(created("Service", service(type="NodePort", clusterIP="None")), "spec.clusterIPs[0]", "FieldValueInvalid",
         "may not be set to 'None' for NodePort services")
    only(created("Service", service(externalIPs=["192.168.56.300"])), "spec.externalIPs[0]", "FieldValueInvalid")


def test_external_name_services() -> None:
    ext = {"metadata": {"name": "db"}, "spec": {"type": "ExternalName"}}
    only(created("Service", ext), "spec.externalName", "FieldValueRequired")
    ext["spec"].update(externalName="Bad_Host", clusterIP="10.96.0.9")
    causes = created("Service", ext)
    find(causes, "spec.externalName", "FieldValueInvalid", "RFC 1123 subdomain")
    find(causes, "spec.clusterIPs", "FieldValueForbidden", "may not be set for ExternalName services")


def test_traffic_policies() -> None:
    only(created("Service", service(externalTrafficPolicy="Local")), "spec.externalTrafficPolicy",
         "FieldValueInvalid", "may only be set for externally-accessible services")
    assert created("Service", service(type="NodePort", externalTrafficPolicy="Local")) == []
    only(created("Service", service(internalTrafficPolicy="Nearby")), "spec.internalTrafficPolicy",
         "FieldValueNotSupported", 'supported values: "Cluster", "Local"')
    only(created("Service", service(loadBalancerSourceRanges=["10.0.0.0/8"])), "spec.LoadBalancerSourceRanges",
         "FieldValueForbidden", "may only be used when `type` is 'LoadBalancer'")


def test_cluster_ip_may_not_change_once_set() -> None:
    old = stored("Service", service(clusterIP="10.96.0.20", clusterIPs=["10.96.0.20"]))

    def change(new: dict[str, Any]) -> None:
        new["spec"].update(clusterIP="10.96.0.21", clusterIPs=["10.96.0.21"])
    only(updated("Service", old, change), "spec.clusterIPs[0]", "FieldValueInvalid",
         'Invalid value: ["10.96.0.21"]: may not change once set')
    assert updated("Service", old, lambda new: new["spec"].update(ports=[{"port": 8080}])) == []
    # A replace without the cluster IP is not an error: the apiserver carries the assigned one over.
    assert updated("Service", old, lambda new: [new["spec"].pop(k) for k in ("clusterIP", "clusterIPs")]) == []
    to_external = updated("Service", old, lambda new: new.update(spec={"type": "ExternalName",
                                                                       "externalName": "example.com"}))
    assert to_external == []


def test_load_balancer_status() -> None:
    old = stored("Service", service(type="LoadBalancer"))
    assert status_updated("Service", old, {"loadBalancer": {"ingress": [{"ip": "192.168.56.200"}]}}) == []
    only(status_updated("Service", old, {"loadBalancer": {"ingress": [{"ip": "nope"}]}}),
         "status.loadBalancer.ingress[0].ip", "FieldValueInvalid")


def test_endpoints() -> None:
    subsets = [{"addresses": [{"ip": "10.244.1"}], "ports": [{"port": 80}, {"port": 0}]}, {"ports": [{"port": 80}]}]
    causes = created("Endpoints", {"metadata": {"name": "web"}, "subsets": subsets})
    find(causes, "subsets[0].addresses[0].ip", "FieldValueInvalid", "must be a valid IP address")
    find(causes, "subsets[0].ports[0].name", "FieldValueRequired")
    find(causes, "subsets[0].ports[1].port", "FieldValueInvalid")
    find(causes, "subsets[1]", "FieldValueRequired", "must specify `addresses` or `notReadyAddresses`")


# -- namespaces and nodes -------------------------------------------------------------------


def test_namespace_finalizers_and_status() -> None:
    only(created("Namespace", {"metadata": {"name": "team"}, "spec": {"finalizers": ["cleanup"]}}),
         "spec.finalizers", "FieldValueInvalid", "name is neither a standard finalizer name nor is it fully qualified")
    old = stored("Namespace", {"metadata": {"name": "team"}})
    assert status_updated("Namespace", old, {"phase": "Active"}) == []
    only(status_updated("Namespace", old, {"phase": "Terminating"}), "status.phase", "FieldValueInvalid",
         "may only be 'Active' if `deletionTimestamp` is empty")
    old["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert status_updated("Namespace", old, {"phase": "Terminating"}) == []


def node(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "worker-1"}, "spec": spec}


def test_node_pod_cidr_and_taints() -> None:
    only(created("Node", node(podCIDR="10.244.1.0")), "spec.podCIDRs[0]", "FieldValueInvalid",
         'Invalid value: "10.244.1.0": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)')
    only(created("Node", node(taints=[{"key": "dedicated", "effect": "Sometimes"}])), "spec.taints[0].effect",
         "FieldValueNotSupported", 'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"')
    only(created("Node", node(taints=[{"key": "dedicated"}])), "spec.taints[0].effect", "FieldValueRequired")
    find(created("Node", node(taints=[{"key": "bad key", "effect": "NoSchedule"}])), "spec.taints[0].key",
         "FieldValueInvalid")
    find(created("Node", node(taints=[{"key": "k", "value": "-v", "effect": "NoSchedule"}])), "spec.taints[0].value",
         "FieldValueInvalid")
    taint = {"key": "dedicated", "value": "a", "effect": "NoSchedule"}
    cause = only(created("Node", node(taints=[taint, {**taint, "value": "b"}])), "spec.taints[1]",
                 "FieldValueDuplicate")
    assert cause.message.endswith(": taints must be unique by key and effect pair")
    assert created("Node", node(taints=[taint, {**taint, "effect": "NoExecute"}])) == []


def test_node_pod_cidr_is_set_once() -> None:
    old = stored("Node", node())
    assert updated("Node", old, lambda new: new["spec"].update(podCIDR="10.244.1.0/24",
                                                               podCIDRs=["10.244.1.0/24"])) == []
    old = stored("Node", node(podCIDR="10.244.1.0/24"))
    only(updated("Node", old, lambda new: new["spec"].update(podCIDR="10.244.2.0/24")), "spec.podCIDRs",
         "FieldValueForbidden", 'node updates may not change podCIDR except from "" to valid')
    assert updated("Node", old, lambda new: new["spec"].update(unschedulable=True)) == []


def test_node_status() -> None:
    old = stored("Node", node())
    address = {"type": "InternalIP", "address": "192.168.56.21"}
    good = {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}, "allocatable": {"cpu": "1900m"},
            "addresses": [address, {"type": "Hostname", "address": "w1"}]}
    assert status_updated("Node", old, good) == []
    causes = status_updated("Node", old, {"capacity": {"cpu": "two", "pods": "1.5", "example.com/fpga": "1"},
                                          "allocatable": {"memory": "-1"}, "addresses": [address, address]})
    find(causes, "status.capacity.cpu", "FieldValueInvalid", "quantities must match the regular expression")
    find(causes, "status.capacity.pods", "FieldValueInvalid", "must be an integer")
    find(causes, "status.allocatable.memory", "FieldValueInvalid", "must be greater than or equal to 0")
    find(causes, "status.addresses[1]", "FieldValueDuplicate")
    assert len(causes) == 4


# -- config maps and secrets ----------------------------------------------------------------


@pytest.mark.parametrize(("key", "message"), [
    ("bad key", "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"),
    ("a/b", "a valid config key must consist of alphanumeric characters"),
    (".", "must not be '.'"),
    ("..", "must not be '..'"),
    ("..data", "must not start with '..'"),
    ("k" * 254, "must be no more than 253 characters"),
])
def test_config_map_keys(key: str, message: str) -> None:
    cause = find(created("ConfigMap", {"metadata": {"name": "c"}, "data": {key: "v"}}), f"data[{key}]",
                 "FieldValueInvalid", message)
    assert cause.message.startswith(f'Invalid value: "{key}": ')


def test_config_maps_hold_at_most_one_mib() -> None:
    assert created("ConfigMap", {"metadata": {"name": "c"}, "data": {"a": "x" * (1024 * 1024)}}) == []
    cause = only(created("ConfigMap", {"metadata": {"name": "c"}, "data": {"a": "x" * (1024 * 1024), "b": "y"}}), "",
                 "FieldValueTooLong")
    assert cause.message == "Too long: may not be more than 1048576 bytes"


def test_config_map_binary_data() -> None:
    causes = created("ConfigMap", {"metadata": {"name": "c"}, "data": {"a": "x"}, "binaryData": {"a": "eA==",
                                                                                               "b": "not base64!"}})
    find(causes, "data[a]", "FieldValueInvalid", "duplicate of key present in binaryData")
    find(causes, "binaryData[b]", "FieldValueInvalid", "must be base64-encoded")


def test_immutable_config_maps_and_secrets_stay_as_they_are() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": True})
    only(updated("ConfigMap", old, lambda new: new["data"].update(a="2")), "data", "FieldValueForbidden",
         "field is immutable when `immutable` is set")
    only(updated("ConfigMap", old, lambda new: new.update(immutable=False)), "immutable", "FieldValueForbidden")
    assert updated("ConfigMap", old, lambda new: new["metadata"].update(labels={"a": "b"})) == []
    secret = stored("Secret", {"metadata": {"name": "s"}, "data": {"a": "MQ=="}, "immutable": True})
    only(updated("Secret", secret, lambda new: new["data"].update(a="Mg==")), "data", "FieldValueForbidden")


def test_secret_data_is_base64() -> None:
    only(created("Secret", {"metadata": {"name": "s"}, "data": {"password": "hunter2!"}}), "data[password]",
         "FieldValueInvalid", 'Invalid value: "<secret contents redacted>": must be base64-encoded')
    find(created("Secret", {"metadata": {"name": "s"}, "data": {"bad key": "eA=="}}), "data[bad key]",
         "FieldValueInvalid", "a valid config key")
    big = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
    only(created("Secret", {"metadata": {"name": "s"}, "data": {"a": big}}), "data", "FieldValueTooLong")


def test_secret_types_need_their_keys_and_keep_their_type() -> None:
    causes = created("Secret", {"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}})
    only(causes, "data[tls.key]", "FieldValueRequired")
    only(created("Secret", {"metadata": {"name": "s"}, "type": "kubernetes.io/service-account-token"}),
         "metadata.annotations[kubernetes.io/service-account.name]", "FieldValueRequired")
    old = stored("Secret", {"metadata": {"name": "s"}})
    only(updated("Secret", old, lambda new: new.update(type="example.com/custom")), "type", "FieldValueInvalid",
         'Invalid value: "example.com/custom": field is immutable')


# -- leases, events, RBAC, quota ------------------------------------------------------------


def test_leases() -> None:
    only(created("Lease", {"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}}),
         "spec.leaseDurationSeconds", "FieldValueInvalid", "Invalid value: 0: must be greater than 0")
    only(created("Lease", {"metadata": {"name": "l"}, "spec": {"holderIdentity": 7}}), "spec.holderIdentity",
         "FieldValueInvalid", "must be a string")
    only(created("Lease", {"metadata": {"name": "l"}, "spec": {"leaseTransitions": -1}}), "spec.leaseTransitions",
         "FieldValueInvalid", "must be greater than or equal to 0")
    assert created("Lease", {"metadata": {"name": "l"}, "spec": {}}) == []


def test_events_name_their_object_in_their_namespace() -> None:
    only(created("Event", {"metadata": {"name": "e"}, "reason": "x"}), "involvedObject", "FieldValueRequired")
    only(created("Event", {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p",
                                                                          "namespace": "other"}}),
         "involvedObject.namespace", "FieldValueInvalid", 'Invalid value: "other": does not match event.namespace')


def test_rbac_rules() -> None:
    causes = created("Role", {"metadata": {"name": "r"}, "rules": [{"resources": ["pods"]},
                                                                   {"nonResourceURLs": ["/x"], "verbs": ["get"]}]})
    find(causes, "rules[0].verbs", "FieldValueRequired", "verbs must contain at least one value")
    find(causes, "rules[0].apiGroups", "FieldValueRequired", "resource rules must supply at least one api group")
    find(causes, "rules[1].nonResourceURLs", "FieldValueInvalid", "namespaced rules cannot apply to non-resource URLs")
    assert len(causes) == 3
    assert created("ClusterRole", {"metadata": {"name": "agg"}, "aggregationRule": {
        "clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-view": "true"}}]}}) == []


def test_role_bindings() -> None:
    causes = created("RoleBinding", {"metadata": {"name": "b"}, "roleRef": {"kind": "Group"},
                                     "subjects": [{"kind": "Robot", "name": "r2"}, {"kind": "User"},
                                                  {"kind": "ServiceAccount", "name": "sa", "apiGroup": "x"}]})
    find(causes, "roleRef.kind", "FieldValueNotSupported", 'Unsupported value: "Group": supported values: "Role", '
                                                           '"ClusterRole"')
    find(causes, "roleRef.name", "FieldValueRequired")
    find(causes, "subjects[0].kind", "FieldValueNotSupported", 'supported values: "ServiceAccount", "User", "Group"')
    find(causes, "subjects[1].name", "FieldValueRequired")
    find(causes, "subjects[2].apiGroup", "FieldValueNotSupported")
    assert len(causes) == 5
    only(created("ClusterRoleBinding", {"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
                                        "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
         "subjects[0].namespace", "FieldValueRequired")
    only(created("ClusterRoleBinding", {"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view",
                                                                               "apiGroup": "example.com"}}),
         "roleRef.apiGroup", "FieldValueNotSupported", 'supported values: "rbac.authorization.k8s.io"')


def test_role_ref_may_not_change() -> None:
    old = stored("RoleBinding", {"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "a"}})
    only(updated("RoleBinding", old, lambda new: new["roleRef"].update(name="b")), "roleRef", "FieldValueInvalid",
         "cannot change roleRef")
    assert updated("RoleBinding", old, lambda new: new.update(subjects=[{"kind": "Group", "name": "devs"}])) == []


def test_resource_quota() -> None:
    causes = created("ResourceQuota", {"metadata": {"name": "q"},
                                       "spec": {"hard": {"cpu": "many", "widgets": "1", "pods": "1.5"},
                                                "scopes": ["Sometimes"]}})
    find(causes, "spec.hard[cpu]", "FieldValueInvalid", "quantities must match the regular expression")
    find(causes, "spec.hard[widgets]", "FieldValueInvalid", "must be a standard resource type or fully qualified")
    find(causes, "spec.hard[widgets]", "FieldValueInvalid", "must be a standard resource for quota")
    find(causes, "spec.hard[pods]", "FieldValueInvalid", 'Invalid value: "1.5": must be an integer')
    find(causes, "spec.scopes", "FieldValueInvalid", "unsupported scope")
    old = stored("ResourceQuota", {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}})
    assert status_updated("ResourceQuota", old, {"hard": {"pods": "10"}, "used": {"pods": "3"}}) == []
    only(status_updated("ResourceQuota", old, {"used": {"pods": "-1"}}), "status.used[pods]", "FieldValueInvalid")
    only(updated("ResourceQuota", old, lambda new: new["spec"].update(scopes=["BestEffort"])), "spec.scopes",
         "FieldValueInvalid", "field is immutable")
