"""The kubelet's probe workers and their results: which containers are started, ready, or must be killed.

One `ProbeWorker` per probe of each container of a pod, created when the container first runs
(or is re-adopted after a kubelet restart) and kept across its restarts. Results are kept per
runtime container id. A re-adopted container has no results yet: until its probes report, it
keeps what the previous kubelet last reported for that very container, so a kubelet restart
does not flap its pods' readiness.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from harness.api import meta
from harness.api.pods import is_terminal
from harness.client.events import EventRecorder
from harness.kubelet import status as podstatus
from harness.kubelet.metrics import KubeletMetrics
from harness.kubelet.prober.prober import ProbeKind
from harness.kubelet.prober.worker import ProbeTarget, ProbeWorker
from harness.kubelet.records import PodRecord, epoch
from harness.kubelet.runtime.types import ContainerInfo

KINDS: tuple[ProbeKind, ...] = ("startup", "readiness", "liveness")


def reported(pod: dict[str, Any], cid: str) -> dict[str, Any]:
    """The container status the API holds for this runtime container, if any."""
    status = pod.get("status") or {}
    for c in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]:
        if c.get("containerID") == podstatus.RUNTIME_SCHEME + cid:
            return dict(c)
    return {}


class ProbeManager:
    def __init__(self, *, exec_fn: Callable[[str, list[str], float], Awaitable[tuple[int, bytes]]],
                 containers: Callable[[], Mapping[str, ContainerInfo]], current: Callable[[str], PodRecord | None],
                 changed: Callable[[str], None], recorder: EventRecorder, metrics: KubeletMetrics) -> None:
        self.exec_fn = exec_fn
        self.containers = containers
        self.current = current
        self.changed = changed
        self.recorder = recorder
        self.metrics = metrics
        self.workers: dict[tuple[str, str], list[ProbeWorker]] = {}  # (pod uid, container) -> workers
        self.results: dict[tuple[str, str], bool] = {}                # (runtime id, probe kind) -> success

    def ensure(self, record: PodRecord) -> None:
        """One worker per probe of every container of the pod that has run."""
        spec = record.pod.get("spec") or {}
        have = {i.name for i in self.containers().values() if i.pod_uid == record.uid}
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            key = (record.uid, c["name"])
            if key in self.workers or c["name"] not in have or not any(c.get(f"{k}Probe") for k in KINDS):
                continue
            workers = []
            for kind in KINDS:
                if c.get(f"{kind}Probe"):
                    worker = ProbeWorker(kind, record.pod, c, target=self._target(record, c), exec_fn=self.exec_fn,
                                         on_result=self._on_result(record.uid, c["name"]),
                                         on_event=self._on_event(record.uid))
                    worker.start()
                    workers.append(worker)
            self.workers[key] = workers

    def started(self, cid: str, spec: dict[str, Any], pod: dict[str, Any]) -> bool:
        if not spec.get("startupProbe"):
            return True
        result = self.results.get((cid, "startup"))
        return bool(reported(pod, cid).get("started")) if result is None else result

    def ready(self, cid: str, spec: dict[str, Any], pod: dict[str, Any]) -> bool:
        if not spec.get("readinessProbe"):
            return True
        result = self.results.get((cid, "readiness"))
        return bool(reported(pod, cid).get("ready")) if result is None else result

    def must_kill(self, cid: str) -> bool:
        """Liveness or startup failed past its threshold: the container is to be killed and restarted."""
        return self.results.get((cid, "liveness")) is False or self.results.get((cid, "startup")) is False

    def forget(self, cid: str) -> None:
        """Drop the results of a container that is gone (its workers carry on with the next attempt)."""
        for kind in KINDS:
            self.results.pop((cid, kind), None)

    def stop_pod(self, uid: str) -> None:
        for key in [k for k in self.workers if k[0] == uid]:
            for worker in self.workers.pop(key):
                worker.stop()

    def stop_all(self) -> None:
        for uid in {k[0] for k in self.workers}:
            self.stop_pod(uid)

    def _target(self, record: PodRecord, spec: dict[str, Any]) -> Callable[[], ProbeTarget | None]:
        name = spec["name"]

        def target() -> ProbeTarget | None:
            if self.current(record.uid) is not record:
                return None
            attempts = [i for i in self.containers().values() if i.pod_uid == record.uid and i.name == name]
            if not attempts:
                return ProbeTarget(container_id="", running=False)
            cur = max(attempts, key=lambda i: i.attempt)
            pod = record.pod
            return ProbeTarget(
                container_id=cur.id, running=cur.state == "running", started_at=epoch(cur.started_at) or None,
                started=self.started(cur.id, spec, pod), pod_ip=record.sandbox.pod_ip if record.sandbox else "",
                terminated=cur.state == "exited",
                pod_finished=is_terminal(pod), pod_deleting=meta.is_terminating(pod) or record.deleted)

        return target

    def _on_result(self, uid: str, name: str) -> Callable[[str, bool, str], None]:
        def on_result(kind: str, success: bool, message: str) -> None:
            cid = next((w.container_id for w in self.workers.get((uid, name), []) if w.kind == kind), "")
            if not cid:
                return
            if kind == "readiness" and not success and not message:
                return  # the reset for a new container: it starts unready anyway, and a re-adopted one keeps its state
            self.results[(cid, kind)] = success
            record = self.current(uid)
            if record is not None and not success and kind in ("liveness", "startup"):
                self.recorder.event(record.pod, "Normal", "Killing", f"Container {name} failed {kind} probe, will "
                                    "be restarted")
            self.changed(uid)

        return on_result

    def _on_event(self, uid: str) -> Callable[[str, str, str], None]:
        def on_event(kind: str, reason: str, message: str) -> None:
            record = self.current(uid)
            md = record.pod["metadata"] if record else {}
            if record is not None:
                self.recorder.event(record.pod, "Warning", reason, message)
            self.metrics.probes.labels(kind.capitalize(), "failed" if reason == "Unhealthy" else "warning", "",
                                       md.get("name", ""), md.get("namespace", "")).inc()

        return on_event
