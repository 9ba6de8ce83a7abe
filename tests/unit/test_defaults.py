"""Defaulting fills in what upstream's v1 defaulters fill in, and never overrides what a client set."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from harness.api import registry
from harness.api.defaults import DEFAULTERS, apply_defaults, image_pull_policy

KINDS = {k.kind: k for k in registry.KINDS}


def defaulted(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    apply_defaults(KINDS[kind], obj)
    return obj


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def template(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}], **spec}}


def test_every_defaulter_is_for_a_served_kind() -> None:
    assert set(DEFAULTERS) <= set(KINDS)


def test_kinds_without_defaults_are_left_alone() -> None:
    cm = {"metadata": {"name": "c"}, "data": {"a": "b"}}
    for kind in ("ConfigMap", "ServiceAccount", "Event", "Lease", "ResourceQuota"):
        assert defaulted(kind, cm) == cm


# -- pods -----------------------------------------------------------------------------------


def test_pod_spec_gets_upstream_defaults() -> None:
    spec = defaulted("Pod", pod())["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    (ctr,) = spec["containers"]
    assert ctr["terminationMessagePath"] == "/dev/termination-log"
    assert ctr["terminationMessagePolicy"] == "File"
    assert ctr["resources"] == {}
    assert ctr["imagePullPolicy"] == "Always"


def test_what_the_client_set_is_kept() -> None:
    spec = defaulted("Pod", pod(restartPolicy="Never", dnsPolicy="Default", terminationGracePeriodSeconds=0,
                                enableServiceLinks=False, schedulerName="mine"))["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"]) == ("Never", "Default", 0)
    assert spec["enableServiceLinks"] is False and spec["schedulerName"] == "mine"


@pytest.mark.parametrize(("image", "policy"), [
    ("busybox", "Always"),
    ("busybox:latest", "Always"),
    ("registry.local:5000/busybox", "Always"),
    ("registry.local:5000/busybox:latest", "Always"),
    ("busybox:1.36", "IfNotPresent"),
    ("registry.local:5000/team/busybox:1.36", "IfNotPresent"),
    ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
    ("busybox:1.36@sha256:" + "a" * 64, "IfNotPresent"),
    ("", "IfNotPresent"),
])
def test_image_pull_policy_follows_the_tag(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


def test_pull_policy_set_by_client_wins() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    assert defaulted("Pod", obj)["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_init_containers_are_defaulted_like_containers() -> None:
    spec = defaulted("Pod", pod(initContainers=[{"name": "init", "image": "busybox:1"}]))["spec"]
    (init,) = spec["initContainers"]
    assert init["imagePullPolicy"] == "IfNotPresent" and init["terminationMessagePolicy"] == "File"


def test_ports_default_to_tcp() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]
    ports = defaulted("Pod", obj)["spec"]["containers"][0]["ports"]
    assert [p["protocol"] for p in ports] == ["TCP", "UDP"]


def test_probes_get_timing_and_http_defaults() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"port": 80}}
    obj["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 80}, "periodSeconds": 3}
    ctr = defaulted("Pod", obj)["spec"]["containers"][0]
    live, ready = ctr["livenessProbe"], ctr["readinessProbe"]
    assert (live["periodSeconds"], live["timeoutSeconds"], live["successThreshold"], live["failureThreshold"]) \
        == (10, 1, 1, 3)
    assert live["httpGet"] == {"port": 80, "path": "/", "scheme": "HTTP"}
    assert ready["periodSeconds"] == 3


def test_lifecycle_http_hooks_get_http_defaults() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["lifecycle"] = {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}}
    hook = defaulted("Pod", obj)["spec"]["containers"][0]["lifecycle"]["preStop"]["httpGet"]
    assert hook == {"port": 80, "path": "/quit", "scheme": "HTTP"}


def test_pod_requests_default_to_limits_when_only_limits_are_given() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "500m", "memory": "128Mi"},
                                                 "requests": {"cpu": "100m"}}
    resources = defaulted("Pod", obj)["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_templates_do_not_copy_limits_to_requests() -> None:
    tmpl = template()
    tmpl["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    dep = defaulted("Deployment", {"metadata": {"name": "d"}, "spec": {"template": tmpl}})
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}}
    assert "enableServiceLinks" not in dep["spec"]["template"]["spec"]


def test_host_network_pods_use_the_container_port_on_the_host() -> None:
    obj = pod(hostNetwork=True)
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    assert defaulted("Pod", obj)["spec"]["containers"][0]["ports"][0]["hostPort"] == 8080


def test_volumes_without_a_source_are_empty_dirs_and_file_modes_default() -> None:
    spec = defaulted("Pod", pod(volumes=[{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}},
                                         {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o400}}]))["spec"]
    scratch, cfg, secret = spec["volumes"]
    assert scratch["emptyDir"] == {}
    assert cfg["configMap"]["defaultMode"] == 420
    assert secret["secret"]["defaultMode"] == 0o400


def test_downward_api_env_defaults_its_api_version() -> None:
    obj = pod()
    obj["spec"]["containers"][0]["env"] = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    env = defaulted("Pod", obj)["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["fieldRef"] == {"fieldPath": "spec.nodeName", "apiVersion": "v1"}


def test_tolerations_are_untouched() -> None:
    tolerations = [{"key": "k", "operator": "Exists"}]
    assert defaulted("Pod", pod(tolerations=tolerations))["spec"]["tolerations"] == tolerations


def test_defaulting_twice_changes_nothing() -> None:
    once = defaulted("Pod", pod(volumes=[{"name": "v"}]))
    assert defaulted("Pod", once) == once


def test_garbage_does_not_crash_defaulting() -> None:
    for obj in ({}, {"spec": None}, {"spec": {"containers": "x"}}, {"spec": {"containers": [1, None]}}):
        apply_defaults(KINDS["Pod"], copy.deepcopy(obj))
    apply_defaults(KINDS["Deployment"], {"spec": {"template": "x", "strategy": None}})
    apply_defaults(KINDS["Service"], {"spec": {"ports": [None, {"port": 80}]}})


# -- workloads ------------------------------------------------------------------------------


def test_deployment_defaults() -> None:
    spec = defaulted("Deployment", {"metadata": {"name": "d"}, "spec": {"template": template()}})["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    tspec = spec["template"]["spec"]
    assert tspec["restartPolicy"] == "Always" and tspec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert "selector" not in spec  # apps/v1 never defaults the selector


def test_deployment_keeps_zero_replicas_and_recreate_strategy() -> None:
    spec = defaulted("Deployment", {"spec": {"replicas": 0, "strategy": {"type": "Recreate"},
                                             "template": template()}})["spec"]
    assert spec["replicas"] == 0
    assert spec["strategy"] == {"type": "Recreate"}


def test_partial_rolling_update_is_completed() -> None:
    spec = defaulted("Deployment", {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}})["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}


def test_replica_set_defaults() -> None:
    spec = defaulted("ReplicaSet", {"spec": {"template": template()}})["spec"]
    assert spec["replicas"] == 1 and spec["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


def test_daemon_set_defaults() -> None:
    spec = defaulted("DaemonSet", {"spec": {"template": template()}})["spec"]
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["template"]["spec"]["schedulerName"] == "default-scheduler"
    on_delete = defaulted("DaemonSet", {"spec": {"updateStrategy": {"type": "OnDelete"}}})["spec"]
    assert on_delete["updateStrategy"] == {"type": "OnDelete"}


def test_replication_controller_selector_and_labels_default_to_the_template_labels() -> None:
    rc = defaulted("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"template": template()}})
    assert rc["spec"]["replicas"] == 1
    assert rc["spec"]["selector"] == {"app": "web"}
    assert rc["metadata"]["labels"] == {"app": "web"}
    own = defaulted("ReplicationController", {"metadata": {"labels": {"tier": "x"}},
                                              "spec": {"selector": {"app": "web", "v": "1"}, "template": template()}})
    assert own["spec"]["selector"] == {"app": "web", "v": "1"} and own["metadata"]["labels"] == {"tier": "x"}


# -- services -------------------------------------------------------------------------------


def test_service_defaults() -> None:
    spec = defaulted("Service", {"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert "externalTrafficPolicy" not in spec
    assert "clusterIP" not in spec  # allocation is the apiserver's


def test_named_target_ports_are_kept() -> None:
    spec = defaulted("Service", {"spec": {"ports": [{"port": 80, "targetPort": "http"}]}})["spec"]
    assert spec["ports"][0]["targetPort"] == "http"


def test_node_port_and_load_balancer_services_default_external_traffic_policy() -> None:
    node_port = defaulted("Service", {"spec": {"type": "NodePort", "ports": [{"port": 80}]}})["spec"]
    assert node_port["externalTrafficPolicy"] == "Cluster" and "allocateLoadBalancerNodePorts" not in node_port
    lb = defaulted("Service", {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})["spec"]
    assert lb["externalTrafficPolicy"] == "Cluster" and lb["allocateLoadBalancerNodePorts"] is True


def test_external_name_services_get_no_ip_families() -> None:
    spec = defaulted("Service", {"spec": {"type": "ExternalName", "externalName": "example.com"}})["spec"]
    assert "ipFamilies" not in spec and "ipFamilyPolicy" not in spec and "internalTrafficPolicy" not in spec


def test_client_ip_affinity_defaults_its_timeout() -> None:
    spec = defaulted("Service", {"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}})["spec"]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


def test_endpoint_ports_default_to_tcp() -> None:
    ep = defaulted("Endpoints", {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]})
    assert ep["subsets"][0]["ports"][0]["protocol"] == "TCP"


# -- the rest -------------------------------------------------------------------------------


def test_namespace_defaults() -> None:
    ns = defaulted("Namespace", {"metadata": {"name": "team"}})
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}


def test_namespace_whose_finalizers_were_emptied_is_not_refinalized() -> None:
    ns = defaulted("Namespace", {"spec": {"finalizers": []}, "status": {"phase": "Terminating"}})
    assert ns["spec"]["finalizers"] == [] and ns["status"]["phase"] == "Terminating"


def test_secret_defaults_to_opaque_and_merges_string_data() -> None:
    secret = defaulted("Secret", {"data": {"a": base64.b64encode(b"old").decode()},
                                  "stringData": {"a": "new", "b": "two"}})
    assert secret["type"] == "Opaque"
    assert "stringData" not in secret
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {"a": b"new", "b": b"two"}
    tls = defaulted("Secret", {"type": "kubernetes.io/tls"})
    assert tls["type"] == "kubernetes.io/tls"


def test_node_allocatable_defaults_to_capacity() -> None:
    node = defaulted("Node", {"status": {"capacity": {"cpu": "2", "pods": "110"}}})
    assert node["status"]["allocatable"] == {"cpu": "2", "pods": "110"}
    assert defaulted("Node", {"metadata": {"name": "n"}}) == {"metadata": {"name": "n"}}


def test_rbac_bindings_default_api_groups() -> None:
    binding = defaulted("RoleBinding", {"roleRef": {"kind": "Role", "name": "r"},
                                        "subjects": [{"kind": "User", "name": "u"},
                                                     {"kind": "ServiceAccount", "name": "sa", "namespace": "x"}]})
    assert binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    user, sa = binding["subjects"]
    assert user["apiGroup"] == "rbac.authorization.k8s.io" and "apiGroup" not in sa
