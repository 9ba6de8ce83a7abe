"""The next step of a rollout, and how far it has got: pure functions of a Deployment and its sets.

The one idea, after upstream's rolling.go / recreate.go / sync.go / progress.go: a rollout is a
series of small, safe steps, each computed from the sets' current spec and status alone. A
rolling update grows the new set while the sum of all sets' `spec.replicas` stays within
`replicas + maxSurge`, and shrinks old sets only by as many pods as are available beyond
`replicas - maxUnavailable` (counted from the sets' `status.availableReplicas`), unhealthy ones
first. When `spec.replicas` changes mid-rollout, the change is shared among the active sets in
proportion to their size (upstream's `scale()`). The status, conditions included, is computed
the same way, from the sets. The controller applies the `Step`s and writes the status, then
comes back when the sets' status moves.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from harness.api import conditions, meta
from harness.api.meta import Obj
from harness.api.pods import is_terminal
from harness.controllers.deployment_util import (
    AVAILABLE,
    DESIRED_REPLICAS,
    MAX_INT32,
    MAX_REPLICAS,
    MIN_AVAILABLE,
    MIN_UNAVAILABLE,
    NEW_RS_AVAILABLE,
    POD_TEMPLATE_HASH,
    PROGRESSING,
    REPLICA_FAILURE,
    RS_UPDATED,
    TIMED_OUT,
    active,
    by_creation,
    by_revision,
    compute_hash,
    has_progress_deadline,
    int_annotation,
    is_rolling,
    max_revision,
    max_surge,
    max_unavailable,
    new_condition,
    replicas,
    scaled_value,
    selector_with_label,
    set_condition,
    set_new_rs_annotations,
    spec_of,
    status_count,
    total_replicas,
    total_status,
    with_label,
)


@dataclass(frozen=True)
class Step:
    """Scale `rs` to `size`; with `annotate`, also rewrite its replica annotations when only they differ."""

    rs: Obj
    size: int
    annotate: bool = False

    @property
    def name(self) -> str:
        return str(self.rs["metadata"]["name"])


def resized(rs: Obj, size: int) -> Obj:
    out = copy.deepcopy(rs)
    out.setdefault("spec", {})["replicas"] = size
    return out


def merge(steps: list[Step]) -> list[Step]:
    """One step per set (the last size wins, the first object is kept), in first-seen order."""
    by_name: dict[str, Step] = {}
    for step in steps:
        first = by_name.get(step.name)
        by_name[step.name] = step if first is None else Step(first.rs, step.size, first.annotate or step.annotate)
    return [s for s in by_name.values() if s.annotate or s.size != replicas(s.rs)]


# -- rolling update -----------------------------------------------------------------------------


def new_rs_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """The new set's next size: as far toward spec.replicas as the surge allows (all of it for Recreate)."""
    want, have = replicas(d), replicas(new_rs)
    if not is_rolling(d):
        return want
    surge = scaled_value(((spec_of(d).get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge"),
                         want, round_up=True)
    room = want + surge - total_replicas(all_rss)
    if room <= 0:
        return have
    return have + min(room, want - have)


def rolling_new_size(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    want, have = replicas(d), replicas(new_rs)
    if have >= want:
        return want
    return new_rs_replicas(d, all_rss, new_rs)


def rolling_scale_down(d: Obj, new_rs: Obj, old_rss: list[Obj]) -> list[Step]:
    """Shrink old sets: first their unavailable pods, then available ones beyond the minimum."""
    old_active = active(old_rss)
    if total_replicas(old_active) == 0:
        return []
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = replicas(new_rs) - status_count(new_rs, "availableReplicas")
    max_scaled_down = total_replicas([*old_rss, new_rs]) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return []
    steps, old_after = _cleanup_unhealthy(old_active, max_scaled_down)
    steps += _scale_down_old(d, [*old_after, new_rs], old_after)
    return merge(steps)


def _cleanup_unhealthy(old_rss: list[Obj], limit: int) -> tuple[list[Step], list[Obj]]:
    """Removing pods that are not available costs no availability; oldest sets first."""
    steps: list[Step] = []
    after: list[Obj] = []
    done = 0
    for rs in sorted(old_rss, key=by_creation):
        size, unavailable = replicas(rs), replicas(rs) - status_count(rs, "availableReplicas")
        if done < limit and size > 0 and unavailable > 0:
            count = min(limit - done, unavailable)
            steps.append(Step(rs, size - count))
            rs = resized(rs, size - count)
            done += count
        after.append(rs)
    return steps, after


def _scale_down_old(d: Obj, all_rss: list[Obj], old_rss: list[Obj]) -> list[Step]:
    min_available = replicas(d) - max_unavailable(d)
    available = total_status(all_rss, "availableReplicas")
    budget = available - min_available
    steps: list[Step] = []
    for rs in sorted(old_rss, key=by_creation):
        if budget <= 0:
            break
        if replicas(rs) == 0:
            continue
        count = min(replicas(rs), budget)
        steps.append(Step(rs, replicas(rs) - count))
        budget -= count
    return steps


# -- recreate -----------------------------------------------------------------------------------


def old_pods_running(new_rs: Obj | None, old_rss: list[Obj], pods_by_rs: dict[str, list[Obj]]) -> bool:
    """Whether an old set still reports pods, or any pod not of the new set is not yet finished."""
    if total_status(old_rss, "replicas") > 0:
        return True
    new_uid = new_rs["metadata"].get("uid") if new_rs is not None else None
    return any(not is_terminal(pod) for uid, pods in pods_by_rs.items() if uid != new_uid for pod in pods)


# -- scaling events -----------------------------------------------------------------------------


def is_scaling_event(d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> bool:
    """An active set that recorded a different desired size: spec.replicas changed since."""
    want = replicas(d)
    return any(int_annotation(rs, DESIRED_REPLICAS) not in (None, want)
               for rs in active([*old_rss, new_rs]))


def _active_or_latest(new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
    """The one active set, or the newest when none is active; None when several are."""
    newest_first = sorted(old_rss, key=by_creation, reverse=True)
    live = active([*newest_first, new_rs])
    if len(live) == 1:
        return live[0]
    if live:
        return None
    return new_rs if new_rs is not None else (newest_first[0] if newest_first else None)


def _saturated(d: Obj, rs: Obj | None) -> bool:
    want = replicas(d)
    return rs is not None and replicas(rs) == want and status_count(rs, "availableReplicas") == want \
        and int_annotation(rs, DESIRED_REPLICAS) == want


def proportional_steps(d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> list[Step]:
    """Bring the sets to spec.replicas (+ surge while rolling), each taking its share of the change."""
    want = replicas(d)
    single = _active_or_latest(new_rs, old_rss)
    if single is not None:
        return [] if replicas(single) == want else [Step(single, want)]
    if _saturated(d, new_rs):
        return [Step(rs, 0) for rs in active(old_rss)]
    if not is_rolling(d):
        return []
    live = active([*old_rss, new_rs])
    allowed = want + max_surge(d) if want > 0 else 0
    to_add = allowed - total_replicas(live)
    # Largest first; among equals, newer first when growing and older first when shrinking.
    live.sort(key=by_creation, reverse=to_add > 0)
    live.sort(key=replicas, reverse=True)
    sizes, added = [], 0
    for rs in live:
        share = _proportion(rs, d, to_add, added)
        sizes.append(replicas(rs) + share)
        added += share
    if live and to_add:
        sizes[0] = max(sizes[0] + to_add - added, 0)  # the rounding leftover goes to the largest
    return [Step(rs, size, annotate=True) for rs, size in zip(live, sizes, strict=True)]


def _proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction, allowed = _fraction(rs, d), to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _fraction(rs: Obj, d: Obj) -> int:
    """How many replicas this set gains (or loses) if the deployment's maximum is shared by size."""
    if replicas(d) == 0:
        return -replicas(rs)
    before = int_annotation(rs, MAX_REPLICAS)
    if before is None:
        before = status_count(d, "replicas")
    if before <= 0:
        return 0
    return _round_half_away(replicas(rs) * (replicas(d) + max_surge(d)) / before) - replicas(rs)


def _round_half_away(x: float) -> int:
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


# -- revision history ---------------------------------------------------------------------------


def history_to_delete(d: Obj, old_rss: list[Obj]) -> list[Obj]:
    """Old sets beyond revisionHistoryLimit, oldest revision first, that are fully scaled down."""
    limit: Any = spec_of(d).get("revisionHistoryLimit")
    if limit is None or limit == MAX_INT32:
        return []
    alive = sorted((rs for rs in old_rss if not meta.is_terminating(rs)), key=by_revision)
    excess = len(alive) - int(limit)
    return [rs for rs in alive[:max(excess, 0)]
            if replicas(rs) == 0 and status_count(rs, "replicas") == 0
            and int(rs["metadata"].get("generation") or 0) <= status_count(rs, "observedGeneration")]


# -- status -------------------------------------------------------------------------------------


def normalized(status: Obj | None) -> Obj:
    """A status without its zero fields, as Go's omitempty writes it (collisionCount 0 is kept)."""
    return {k: v for k, v in (status or {}).items() if v or (k == "collisionCount" and v is not None)}


def calculate_status(all_rss: list[Obj], new_rs: Obj | None, d: Obj, now: datetime) -> Obj:
    """The counts from the sets, the conditions carried over, and Available set from them."""
    available = total_status(all_rss, "availableReplicas")
    old = d.get("status") or {}
    status: Obj = {
        "observedGeneration": int(d["metadata"].get("generation") or 0),
        "replicas": total_status(all_rss, "replicas"),
        "updatedReplicas": status_count(new_rs, "replicas"),
        "readyReplicas": total_status(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(total_replicas(all_rss) - available, 0),
        "conditions": copy.deepcopy(old.get("conditions") or []),
        "collisionCount": old.get("collisionCount"),
    }
    if available >= replicas(d) - max_unavailable(d):
        cond = new_condition(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now)
    else:
        cond = new_condition(AVAILABLE, "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.",
                             now)
    set_condition(status, cond)
    return normalized(status)


def deployment_complete(d: Obj, status: Obj) -> bool:
    want = replicas(d)
    return all(int(status.get(k) or 0) == want for k in ("updatedReplicas", "replicas", "availableReplicas")) \
        and int(status.get("observedGeneration") or 0) >= int(d["metadata"].get("generation") or 0)


def deployment_progressing(d: Obj, status: Obj) -> bool:
    """More updated, ready or available pods than the last status said, or fewer old ones."""
    old = d.get("status") or {}

    def count(s: Obj, name: str) -> int:
        return int(s.get(name) or 0)

    return count(status, "updatedReplicas") > count(old, "updatedReplicas") \
        or count(status, "replicas") - count(status, "updatedReplicas") \
        < count(old, "replicas") - count(old, "updatedReplicas") \
        or count(status, "readyReplicas") > count(old, "readyReplicas") \
        or count(status, "availableReplicas") > count(old, "availableReplicas")


def progress_deadline(d: Obj, condition: Obj) -> datetime:
    """When the Progressing condition runs out: its last update plus progressDeadlineSeconds."""
    since = meta.parse_time(condition.get("lastUpdateTime") or condition.get("lastTransitionTime") or "")
    return since + timedelta(seconds=int(spec_of(d).get("progressDeadlineSeconds") or 0))


def deployment_timed_out(d: Obj, status: Obj, now: datetime) -> bool:
    if not has_progress_deadline(d):
        return False
    condition = conditions.find(status, PROGRESSING)
    if condition is None or condition.get("reason") == NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == TIMED_OUT:
        return True
    return progress_deadline(d, condition) < now


def rollout_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: datetime) -> Obj:
    """calculate_status plus the Progressing and ReplicaFailure conditions (upstream's syncRolloutStatus)."""
    status = calculate_status(all_rss, new_rs, d, now)
    current = conditions.find(d.get("status"), PROGRESSING)
    if not has_progress_deadline(d):
        conditions.remove(status, PROGRESSING)
    elif not (status.get("replicas", 0) == status.get("updatedReplicas", 0) and current is not None
              and current.get("reason") == NEW_RS_AVAILABLE):
        _estimate_progress(d, status, new_rs, current, now)
    failure = replica_failure(all_rss, new_rs)
    if failure is not None:
        set_condition(status, failure)
    else:
        conditions.remove(status, REPLICA_FAILURE)
    return normalized(status)


def _estimate_progress(d: Obj, status: Obj, new_rs: Obj | None, current: Obj | None, now: datetime) -> None:
    name = (new_rs or d)["metadata"]["name"]
    who = f'ReplicaSet "{name}"' if new_rs is not None else f'Deployment "{name}"'
    if deployment_complete(d, status):
        set_condition(status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                            f"{who} has successfully progressed.", now))
    elif deployment_progressing(d, status):
        # Progress refreshes lastUpdateTime although the reason stays the same: that resets the deadline.
        cond = new_condition(PROGRESSING, "True", RS_UPDATED, f"{who} is progressing.", now)
        if current is not None and current.get("status") == "True":
            cond["lastTransitionTime"] = current.get("lastTransitionTime")
        conditions.remove(status, PROGRESSING)
        set_condition(status, cond)
    elif deployment_timed_out(d, status, now):
        set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT,
                                            f"{who} has timed out progressing.", now))


def replica_failure(all_rss: list[Obj], new_rs: Obj | None) -> Obj | None:
    """The sets' ReplicaFailure condition (the new set's first) as a Deployment condition."""
    for rs in ([new_rs] if new_rs is not None else []) + all_rss:
        cond = conditions.find(rs.get("status"), REPLICA_FAILURE)
        if cond is not None:
            return {"type": REPLICA_FAILURE, "status": cond.get("status"), "reason": cond.get("reason"),
                    "message": cond.get("message"), "lastUpdateTime": cond.get("lastTransitionTime"),
                    "lastTransitionTime": cond.get("lastTransitionTime")}
    return None


def recheck_after(d: Obj, status: Obj, now: datetime) -> float | None:
    """Seconds until a rollout that made no progress passes its deadline (None: nothing to wait for)."""
    current = conditions.find(d.get("status"), PROGRESSING)
    if not has_progress_deadline(d) or current is None or current.get("reason") == TIMED_OUT \
            or deployment_complete(d, status):
        return None
    return (progress_deadline(d, current) - now).total_seconds()


# -- the new set --------------------------------------------------------------------------------


def new_replica_set(d: Obj, old_rss: list[Obj], owner_ref: Obj) -> Obj:
    """`<deployment>-<template hash>`: the template with the hash label, the selector narrowed to it,
    sized as the strategy allows, annotated with the next revision."""
    spec = spec_of(d)
    template = copy.deepcopy(spec.get("template") or {})
    pod_hash = compute_hash(template, (d.get("status") or {}).get("collisionCount"))
    labels = with_label((template.get("metadata") or {}).get("labels"), POD_TEMPLATE_HASH, pod_hash)
    template.setdefault("metadata", {})["labels"] = labels
    rs: Obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": f"{d['metadata']['name']}-{pod_hash}", "namespace": d["metadata"]["namespace"],
                            "labels": dict(labels), "ownerReferences": [owner_ref]},
               "spec": {"replicas": 0, "selector": selector_with_label(spec.get("selector"), POD_TEMPLATE_HASH,
                                                                       pod_hash),
                        "template": template}}
    if spec.get("minReadySeconds"):
        rs["spec"]["minReadySeconds"] = spec["minReadySeconds"]
    rs["spec"]["replicas"] = new_rs_replicas(d, [*old_rss, rs], rs)
    set_new_rs_annotations(d, rs, max_revision(old_rss) + 1, exists=False)
    return rs
