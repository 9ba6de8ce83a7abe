"""The helpers that know one kind's shape: conditions, pod readiness and phases, node readiness, object keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness.api import conditions, meta, nodes, pods
from harness.api.meta import Obj

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
EARLIER, LATER = "2026-01-01T00:00:00Z", "2026-01-01T12:00:00Z"


def with_conditions(*conds: Obj, phase: str = "", deleting: bool = False) -> Obj:
    md: Obj = {"name": "p", "namespace": "ns"}
    if deleting:
        md["deletionTimestamp"] = EARLIER
    status: Obj = {"conditions": list(conds)}
    if phase:
        status["phase"] = phase
    return {"metadata": md, "status": status}


def ready(status: str = "True", since: str | None = EARLIER) -> Obj:
    cond: Obj = {"type": "Ready", "status": status}
    if since is not None:
        cond["lastTransitionTime"] = since
    return cond


# -- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "want"), [
    (None, None),
    ({}, None),
    ({"conditions": None}, None),
    ({"conditions": [{"type": "Initialized", "status": "True"}]}, None),
    ({"conditions": [{"type": "Ready", "status": "False"}, {"type": "Ready", "status": "True"}]},
     {"type": "Ready", "status": "False"}),  # the first one listed, as upstream's lookups
], ids=["no-status", "empty-status", "null-conditions", "other-type", "first-of-two"])
def test_find_returns_the_condition_of_the_type(status: Obj | None, want: Obj | None) -> None:
    assert conditions.find(status, "Ready") == want


@pytest.mark.parametrize(("obj", "want"), [
    ({}, False),
    ({"status": None}, False),
    (with_conditions(), False),
    (with_conditions(ready("True")), True),
    (with_conditions(ready("False")), False),
    (with_conditions(ready("Unknown")), False),
    (with_conditions({"type": "Ready"}), False),
], ids=["no-status", "null-status", "no-conditions", "true", "false", "unknown", "no-status-field"])
def test_is_true_reads_the_objects_status(obj: Obj, want: bool) -> None:
    assert conditions.is_true(obj, "Ready") is want


@pytest.mark.parametrize(("previous", "status", "want"), [
    (None, "True", LATER),
    ({"status": "True", "lastTransitionTime": EARLIER}, "True", EARLIER),
    ({"status": "False", "lastTransitionTime": EARLIER}, "True", LATER),
    ({"status": "True"}, "True", LATER),  # a condition without a time gets one
    ({}, "False", LATER),
], ids=["new", "same-status-keeps-time", "changed-status-moves", "same-status-no-time", "empty-previous"])
def test_transition_time_moves_only_when_the_status_changes(previous: Obj | None, status: str, want: str) -> None:
    assert conditions.transition_time(previous, status, LATER) == want


def test_replace_drops_the_old_condition_of_its_type_and_appends() -> None:
    status: Obj = {"conditions": [ready("False"), {"type": "Initialized", "status": "True"}]}
    conditions.replace(status, ready("True", LATER))
    assert status["conditions"] == [{"type": "Initialized", "status": "True"}, ready("True", LATER)]
    empty: Obj = {}
    conditions.replace(empty, ready())
    assert empty == {"conditions": [ready()]}


@pytest.mark.parametrize(("before", "after"), [
    ({"conditions": [ready(), {"type": "Initialized", "status": "True"}]},
     {"conditions": [{"type": "Initialized", "status": "True"}]}),
    ({"conditions": [ready()]}, {}),  # an emptied list goes
    ({"phase": "Running"}, {"phase": "Running"}),
], ids=["one-of-two", "last-one", "none-there"])
def test_remove_drops_the_conditions_of_a_type(before: Obj, after: Obj) -> None:
    conditions.remove(before, "Ready")
    assert before == after


# -- pods -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pod", "want"), [
    (with_conditions(ready("True")), True),
    (with_conditions(ready("False")), False),
    (with_conditions({"type": "ContainersReady", "status": "True"}), False),
    (with_conditions(), False),
    ({"metadata": {"name": "p"}}, False),
    ({"metadata": {"name": "p"}, "status": None}, False),
    ({"metadata": {"name": "p"}, "status": {"conditions": None}}, False),
], ids=["ready", "not-ready", "only-containers-ready", "no-conditions", "no-status", "null-status",
        "null-conditions"])
def test_is_ready_is_upstreams_is_pod_ready(pod: Obj, want: bool) -> None:
    assert pods.is_ready(pod) is want


@pytest.mark.parametrize(("phase", "deleting", "terminal", "active"), [
    ("", False, False, True),
    ("Pending", False, False, True),
    ("Running", False, False, True),
    ("Running", True, False, False),
    ("Succeeded", False, True, False),
    ("Failed", False, True, False),
    ("Unknown", False, False, True),
])
def test_terminal_and_active_pods(phase: str, deleting: bool, terminal: bool, active: bool) -> None:
    pod = with_conditions(phase=phase, deleting=deleting)
    assert (pods.is_terminal(pod), pods.is_active(pod)) == (terminal, active)


def _ago(seconds: int) -> str:
    return meta.format_time(NOW - timedelta(seconds=seconds))


@pytest.mark.parametrize(("cond", "min_ready", "want"), [
    (ready("False", _ago(100)), 0, False),
    (ready("True", None), 0, True),  # minReadySeconds 0: ready is enough, as upstream
    (ready("True", None), 10, False),  # no transition time: never long enough
    (ready("True", _ago(5)), 10, False),
    (ready("True", _ago(10)), 10, True),
    (ready("True", _ago(60)), 10, True),
], ids=["not-ready", "ready-min-0", "no-time", "too-recent", "exactly-min", "long-ago"])
def test_is_available_after_min_ready_seconds(cond: Obj, min_ready: int, want: bool) -> None:
    assert pods.is_available(with_conditions(cond), min_ready, NOW) is want


# -- nodes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("node", "want"), [
    ({"metadata": {"name": "n"}}, None),
    (with_conditions({"type": "MemoryPressure", "status": "False"}), None),
    (with_conditions(ready("True")), "True"),
    (with_conditions(ready("False")), "False"),
    (with_conditions(ready("Unknown")), "Unknown"),
    (with_conditions({"type": "Ready"}), "Unknown"),
], ids=["no-status", "no-ready-condition", "ready", "not-ready", "unknown", "ready-without-status"])
def test_node_ready_status(node: Obj, want: str | None) -> None:
    assert nodes.ready_status(node) == want


NODE_ADDRESSES = {"status": {"addresses": [{"type": "Hostname", "address": "worker-1"},
                                            {"type": "InternalIP", "address": "192.168.56.21"},
                                            {"type": "InternalIP", "address": "10.0.0.5"}]}}


@pytest.mark.parametrize(("node", "kind", "want"), [
    (NODE_ADDRESSES, "InternalIP", "192.168.56.21"),  # the first of its kind
    (NODE_ADDRESSES, "Hostname", "worker-1"),
    (NODE_ADDRESSES, "ExternalIP", None),
    ({"metadata": {"name": "n"}}, "InternalIP", None),
    ({"status": {"addresses": None}}, "InternalIP", None),
], ids=["internal", "hostname", "missing-kind", "no-status", "null-addresses"])
def test_node_address_of(node: Obj, kind: str, want: str | None) -> None:
    assert nodes.address_of(node, kind) == want


# -- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("metadata", "key"), [
    ({"namespace": "ns", "name": "web"}, "ns/web"),
    ({"name": "worker-1"}, "worker-1"),
    ({"namespace": "", "name": "worker-1"}, "worker-1"),
    ({"namespace": None, "name": "worker-1"}, "worker-1"),
], ids=["namespaced", "cluster-scoped", "empty-namespace", "null-namespace"])
def test_key_of_is_meta_namespace_key(metadata: dict[str, Any], key: str) -> None:
    assert meta.key_of({"metadata": metadata}) == key
    assert meta.object_key(str(metadata.get("namespace") or ""), metadata["name"]) == key


@pytest.mark.parametrize(("key", "parts"), [
    ("ns/web", ("ns", "web")),
    ("worker-1", ("", "worker-1")),
    ("", ("", "")),
    ("/web", ("", "web")),  # as upstream: two parts, the first empty
    ("ns/", ("ns", "")),
])
def test_split_key_is_split_meta_namespace_key(key: str, parts: tuple[str, str]) -> None:
    assert meta.split_key(key) == parts


@pytest.mark.parametrize("key", ["a/b/c", "ns/web/extra", "//"])
def test_split_key_refuses_a_malformed_key(key: str) -> None:
    with pytest.raises(meta.MalformedKey, match="unexpected key format"):
        meta.split_key(key)
    with pytest.raises(ValueError):
        meta.split_key(key)


@pytest.mark.parametrize("obj", [{"metadata": {"namespace": "ns", "name": "web"}}, {"metadata": {"name": "n1"}}])
def test_split_key_inverts_key_of(obj: Obj) -> None:
    assert meta.split_key(meta.key_of(obj)) == (meta.namespace_of(obj), meta.name_of(obj))
