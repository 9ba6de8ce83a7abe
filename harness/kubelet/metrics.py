"""The kubelet's Prometheus metrics, with upstream's names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

POD_START_BUCKETS = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300)


class KubeletMetrics:
    def __init__(self, registry: CollectorRegistry, node_name: str) -> None:
        self.node_name = Gauge("kubelet_node_name", "The node's name. The count is always 1.", ["node"],
                               registry=registry)
        self.node_name.labels(node_name).set(1)
        self.running_pods = Gauge("kubelet_running_pods", "Number of pods that have a running pod sandbox",
                                  registry=registry)
        self.running_containers = Gauge("kubelet_running_containers", "Number of containers currently running",
                                        ["container_state"], registry=registry)
        self.pod_start = Histogram("kubelet_pod_start_duration_seconds",
                                   "Duration in seconds from kubelet seeing a pod for the first time to the pod "
                                   "starting to run", buckets=POD_START_BUCKETS, registry=registry)
        self.pod_worker = Histogram("kubelet_pod_worker_duration_seconds",
                                    "Duration in seconds to sync a single pod.", ["operation_type"],
                                    registry=registry)
        self.started_containers = Counter("kubelet_started_containers", "Cumulative number of containers started",
                                          ["container_type"], registry=registry)
        self.started_errors = Counter("kubelet_started_containers_errors",
                                      "Cumulative number of errors when starting containers",
                                      ["container_type", "code"], registry=registry)
        self.runtime_ops = Counter("kubelet_runtime_operations", "Cumulative number of runtime operations by type",
                                   ["operation_type"], registry=registry)
        self.runtime_errors = Counter("kubelet_runtime_operations_errors",
                                      "Cumulative number of runtime operation errors by operation type",
                                      ["operation_type"], registry=registry)
        self.relist = Histogram("kubelet_pleg_relist_duration_seconds",
                                "Duration in seconds for relisting pods in PLEG.", registry=registry)
        self.probes = Counter("prober_probe_total", "Cumulative number of a liveness, readiness or startup probe "
                              "for a container by result.", ["probe_type", "result", "container", "pod",
                                                             "namespace"], registry=registry)
