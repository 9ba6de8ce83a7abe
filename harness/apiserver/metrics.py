"""The apiserver's Prometheus metrics, with upstream's names and labels.

Each apiserver owns its own `CollectorRegistry` (no module globals), so several servers can
run in one process — as the integration tests do.
"""

from __future__ import annotations

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from harness.machinery.health import component_registry

_REQUEST_LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "component")
# Upstream's buckets: from 5 ms for reads to a minute for slow lists and long writes.
_DURATION_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15,
                     20, 30, 45, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = component_registry()
        self.requests = Counter("apiserver_request_total", "Counter of apiserver requests broken out for each "
                                "verb, dry run value, group, version, resource, scope, component, and HTTP "
                                "response code.", (*_REQUEST_LABELS, "code"), registry=self.registry)
        self.duration = Histogram("apiserver_request_duration_seconds", "Response latency distribution in "
                                  "seconds for each verb, dry run value, group, version, resource, subresource, "
                                  "scope and component.", _REQUEST_LABELS, buckets=_DURATION_BUCKETS,
                                  registry=self.registry)
        self.inflight = Gauge("apiserver_current_inflight_requests", "Maximal number of currently used inflight "
                              "request limit of this apiserver per request kind in last second.",
                              ("request_kind",), registry=self.registry)
        self.watchers = Gauge("apiserver_registered_watchers", "Number of currently registered watchers for a "
                              "given resources", ("group", "version", "kind"), registry=self.registry)
        self.storage_objects = Gauge("apiserver_storage_objects", "Number of stored objects at the time of last "
                                     "check split by kind.", ("resource",), registry=self.registry)
        self.watch_events = Counter("apiserver_watch_events_total", "Number of events sent in watch clients",
                                    ("group", "version", "kind"), registry=self.registry)
        # The PodSecurity admission plugin's (upstream's pod-security-admission/metrics).
        self.pod_security_evaluations = Counter(
            "pod_security_evaluations_total", "Number of policy evaluations that occurred, not counting ignored or "
            "exempt requests.", ("decision", "policy_level", "policy_version", "mode", "request_operation",
                                 "resource", "subresource"), registry=self.registry)
        self.pod_security_exemptions = Counter(
            "pod_security_exemptions_total", "Number of exempt requests, not counting ignored or out of scope "
            "requests.", ("request_operation", "resource", "subresource"), registry=self.registry)
        self.pod_security_errors = Counter(
            "pod_security_errors_total", "Number of errors preventing normal evaluation. Non-fatal errors may "
            "result in the latest restricted profile being used for evaluation.",
            ("fatal", "request_operation", "resource", "subresource"), registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
