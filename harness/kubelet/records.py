"""What the kubelet remembers about each pod between syncs; all of it can be rebuilt from disk and the API."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from harness.kubelet.containers import PodSandbox
from harness.util import rfc3339


def epoch(stamp: str | None) -> float:
    """Seconds since the epoch of an RFC 3339 time (0.0 for none)."""
    if not stamp:
        return 0.0
    try:
        return rfc3339.parse_time(stamp).timestamp()
    except ValueError:
        return 0.0


@dataclass
class PodRecord:
    """What the kubelet remembers about one pod between syncs (all of it can be rebuilt from disk)."""

    uid: str
    pod: dict[str, Any]
    first_seen: float = field(default_factory=time.monotonic)
    sandbox: PodSandbox | None = None
    start_time: str = ""
    volumes_at: float = 0.0
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    killing: asyncio.Task[None] | None = None
    start_reported: bool = False
    last_status: dict[str, Any] | None = None
    deleted: bool = False
    pull_failed_at: float = 0.0
