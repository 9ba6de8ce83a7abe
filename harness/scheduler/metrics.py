"""The scheduler's Prometheus metrics, with upstream's names, labels and buckets.

Each scheduler owns its `CollectorRegistry` (no module globals). Queue depths are read from
the queue when scraped, rather than kept in step with every queue operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from harness.machinery.health import component_registry

SCHEDULED, UNSCHEDULABLE, ERROR = "scheduled", "unschedulable", "error"


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor**i for i in range(count))


class _PendingPods(Collector):
    def __init__(self, pending: Callable[[], Mapping[str, int]]) -> None:
        self.pending = pending

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("scheduler_pending_pods", "Number of pending pods, by the queue type. 'active' "
                                 "means number of pods in activeQ; 'backoff' means number of pods in backoffQ; "
                                 "'unschedulable' means number of pods in unschedulablePods.", labels=("queue",))

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for queue, count in self.pending().items():
            family.add_metric((queue,), count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = component_registry()
        self.schedule_attempts = Counter(
            "scheduler_schedule_attempts_total", "Number of attempts to schedule pods, by the result. "
            "'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            ("result", "profile"), registry=self.registry)
        self.attempt_duration = Histogram(
            "scheduler_scheduling_attempt_duration_seconds", "Scheduling attempt latency in seconds (scheduling "
            "algorithm + binding)", ("result", "profile"), buckets=exponential_buckets(0.001, 2, 15),
            registry=self.registry)
        self.pod_scheduling_duration = Histogram(
            "scheduler_pod_scheduling_duration_seconds", "E2e latency for a pod being scheduled which may include "
            "multiple scheduling attempts.", ("attempts",), buckets=exponential_buckets(0.01, 2, 20),
            registry=self.registry)

    def watch_queue(self, pending: Callable[[], Mapping[str, int]]) -> None:
        """Report `scheduler_pending_pods` from `pending()` at each scrape."""
        self.registry.register(_PendingPods(pending))

    def attempt(self, result: str, profile: str, seconds: float) -> None:
        self.schedule_attempts.labels(result, profile).inc()
        self.attempt_duration.labels(result, profile).observe(seconds)
