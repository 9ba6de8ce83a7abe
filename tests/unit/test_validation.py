"""Validation of general rules and manifests users apply.

Every cause on upstream's field path, with its reason and wording."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from harness.api import errors
from harness.api.validation import (
    RULES,
    check_create,
    check_status_update,
    check_update,
    validate_create,
    validate_status_update,
    validate_update,
)
from tests.unit.validation_support import (
    KINDS,
    NS,
    created,
    deployment,
    pod,
    prepared,
    service,
    stored,
    tspec,
)


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
