"""DefaultBinder: bind through the API, POST pods/{name}/binding (409 if someone bound it first)."""

from __future__ import annotations

from typing import Any

from harness.api import errors, registry
from harness.client.rest import Client
from harness.scheduler.framework import CycleState, Handle, PodInfo, Status

NAME = "DefaultBinder"
PODS = registry.by_path("", "v1", "pods")


def binding(pod: PodInfo, node_name: str) -> dict[str, Any]:
    # The uid makes the apiserver refuse to bind a same-named pod created since we looked.
    return {"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}


class DefaultBinder:
    NAME = NAME

    def __init__(self, handle: Handle, **args: Any) -> None:
        self.client: Client | None = handle.client

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        if self.client is None:
            return Status.error(f"{NAME} has no API client")
        path = Client.path(PODS, pod.namespace, pod.name, "binding")
        try:
            await self.client.request("POST", path, body=binding(pod, node_name))
        except errors.ApiError as err:
            return Status.error(f"binding rejected: {err}")
        return None
