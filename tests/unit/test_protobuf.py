"""Protobuf bodies: JSON -> protobuf -> JSON is the identity for a realistic object of every kind harness serves
(and the subresource bodies and meta types), the special types read and write as upstream's JSON shows them, and
kubectl's own bytes decode to kubectl's own JSON."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.api import protobuf as pb
from harness.api import registry
from harness.api.protobuf import convert, gotime, kinds

T0 = "2026-12-07T10:00:00Z"
T1 = "2026-12-07T10:05:30Z"
MICRO = "2026-12-07T10:00:00.123456Z"


def meta(name: str, namespace: str | None = "default", **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "resourceVersion": "42", "creationTimestamp": T0}
    if namespace:
        md["namespace"] = namespace
    md.update(extra)
    return md


CONTAINER = {
    "name": "web", "image": "busybox:1.36", "command": ["httpd", "-f"], "args": ["-p", "80"], "workingDir": "/srv",
    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}, {"containerPort": 53, "hostPort": 5353,
                                                                         "protocol": "UDP"}],
    "env": [{"name": "A", "value": "1"},
            {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": True}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}],
    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP",
                                  "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                      "initialDelaySeconds": 3, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                      "failureThreshold": 3},
    "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
    "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "failureThreshold": 30},
    "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    "volumeMounts": [{"name": "data", "mountPath": "/data"},
                     {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                      "readOnly": True}],
    "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}},
    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
}

POD_SPEC = {
    "volumes": [
        {"name": "data", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420,
                                      "items": [{"key": "a", "path": "a.conf"}]}},
        {"name": "sec", "secret": {"secretName": "db", "optional": False}},
        {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}},
        {"name": "token", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                           "fieldPath": "metadata.namespace"}}]}}]}},
    ],
    "initContainers": [{"name": "init", "image": "busybox", "command": ["true"], "restartPolicy": "Always"}],
    "containers": [CONTAINER],
    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "activeDeadlineSeconds": 600,
    "dnsPolicy": "ClusterFirst", "nodeSelector": {"kubernetes.io/os": "linux"},
    "serviceAccountName": "default", "automountServiceAccountToken": False, "nodeName": "worker-1",
    "hostNetwork": True, "securityContext": {"fsGroup": 2000, "runAsGroup": 3000, "sysctls": [
        {"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}]},
    "imagePullSecrets": [{"name": "registry"}], "hostname": "web-0", "subdomain": "web",
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}},
                                                "topologyKey": "kubernetes.io/hostname"}}]}},
    "schedulerName": "default-scheduler",
    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                     "tolerationSeconds": 300},
                    {"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
    "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db.local"]}],
    "priority": 0, "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]},
    "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                   "labelSelector": {"matchLabels": {"app": "web"}}}],
}

POD_STATUS = {
    "phase": "Running",
    "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": T1},
                   {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": T0}],
    "hostIP": "192.168.56.21", "hostIPs": [{"ip": "192.168.56.21"}], "podIP": "10.244.1.5",
    "podIPs": [{"ip": "10.244.1.5"}], "startTime": T0, "qosClass": "Burstable",
    "containerStatuses": [{"name": "web", "ready": True, "restartCount": 0, "image": "busybox:1.36",
                           "imageID": "sha256:abc", "containerID": "runc://abc", "started": True,
                           "state": {"running": {"startedAt": T1}},
                           "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "OOMKilled",
                                                        "startedAt": T0, "finishedAt": T1,
                                                        "containerID": "runc://old"}}}],
}

TEMPLATE = {"metadata": {"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": T0}},
            "spec": {"containers": [{"name": "web", "image": "nginx", "resources": {}}], "restartPolicy": "Always"}}

SELECTOR = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                                   "values": ["db"]}]}

RULES = [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
         {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["patch"]},
         {"nonResourceURLs": ["/healthz", "/metrics"], "verbs": ["get"]}]

#: One realistic object per kind of registry.KINDS (test_every_kind_has_a_sample keeps this complete).
SAMPLES: dict[str, dict[str, Any]] = {
    "Namespace": {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": meta("team-a", None, labels={"kubernetes.io/metadata.name": "team-a"}),
                  "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}},
    "Pod": {"apiVersion": "v1", "kind": "Pod",
            "metadata": meta("web-7d4b9c-abcde", generateName="web-7d4b9c-", generation=1,
                             labels={"app": "web", "pod-template-hash": "7d4b9c"},
                             annotations={"note": "ünïcödé ✓"},
                             ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                                               "uid": "rs-uid", "controller": True, "blockOwnerDeletion": True}],
                             finalizers=["example.com/keep"], deletionTimestamp=T1, deletionGracePeriodSeconds=30,
                             managedFields=[{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                                             "time": T0, "fieldsType": "FieldsV1",
                                             "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]),
            "spec": POD_SPEC, "status": POD_STATUS},
    "Node": {"apiVersion": "v1", "kind": "Node",
             "metadata": meta("worker-1", None, labels={"kubernetes.io/hostname": "worker-1"}),
             "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "unschedulable": True,
                      "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                                  "timeAdded": T1}]},
             "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                        "allocatable": {"cpu": "3800m", "memory": "7.5Gi", "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": T1,
                                        "lastTransitionTime": T0, "reason": "KubeletReady",
                                        "message": "kubelet is posting ready status"}],
                        "addresses": [{"type": "InternalIP", "address": "192.168.56.21"},
                                      {"type": "Hostname", "address": "worker-1"}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                        "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1.0",
                                     "osImage": "Debian GNU/Linux 12", "containerRuntimeVersion": "runc://1.1",
                                     "kubeletVersion": "v1.37.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                                     "architecture": "amd64"},
                        "images": [{"names": ["busybox:1.36"], "sizeBytes": 4261550}]}},
    "Service": {"apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
                "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http",
                                    "nodePort": 30080},
                                   {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": 9091}],
                         "selector": {"app": "web"}, "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                         "type": "NodePort", "sessionAffinity": "ClientIP",
                         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                         "externalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
                         "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.200",
                                                         "ports": [{"port": 80, "protocol": "TCP"}]}]}}},
    "Endpoints": {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("web"),
                  "subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "worker-1",
                                              "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default",
                                                            "uid": "p1"}}],
                               "notReadyAddresses": [{"ip": "10.244.2.7", "hostname": "web-2"}],
                               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]},
    "ConfigMap": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings"),
                  "data": {"a.conf": "x = 1\n", "empty": ""}, "binaryData": {"blob": "AAECAw=="},
                  "immutable": False},
    "Secret": {"apiVersion": "v1", "kind": "Secret", "metadata": meta("db"), "type": "Opaque",
               "data": {"password": "czNjcjN0", "empty": "", "binary": "/wD+AQ=="}, "immutable": True},
    "ServiceAccount": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("builder"),
                       "secrets": [{"name": "builder-token"}], "imagePullSecrets": [{"name": "registry"}],
                       "automountServiceAccountToken": False},
    "Event": {"apiVersion": "v1", "kind": "Event", "metadata": meta("web-1.17a2b3c4d5e6f708"),
              "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "p1",
                                 "apiVersion": "v1", "resourceVersion": "41", "fieldPath": "spec.containers{web}"},
              "reason": "Pulled", "message": "Container image \"busybox:1.36\" already present on machine",
              "source": {"component": "kubelet", "host": "worker-1"}, "firstTimestamp": T0, "lastTimestamp": T1,
              "count": 3, "type": "Normal", "eventTime": MICRO,
              "series": {"count": 2, "lastObservedTime": "2026-12-07T10:05:30.000001Z"},
              "action": "Pulling", "reportingComponent": "kubelet", "reportingInstance": "worker-1"},
    "ResourceQuota": {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("compute"),
                      "spec": {"hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "16Gi"},
                               "scopes": ["NotTerminating"]},
                      "status": {"hard": {"pods": "10"}, "used": {"pods": "3"}}},
    "LimitRange": {"apiVersion": "v1", "kind": "LimitRange", "metadata": meta("bounds"),
                   "spec": {"limits": [{"type": "Container", "max": {"cpu": "2", "memory": "1Gi"},
                                        "min": {"cpu": "100m"}, "default": {"cpu": "500m"},
                                        "defaultRequest": {"cpu": "250m"}, "maxLimitRequestRatio": {"cpu": "4"}},
                                       {"type": "Pod", "max": {"memory": "2Gi"}}]}},
    "ReplicationController": {"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta("legacy"),
                              "spec": {"replicas": 0, "minReadySeconds": 5, "selector": {"app": "web"},
                                       "template": TEMPLATE},
                              "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                                         "observedGeneration": 4}},
    "Deployment": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web", generation=4),
                   "spec": {"replicas": 3, "selector": SELECTOR, "template": TEMPLATE,
                            "strategy": {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                            "minReadySeconds": 10, "revisionHistoryLimit": 10, "paused": True,
                            "progressDeadlineSeconds": 600},
                   "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2,
                              "availableReplicas": 2, "unavailableReplicas": 1,
                              "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": T1,
                                              "lastTransitionTime": T0, "reason": "MinimumReplicasAvailable",
                                              "message": "Deployment has minimum availability."}],
                              "collisionCount": 1}},
    "ReplicaSet": {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                   "metadata": meta("web-7d4b9c", annotations={"deployment.kubernetes.io/revision": "2"}),
                   "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
                   "status": {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3,
                              "availableReplicas": 3, "observedGeneration": 1}},
    "DaemonSet": {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent", "kube-system"),
                  "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": TEMPLATE,
                           "updateStrategy": {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}},
                           "revisionHistoryLimit": 10},
                  "status": {"currentNumberScheduled": 2, "numberMisscheduled": 0, "desiredNumberScheduled": 2,
                             "numberReady": 2, "updatedNumberScheduled": 2, "numberAvailable": 2,
                             "observedGeneration": 1}},
    "ControllerRevision": {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                           "metadata": meta("agent-5d8f7c6b9"),
                           "data": {"spec": {"template": {"$patch": "replace", "spec": {"containers": [
                               {"name": "agent", "image": "agent:2"}]}}}, "list": [1, 2.5, None, True, "x"]},
                           "revision": 2},
    "CertificateSigningRequest": {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": meta("node-csr-1", ""),
        "spec": {"request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K",
                 "signerName": "kubernetes.io/kube-apiserver-client-kubelet", "expirationSeconds": 3600,
                 "usages": ["digital signature", "client auth"], "username": "system:bootstrap:abcdef",
                 "uid": "u-1", "groups": ["system:bootstrappers", "system:authenticated"],
                 "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=ab"]}},
        "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved",
                                   "message": "ok", "lastUpdateTime": T0, "lastTransitionTime": T0}],
                   "certificate": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}},
    "Lease": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
              "metadata": meta("kube-scheduler", "kube-system"),
              "spec": {"holderIdentity": "master-1_abc", "leaseDurationSeconds": 15, "acquireTime": MICRO,
                       "renewTime": "2026-12-07T10:05:30.500000Z", "leaseTransitions": 0}},
    "Role": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("reader"),
             "rules": RULES[:2]},
    "ClusterRole": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": meta("monitoring", None, labels={"rbac.example.com/aggregate-to-view": "true"}),
                    "rules": RULES,
                    "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/agg": "true"}}]}},
    "RoleBinding": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("readers"),
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                                 {"kind": "ServiceAccount", "name": "builder", "namespace": "default"}],
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}},
    "ClusterRoleBinding": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                           "metadata": meta("monitoring", None),
                           "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                         "name": "system:monitoring"}],
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                       "name": "monitoring"}},
    "TokenReview": {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
                    "spec": {"token": "eyJhbGciOi.x.y", "audiences": ["https://kubernetes.default.svc"]},
                    "status": {"authenticated": True,
                               "user": {"username": "system:serviceaccount:default:builder", "uid": "sa-uid",
                                        "groups": ["system:serviceaccounts", "system:authenticated"],
                                        "extra": {"authentication.kubernetes.io/pod-name": ["web-1"],
                                                  "authentication.kubernetes.io/credential-id": ["JTI=abc"]}},
                               "audiences": ["https://kubernetes.default.svc"]}},
    "SelfSubjectReview": {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                          "metadata": {"creationTimestamp": T0},
                          "status": {"userInfo": {"username": "system:admin",
                                                  "groups": ["system:masters", "system:authenticated"],
                                                  "extra": {"scopes": ["a", "b"], "empty": []}}}},
    "SubjectAccessReview": {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
                            "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "group": "apps",
                                                            "version": "v1", "resource": "deployments",
                                                            "subresource": "scale", "name": "web",
                                                            "fieldSelector": {"rawSelector": "spec.nodeName=n"},
                                                            "labelSelector": {"requirements": [
                                                                {"key": "app", "operator": "In",
                                                                 "values": ["web"]}]}},
                                     "user": "alice", "groups": ["devs"], "uid": "u-1",
                                     "extra": {"scopes": ["read"]}},
                            "status": {"allowed": False, "denied": True, "reason": "no RBAC policy matched",
                                       "evaluationError": "oops"}},
    "SelfSubjectAccessReview": {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                "metadata": {},
                                "spec": {"resourceAttributes": {"namespace": "default", "verb": "create",
                                                                "resource": "pods"}},
                                "status": {"allowed": True, "reason": "RBAC: allowed by ClusterRoleBinding"}},
    "LocalSubjectAccessReview": {"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
                                 "metadata": {"namespace": "team-a"},
                                 "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"},
                                          "user": "bob"},
                                 "status": {"allowed": False}},
    "SelfSubjectRulesReview": {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                               "metadata": {}, "spec": {"namespace": "default"},
                               "status": {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                                             "resources": ["*"]}],
                                          "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                                          "incomplete": False}},
}

#: Subresource bodies and meta types, by the (apiVersion, kind) they are served as.
OTHERS: list[dict[str, Any]] = [
    {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta("web"),
     "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}},
    {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-1", "namespace": "default"},
     "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "p1", "resourceVersion": "7"},
                       "propagationPolicy": "Background", "dryRun": ["All"]}},
    {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-1", "namespace": "default", "uid": "p1",
                                                          "annotations": {"a": "b"}},
     "target": {"kind": "Node", "apiVersion": "v1", "name": "worker-1"}},
    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
     "metadata": {"name": "builder", "namespace": "default", "creationTimestamp": T0},
     "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600,
              "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": "p1"}},
     "status": {"token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "expirationTimestamp": T1}},
    {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
     "message": 'pods "web" already exists', "reason": "AlreadyExists", "code": 409,
     "details": {"name": "web", "kind": "pods", "causes": [{"reason": "FieldValueInvalid", "message": "bad",
                                                            "field": "metadata.name"}],
                 "retryAfterSeconds": 2}},
    {"apiVersion": "v1", "kind": "Status", "metadata": {"resourceVersion": "9"}, "status": "Success",
     "details": {"name": "web", "kind": "pods", "uid": "p1"}},
    {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 30,
     "propagationPolicy": "Foreground", "orphanDependents": False, "dryRun": ["All"]},
    {"apiVersion": "v1", "kind": "PodList",
     "metadata": {"resourceVersion": "99", "continue": "eyJydiI6OTl9", "remainingItemCount": 0},
     "items": [{"metadata": meta("a"), "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]},
                "status": {"phase": "Pending"}},
               {"metadata": meta("b"), "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]},
                "status": {}}]},
    {"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "5"},
     "items": [{"metadata": meta("web"), "spec": {"template": {"metadata": {}, "spec": {}}, "strategy": {}},
                "status": {}}]},
]


def roundtrip(obj: dict[str, Any]) -> dict[str, Any]:
    body = pb.encode(obj, strict=True)
    assert body.startswith(b"k8s\x00")
    return pb.decode(body)


def test_every_kind_has_a_sample_and_a_message() -> None:
    assert {k.kind for k in registry.KINDS} == set(SAMPLES)
    for k in registry.KINDS:
        assert pb.message_for(k.api_version, k.kind) is not None, k
        if k.stored:
            assert pb.message_for(k.api_version, k.list_kind) is not None, k


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_kind_round_trips(kind: str) -> None:
    obj = SAMPLES[kind]
    original = copy.deepcopy(obj)
    assert roundtrip(obj) == original
    assert obj == original  # encoding does not touch its input


@pytest.mark.parametrize("obj", OTHERS, ids=lambda o: o["kind"])
def test_subresource_bodies_meta_types_and_lists_round_trip(obj: dict[str, Any]) -> None:
    assert roundtrip(obj) == obj


@pytest.mark.parametrize("kind", sorted(k.kind for k in registry.STORED_KINDS))
def test_lists_of_every_stored_kind_round_trip(kind: str) -> None:
    k = next(k for k in registry.KINDS if k.kind == kind)
    item = {key: value for key, value in SAMPLES[kind].items() if key not in ("apiVersion", "kind")}
    lst = {"apiVersion": k.api_version, "kind": k.list_kind, "metadata": {"resourceVersion": "7"},
           "items": [item, item]}
    assert roundtrip(lst) == lst


def test_empty_lists_and_maps_are_not_on_the_wire() -> None:
    lst = {"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": []}
    assert roundtrip(lst) == {"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}}
    assert roundtrip(_pod_with(metadata={"name": "p", "labels": {}, "finalizers": []})) == _pod_with()


def test_the_table_follows_the_registry_and_upstream_names() -> None:
    names = {key: msg.name for key, msg in kinds.table().items()}
    assert names[("apps/v1", "Deployment")] == "k8s.io.api.apps.v1.Deployment"
    assert names[("rbac.authorization.k8s.io/v1", "Role")] == "k8s.io.api.rbac.v1.Role"
    assert names[("coordination.k8s.io/v1", "Lease")] == "k8s.io.api.coordination.v1.Lease"
    assert names[("v1", "PodList")] == "k8s.io.api.core.v1.PodList"
    assert names[("authentication.k8s.io/v1", "TokenRequest")] == "k8s.io.api.authentication.v1.TokenRequest"
    assert names[("autoscaling/v1", "Scale")] == "k8s.io.api.autoscaling.v1.Scale"
    status = pb.message_for("v1", "Status")
    assert status is not None and status.name == "k8s.io.apimachinery.pkg.apis.meta.v1.Status"
    delete = pb.message_for("apps/v1", "DeleteOptions")  # typed clients send it under their group version
    assert delete is not None and delete.name.endswith("meta.v1.DeleteOptions")
    assert pb.message_for("meta.k8s.io/v1", "Table") is None
    assert not pb.can_encode({"apiVersion": "meta.k8s.io/v1", "kind": "Table", "rows": []})
    assert not pb.can_encode({"kind": "Pod"})


# -- the special types -------------------------------------------------------------------------------


def _pod_with(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, **fields}


def test_time_is_whole_seconds_as_upstream_writes_it() -> None:
    # Go's metav1.Time goes over protobuf as whole seconds, and its JSON has no fraction.
    got = roundtrip(_pod_with(metadata={"name": "p", "creationTimestamp": "2026-12-07T10:00:00.987654Z"}))
    assert got["metadata"]["creationTimestamp"] == "2026-12-07T10:00:00Z"
    got = roundtrip(_pod_with(metadata={"name": "p", "creationTimestamp": "2026-12-07T12:00:00+02:00"}))
    assert got["metadata"]["creationTimestamp"] == "2026-12-07T10:00:00Z"
    assert roundtrip(_pod_with(metadata={"name": "p", "creationTimestamp": "1970-01-01T00:00:00Z"})
                     )["metadata"]["creationTimestamp"] == "1970-01-01T00:00:00Z"
    assert roundtrip(_pod_with(metadata={"name": "p", "creationTimestamp": "1969-07-20T20:17:40Z"})
                     )["metadata"]["creationTimestamp"] == "1969-07-20T20:17:40Z"


def test_micro_time_keeps_six_digits() -> None:
    def renew(value: str | None) -> Any:
        obj = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
               "spec": {"renewTime": value}}
        return roundtrip(obj)["spec"]["renewTime"]

    assert renew("2026-12-07T10:00:00.123456Z") == "2026-12-07T10:00:00.123456Z"
    assert renew("2026-12-07T10:00:00Z") == "2026-12-07T10:00:00.000000Z"
    assert renew("2026-12-07T10:00:00.1234567Z") == "2026-12-07T10:00:00.123456Z"  # cut to microseconds
    assert renew(None) is None


def test_null_times_round_trip_as_null() -> None:
    cond = {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": T0}
    assert roundtrip(_pod_with(status={"conditions": [cond]}))["status"]["conditions"] == [cond]
    # creationTimestamp is `omitzero` upstream: a zero time is left out of its JSON
    assert "creationTimestamp" not in roundtrip(_pod_with(metadata={"name": "p", "creationTimestamp": None}))[
        "metadata"]


def test_int_or_string_and_quantities() -> None:
    dep = copy.deepcopy(SAMPLES["Deployment"])
    got = roundtrip(dep)["spec"]["strategy"]["rollingUpdate"]
    assert got == {"maxSurge": "25%", "maxUnavailable": 1}
    assert isinstance(got["maxUnavailable"], int)
    pod = _pod_with(spec={"containers": [{"name": "c", "resources": {"limits": {"cpu": 2, "memory": "1.5Gi"}},
                                          "readinessProbe": {"tcpSocket": {"port": 0}}}]})
    c = roundtrip(pod)["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "1.5Gi"}  # a number is sent as its text
    assert c["readinessProbe"]["tcpSocket"]["port"] == 0


def test_bytes_and_raw_extensions() -> None:
    secret = roundtrip(SAMPLES["Secret"])
    assert secret["data"] == {"password": "czNjcjN0", "empty": "", "binary": "/wD+AQ=="}
    raw = pb.encode(SAMPLES["Secret"])
    assert b"s3cr3t" in raw  # on the wire the bytes themselves, as upstream sends them
    rev = roundtrip(SAMPLES["ControllerRevision"])
    assert rev["data"] == SAMPLES["ControllerRevision"]["data"]
    for data in (None, [], "text", 7, {"a": {"b": [None]}}):
        obj = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"}, "data": data,
               "revision": 1}
        assert roundtrip(obj)["data"] == data


def test_a_raw_extension_may_hold_an_object_in_its_own_envelope() -> None:
    inner = pb.encode({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}})
    msg = pb.load_schema()["k8s.io.api.apps.v1.ControllerRevision"]
    # field 2 (data) is a RawExtension whose field 1 (raw) holds the enveloped object
    raw_extension = b"\x0a" + bytes([len(inner)]) + inner
    body = pb.wrap("apps/v1", "ControllerRevision", b"\x12" + bytes([len(raw_extension)]) + raw_extension)
    assert msg.by_number[2].name == "data"
    assert pb.decode(body)["data"] == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                                       "data": {"a": "b"}}


def test_extra_values_are_lists() -> None:
    status = roundtrip(SAMPLES["SelfSubjectReview"])["status"]["userInfo"]
    assert status["extra"] == {"scopes": ["a", "b"], "empty": []}


def test_json_names_differ_from_proto_names_where_upstream_says() -> None:
    token = OTHERS[3]
    msg = pb.load_schema()["k8s.io.api.authentication.v1.BoundObjectReference"]
    assert msg.by_number[4].name == "uid"  # `uID` in the .proto, `uid` in Go's JSON tag
    assert roundtrip(token)["spec"]["boundObjectRef"]["uid"] == "p1"
    assert roundtrip(SAMPLES["Node"])["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}


def test_inlined_messages_flatten_into_their_parent() -> None:
    # Volume inlines VolumeSource, Probe inlines ProbeHandler, SecretKeySelector inlines LocalObjectReference
    pod = roundtrip(SAMPLES["Pod"])
    assert pod["spec"]["volumes"][0] == {"name": "data", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    assert pod["spec"]["containers"][0]["readinessProbe"] == {"tcpSocket": {"port": 80}, "periodSeconds": 5}
    env = pod["spec"]["containers"][0]["env"][2]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "password", "optional": True}


def test_zero_values_go_omits_are_left_out_and_the_others_kept() -> None:
    """Go writes every non-pointer field, zero or not: decoding shows what Go's JSON would."""
    msg = pb.message_for("autoscaling/v1", "Scale")
    assert msg is not None
    spec = pb.load_schema()["k8s.io.api.autoscaling.v1.ScaleSpec"]
    status = pb.load_schema()["k8s.io.api.autoscaling.v1.ScaleStatus"]
    # spec {replicas: 0} (omitempty), status {replicas: 0 (not omitempty), selector: "" (omitempty)}
    raw = (b"\x12" + bytes([2]) + b"\x08\x00" + b"\x1a" + bytes([4]) + b"\x08\x00\x12\x00")
    assert spec.by_number[1].omit_zero and not status.by_number[1].omit_zero
    assert pb.decode_raw(msg, raw) == {"spec": {}, "status": {"replicas": 0}}
    # a pointer field (Container.restartPolicy, PodSpec.priority) keeps its zero value
    pod = roundtrip(_pod_with(spec={"priority": 0, "containers": [{"name": "", "restartPolicy": "",
                                                                    "stdin": False}]}))
    assert pod["spec"] == {"priority": 0, "containers": [{"name": "", "restartPolicy": ""}]}


def test_duration_strings() -> None:
    for ns, text in [(0, "0s"), (1, "1ns"), (1500, "1.5µs"), (100_000_000, "100ms"), (1_500_000_000, "1.5s"),
                     (90_000_000_000, "1m30s"), (3_600_000_000_000, "1h0m0s"), (-2_000_000_000, "-2s"),
                     (26 * 3_600_000_000_000 + 1, "26h0m0.000000001s")]:
        assert gotime.format_duration(ns) == text
        assert gotime.parse_duration(text) == ns
    assert gotime.parse_duration("1h") == 3_600_000_000_000
    assert gotime.parse_duration("300us") == gotime.parse_duration("300µs") == 300_000
    for bad in ("", "1", "1x", "h", "."):
        with pytest.raises(ValueError):
            gotime.parse_duration(bad)
    msg = pb.load_schema()["k8s.io.apimachinery.pkg.apis.meta.v1.Duration"]
    raw = convert.encode_message(msg, "1h0m0s")
    assert convert.decode_message(msg, raw, 0, len(raw)) == "1h0m0s"


def test_unknown_json_keys_are_dropped_unless_strict() -> None:
    obj = _pod_with(spec={"containers": [{"name": "c", "harnessOnly": 1}]})
    assert pb.decode(pb.encode(obj)) == _pod_with(spec={"containers": [{"name": "c"}]})
    with pytest.raises(pb.ProtobufError, match=r"spec.containers\[0\].*harnessOnly"):
        pb.encode(obj, strict=True)


@pytest.mark.parametrize(("obj", "path"), [
    (_pod_with(spec={"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}),
     r"spec.containers\[0\].ports\[0\].containerPort"),
    (_pod_with(metadata={"name": "p", "labels": {"a": 1}}), r"metadata.labels\['a'\]"),
    (_pod_with(metadata={"name": "p", "creationTimestamp": "yesterday"}), "metadata.creationTimestamp"),
    (_pod_with(spec={"containers": "c"}), "spec.containers"),
    (_pod_with(spec={"priority": 2**31}), "spec.priority"),
    ({"apiVersion": "v1", "kind": "Secret", "data": {"a": "not base64!"}}, r"data\['a'\]"),
])
def test_what_cannot_be_encoded_says_where(obj: dict[str, Any], path: str) -> None:
    with pytest.raises(pb.ProtobufError, match=f"cannot encode {path} as protobuf"):
        pb.encode(obj)


# -- kubectl's own bytes --------------------------------------------------------------------------------

#: What kubectl 1.37 sends for `kubectl create deployment web --image=nginx -n x` and `kubectl create secret
#: generic s --from-literal=p=q -n x`, and what `--dry-run=client -o json` prints for the same commands.
KUBECTL_BODIES = [
    ("6b3873000a150a07617070732f7631120a4465706c6f796d656e7412ac010a200a0377656212001a017822002a003200380042005a0a"
     "0a036170701203776562127a0801120c0a0a0a0361707012037765621a600a1c0a0012001a0022002a003200380042005a0a0a0361"
     "70701203776562124012220a056e67696e7812056e67696e782a0042006a007200800100880100900100a201001a00320042004a00"
     "52005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200",
     {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web", "namespace": "x",
                                                                 "labels": {"app": "web"}},
      "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
               "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}},
               "strategy": {}}, "status": {}}),
    ("6b3873000a0c0a0276311206536563726574121e0a120a017312001a017822002a0032003800420012060a01701201711a001a002200",
     {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s", "namespace": "x"}, "data": {"p": "cQ=="}}),
    ("6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a6563744163636573735265"
     "76696577123f0a100a0012001a0022002a0032003800420012210a1f0a0764656661756c7412066372656174651a0022002a0470"
     "6f647332003a001a08080012001a0020001a002200",
     {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {},
      "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
      "status": {"allowed": False}}),
]


@pytest.mark.parametrize(("hex_body", "want"), KUBECTL_BODIES, ids=["deployment", "secret", "access-review"])
def test_kubectl_bytes_decode_to_kubectls_json(hex_body: str, want: dict[str, Any]) -> None:
    assert pb.decode(bytes.fromhex(hex_body)) == want


def test_schema_records_where_it_came_from() -> None:
    sources = {u["repository"]: u for u in pb.load_schema().upstream}
    assert set(sources) == {"github.com/kubernetes/api", "github.com/kubernetes/apimachinery"}
    for source in sources.values():
        assert source["ref"].startswith("v0.37.") and len(source["commit"]) == 40
