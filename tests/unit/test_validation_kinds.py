"""Validation of services, namespaces, nodes, config, RBAC, leases, quota.

Every cause on upstream's field path, with its reason and wording."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from harness.api.validation import (
    Options,
)
from tests.unit.validation_support import (
    created,
    find,
    only,
    service,
    status_updated,
    stored,
    updated,
)

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
