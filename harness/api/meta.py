"""Object metadata: the fields every stored object carries, and the helpers around them.

Objects are plain JSON dicts as on the wire. These helpers read and stamp `metadata` the
way the Kubernetes apiserver does (uid, creationTimestamp, generation, generateName, ...).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from harness.util import rfc3339

# Upstream's generateName alphabet: no vowels (no words), no look-alike characters.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NAME_SUFFIX_LEN = 5
_MAX_GENERATED_PREFIX = 63 - _NAME_SUFFIX_LEN

#: Fields the server owns: a client's values for them are ignored on create and update.
SYSTEM_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                 "generation", "resourceVersion", "selfLink")

#: An API object (or any JSON object within one) as on the wire: the one alias every module uses.
Obj = dict[str, Any]


class MalformedKey(ValueError):
    """A cache/workqueue key that is neither `name` nor `namespace/name`."""


def now() -> datetime:
    return datetime.now(UTC)


def format_time(when: datetime) -> str:
    """RFC 3339 with second precision, as `metav1.Time` is serialised."""
    return rfc3339.format_time(when)


def now_rfc3339() -> str:
    return format_time(now())


def parse_time(text: str) -> datetime:
    """An API time (`metav1.Time` or `MicroTime`) as an aware datetime; ValueError if it is not RFC 3339."""
    return rfc3339.parse_time(text)


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


def name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def resource_version_of(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def object_key(namespace: str, name: str) -> str:
    """The workqueue/informer key of the object `name` in `namespace`: `ns/name`, or `name` if cluster-scoped."""
    return f"{namespace}/{name}" if namespace else name


def key_of(obj: Mapping[str, Any]) -> str:
    """The cache and workqueue key of an object (upstream's `cache.MetaNamespaceKeyFunc`)."""
    return object_key(namespace_of(obj), name_of(obj))


def split_key(key: str) -> tuple[str, str]:
    """(namespace, name) of a key, namespace "" if cluster-scoped (upstream's `cache.SplitMetaNamespaceKey`)."""
    parts = key.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise MalformedKey(f"unexpected key format: {key!r}")
