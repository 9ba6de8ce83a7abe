"""One probe of one container over time, as upstream's prober worker (`pkg/kubelet/prober/worker.go`).

`ProbeWorker` serves one (pod, container, kind): it waits `initialDelaySeconds` after the container started, probes
every `periodSeconds` (through `prober.run_probe`), applies `successThreshold`/`failureThreshold`, holds
liveness/readiness until the startup probe succeeded, and calls `on_result` when the result changes. Initial results
are upstream's: readiness failure (not ready), liveness success, startup unknown (not started).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from harness.kubelet.prober.prober import USER_AGENT, ProbeKind, failure_message, run_probe


@dataclass(frozen=True)
class ProbeTarget:
    """What the worker needs to know about its container right now (upstream reads it from the status manager).

    container_id: the current attempt's id, "" while none was created; a new id resets the result.
    running/terminated: the container's state (neither = waiting).
    started_at: when it started running, on the worker's clock (time.time() by default).
    started: containerStatus.started, true once the startup probe succeeded (or at once without one).
    pod_finished: the pod reached Succeeded/Failed (the worker exits); pod_deleting: deletionTimestamp is set.
    """

    container_id: str
    running: bool
    started_at: float | None = None
    started: bool = True
    pod_ip: str = ""
    terminated: bool = False
    pod_finished: bool = False
    pod_deleting: bool = False


#: exec in a container: container_exec(container_id, argv, timeout) -> (exit code, output).
ContainerExecFn = Callable[[str, list[str], float], Awaitable[tuple[int, bytes]]]
#: on_result(kind, success, message): the published result changed. May be a coroutine function.
ResultFn = Callable[[str, bool, str], Awaitable[None] | None]
#: on_event(kind, reason, message): an Unhealthy or ProbeWarning event for one probe run.
EventFn = Callable[[str, str, str], Awaitable[None] | None]

_INITIAL: dict[str, bool | None] = {"readiness": False, "liveness": True, "startup": None}


class ProbeWorker:
    """Probes one container periodically and publishes the result (upstream prober worker)."""

    def __init__(self, kind: ProbeKind, pod: dict[str, Any], container: dict[str, Any], *,
                 target: Callable[[], ProbeTarget | None], exec_fn: ContainerExecFn, on_result: ResultFn,
                 on_event: EventFn | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.time,
                 initial_delay: float | None = None, period: float | None = None, timeout: float | None = None,
                 success_threshold: int | None = None, failure_threshold: int | None = None,
                 user_agent: str = USER_AGENT) -> None:
        if kind not in _INITIAL:
            raise ValueError(f"unknown probe kind {kind!r}")
        self.kind = kind
        self.pod = pod
        self.container = container
        self.probe: dict[str, Any] = dict(container.get(f"{kind}Probe") or {})
        self.initial_delay = float(_pick(initial_delay, self.probe.get("initialDelaySeconds"), 0))
        self.period = float(_pick(period, self.probe.get("periodSeconds"), 10))
        self.timeout = float(_pick(timeout, self.probe.get("timeoutSeconds"), 1))
        self.success_threshold = int(_pick(success_threshold, self.probe.get("successThreshold"), 1))
        self.failure_threshold = int(_pick(failure_threshold, self.probe.get("failureThreshold"), 3))
        self.probe["timeoutSeconds"] = self.timeout
        self._target = target
        self._exec = exec_fn
        self._on_result = on_result
        self._on_event = on_event
        self._sleep = sleep
        self._clock = clock
        self._user_agent = user_agent
        self._result: bool | None = _INITIAL[kind]
        self.container_id = ""
        self._on_hold = False
        self._last: bool | None = None
        self._run = 0
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    @property
    def result(self) -> bool | None:
        """The published result for `container_id`: True/False, None for a startup probe not yet decided."""
        return self._result

    def start(self) -> asyncio.Task[None]:
        """Run the loop in a task of the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"probe-{self.kind}")
        return self._task

    def stop(self) -> None:
        """Stop probing; the loop ends at its next await."""
        self._stopped = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def run(self) -> None:
        while not self._stopped:
            if not await self.step():
                return
            await self._sleep(self.period)

    async def step(self) -> bool:
        """One tick of the loop (upstream doProbe); False when the worker should exit."""
        target = self._target()
        if target is None:
            return True
        if target.pod_finished:
            return False
        if not target.container_id:
            return True
        if target.container_id != self.container_id:
            self.container_id = target.container_id
            self._last, self._run, self._on_hold = None, 0, False
            await self._publish(_INITIAL[self.kind], "")
        if self._on_hold:
            return True
        if not target.running:
            if self.kind == "readiness":
                await self._publish(False, "")
            restart_never = (self.pod.get("spec") or {}).get("restartPolicy") == "Never"
            return not (target.terminated and restart_never)
        if target.pod_deleting and self.kind in ("liveness", "startup"):
            await self._publish(True, "")
            return False
        if target.started_at is not None and self._clock() - target.started_at < self.initial_delay:
            return True
        if target.started == (self.kind == "startup"):
            return True  # startup probes stop once started; the others wait for it
        container_id = self.container_id

        async def exec_in_container(argv: list[str], seconds: float) -> tuple[int, bytes]:
            return await self._exec(container_id, argv, seconds)

        outcome = await run_probe(self.probe, pod_ip=target.pod_ip, exec_fn=exec_in_container,
                                  container=self.container, user_agent=self._user_agent)
        if outcome.errored or outcome.warning or not outcome.success:
            await self._event("ProbeWarning" if outcome.warning else "Unhealthy", failure_message(self.kind, outcome))
        if outcome.errored:
            return True
        if outcome.success == self._last:
            self._run += 1
        else:
            self._last, self._run = outcome.success, 1
        threshold = self.success_threshold if outcome.success else self.failure_threshold
        if self._run < threshold:
            return True
        message = "" if outcome.success else failure_message(self.kind, outcome)
        await self._publish(outcome.success, message)
        if not outcome.success and self.kind in ("liveness", "startup"):
            self._on_hold, self._run = True, 0  # wait for the restarted container
        return True

    async def _publish(self, value: bool | None, message: str) -> None:
        if value == self._result:
            return
        self._result = value
        if value is not None:
            await _call(self._on_result, self.kind, value, message)

    async def _event(self, reason: str, message: str) -> None:
        if self._on_event is not None:
            await _call(self._on_event, self.kind, reason, message)


def _pick(explicit: float | None, from_probe: object, default: float) -> float:
    if explicit is not None:
        return explicit
    if isinstance(from_probe, int | float) and not isinstance(from_probe, bool) and from_probe > 0:
        return from_probe
    return default


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    outcome = fn(*args)
    if inspect.isawaitable(outcome):
        await outcome


__all__ = ["ContainerExecFn", "EventFn", "ProbeTarget", "ProbeWorker", "ResultFn"]
