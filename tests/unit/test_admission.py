"""Admission plugins, called directly with the Attributes the apiserver would pass."""

from __future__ import annotations

from typing import Any

from harness.apiserver.admission import (
    DEFAULT_PLUGINS,
    PLUGINS,
    Attributes,
    DefaultTolerationSeconds,
    PluginContext,
    UserInfo,
)

NOT_READY, UNREACHABLE = "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"


def attrs(obj: dict[str, Any], *, kind: str = "Pod", operation: str = "CREATE", subresource: str = "") -> Attributes:
    return Attributes(operation, kind, "pods", subresource, "ns", "p", obj, None, UserInfo("u"))


def default(key: str, seconds: int = 300) -> dict[str, Any]:
    return {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}


async def test_default_toleration_seconds_adds_both_tolerations_to_a_new_pod() -> None:
    pod: dict[str, Any] = {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    await DefaultTolerationSeconds().admit(attrs(pod))
    assert pod["spec"]["tolerations"] == [default(NOT_READY), default(UNREACHABLE)]


async def test_default_toleration_seconds_keeps_what_the_pod_already_tolerates() -> None:
    own = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 6000}
    pod: dict[str, Any] = {"spec": {"tolerations": [own]}}
    await DefaultTolerationSeconds(not_ready_seconds=30).admit(attrs(pod))
    assert pod["spec"]["tolerations"] == [own, default(NOT_READY, 30)]
    # A toleration of every taint (empty key, any effect) covers both.
    everything: dict[str, Any] = {"spec": {"tolerations": [{"operator": "Exists"}]}}
    await DefaultTolerationSeconds().admit(attrs(everything))
    assert everything["spec"]["tolerations"] == [{"operator": "Exists"}]


async def test_default_toleration_seconds_ignores_other_kinds_and_subresources() -> None:
    node: dict[str, Any] = {"spec": {}}
    await DefaultTolerationSeconds().admit(attrs(node, kind="Node"))
    status: dict[str, Any] = {"spec": {}}
    await DefaultTolerationSeconds().admit(attrs(status, subresource="status", operation="UPDATE"))
    assert node == {"spec": {}} and status == {"spec": {}}


async def test_default_toleration_seconds_is_a_default_plugin_configured_from_the_context() -> None:
    assert "DefaultTolerationSeconds" in DEFAULT_PLUGINS

    async def no_namespace(name: str) -> dict[str, Any] | None:
        return None

    plugin = PLUGINS["DefaultTolerationSeconds"](PluginContext(
        no_namespace, default_not_ready_toleration_seconds=10, default_unreachable_toleration_seconds=20))
    pod: dict[str, Any] = {"spec": {}}
    await plugin.admit(attrs(pod))
    assert pod["spec"]["tolerations"] == [default(NOT_READY, 10), default(UNREACHABLE, 20)]
