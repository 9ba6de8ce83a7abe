"""Getting a container's image as its imagePullPolicy says, with upstream's events and pull back-off.

Always / IfNotPresent / Never against the node's store and the `Puller`. With no registry
reachable, Always falls back to the node's copy; a missing image is ErrImagePull, then
ImagePullBackOff while the back-off (the kubelet's, keyed per pod and container) runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.client.events import EventRecorder
from harness.kubelet.backoff import Backoff
from harness.kubelet.containers import pull_policy
from harness.kubelet.images.imagestore import Image, ImagePullError, ImageStore, Puller
from harness.kubelet.records import PodRecord


class ImageManager:
    def __init__(self, store: ImageStore, puller: Puller, backoff: Backoff, recorder: EventRecorder,
                 requeue: Callable[[str, float], None]) -> None:
        self.store = store
        self.puller = puller
        self.backoff = backoff
        self.recorder = recorder
        self.requeue = requeue

    async def ensure(self, record: PodRecord, spec: dict[str, Any]) -> Image | None:
        """The image for a container per its imagePullPolicy; None (and the waiting reason set) when unavailable."""
        pod, name = record.pod, spec["name"]
        ref = str(spec.get("image") or "")
        policy = pull_policy(spec)
        image = self.store.get(ref)
        key = f"{record.uid}/{name}/pull"
        if policy == "Never" and image is None:
            message = f'Container image "{ref}" is not present with pull policy of Never'
            record.waiting[name] = ("ErrImageNeverPull", message)
            self.recorder.event(pod, "Warning", "ErrImageNeverPull", message)
            return None
        if image is not None and policy != "Always":
            self.recorder.event(pod, "Normal", "Pulled", f'Container image "{ref}" already present on machine')
            return image
        now = time.time()
        waited = self.backoff.wait(key, failed_at=record.pull_failed_at, now=now)
        if waited > 0 and image is None:
            record.waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{ref}"')
            self.requeue(record.uid, waited + 0.01)
            return None
        self.recorder.event(pod, "Normal", "Pulling", f'Pulling image "{ref}"')
        try:
            pulled = await self.puller.pull(ref, self.store)
            self.backoff.forget(key)
            self.recorder.event(pod, "Normal", "Pulled", f'Successfully pulled image "{ref}"')
            return pulled
        except ImagePullError as exc:
            if image is not None:  # Always, but no registry: the node's copy will do
                self.recorder.event(pod, "Normal", "Pulled", f'Container image "{ref}" already present on machine '
                                    "(no registry reachable; using the node's copy)")
                return image
            self.backoff.retrying(key)
            record.pull_failed_at = now
            record.waiting[name] = ("ErrImagePull", str(exc.message))
            self.recorder.event(pod, "Warning", "Failed", f'Failed to pull image "{ref}": {exc.message}')
            self.requeue(record.uid, self.backoff.delay(key) + 0.01)
            return None
