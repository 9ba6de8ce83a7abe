"""The kubelet's own errors: what stops a container from being created, worded as upstream words it.

`reason` is what the kubelet puts in the container's `state.waiting.reason` (or in the event it records);
`message` is the text after it, exactly as Kubernetes phrases it, so `kubectl describe` reads the same.
"""

from __future__ import annotations


class KubeletError(Exception):
    """Base of every error the kubelet raises on purpose."""


class ContainerConfigError(KubeletError):
    """The container cannot be configured: a missing ConfigMap/Secret/key, an unusable command, a bad subPath.

    The default reason is upstream's `CreateContainerConfigError`; errors that upstream only meets when the
    runtime creates the container (such as "no command specified") carry `CreateContainerError`.
    """

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class VolumeError(KubeletError):
    """A pod volume could not be set up; the pod stays in ContainerCreating and a FailedMount event says why.

    `message` is the upstream error (`configmap "x" not found`, `hostPath type check failed: ...`);
    `event_message` is the full event text (`MountVolume.SetUp failed for volume "x" : ...`).
    """

    reason = "FailedMount"

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {message}')
        self.volume = volume
        self.message = message

    @property
    def event_message(self) -> str:
        return str(self)


__all__ = ["ContainerConfigError", "KubeletError", "VolumeError"]
