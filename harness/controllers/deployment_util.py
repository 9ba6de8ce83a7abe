"""What the Deployment controller knows about Deployments and ReplicaSets, as pure functions.

The one idea, after upstream's `deploymentutil`: a Deployment's history *is* its ReplicaSets.
The "new" set is the one whose pod template equals the Deployment's (ignoring the
`pod-template-hash` label); every other owned set is "old". Annotations on the sets carry the
rest: the revision (rollout order, read by `kubectl rollout history/undo`), and the desired and
maximum replica counts the Deployment had when it last scaled them (which tell a scaling event
from a rollout, and give each set its share when a scaling event comes mid-rollout).

Nothing here does I/O: the controller (`deployment.py`) reads caches and writes through the
client; the next step of a rollout, and its status, are computed in `deployment_rollout.py`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from harness.api import conditions, meta
from harness.api.meta import Obj

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
#: Deployment annotations not copied to its ReplicaSets (everything else is, e.g. kubernetes.io/change-cause).
SKIP_COPY = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                       DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"})
#: Longest revision-history annotation kept, as upstream.
MAX_REVISION_HISTORY_CHARS = 2000
#: progressDeadlineSeconds / revisionHistoryLimit of MaxInt32 mean "none" (the apps/v1 defaults' old meaning).
MAX_INT32 = 2**31 - 1

PROGRESSING, AVAILABLE, REPLICA_FAILURE = "Progressing", "Available", "ReplicaFailure"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
FAILED_RS_CREATE = "ReplicaSetCreateError"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

# Upstream's safe-encoding alphabet: no vowels (no words), no look-alike characters.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FNV32_OFFSET, _FNV32_PRIME = 0x811C9DC5, 0x01000193


# -- the pod-template hash ----------------------------------------------------------------------


def fnv32a(data: bytes) -> int:
    h = _FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    return "".join(_SAFE_ALPHABET[ord(ch) % len(_SAFE_ALPHABET)] for ch in text)


def compute_hash(template: Obj, collision_count: int | None) -> str:
    """FNV-32a of the template's canonical JSON (plus the collision count), safe-encoded.

    Upstream hashes the Go struct; canonical JSON is our stable equivalent. A collision with a
    set of another template bumps `status.collisionCount`, which changes the hash.
    """
    data = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)
    return safe_encode(str(fnv32a(data)))


def without_hash(template: Obj | None) -> Obj:
    out = copy.deepcopy(template or {})
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
        if not labels:
            del out["metadata"]["labels"]
    return out


def equal_ignore_hash(a: Obj | None, b: Obj | None) -> bool:
    return without_hash(a) == without_hash(b)


def with_label(labels: dict[str, str] | None, key: str, value: str) -> dict[str, str]:
    return {**(labels or {}), key: value}


def selector_with_label(selector: Obj | None, key: str, value: str) -> Obj:
    out = copy.deepcopy(selector or {})
    out["matchLabels"] = with_label(out.get("matchLabels"), key, value)
    return out


# -- reading objects ----------------------------------------------------------------------------


def spec_of(obj: Obj | None) -> Obj:
    return (obj or {}).get("spec") or {}


def replicas(obj: Obj | None) -> int:
    """spec.replicas (the server defaults it to 1)."""
    value = spec_of(obj).get("replicas")
    return 1 if value is None else int(value)


def status_count(obj: Obj | None, name: str) -> int:
    return int(((obj or {}).get("status") or {}).get(name) or 0)


def annotations_of(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def int_annotation(obj: Obj, key: str) -> int | None:
    try:
        return int(annotations_of(obj)[key])
    except (KeyError, ValueError):
        return None


def revision(rs: Obj) -> int:
    return int_annotation(rs, REVISION) or 0


def max_revision(rss: Iterable[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def by_creation(rs: Obj) -> tuple[str, str]:
    """Sort key, oldest first (RFC 3339 UTC timestamps sort as text)."""
    md = rs.get("metadata") or {}
    return (md.get("creationTimestamp") or "", md.get("name") or "")


def by_revision(rs: Obj) -> tuple[int, str, str]:
    return (revision(rs), *by_creation(rs))


def total_replicas(rss: Iterable[Obj | None]) -> int:
    return sum(replicas(rs) for rs in rss if rs is not None)


def total_status(rss: Iterable[Obj | None], name: str) -> int:
    return sum(status_count(rs, name) for rs in rss if rs is not None)


def active(rss: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def find_new(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest set whose template is the Deployment's (there may briefly be two)."""
    template = spec_of(d).get("template")
    return next((rs for rs in sorted(rss, key=by_creation) if equal_ignore_hash(spec_of(rs).get("template"),
                                                                                  template)), None)


# -- strategy numbers ---------------------------------------------------------------------------


def is_rolling(d: Obj) -> bool:
    return (spec_of(d).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """An IntOrString: an int as is, "25%" of total rounded up or down."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        return int(text) if text.isdigit() else 0
    percent = int(text[:-1]) if text[:-1].isdigit() else 0
    return -(-percent * total // 100) if round_up else percent * total // 100


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas; never both zero."""
    rolling = (spec_of(d).get("strategy") or {}).get("rollingUpdate") or {}
    want = replicas(d)
    surge = scaled_value(rolling.get("maxSurge"), want, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable"), want, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # rounding down made both zero: allow one, surge may be blocked by quota
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas(d))


# -- annotations on the sets --------------------------------------------------------------------


def set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    anns = meta.metadata(rs).setdefault("annotations", {})
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(maximum))):
        if anns.get(key) != value:
            anns[key] = value
            changed = True
    return changed


def copy_deployment_annotations(d: Obj, rs: Obj) -> bool:
    anns = meta.metadata(rs).setdefault("annotations", {})
    changed = False
    for key, value in annotations_of(d).items():
        if key not in SKIP_COPY and anns.get(key) != value:
            anns[key] = value
            changed = True
    return changed


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, *, exists: bool) -> bool:
    """Copy the Deployment's annotations; raise the revision to `new_revision` (keeping the old one
    in revision-history: that is a rollback); on a new set, record desired and max replicas."""
    changed = copy_deployment_annotations(d, rs)
    anns = meta.metadata(rs)["annotations"]
    old = anns.get(REVISION)
    if old is not None and not old.isdigit():
        return changed
    if int(old or 0) < new_revision:
        anns[REVISION] = str(new_revision)
        changed = True
        if old is not None:
            anns[REVISION_HISTORY] = _append_history(anns.get(REVISION_HISTORY, ""), old)
    if not exists:
        want = replicas(d)
        changed = set_replicas_annotations(rs, want, want + max_surge(d)) or changed
    return changed


def _append_history(history: str, old: str) -> str:
    revisions = [r for r in history.split(",") if r] + [old]
    while len(",".join(revisions)) > MAX_REVISION_HISTORY_CHARS and len(revisions) > 1:
        revisions.pop(0)
    return ",".join(revisions)


def set_deployment_revision(d: Obj, value: str) -> bool:
    anns = meta.metadata(d).setdefault("annotations", {})
    if not value or anns.get(REVISION) == value:
        return False
    anns[REVISION] = value
    return True


# -- conditions -----------------------------------------------------------------------------------


def new_condition(type_: str, status: str, reason: str, message: str, now: datetime) -> Obj:
    stamp = meta.format_time(now)
    return {"type": type_, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def set_condition(status: Obj, condition: Obj) -> None:
    """Replace the condition of its type, unless status and reason are unchanged; the transition
    time moves only when the status does (upstream's SetDeploymentCondition)."""
    current = conditions.find(status, condition["type"])
    if current is not None and current.get("status") == condition["status"]:
        if current.get("reason") == condition["reason"]:
            return
        condition = {**condition, "lastTransitionTime": current.get("lastTransitionTime")}
    conditions.replace(status, condition)


def has_progress_deadline(d: Obj) -> bool:
    seconds = spec_of(d).get("progressDeadlineSeconds")
    return seconds is not None and seconds != MAX_INT32
