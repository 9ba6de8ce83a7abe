"""The kubelet: keeps the pods bound to this node running as their specs say, and reports on them.

How it is put together (upstream's design, smaller):

- an informer on the pods with `spec.nodeName=<node>` feeds a work queue keyed by pod UID;
- `sync(uid)` is idempotent: it compares a pod's spec with what the runtime holds and takes the
  next steps (sandbox, init containers in order, containers, restarts with back-off, kills), then
  posts the pod's status if it changed;
- the PLEG (pod lifecycle event generator) relists the runtime every `relist_period` and queues
  the pods whose containers changed state (a container exited, a shim died);
- probe workers report result changes, which queue the pod too;
- slow things (killing a pod with its grace period) run as tasks of their own and queue the pod
  when done, so one terminating pod never holds up the others.

Everything the kubelet needs to pick up after a restart is on disk (runtime state, IPAM, pod
directories), so a new kubelet re-adopts running containers and their status goes on unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from harness.api import errors, meta, registry
from harness.api.pods import is_terminal
from harness.client.events import EventRecorder
from harness.client.rest import Client
from harness.kubelet import containers as ctrs
from harness.kubelet import podfiles
from harness.kubelet import status as podstatus
from harness.kubelet.backoff import Backoff
from harness.kubelet.config import KubeletConfig
from harness.kubelet.env import container_env
from harness.kubelet.errors import ContainerConfigError, KubeletError
from harness.kubelet.imagepull import ImageManager
from harness.kubelet.images.imagestore import ImageStore, NoRegistryPuller, Puller
from harness.kubelet.metrics import KubeletMetrics
from harness.kubelet.network.pods import PodNetwork
from harness.kubelet.network.routeagent import describe, node_routes
from harness.kubelet.network.routes import HostGwRoutes
from harness.kubelet.nodeagent import NodeAgent
from harness.kubelet.prober.manager import ProbeManager
from harness.kubelet.prober.prober import run_probe
from harness.kubelet.records import PodRecord, epoch
from harness.kubelet.runtime import cgroups
from harness.kubelet.runtime.runc import RuncRuntime
from harness.kubelet.runtime.types import ContainerInfo
from harness.kubelet.tokens import TokenManager
from harness.kubelet.volumes import VolumeManager
from harness.machinery.health import component_registry
from harness.machinery.informer import Informer
from harness.machinery.workqueue import WorkQueue, run_workers

log = logging.getLogger(__name__)

PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
CONFIGMAPS = registry.by_path("", "v1", "configmaps")
SECRETS = registry.by_path("", "v1", "secrets")

DEFAULT_GRACE = 30
VOLUME_REFRESH = 60.0
#: Exited attempts kept per container: the latest (for its status) and the one before (for `logs --previous`).
KEEP_ATTEMPTS = 2


def _uid_index(obj: dict[str, Any]) -> list[str]:
    return [obj["metadata"].get("uid", "")]


class Kubelet:
    def __init__(self, client: Client, config: KubeletConfig, *, metrics_registry: CollectorRegistry | None = None,
                 puller: Puller | None = None) -> None:
        self.client = client
        self.config = config
        self.registry = metrics_registry or component_registry()
        self.metrics = KubeletMetrics(self.registry, config.node_name)
        self.images = ImageStore(config.images_dir)
        self.puller: Puller = puller or NoRegistryPuller()
        self.runtime = RuncRuntime(config.containers_dir, config.runc_root, runc=config.runc,
                                   log_max_size=config.container_log_max_size,
                                   log_max_files=config.container_log_max_files)
        self.network = PodNetwork(bridge=config.bridge, netns_dir=config.netns_dir, ipam_dir=config.ipam_dir)
        self.routes = HostGwRoutes()
        self.tokens = TokenManager(client)
        self.volumes = VolumeManager(config.pods_dir, token_source=self.tokens.token_for)
        self.node = NodeAgent(client, config, on_pod_cidr=self._pod_cidr_changed)
        self.pod_informer = Informer(client, PODS, field_selector=f"spec.nodeName={config.node_name}",
                                     indexers={"uid": _uid_index})
        self.node_informer = Informer(client, NODES)
        self.queue = WorkQueue("kubelet_pods", registry=self.registry)
        self.backoff = Backoff(config.backoff_initial, config.backoff_max, config.backoff_reset)
        self.recorder = EventRecorder(client, component="kubelet", host=config.node_name)
        self.records: dict[str, PodRecord] = {}
        self.image_manager = ImageManager(self.images, self.puller, self.backoff, self.recorder, self.queue.add_after)
        self.containers: dict[str, ContainerInfo] = {}   # runtime id -> last seen info (PLEG snapshot)
        self.probes = ProbeManager(exec_fn=self._exec, containers=lambda: self.containers,
                                   current=self.records.get, changed=self.queue.add, recorder=self.recorder,
                                   metrics=self.metrics)
        self._tasks: list[asyncio.Task[Any]] = []
        self._network_ready = asyncio.Event()
        self._routes_wanted: dict[str, str] = {}
        self.ready = asyncio.Event()
        self.metrics.running_pods.set_function(
            lambda: len({i.pod_uid for i in self.containers.values() if i.state == "running"}))
        for state in ("running", "exited", "created"):
            self.metrics.running_containers.labels(state).set_function(self._counter(state))

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        for d in (self.config.pods_dir, self.config.containers_dir, self.config.pod_log_dir):
            d.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.images.ensure_builtin)
        self.recorder.start()
        self.node_informer.add_handlers(on_add=self._node_changed, on_update=lambda _o, n: self._node_changed(n),
                                        on_delete=self._node_deleted)
        self.pod_informer.add_handlers(on_add=self._pod_event, on_update=lambda _o, n: self._pod_event(n),
                                       on_delete=self._pod_deleted)
        await self.node.register()
        await self.node_informer.start()
        await self.pod_informer.start()
        await self.node_informer.wait_synced()
        await self.pod_informer.wait_synced()
        if not self.node.pod_cidr and self.config.pod_cidr:
            self._pod_cidr_changed(self.config.pod_cidr)
        self._relist()
        self._adopt_orphans()
        self._tasks = [asyncio.create_task(self.node.run(), name="kubelet node agent"),
                       asyncio.create_task(run_workers(self.queue, self.sync, self.config.workers),
                                           name="kubelet pod workers"),
                       asyncio.create_task(self._pleg(), name="kubelet pleg"),
                       asyncio.create_task(self._resync(), name="kubelet resync")]
        self.ready.set()
        log.info("kubelet on node %s ready: %d pods bound here, %d containers found in the runtime",
                 self.config.node_name, len(self.pod_informer.cache), len(self.containers))
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop the kubelet's own work; containers keep running (their shims are not ours to stop)."""
        self.queue.shutdown()
        self.probes.stop_all()
        for record in self.records.values():
            if record.killing is not None:
                record.killing.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pod_informer.stop()
        await self.node_informer.stop()
        await self.recorder.close()

    def _counter(self, state: str) -> Callable[[], int]:
        return lambda: sum(1 for i in self.containers.values() if i.state == state)

    # -- events in ----------------------------------------------------------------------------

    def _pod_event(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        record = self.records.get(uid)
        if record is None:
            self.records[uid] = PodRecord(uid, pod)
        else:
            record.pod = pod
        self.queue.add(uid)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        record = self.records.setdefault(uid, PodRecord(uid, pod))
        record.deleted = True
        self.queue.add(uid)

    def _node_changed(self, node: dict[str, Any]) -> None:
        if node["metadata"]["name"] == self.config.node_name:
            self.node.observe(node)
        self._sync_routes()

    def _node_deleted(self, node: dict[str, Any]) -> None:
        if node["metadata"]["name"] == self.config.node_name:
            self.node.deleted(node)
        self._sync_routes()

    def _pod_cidr_changed(self, cidr: str) -> None:
        try:
            self.network.configure(cidr)
        except Exception:
            log.exception("could not configure the pod network for %s", cidr)
            return
        self._network_ready.set()
        for uid in self.records:
            self.queue.add(uid)

    def _sync_routes(self) -> None:
        wanted = node_routes(self.node_informer.cache.list(), skip=self.config.node_name)
        if wanted != self._routes_wanted:
            self._routes_wanted = wanted
            try:
                self.routes.sync(wanted)
                log.info("host-gw routes: %s", describe(wanted))
            except Exception:
                log.exception("could not program host-gw routes")
                self._routes_wanted = {}

    # -- PLEG ---------------------------------------------------------------------------------

    def _relist(self) -> None:
        started = time.monotonic()
        seen = {info.id: info for info in self.runtime.list()}
        changed: set[str] = set()
        for cid, info in seen.items():
            before = self.containers.get(cid)
            if before is None or before.state != info.state:
                changed.add(info.pod_uid)
        for cid, info in self.containers.items():
            if cid not in seen:
                changed.add(info.pod_uid)
        self.containers = seen
        self.metrics.relist.observe(time.monotonic() - started)
        for uid in changed:
            if uid in self.records or self.ready.is_set():
                self.queue.add(uid)

    async def _pleg(self) -> None:
        while True:
            await asyncio.sleep(self.config.relist_period)
            try:
                self._relist()
            except Exception:
                log.exception("PLEG relist failed")

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_period)
            for uid in list(self.records):
                self.queue.add(uid)

    def _adopt_orphans(self) -> None:
        """After a restart: every pod the node holds something of gets a sync, which cleans up what is orphaned."""
        uids = {i.pod_uid for i in self.containers.values()}
        uids |= set(self.network.list())
        uids |= set(self.volumes.pods())
        for uid in uids:
            if not self.pod_informer.cache.by_index("uid", uid):
                self.records.setdefault(uid, PodRecord(uid, {"metadata": {"uid": uid, "name": "", "namespace": ""}},
                                                       deleted=True))
            self.queue.add(uid)

    # -- the sync -----------------------------------------------------------------------------

    def _pod_containers(self, uid: str) -> dict[str, list[ContainerInfo]]:
        """This pod's containers by name, oldest attempt first, read fresh from the runtime."""
        out: dict[str, list[ContainerInfo]] = {}
        for cid, known in list(self.containers.items()):
            if known.pod_uid != uid:
                continue
            info = self.runtime.info(cid) or known
            self.containers[cid] = info
            out.setdefault(info.name, []).append(info)
        for infos in out.values():
            infos.sort(key=lambda i: i.attempt)
        return out

    async def sync(self, uid: str) -> None:
        record = self.records.get(uid)
        if record is None:
            return
        started = time.monotonic()
        try:
            if record.deleted:
                await self._sync_removed(record)
                return
            pod = record.pod
            if meta.is_terminating(pod):
                await self._sync_terminating(record)
                return
            if is_terminal(pod) and \
                    not any(i.state == "running" for v in self._pod_containers(uid).values() for i in v):
                return
            await self._sync_running(record)
        finally:
            self.metrics.pod_worker.labels("sync").observe(time.monotonic() - started)

    async def _sync_running(self, record: PodRecord) -> None:
        pod = record.pod
        uid = record.uid
        spec = pod.get("spec") or {}
        record.start_time = record.start_time or (pod.get("status") or {}).get("startTime") or meta.now_rfc3339()
        if record.sandbox is None and not await self._make_sandbox(record):
            await self._post_status(record, self._views(record)[0:2], sandbox_ready=False)
            return
        assert record.sandbox is not None
        if time.monotonic() - record.volumes_at > VOLUME_REFRESH:
            try:
                record.sandbox.volume_paths = await self.volumes.prepare(
                    pod, self._fetch, pod_ip=record.sandbox.pod_ip, host_ip=self.config.node_ip,
                    node_name=self.config.node_name)
                record.volumes_at = time.monotonic()
            except KubeletError as exc:
                self.recorder.event(pod, "Warning", "FailedMount", getattr(exc, "event_message", str(exc)))
                record.volumes_at = 0.0
                self.queue.add_after(uid, 2.0)
                if not record.sandbox.volume_paths:
                    await self._post_status(record, self._views(record)[0:2], sandbox_ready=True)
                    return
        self.probes.ensure(record)
        init_views, main_views = self._views(record)
        policy = spec.get("restartPolicy") or "Always"
        # liveness or startup failures: kill (in the background), the restart follows the exit
        for view in [*init_views, *main_views]:
            if view.running and view.current is not None and self.probes.must_kill(view.current.id):
                self._kill_containers(record, [view], reason="Unhealthy")
        if record.killing is None:
            init_done = await self._step_init(record, init_views, policy)
            if init_done:
                for view in main_views:
                    await self._step_container(record, view, policy)
        await self._collect_attempts(record)
        init_views, main_views = self._views(record)
        await self._post_status(record, (init_views, main_views), sandbox_ready=True)

    async def _collect_attempts(self, record: PodRecord) -> None:
        """Remove exited attempts beyond the last KEEP_ATTEMPTS of each container, with their logs."""
        for infos in self._pod_containers(record.uid).values():
            for info in infos[:-KEEP_ATTEMPTS]:
                if info.state != "exited":
                    continue
                await self.runtime.remove(info.id)
                self.containers.pop(info.id, None)
                self.probes.forget(info.id)
                if info.log_path:
                    for path in Path(info.log_path).parent.glob(f"{info.attempt}.log*"):
                        path.unlink(missing_ok=True)

    async def _step_init(self, record: PodRecord, views: list[podstatus.ContainerView], policy: str) -> bool:
        """Run the init containers one at a time; True once all have succeeded."""
        for view in views:
            if view.succeeded:
                continue
            if view.running:
                return False
            if view.exited and policy == "Never":
                return False
            await self._step_container(record, view, "OnFailure" if policy == "Always" else policy, init=True)
            return False
        return True

    async def _step_container(self, record: PodRecord, view: podstatus.ContainerView, policy: str, *,
                              init: bool = False) -> None:
        """Start a container that never ran, or restart an exited one when the policy and the back-off allow."""
        cur = view.current
        name = view.name
        key = f"{record.uid}/{name}"
        if cur is not None and cur.state in ("running", "created", "unknown"):
            return
        if cur is not None and cur.state == "exited":
            if policy == "Never" or (policy == "OnFailure" and cur.exit_code == 0):
                return
            now = time.time()
            ran_for = epoch(cur.finished_at) - epoch(cur.started_at) if cur.started_at else 0.0
            wait = self.backoff.wait(key, failed_at=epoch(cur.finished_at) or now, now=now, ran_for=ran_for)
            if wait > 0:
                md = record.pod["metadata"]
                delay = int(self.backoff.delay(key))
                message = (f"back-off {delay}s restarting failed container={name} "
                           f"pod={md['name']}_{md.get('namespace', '')}({record.uid})")
                if record.waiting.get(name, ("",))[0] != "CrashLoopBackOff":
                    self.recorder.event(record.pod, "Warning", "BackOff", "Back-off restarting failed container "
                                        f"{name} in pod {md['name']}_{md.get('namespace', '')}({record.uid})")
                record.waiting[name] = ("CrashLoopBackOff", message)
                self.queue.add_after(record.uid, wait + 0.01)
                return
            self.backoff.retrying(key)
        attempt = cur.attempt + 1 if cur is not None else 0
        await self._start(record, view.spec, attempt, init=init)

    async def _start(self, record: PodRecord, spec: dict[str, Any], attempt: int, *, init: bool) -> None:
        pod = record.pod
        name = spec["name"]
        sandbox = record.sandbox
        assert sandbox is not None
        image = await self.image_manager.ensure(record, spec)
        if image is None:
            return
        try:
            env = await container_env(pod, spec, self._fetch, host_ip=self.config.node_ip, pod_ip=sandbox.pod_ip,
                                      node_name=self.config.node_name)
            mounts = self.volumes.mounts(pod, spec, sandbox.volume_paths)
            request = ctrs.build_request(pod, spec, attempt=attempt, image=image, env=env, sandbox=sandbox,
                                         mounts=mounts, cgroup_root=self.config.cgroup_root,
                                         pod_log_dir=self.config.pod_log_dir)
        except ContainerConfigError as exc:
            record.waiting[name] = (exc.reason, exc.message)
            self.recorder.event(pod, "Warning", "Failed", f"Error: {exc.message}")
            self.queue.add_after(record.uid, 2.0)
            return
        record.waiting.pop(name, None)
        self.metrics.runtime_ops.labels("create_container").inc()
        try:
            info = await self.runtime.start(request)
        except Exception as exc:
            self.metrics.runtime_errors.labels("create_container").inc()
            self.metrics.started_errors.labels("init_container" if init else "container", "CreateContainerError").inc()
            record.waiting[name] = ("CreateContainerError", str(exc))
            self.recorder.event(pod, "Warning", "Failed", f"Error: {exc}")
            self.queue.add_after(record.uid, 2.0)
            return
        self.containers[info.id] = info
        self.metrics.started_containers.labels("init_container" if init else "container").inc()
        self.recorder.event(pod, "Normal", "Created", f"Created container: {name}")
        if info.state == "exited" and info.reason == "StartError":
            self.metrics.started_errors.labels("init_container" if init else "container", "StartError").inc()
            self.recorder.event(pod, "Warning", "Failed", f"Error: {info.message}")
            return
        self.recorder.event(pod, "Normal", "Started", f"Started container {name}")
        self.probes.ensure(record)
        post_start = ((spec.get("lifecycle") or {}).get("postStart"))
        if post_start:
            result = await self._run_handler(post_start, spec, info, sandbox.pod_ip,
                                             seconds=float(DEFAULT_GRACE))
            if not result[0]:
                self.recorder.event(pod, "Warning", "FailedPostStartHook", result[1])
                self._kill_containers(record, [podstatus.ContainerView(spec, info)], reason="FailedPostStartHook")

    async def _make_sandbox(self, record: PodRecord) -> bool:
        pod = record.pod
        spec = pod.get("spec") or {}
        md = pod["metadata"]
        pod_dir = self.config.pods_dir / record.uid
        try:
            if spec.get("hostNetwork"):
                netns, ip = f"/proc/{os.getpid()}/ns/net", self.config.node_ip
            else:
                if not self._network_ready.is_set():
                    record.waiting = {c["name"]: ("ContainerCreating", "") for c in spec.get("containers") or []}
                    self.recorder.event(pod, "Warning", "NetworkNotReady",
                                        "network is not ready: the node has no podCIDR yet")
                    self.queue.add_after(record.uid, 1.0)
                    return False
                self.metrics.runtime_ops.labels("run_podsandbox").inc()
                iface = await asyncio.to_thread(self.network.setup, record.uid, md.get("namespace", ""), md["name"])
                netns, ip = iface.netns_path, iface.ip
            files = podfiles.write_pod_files(pod_dir, pod, pod_ip=ip, cluster_dns=self.config.cluster_dns,
                                             cluster_domain=self.config.cluster_domain)
            paths = await self.volumes.prepare(pod, self._fetch, pod_ip=ip, host_ip=self.config.node_ip,
                                               node_name=self.config.node_name)
        except KubeletError as exc:
            self.recorder.event(pod, "Warning", "FailedMount", getattr(exc, "event_message", str(exc)))
            self.queue.add_after(record.uid, 2.0)
            return False
        except Exception as exc:
            self.metrics.runtime_errors.labels("run_podsandbox").inc()
            log.exception("pod %s/%s: sandbox failed", md.get("namespace"), md.get("name"))
            self.recorder.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            self.queue.add_after(record.uid, 2.0)
            return False
        record.volumes_at = time.monotonic()
        record.sandbox = ctrs.PodSandbox(netns, ip, files, pod_dir, paths)
        return True

    async def _fetch(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(CONFIGMAPS if kind == "ConfigMap" else SECRETS, name, namespace)
        except errors.NotFound:
            return None

    # -- views and status -----------------------------------------------------------------

    def _views(self, record: PodRecord) -> tuple[list[podstatus.ContainerView], list[podstatus.ContainerView]]:
        spec = record.pod.get("spec") or {}
        by_name = self._pod_containers(record.uid)

        def view(c: dict[str, Any]) -> podstatus.ContainerView:
            attempts = by_name.get(c["name"], [])
            cur = attempts[-1] if attempts else None
            prev = attempts[-2] if len(attempts) > 1 else None
            waiting = record.waiting.get(c["name"])
            if cur is not None and cur.state == "running":
                waiting = None
            started = cur is not None and cur.state == "running" and self.probes.started(cur.id, c, record.pod)
            ready = started and cur is not None and self.probes.ready(cur.id, c, record.pod)
            return podstatus.ContainerView(c, cur, prev, waiting, ready, started)

        return ([view(c) for c in spec.get("initContainers") or []], [view(c) for c in spec.get("containers") or []])

    async def _post_status(self, record: PodRecord, views: tuple[list[podstatus.ContainerView],
                                                                 list[podstatus.ContainerView]],
                           *, sandbox_ready: bool) -> None:
        pod = record.pod
        init_views, main_views = views
        now = meta.now_rfc3339()
        status = podstatus.pod_status(pod, init_views, main_views,
                                      pod_ip=record.sandbox.pod_ip if record.sandbox else "",
                                      host_ip=self.config.node_ip, start_time=record.start_time or now,
                                      sandbox_ready=sandbox_ready, now=now)
        if status["phase"] == "Running" and not record.start_reported and \
                any(v.running for v in main_views):
            record.start_reported = True
            self.metrics.pod_start.observe(time.monotonic() - record.first_seen)
        if (pod.get("status") or {}) == status or record.last_status == status:
            return
        md = pod["metadata"]
        try:
            updated = await self.client.patch(PODS, md["name"], {"status": status}, md.get("namespace", ""),
                                              subresource="status")
        except errors.NotFound:
            return
        record.last_status = status
        if updated["metadata"].get("uid") == record.uid:
            record.pod = updated

    async def _exec(self, cid: str, argv: list[str], seconds: float) -> tuple[int, bytes]:
        result = await self.runtime.exec(cid, argv, seconds)
        return result.exit_code, result.stdout + result.stderr

    async def _run_handler(self, handler: dict[str, Any], spec: dict[str, Any], info: ContainerInfo, pod_ip: str, *,
                           seconds: float) -> tuple[bool, str]:
        if "sleep" in handler:
            await asyncio.sleep(min(float(handler["sleep"].get("seconds", 0)), seconds))
            return True, ""
        probe = {**handler, "timeoutSeconds": max(1, int(seconds))}
        result = await run_probe(probe, container=spec, pod_ip=pod_ip,
                                 exec_fn=lambda argv, t: self._exec(info.id, argv, t))
        return result.success, result.message

    # -- killing ------------------------------------------------------------------------------

    def _kill_containers(self, record: PodRecord, views: list[podstatus.ContainerView], *, reason: str,
                         grace: float | None = None) -> None:
        """Stop these containers in the background (preStop, SIGTERM, grace, SIGKILL); the pod syncs when done."""
        if record.killing is not None and not record.killing.done():
            return
        spec_grace = (record.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        seconds = float(grace if grace is not None else spec_grace if spec_grace is not None else DEFAULT_GRACE)

        async def kill() -> None:
            try:
                await asyncio.gather(*(self._kill_one(record, v, seconds) for v in views if v.current is not None))
            finally:
                record.killing = None
                self.queue.add(record.uid)

        record.killing = asyncio.create_task(kill(), name=f"kill {record.uid}")

    async def _kill_one(self, record: PodRecord, view: podstatus.ContainerView, grace: float) -> None:
        info = view.current
        assert info is not None
        if info.state != "running":
            return
        deadline = time.monotonic() + grace
        self.recorder.event(record.pod, "Normal", "Killing", f"Stopping container {view.name}")
        pre_stop = (view.spec.get("lifecycle") or {}).get("preStop")
        if pre_stop and grace > 0:
            try:
                ok, message = await asyncio.wait_for(
                    self._run_handler(pre_stop, view.spec, info, record.sandbox.pod_ip if record.sandbox else "",
                                      seconds=grace), grace)
                if not ok:
                    self.recorder.event(record.pod, "Warning", "FailedPreStopHook", message)
            except TimeoutError:
                self.recorder.event(record.pod, "Warning", "FailedPreStopHook",
                                    f"PreStopHook did not finish within {grace:g}s")
        self.metrics.runtime_ops.labels("stop_container").inc()
        await self.runtime.stop(info.id, max(0.0, deadline - time.monotonic()))
        self.probes.forget(info.id)
        fresh = self.runtime.info(info.id)
        if fresh is not None:
            self.containers[info.id] = fresh

    async def _sync_terminating(self, record: PodRecord) -> None:
        """deletionTimestamp is set: stop every container within the grace period, then finish the deletion."""
        md = record.pod["metadata"]
        running = [v for v in [*self._views(record)[0], *self._views(record)[1]] if v.running]
        if running:
            grace = md.get("deletionGracePeriodSeconds")
            self._kill_containers(record, running, reason="Deleting", grace=grace)
            return
        if record.killing is not None:
            return
        views = self._views(record)
        await self._post_status(record, views, sandbox_ready=False)
        with contextlib.suppress(errors.NotFound, errors.Conflict):
            await self.client.delete(PODS, md["name"], md.get("namespace", ""), grace_period=0,
                                     preconditions={"uid": record.uid})

    async def _sync_removed(self, record: PodRecord) -> None:
        """The pod is gone from the API: stop what still runs, then remove every trace of it from the node."""
        running = [v for v in [*self._views(record)[0], *self._views(record)[1]] if v.running]
        if record.pod.get("spec") is None:  # an orphan found at startup: we know nothing of its spec
            running = [podstatus.ContainerView({"name": i.name}, i) for infos in
                       self._pod_containers(record.uid).values() for i in infos if i.state == "running"]
        if running:
            self._kill_containers(record, running, reason="Deleted", grace=0 if not record.pod.get("spec") else None)
            return
        if record.killing is not None:
            return
        await self._cleanup(record)

    async def _cleanup(self, record: PodRecord) -> None:
        uid = record.uid
        for infos in self._pod_containers(uid).values():
            for info in infos:
                self.probes.forget(info.id)
                await self.runtime.remove(info.id)
                self.containers.pop(info.id, None)
        await asyncio.to_thread(self.network.teardown, uid)
        busy = cgroups.remove_tree(f"{self.config.cgroup_root}/pod{uid}")
        if busy:
            log.warning("pod %s: cgroups still busy, left in place: %s", uid, ", ".join(map(str, busy)))
        self.volumes.cleanup(uid)
        self.tokens.forget(uid)
        shutil.rmtree(self.config.pods_dir / uid, ignore_errors=True)
        if record.pod.get("metadata", {}).get("name"):
            shutil.rmtree(ctrs.log_dir(self.config.pod_log_dir, record.pod), ignore_errors=True)
        else:
            for path in self.config.pod_log_dir.glob(f"*_{uid}"):
                shutil.rmtree(path, ignore_errors=True)
        self.backoff.forget_prefix(f"{uid}/")
        self.probes.stop_pod(uid)
        self.records.pop(uid, None)
        log.info("pod %s/%s (%s) cleaned up", record.pod["metadata"].get("namespace"),
                 record.pod["metadata"].get("name"), uid)

    # -- lookups for the kubelet API ------------------------------------------------------------

    def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pod_informer.cache.get(meta.object_key(namespace, name))

    def container_attempts(self, uid: str, name: str) -> list[ContainerInfo]:
        return self._pod_containers(uid).get(name, [])

    def bound_pods(self) -> list[dict[str, Any]]:
        return self.pod_informer.cache.list()
