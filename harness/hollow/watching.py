"""List-then-watch of one kind, and a de-duplicating queue of keys for workers.

Deliberately small (the hollow kubelet needs no shared cache): `list_watch` lists, hands the
items over, then watches from the list's resourceVersion, resuming from the last version it
saw when the server ends the stream and relisting when that version is gone (410). The
`KeyQueue` holds keys, never objects; a key is given to one worker at a time, and a key
added while it is being worked on is worked on again afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from harness.api import errors
from harness.api.registry import Kind
from harness.client.rest import Client

log = logging.getLogger(__name__)

OnList = Callable[[list[dict[str, Any]]], None]
OnEvent = Callable[[str, dict[str, Any]], None]


async def list_watch(client: Client, kind: Kind, *, on_list: OnList, on_event: OnEvent,
                     label_selector: str = "", field_selector: str = "",
                     synced: asyncio.Event | None = None, max_backoff: float = 10.0) -> None:
    """Run forever: list (on_list), then watch (on_event per change), relisting on 410 Gone."""
    version = ""
    backoff = 0.2
    while True:
        try:
            if not version:
                listed = await client.list_all(kind, label_selector=label_selector, field_selector=field_selector)
                version = listed["metadata"]["resourceVersion"]
                on_list(listed["items"])
                if synced is not None:
                    synced.set()
            async for event in client.watch(kind, resource_version=version, label_selector=label_selector,
                                            field_selector=field_selector):
                version = event.obj.get("metadata", {}).get("resourceVersion") or version
                if event.type != "BOOKMARK":
                    on_event(event.type, event.obj)
                backoff = 0.2
        except errors.Gone:
            log.info("watch of %s expired at %s; relisting", kind.plural, version)
            version = ""
        except errors.ApiError as exc:
            log.warning("list/watch of %s failed (%s); retrying in %.1fs", kind.plural, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)


class KeyQueue:
    """Keys to work on: de-duplicated while waiting, never handed to two workers at once."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()

    def __len__(self) -> int:
        return len(self._dirty)

    def add(self, key: str) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def idle(self) -> bool:
        return not self._dirty and not self._processing
