"""Deployment: roll a pod template out through ReplicaSets, one safe step per reconcile.

The one idea, after upstream's pkg/controller/deployment: a Deployment never touches pods. It
owns ReplicaSets, one per pod template it has had, named `<deployment>-<hash of the template>`,
and only ever changes their `spec.replicas`; the ReplicaSet controller does the rest. Each
reconcile claims the sets, finds the new one (creating it when the template is new), takes the
next step of the strategy (see deployment_rollout), and writes the status that `kubectl rollout
status` watches. Nothing is remembered between reconciles: the sets' annotations and status
and the Deployment's conditions are the whole state, so a restart picks up where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from harness.api import conditions, errors, meta
from harness.api.meta import Obj
from harness.api.selectors import label_selector_from_spec
from harness.controllers.base import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    Context,
    Controller,
    controller_of,
    owner_reference,
)
from harness.controllers.deployment_rollout import (
    Step,
    calculate_status,
    deployment_complete,
    history_to_delete,
    is_scaling_event,
    new_replica_set,
    normalized,
    old_pods_running,
    proportional_steps,
    recheck_after,
    rolling_new_size,
    rolling_scale_down,
    rollout_status,
)
from harness.controllers.deployment_util import (
    FAILED_RS_CREATE,
    FOUND_NEW_RS,
    NEW_RS_CREATED,
    PAUSED,
    PROGRESSING,
    RESUMED,
    REVISION,
    TIMED_OUT,
    active,
    annotations_of,
    equal_ignore_hash,
    find_new,
    has_progress_deadline,
    is_rolling,
    max_revision,
    max_surge,
    new_condition,
    replicas,
    set_condition,
    set_deployment_revision,
    set_new_rs_annotations,
    set_replicas_annotations,
    spec_of,
)

log = logging.getLogger(__name__)


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _with(new_rs: Obj | None, old_rss: list[Obj]) -> list[Obj]:
    return [*old_rss, new_rs] if new_rs is not None else list(old_rss)


def _replaced(rss: list[Obj], updated: dict[str, Obj]) -> list[Obj]:
    return [updated.get(_name(rs), rs) for rs in rss]


class DeploymentController(Controller):
    name = "deployment"
    workers = 4

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        #: The time conditions are stamped with and deadlines measured against (tests move it).
        self.clock: Callable[[], datetime] = meta.now

    def setup(self) -> None:
        self.ctx.informers(DEPLOYMENTS).add_handlers(**self.enqueue_handlers())
        self.ctx.informers(REPLICASETS).add_handlers(on_add=self._rs_added, on_update=self._rs_updated,
                                                     on_delete=self._rs_deleted)
        self.ctx.informers(PODS).add_handlers(on_delete=self._pod_deleted)

    # -- handlers: sets and pods -> deployment keys ------------------------------------------

    def _owner_key(self, rs: Obj) -> str | None:
        ref = controller_of(rs)
        if ref is None or ref.get("kind") != DEPLOYMENTS.kind:
            return None
        key = meta.object_key(meta.namespace_of(rs), str(ref.get("name")))
        owner = self.ctx.informers(DEPLOYMENTS).cache.get(key)
        return key if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else None

    def _selecting(self, rs: Obj) -> list[str]:
        """Deployments whose selector matches an orphan set (they may adopt it)."""
        keys = []
        for d in self.ctx.informers(DEPLOYMENTS).cache.by_index("namespace", meta.namespace_of(rs)):
            selector = label_selector_from_spec(spec_of(d).get("selector"))
            if not selector.empty and selector.matches(meta.labels_of(rs)):
                keys.append(meta.key_of(d))
        return keys

    def _rs_added(self, rs: Obj) -> None:
        if meta.is_terminating(rs):
            self._rs_deleted(rs)
        elif (key := self._owner_key(rs)) is not None:
            self.queue.add(key)
        elif controller_of(rs) is None:
            for key in self._selecting(rs):
                self.queue.add(key)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        if meta.resource_version_of(old) == meta.resource_version_of(new):
            return  # a resync: the deployment's own resync covers it
        keys = {self._owner_key(new)}
        ref_changed = controller_of(old) != controller_of(new)
        if ref_changed:
            keys.add(self._owner_key(old))
        if controller_of(new) is None and (ref_changed or meta.labels_of(old) != meta.labels_of(new)):
            keys.update(self._selecting(new))
        for key in keys - {None}:
            self.queue.add(str(key))

    def _rs_deleted(self, rs: Obj) -> None:
        if (key := self._owner_key(rs)) is not None:
            self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        """Recreate waits for the old pods to be gone: each one gone may be the last."""
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != REPLICASETS.kind:
            return
        rs = self.ctx.informers(REPLICASETS).cache.get(meta.object_key(meta.namespace_of(pod), str(ref.get("name"))))
        key = self._owner_key(rs) if rs is not None else None
        d = self.ctx.informers(DEPLOYMENTS).cache.get(key) if key is not None else None
        if key is not None and d is not None and not is_rolling(d):
            self.queue.add(key)

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.ctx.informers(DEPLOYMENTS).cache.get(key)
        if cached is None:
            return
        d = {**copy.deepcopy(cached), "apiVersion": DEPLOYMENTS.api_version, "kind": DEPLOYMENTS.kind}
        if label_selector_from_spec(spec_of(d).get("selector")).empty:
            await self._selecting_everything(d)
            return
        rss = await self._claim(d)
        if not meta.is_terminating(d):
            await self._sync_paused_condition(d)
        new_rs, old_rss = await self._sync_revision(d, rss)
        if meta.is_terminating(d):
            await self._sync_status(d, new_rs, old_rss)
        elif spec_of(d).get("paused") or is_scaling_event(d, new_rs, old_rss):
            await self._sync_scaling(d, new_rs, old_rss)
        elif is_rolling(d):
            await self._rollout_rolling(d, new_rs, old_rss)
        else:
            await self._rollout_recreate(d, new_rs, old_rss)

    async def _selecting_everything(self, d: Obj) -> None:
        self.ctx.recorder.event(d, "Warning", "SelectingAll",
                                "This deployment is selecting all pods. A non-empty selector is required.")
        generation = int(d["metadata"].get("generation") or 0)
        if int((d.get("status") or {}).get("observedGeneration") or 0) < generation:
            d.setdefault("status", {})["observedGeneration"] = generation
            await self._write_status(d)

    # -- ownership -------------------------------------------------------------------------

    async def _claim(self, d: Obj) -> list[Obj]:
        """The sets this deployment owns, after adopting matching orphans and releasing the rest."""
        uid, deleting = d["metadata"]["uid"], meta.is_terminating(d)
        selector = label_selector_from_spec(spec_of(d).get("selector"))
        owned = []
        for rs in self.ctx.informers(REPLICASETS).cache.by_index("namespace", meta.namespace_of(d)):
            ref, matches = controller_of(rs), selector.matches(meta.labels_of(rs))
            if ref is not None and ref.get("uid") == uid:
                if matches:
                    owned.append(rs)
                elif not deleting:
                    await self._set_owner(rs, None, uid)
            elif ref is None and matches and not deleting and not meta.is_terminating(rs):
                adopted = await self._set_owner(rs, owner_reference(d, DEPLOYMENTS), uid)
                if adopted is not None:
                    owned.append(adopted)
        return owned

    async def _set_owner(self, rs: Obj, ref: Obj | None, uid: str) -> Obj | None:
        refs = [r for r in rs["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if ref is not None:
            refs.append(ref)
        patch = {"metadata": {"ownerReferences": refs or None, "resourceVersion": meta.resource_version_of(rs)}}
        try:
            return await self.ctx.client.patch(REPLICASETS, _name(rs), patch, meta.namespace_of(rs))
        except (errors.NotFound, errors.Conflict):
            return None

    def _pods_by_rs(self, rss: list[Obj]) -> dict[str, list[Obj]]:
        pods = self.ctx.informers(PODS).cache
        out: dict[str, list[Obj]] = {}
        for rs in rss:
            uid = rs["metadata"]["uid"]
            out[uid] = [p for p in pods.by_index("owner", uid) if (controller_of(p) or {}).get("uid") == uid]
        return out

    # -- the new set -----------------------------------------------------------------------

    async def _sync_revision(self, d: Obj, rss: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        """Split the sets into new and old; bring the new one's annotations and revision up to date."""
        found = find_new(d, rss)
        old_rss = [rs for rs in rss if rs is not found]
        if found is None:
            return None, old_rss
        rs = copy.deepcopy(found)
        min_ready = int(spec_of(d).get("minReadySeconds") or 0)
        changed = set_new_rs_annotations(d, rs, max_revision(old_rss) + 1, exists=True)
        if int(spec_of(rs).get("minReadySeconds") or 0) != min_ready:
            rs["spec"]["minReadySeconds"] = min_ready
            changed = True
        if changed:
            return await self.ctx.client.update(REPLICASETS, rs), old_rss
        dirty = set_deployment_revision(d, annotations_of(rs).get(REVISION, ""))
        if has_progress_deadline(d) and conditions.find(d.get("status"), PROGRESSING) is None:
            self._set_progressing(d, "True", FOUND_NEW_RS, f'Found new replica set "{_name(rs)}"')
            dirty = True
        if dirty:
            await self._write_status(d)
        return found, old_rss

    async def _create_new_rs(self, d: Obj, old_rss: list[Obj]) -> Obj:
        rs = new_replica_set(d, old_rss, owner_reference(d, DEPLOYMENTS))
        revision, size = annotations_of(rs)[REVISION], replicas(rs)
        try:
            created = await self.ctx.client.create(REPLICASETS, rs, meta.namespace_of(d))
        except errors.AlreadyExists:
            created = await self._existing_new_rs(d, rs)
            if set_deployment_revision(d, revision):
                await self._write_status(d)
            return created
        except errors.ApiError as exc:
            await self._create_failed(d, rs, exc)
            raise
        if size > 0:
            self._scaled_event(d, created, 0, size)
        dirty = set_deployment_revision(d, revision)
        if has_progress_deadline(d):
            self._set_progressing(d, "True", NEW_RS_CREATED, f'Created new replica set "{_name(created)}"')
            dirty = True
        if dirty:
            await self._write_status(d)
        return created

    async def _existing_new_rs(self, d: Obj, rs: Obj) -> Obj:
        """The name is taken: ours (a lagging cache), or a hash collision, to resolve by re-hashing."""
        existing = self.ctx.informers(REPLICASETS).cache.get(meta.key_of(rs)) or \
            await self.ctx.client.get(REPLICASETS, _name(rs), meta.namespace_of(rs))
        if (controller_of(existing) or {}).get("uid") == d["metadata"]["uid"] and \
                equal_ignore_hash(spec_of(existing).get("template"), spec_of(d).get("template")):
            return existing
        status = d.setdefault("status", {})
        status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
        log.info("deployment %s: hash collision on %s, collisionCount now %d", meta.key_of(d), _name(rs),
                 status["collisionCount"])
        await self._write_status(d)
        raise errors.AlreadyExists(f"replica set {_name(rs)} exists with another template; retrying with a new hash")

    async def _create_failed(self, d: Obj, rs: Obj, exc: errors.ApiError) -> None:
        message = f'Failed to create new replica set "{_name(rs)}": {exc}'
        if has_progress_deadline(d):
            self._set_progressing(d, "False", FAILED_RS_CREATE, message)
            try:
                await self._write_status(d)
            except errors.ApiError:
                log.debug("deployment %s: could not record %s", meta.key_of(d), FAILED_RS_CREATE)
        self.ctx.recorder.event(d, "Warning", FAILED_RS_CREATE, message)

    # -- strategies ------------------------------------------------------------------------

    async def _sync_scaling(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """A scaling event or a paused deployment: resize the sets, no rollout progress."""
        updated = await self._apply(d, proportional_steps(d, new_rs, old_rss))
        old_rss = _replaced(old_rss, updated)
        new_rs = updated.get(_name(new_rs), new_rs) if new_rs is not None else None
        if spec_of(d).get("paused"):
            await self._cleanup(d, old_rss)
        await self._sync_status(d, new_rs, old_rss)

    async def _rollout_rolling(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        if new_rs is None:
            new_rs = await self._create_new_rs(d, old_rss)
        size = rolling_new_size(d, [*old_rss, new_rs], new_rs)
        if size != replicas(new_rs):
            new_rs = await self._resize(d, new_rs, size)
        elif steps := rolling_scale_down(d, new_rs, old_rss):
            old_rss = _replaced(old_rss, await self._apply(d, steps))
        elif deployment_complete(d, d.get("status") or {}):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, new_rs, old_rss)

    async def _rollout_recreate(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """Old sets to zero; once their pods are gone, the new set to full size."""
        if updated := await self._apply(d, [Step(rs, 0) for rs in active(old_rss)]):
            await self._sync_rollout_status(d, new_rs, _replaced(old_rss, updated))
            return
        if old_pods_running(new_rs, old_rss, self._pods_by_rs(old_rss)):
            await self._sync_rollout_status(d, new_rs, old_rss)
            return
        if new_rs is None:
            new_rs = await self._create_new_rs(d, old_rss)
        new_rs = await self._resize(d, new_rs, replicas(d))
        if deployment_complete(d, d.get("status") or {}):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, new_rs, old_rss)

    async def _apply(self, d: Obj, steps: list[Step]) -> dict[str, Obj]:
        """Apply the steps in order (stopping at the first error); the sets that were written, by name."""
        updated = {}
        for step in steps:
            result = await self._resize(d, step.rs, step.size, annotate=step.annotate)
            if result is not step.rs:
                updated[step.name] = result
        return updated

    async def _resize(self, d: Obj, rs: Obj, size: int, *, annotate: bool = False) -> Obj:
        """Set spec.replicas (and the replica annotations) of one set; an event when the size changes."""
        before, want = replicas(rs), replicas(d)
        rs_copy = copy.deepcopy(rs)
        rs_copy.setdefault("spec", {})["replicas"] = size
        annotated = set_replicas_annotations(rs_copy, want, want + max_surge(d))
        if before == size and not (annotate and annotated):
            return rs
        result = await self.ctx.client.update(REPLICASETS, rs_copy)
        if before != size:
            self._scaled_event(d, rs, before, size)
        return result

    def _scaled_event(self, d: Obj, rs: Obj, before: int, after: int) -> None:
        direction = "up" if after > before else "down"
        self.ctx.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled {direction} replica set {_name(rs)} from {before} to {after}")

    async def _cleanup(self, d: Obj, old_rss: list[Obj]) -> None:
        """Keep revisionHistoryLimit old sets; delete older ones that are fully scaled down."""
        for rs in history_to_delete(d, old_rss):
            log.info("deployment %s: deleting old replica set %s", meta.key_of(d), _name(rs))
            with contextlib.suppress(errors.NotFound):
                await self.ctx.client.delete(REPLICASETS, _name(rs), meta.namespace_of(rs),
                                             preconditions={"uid": rs["metadata"]["uid"]})

    # -- status ----------------------------------------------------------------------------

    def _set_progressing(self, d: Obj, status: str, reason: str, message: str) -> None:
        set_condition(d.setdefault("status", {}), new_condition(PROGRESSING, status, reason, message, self.clock()))

    async def _sync_paused_condition(self, d: Obj) -> None:
        """Progressing says DeploymentPaused while paused, DeploymentResumed once resumed."""
        if not has_progress_deadline(d):
            return
        cond = conditions.find(d.get("status"), PROGRESSING)
        if cond is not None and cond.get("reason") == TIMED_OUT:
            return
        paused, shown = bool(spec_of(d).get("paused")), cond is not None and cond.get("reason") == PAUSED
        if paused and not shown:
            self._set_progressing(d, "Unknown", PAUSED, "Deployment is paused")
        elif shown and not paused:
            self._set_progressing(d, "Unknown", RESUMED, "Deployment is resumed")
        else:
            return
        await self._write_status(d)

    async def _sync_status(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """Counts and the Available condition, without estimating progress (paused, scaling, deleting)."""
        await self._put_status(d, calculate_status(_with(new_rs, old_rss), new_rs, d, self.clock()))

    async def _sync_rollout_status(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        """Counts and conditions, Progressing included; when nothing changed, come back at the deadline."""
        now = self.clock()
        status = rollout_status(d, _with(new_rs, old_rss), new_rs, now)
        if await self._put_status(d, status):
            return
        after = recheck_after(d, status, now)
        if after is not None:
            self.queue.add_after(meta.key_of(d), max(after, 0.0) + 1.0)  # a second past it, to be sure

    async def _put_status(self, d: Obj, status: Obj) -> bool:
        """Write `status` if it differs from what the deployment has; whether it wrote."""
        status = normalized(status)
        if normalized(d.get("status")) == status:
            return False
        d["status"] = status
        await self._write_status(d)
        return True

    async def _write_status(self, d: Obj) -> None:
        """update_status (which also keeps metadata.annotations: the deployment's revision)."""
        result: Any = await self.ctx.client.update_status(DEPLOYMENTS, copy.deepcopy(d))
        version = ((result or {}).get("metadata") or {}).get("resourceVersion")
        if version:
            d["metadata"]["resourceVersion"] = version
