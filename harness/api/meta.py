"""Object metadata: the fields every stored object carries, and the helpers around them.

Objects are plain JSON dicts as on the wire. These helpers read and stamp `metadata` the
way the Kubernetes apiserver does (uid, creationTimestamp, generation, generateName, ...).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

# Upstream's generateName alphabet: no vowels (no words), no look-alike characters.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NAME_SUFFIX_LEN = 5
_MAX_GENERATED_PREFIX = 63 - _NAME_SUFFIX_LEN

#: Fields the server owns: a client's values for them are ignored on create and update.
SYSTEM_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                 "generation", "resourceVersion", "selfLink")


def now() -> datetime:
    return datetime.now(UTC)


def format_time(when: datetime) -> str:
    """RFC 3339 with second precision, as `metav1.Time` is serialised."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return format_time(now())


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_uid() -> str:
    return str(uuid.uuid4())


def generate_name(prefix: str) -> str:
    """`generateName` + a random suffix, the prefix trimmed so the name stays a DNS label."""
    suffix = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(_NAME_SUFFIX_LEN))
    return prefix[:_MAX_GENERATED_PREFIX] + suffix


def metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's metadata dict, created if absent."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        md = {}
        obj["metadata"] = md
    return md


def name_of(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def namespace_of(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def resource_version_of(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def is_terminating(obj: dict[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def object_key(namespace: str, name: str) -> str:
    """The workqueue/informer key of an object: `ns/name`, or `name` if cluster-scoped."""
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.rpartition("/")
    return namespace, name
