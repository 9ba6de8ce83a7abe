"""DaemonSet: one pod per eligible node, rolled to a new template a few nodes at a time.

A node is eligible when the daemon pod fits it: nodeSelector and required node affinity
match, and its NoSchedule/NoExecute taints are tolerated — counting the standard DaemonSet
tolerations every daemon pod gets (not-ready, unreachable, disk/memory/pid pressure,
unschedulable), so sick or cordoned nodes keep their daemons. Each pod is pinned to its node
by a required node affinity on `metadata.name`, and the default scheduler binds it there.

The one idea of updates: a template is named by its hash, kept as a ControllerRevision
`<ds>-<hash>` (numbered, for `kubectl rollout history`) and as each pod's
`controller-revision-hash` label. A pod with another hash is old: a rolling update deletes
old pods on at most maxUnavailable nodes at a time (nodes already unavailable count), and the
next pass creates new pods there. Expectations keep a lagging cache from causing double work.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from harness.api import errors, meta, registry
from harness.api import selectors as sel
from harness.api.pods import FAILED, is_available, is_ready, is_terminal, phase_of
from harness.api.taints import tolerates
from harness.controllers.base import NODES, PODS, Context, Controller, controller_of, owner_reference
from harness.controllers.expectations import Expectations
from harness.controllers.ownership import OwnedPods, selector_of
from harness.controllers.replicaset import BURST, SLOW_START_INITIAL

log = logging.getLogger(__name__)

DAEMONSETS = registry.by_path("apps", "v1", "daemonsets")
REVISIONS = registry.by_path("apps", "v1", "controllerrevisions")
HASH_LABEL = "controller-revision-hash"
NAME_FIELD = "metadata.name"
_OPERATORS = {"In": sel.IN, "NotIn": sel.NOT_IN, "Exists": sel.EXISTS, "DoesNotExist": sel.DOES_NOT_EXIST,
              "Gt": sel.GREATER_THAN, "Lt": sel.LESS_THAN}
DAEMON_TOLERATIONS = tuple({"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": effect}
                           for key, effect in (("not-ready", "NoExecute"), ("unreachable", "NoExecute"),
                                               ("disk-pressure", "NoSchedule"), ("memory-pressure", "NoSchedule"),
                                               ("pid-pressure", "NoSchedule"), ("unschedulable", "NoSchedule")))
HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                           "effect": "NoSchedule"}
#: Backoff before deleting (and so replacing) a failed daemon pod again on the same node.
FAILED_BACKOFF, FAILED_BACKOFF_MAX = 1.0, 900.0
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


# -- templates, hashes, revisions -----------------------------------------------------------

def template_hash(ds: dict[str, Any]) -> str:
    """Upstream's ComputeHash: FNV-1a of the template (and collisionCount), safe-encoded."""
    data = json.dumps(ds["spec"].get("template") or {}, sort_keys=True, separators=(",", ":"))
    collisions = (ds.get("status") or {}).get("collisionCount")
    h = 0x811C9DC5
    for byte in (data + (str(collisions) if collisions else "")).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(h))


def revision_data(ds: dict[str, Any]) -> dict[str, Any]:
    """What a ControllerRevision stores: a patch that puts this template back (as upstream)."""
    return {"spec": {"template": {**copy.deepcopy(ds["spec"].get("template") or {}), "$patch": "replace"}}}


def daemon_pod_spec(ds: dict[str, Any], node: str = "") -> dict[str, Any]:
    """The template's pod spec with the DaemonSet tolerations, pinned to `node` if given."""
    spec = copy.deepcopy((ds["spec"].get("template") or {}).get("spec") or {})
    wanted = [*DAEMON_TOLERATIONS, *([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])]
    spec["tolerations"] = [t for t in spec.get("tolerations") or [] if t not in wanted] + [dict(t) for t in wanted]
    if node:
        affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
            {"matchFields": [{"key": NAME_FIELD, "operator": "In", "values": [node]}]}]}
    return spec


def daemon_pod(ds: dict[str, Any], node: str, hash_: str) -> dict[str, Any]:
    md = copy.deepcopy((ds["spec"].get("template") or {}).get("metadata") or {})
    md["labels"] = {**(md.get("labels") or {}), HASH_LABEL: hash_}
    md.update(generateName=f"{ds['metadata']['name']}-", namespace=ds["metadata"]["namespace"],
              ownerReferences=[owner_reference(ds, DAEMONSETS)])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": daemon_pod_spec(ds, node)}


def target_node(pod: dict[str, Any]) -> str:
    """The node a daemon pod is for: its nodeName, or the node its affinity pins it to."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchFields") or []:
            if expr.get("key") == NAME_FIELD and expr.get("operator") == "In" and len(expr.get("values") or []) == 1:
                return str(expr["values"][0])
    return ""


# -- which nodes ----------------------------------------------------------------------------

def _matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    op = _OPERATORS.get(str(expr.get("operator")))
    values = tuple(str(v) for v in expr.get("values") or ())
    return op is not None and sel.Requirement(str(expr.get("key") or ""), op, values).matches(labels)


def fits_affinity(spec: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = meta.labels_of(node)
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    name = {NAME_FIELD: meta.name_of(node)}
    return any((term.get("matchExpressions") or term.get("matchFields"))
               and all(_matches(e, labels) for e in term.get("matchExpressions") or [])
               and all(e.get("key") == NAME_FIELD and _matches(e, name) for e in term.get("matchFields") or [])
               for term in required.get("nodeSelectorTerms") or [])


def should_run(spec: dict[str, Any], node: dict[str, Any]) -> tuple[bool, bool]:
    """(a daemon pod should run here, an existing one may stay), as upstream's NodeShouldRunDaemonPod."""
    if (spec.get("nodeName") and spec["nodeName"] != meta.name_of(node)) or not fits_affinity(spec, node):
        return False, False
    tolerations = spec.get("tolerations") or []
    untolerated = [t for t in (node.get("spec") or {}).get("taints") or []
                   if t.get("effect") in ("NoSchedule", "NoExecute") and not any(tolerates(x, t) for x in tolerations)]
    if untolerated:
        return False, all(t.get("effect") != "NoExecute" for t in untolerated)
    return True, True


def _age(pod: dict[str, Any]) -> tuple[int, str, str]:
    """Sort key, oldest first, scheduled before unscheduled (upstream's podByCreationTimestampAndPhase)."""
    md = pod["metadata"]
    return 0 if (pod.get("spec") or {}).get("nodeName") else 1, md.get("creationTimestamp", ""), md["name"]


def max_unavailable(ds: dict[str, Any], desired: int) -> int:
    value = ((ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", 1)
    n = math.ceil(float(value[:-1]) * desired / 100) if isinstance(value, str) and value.endswith("%") else int(value)
    return 1 if desired > 0 and n == 0 else n


class DaemonSetController(Controller):
    name = "daemonset"
    workers = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.expectations = Expectations()
        self.pods = OwnedPods(ctx, DAEMONSETS, self.queue, self.expectations)
        self.now: Callable[[], datetime] = meta.now
        self.failed_backoff: dict[tuple[str, str], tuple[float, datetime]] = {}  # (ds, node) → (delay, since)

    def setup(self) -> None:
        self.ctx.informers(DAEMONSETS).add_handlers(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                                    on_delete=lambda ds: self.expectations.forget(meta.key_of(ds)))
        self.pods.register()
        self.ctx.informers(NODES).add_handlers(on_add=self._enqueue_all, on_update=self._node_updated,
                                               on_delete=self._enqueue_all)
        self.ctx.informers(REVISIONS)

    # -- handlers --------------------------------------------------------------------------

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if (meta.labels_of(old), old.get("spec")) != (meta.labels_of(new), new.get("spec")):
            self._enqueue_all(new)

    def _enqueue_all(self, _node: dict[str, Any]) -> None:
        for ds in self.ctx.informers(DAEMONSETS).cache.list():
            self.enqueue(ds)

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        ds = self.ctx.informers(DAEMONSETS).cache.get(key)
        if ds is None:
            self.expectations.forget(key)
            return
        if meta.is_terminating(ds):
            return
        nodes = sorted(self.ctx.informers(NODES).cache.list(), key=meta.name_of)
        by_node = await self._claim(ds)
        current, old = await self._history(ds)
        hash_ = meta.labels_of(current).get(HASH_LABEL) or template_hash(ds)
        if self.expectations.satisfied(key):
            await self._manage(key, ds, nodes, by_node, hash_)
            strategy = (ds["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
            if self.expectations.satisfied(key) and strategy == "RollingUpdate":
                await self._rolling_update(key, ds, nodes, by_node, hash_)
        await self._cleanup_history(ds, old, by_node)
        await self._update_status(ds, nodes, by_node, hash_)

    async def _claim(self, ds: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Owned pods by target node, after adopting matching orphans and releasing pods that stopped matching."""
        uid, selector = ds["metadata"]["uid"], selector_of(DAEMONSETS, ds)
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in self.ctx.informers(PODS).cache.by_index("namespace", ds["metadata"]["namespace"]):
            ref = controller_of(pod)
            matches = selector is not None and not selector.empty and selector.matches(meta.labels_of(pod))
            if ref is not None and ref.get("uid") == uid and not matches:
                await self._set_owner(pod, [r for r in pod["metadata"].get("ownerReferences") or []
                                            if r.get("uid") != uid])
                continue
            if ref is None and matches and not meta.is_terminating(pod):
                refs = [*(pod["metadata"].get("ownerReferences") or []), owner_reference(ds, DAEMONSETS)]
                if await self._set_owner(pod, refs) is None:
                    continue
            elif ref is None or ref.get("uid") != uid:
                continue
            by_node.setdefault(target_node(pod), []).append(pod)
        by_node.pop("", None)
        return by_node

    async def _set_owner(self, pod: dict[str, Any], refs: list[dict[str, Any]]) -> dict[str, Any] | None:
        md = pod["metadata"]
        patch = {"metadata": {"ownerReferences": refs or None, "resourceVersion": md.get("resourceVersion")}}
        try:
            return await self.ctx.client.patch(PODS, md["name"], patch, md["namespace"])
        except (errors.NotFound, errors.Conflict):
            return None

    # -- history ---------------------------------------------------------------------------

    async def _history(self, ds: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The ControllerRevision of the current template (made or renumbered if needed), and the others."""
        owned = [r for r in self.ctx.informers(REVISIONS).cache.by_index("owner", ds["metadata"]["uid"])
                 if (controller_of(r) or {}).get("uid") == ds["metadata"]["uid"]]
        data = revision_data(ds)
        current = [r for r in owned if r.get("data") == data]
        old = [r for r in owned if r.get("data") != data]
        number = max((int(r.get("revision") or 0) for r in old), default=0) + 1
        if not current:
            return await self._snapshot(ds, data, number), old
        cur = max(current, key=lambda r: int(r.get("revision") or 0))
        if int(cur.get("revision") or 0) < number:
            cur = await self.ctx.client.update(REVISIONS, {**cur, "revision": number})
        return cur, old

    async def _snapshot(self, ds: dict[str, Any], data: dict[str, Any], number: int) -> dict[str, Any]:
        hash_, md = template_hash(ds), ds["metadata"]
        name, labels = f"{md['name']}-{hash_}", {**meta.labels_of(ds["spec"].get("template") or {}), HASH_LABEL: hash_}
        body = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "data": data, "revision": number,
                "metadata": {"name": name, "namespace": md["namespace"], "labels": labels,
                             "ownerReferences": [owner_reference(ds, DAEMONSETS)]}}
        try:
            return await self.ctx.client.create(REVISIONS, body, md["namespace"])
        except errors.AlreadyExists:
            existing = await self.ctx.client.get(REVISIONS, name, md["namespace"])
            if existing.get("data") == data and (controller_of(existing) or {}).get("uid") == md["uid"]:
                return existing  # ours, not yet in the cache
        # A hash collision: a new collisionCount gives the template another hash (as upstream).
        status = ds.get("status") or {}
        await self.ctx.client.update_status(DAEMONSETS, {**ds, "status": {
            **status, "collisionCount": int(status.get("collisionCount") or 0) + 1}})
        raise errors.Conflict(f"controller revision {name} exists with other data")

    async def _cleanup_history(self, ds: dict[str, Any], old: list[dict[str, Any]],
                               by_node: dict[str, list[dict[str, Any]]]) -> None:
        limit = int(ds["spec"].get("revisionHistoryLimit", 10))
        live = {meta.labels_of(p).get(HASH_LABEL) for pods in by_node.values() for p in pods}
        unused = sorted((r for r in old if meta.labels_of(r).get(HASH_LABEL) not in live),
                        key=lambda r: int(r.get("revision") or 0))
        for revision in unused[:max(0, len(old) - limit)]:
            try:
                await self.ctx.client.delete(REVISIONS, meta.name_of(revision), meta.namespace_of(revision))
            except errors.NotFound:
                continue

    # -- pods ------------------------------------------------------------------------------

    async def _manage(self, key: str, ds: dict[str, Any], nodes: list[dict[str, Any]],
                      by_node: dict[str, list[dict[str, Any]]], hash_: str) -> None:
        """Create a pod where one should run and none does; delete failed, surplus and misplaced pods."""
        spec = daemon_pod_spec(ds)
        create_on: list[str] = []
        delete: list[dict[str, Any]] = []
        for node in nodes:
            name = meta.name_of(node)
            run, stay = should_run(spec, node)
            live = [p for p in by_node.get(name, []) if not meta.is_terminating(p)]
            if run:
                running = [p for p in live if not is_terminal(p)]
                delete += self._failed_to_delete(key, ds, name, [p for p in live if p not in running])
                if not running:
                    create_on.append(name)
                delete += sorted(running, key=_age)[1:]
            elif not stay:
                delete += live
        await self._sync_nodes(key, ds, create_on, delete, hash_)

    def _failed_to_delete(self, key: str, ds: dict[str, Any], node: str,
                          done: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Finished pods to delete now; a failing node is retried with exponential backoff, as upstream."""
        failed = [p for p in done if phase_of(p) == FAILED]
        if not failed:
            return done
        now = self.now()
        delay, since = self.failed_backoff.get((key, node), (0.0, now))
        if now < since + timedelta(seconds=delay):
            self.queue.add_after(key, (since + timedelta(seconds=delay) - now).total_seconds())
            return [p for p in done if p not in failed]
        self.failed_backoff[(key, node)] = (min(FAILED_BACKOFF_MAX, max(FAILED_BACKOFF, delay * 2)), now)
        for pod in failed:
            self.ctx.recorder.event(ds, "Warning", "FailedDaemonPod",
                                    f"Found failed daemon pod {meta.key_of(pod)} on node {node}, will try to kill it")
        return done

    async def _rolling_update(self, key: str, ds: dict[str, Any], nodes: list[dict[str, Any]],
                              by_node: dict[str, list[dict[str, Any]]], hash_: str) -> None:
        """Delete old pods on as many nodes as maxUnavailable allows; `_manage` then replaces them."""
        spec, now = daemon_pod_spec(ds), self.now()
        min_ready = int(ds["spec"].get("minReadySeconds") or 0)
        wanted = [meta.name_of(n) for n in nodes if should_run(spec, n)[0]]
        unavailable, replace, candidates = 0, [], []
        for node in sorted(set(by_node) | set(wanted)):
            live = [p for p in by_node.get(node, []) if not meta.is_terminating(p)]
            new = [p for p in live if meta.labels_of(p).get(HASH_LABEL) == hash_]
            old = [p for p in live if p not in new]
            if len(new) > 1 or len(old) > 1 or len(new) == len(old):
                unavailable += 1  # `_manage` sorts these out first
            elif new:
                unavailable += 0 if is_available(new[0], min_ready, now) else 1
            elif not is_available(old[0], min_ready, now):
                replace.append(old[0])
            else:
                candidates.append(old[0])
        room = min(len(candidates), max(0, max_unavailable(ds, len(wanted)) - unavailable))
        await self._sync_nodes(key, ds, [], replace + candidates[:room], hash_)

    async def _sync_nodes(self, key: str, ds: dict[str, Any], create_on: list[str], delete: list[dict[str, Any]],
                          hash_: str) -> None:
        create_on, delete = create_on[:BURST], delete[:BURST]
        if delete:
            self.expectations.expect_deletions(key, [p["metadata"]["uid"] for p in delete])
            await asyncio.gather(*(self._delete(key, ds, p) for p in delete))
        if create_on:
            await self._create(key, ds, create_on, hash_)

    async def _create(self, key: str, ds: dict[str, Any], nodes: list[str], hash_: str) -> None:
        """Create in batches of 1, 2, 4, ... so a failing template fails fast (upstream's slow start)."""
        self.expectations.expect_creations(key, len(nodes))
        done, batch, ns = 0, SLOW_START_INITIAL, ds["metadata"]["namespace"]
        while done < len(nodes):
            chunk = nodes[done:done + batch]
            results = await asyncio.gather(*(self.ctx.client.create(PODS, daemon_pod(ds, n, hash_), ns) for n in chunk),
                                           return_exceptions=True)
            done += len(chunk)
            failed = [r for r in results if isinstance(r, BaseException)]
            for r in results:
                if isinstance(r, dict):
                    self.ctx.recorder.event(ds, "Normal", "SuccessfulCreate", f"Created pod: {r['metadata']['name']}")
            if failed:
                for _ in range(len(failed) + len(nodes) - done):  # these will never show up
                    self.expectations.created(key)
                self.ctx.recorder.event(ds, "Warning", "FailedCreate", f"Error creating: {failed[0]}")
                raise failed[0]
            batch *= 2

    async def _delete(self, key: str, ds: dict[str, Any], pod: dict[str, Any]) -> None:
        md = pod["metadata"]
        try:
            await self.ctx.client.delete(PODS, md["name"], md["namespace"], preconditions={"uid": md["uid"]})
            self.ctx.recorder.event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {md['name']}")
        except (errors.NotFound, errors.Conflict):  # gone, or replaced by a pod of that name
            self.expectations.deleted(key, md["uid"])

    # -- status ----------------------------------------------------------------------------

    async def _update_status(self, ds: dict[str, Any], nodes: list[dict[str, Any]],
                             by_node: dict[str, list[dict[str, Any]]], hash_: str) -> None:
        spec, now = daemon_pod_spec(ds), self.now()
        min_ready = int(ds["spec"].get("minReadySeconds") or 0)
        counts = dict.fromkeys(("desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled",
                                "numberReady", "numberAvailable", "updatedNumberScheduled"), 0)
        for node in nodes:
            pods = sorted((p for p in by_node.get(meta.name_of(node), [])
                           if not (meta.is_terminating(p) and is_terminal(p))),
                          key=_age)
            if not should_run(spec, node)[0]:
                counts["numberMisscheduled"] += 1 if pods else 0
                continue
            counts["desiredNumberScheduled"] += 1
            if not pods:
                continue
            counts["currentNumberScheduled"] += 1
            counts["numberReady"] += int(is_ready(pods[0]))
            counts["numberAvailable"] += int(is_available(pods[0], min_ready, now))
            counts["updatedNumberScheduled"] += int(meta.labels_of(pods[0]).get(HASH_LABEL) == hash_)
        old = ds.get("status") or {}
        status = {**old, **counts, "numberUnavailable": counts["desiredNumberScheduled"] - counts["numberAvailable"],
                  "observedGeneration": ds["metadata"].get("generation", 0)}
        if any(old.get(k, 0) != v for k, v in status.items()):
            try:
                await self.ctx.client.update_status(DAEMONSETS, {**ds, "status": status})
            except (errors.Conflict, errors.NotFound):
                self.queue.add_after(meta.key_of(ds), 0.1)
        if min_ready and counts["numberReady"] > counts["numberAvailable"]:
            self.queue.add_after(meta.key_of(ds), float(min_ready))
