"""The kubelet's container environment and argv: sources, precedence, $(VAR) expansion, upstream error texts."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from harness.kubelet.env import (
    container_env,
    expand,
    expand_command,
    expand_static,
    expand_subpath_expr,
    format_map,
    go_quote,
    mapping_for,
    merge_image_env,
    resolve_argv,
    resource_field_value,
)
from harness.kubelet.errors import ContainerConfigError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


OBJECTS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("ConfigMap", "default", "app-config"): {"data": {"color": "blue", "size": "L", "1bad": "x"}},
    ("ConfigMap", "default", "other"): {"data": {"color": "red"}},
    ("Secret", "default", "db"): {"data": {"password": b64("s3cret"), "user": b64("admin")}},
}


class Fetcher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append((kind, namespace, name))
        return OBJECTS.get((kind, namespace, name))


def make_pod(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "namespace": "default", "uid": "u-1",
                     "labels": {"app": "web", "tier": "front"}, "annotations": {"note": 'say "hi"'}},
        "spec": {"containers": [container], "nodeName": "node-a", "serviceAccountName": "builder", **spec},
        "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}], "hostIP": "192.168.0.2"},
    }


async def env_of(container: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    pod = make_pod(container)
    result = await container_env(pod, container, Fetcher(), **kwargs)
    return dict(item.split("=", 1) for item in result)


# ---------------------------------------------------------------------------------------------- expansion


@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)", "1"),
    ("x$(A)y$(B)z", "x1y2z"),
    ("$$(A)", "$(A)"),             # $$ escapes
    ("$$", "$"),
    ("$(UNKNOWN)", "$(UNKNOWN)"),  # unknown references stay as written
    ("$(A", "$(A"),                # unterminated
    ("$A", "$A"),                  # no parenthesis: not a reference
    ("a$", "a$"),                  # trailing operator
    ("$()", "$()"),
    ("$$$(A)", "$1"),
])
def test_expansion_follows_upstream_rules(text: str, expected: str) -> None:
    assert expand(text, mapping_for({"A": "1", "B": "2"})) == expected


def test_mapping_tries_contexts_in_order() -> None:
    assert expand("$(X)", mapping_for({"X": "first"}, {"X": "second", "Y": "y"})) == "first"
    assert expand("$(Y)", mapping_for({"X": "first"}, {"X": "second", "Y": "y"})) == "y"


def test_expand_command_uses_the_final_env() -> None:
    assert expand_command(["echo", "$(MSG)", "$(NOPE)", "$$(MSG)"], ["MSG=hi there", "MSG=later"]) == \
        ["echo", "later", "$(NOPE)", "$(MSG)"]


def test_expand_static_sees_only_literal_values() -> None:
    container = {"env": [{"name": "A", "value": "a"},
                         {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
    assert expand_static(["$(A)", "$(B)", "$(C)"], container) == ["a", "", "$(C)"]


def test_subpath_expr_requires_every_variable() -> None:
    assert expand_subpath_expr("logs/$(POD)", ["POD=web-1"]) == "logs/web-1"
    with pytest.raises(ContainerConfigError, match="missing value for A, B"):
        expand_subpath_expr("$(B)/$(A)/$(POD)", ["POD=web-1", "A="])


# ---------------------------------------------------------------------------------------------- sources


async def test_literal_values_expand_against_earlier_variables_only() -> None:
    env = await env_of({"name": "c", "env": [
        {"name": "GREETING", "value": "hello"},
        {"name": "MSG", "value": "$(GREETING) $(LATER) $$(GREETING)"},
        {"name": "LATER", "value": "late"},
    ]})
    assert env == {"GREETING": "hello", "MSG": "hello $(LATER) $(GREETING)", "LATER": "late"}


async def test_env_from_configmap_and_secret_with_prefix() -> None:
    env = await env_of({"name": "c", "envFrom": [
        {"configMapRef": {"name": "app-config"}},
        {"secretRef": {"name": "db"}, "prefix": "DB_"},
    ]})
    # Relaxed env var names (upstream GA): keys such as "1bad" are passed through.
    assert env == {"1bad": "x", "color": "blue", "size": "L", "DB_password": "s3cret", "DB_user": "admin"}


async def test_order_and_precedence() -> None:
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "app-config"}},
                                          {"configMapRef": {"name": "other"}}],
                 "env": [{"name": "size", "value": "XL"}, {"name": "EXTRA", "value": "$(color)-$(SVC_HOST)"}]}
    pod = make_pod(container)
    result = await container_env(pod, container, Fetcher(), service_env={"SVC_HOST": "10.96.0.9", "color": "svc"})
    assert result == ["SVC_HOST=10.96.0.9", "color=red", "1bad=x", "size=XL", "EXTRA=red-10.96.0.9"]


async def test_value_from_keys() -> None:
    env = await env_of({"name": "c", "env": [
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "color"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "OPT1", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "nope", "optional": True}}},
        {"name": "OPT2", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k", "optional": True}}},
        {"name": "OPT3", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope", "optional": True}}},
    ]})
    assert env == {"COLOR": "blue", "PASSWORD": "s3cret"}


async def test_objects_are_fetched_once_per_computation() -> None:
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "app-config"}}],
                 "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "color"}}},
                         {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "size"}}}]}
    fetch = Fetcher()
    await container_env(make_pod(container), container, fetch)
    assert fetch.calls == [("ConfigMap", "default", "app-config")]


async def test_optional_env_from_tolerates_a_missing_object() -> None:
    env = await env_of({"name": "c", "envFrom": [{"configMapRef": {"name": "missing", "optional": True}},
                                                 {"secretRef": {"name": "missing", "optional": True}}]})
    assert env == {}


@pytest.mark.parametrize(("entry", "message"), [
    ({"envFrom": [{"configMapRef": {"name": "app-configs"}}]}, 'configmap "app-configs" not found'),
    ({"envFrom": [{"secretRef": {"name": "dbx"}}]}, 'secret "dbx" not found'),
    ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "shade"}}}]},
     "couldn't find key shade in ConfigMap default/app-config"),
    ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]},
     'configmap "gone" not found'),
    ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "token"}}}]},
     "couldn't find key token in Secret default/db"),
    ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db2", "key": "token"}}}]},
     'secret "db2" not found'),
    ({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
     "field label not supported: spec.bogus"),
    ({"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]},
     "unsupported container resource : limits.gpu"),
    ({"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "containerName": "z"}}}]},
     "container z not found"),
])
async def test_missing_references_raise_upstream_messages(entry: dict[str, Any], message: str) -> None:
    container = {"name": "c", **entry}
    with pytest.raises(ContainerConfigError) as caught:
        await container_env(make_pod(container), container, Fetcher())
    assert caught.value.message == message
    assert caught.value.reason == "CreateContainerConfigError"


async def test_field_refs() -> None:
    def ref(path: str) -> dict[str, Any]:
        return {"name": path.replace(".", "_").replace("'", "").replace("[", "_").replace("]", ""),
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}

    paths = ["metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels['app']",
             "metadata.annotations['note']", "metadata.labels['absent']", "spec.nodeName",
             "spec.serviceAccountName", "status.hostIP", "status.podIP", "status.podIPs", "metadata.labels"]
    env = await env_of({"name": "c", "env": [ref(p) for p in paths]}, pod_ip="10.244.1.5", host_ip="192.168.0.2")
    assert env == {
        "metadata_name": "web-1", "metadata_namespace": "default", "metadata_uid": "u-1",
        "metadata_labels_app": "web", "metadata_annotations_note": 'say "hi"', "metadata_labels_absent": "",
        "spec_nodeName": "node-a", "spec_serviceAccountName": "builder", "status_hostIP": "192.168.0.2",
        "status_podIP": "10.244.1.5", "status_podIPs": "10.244.1.5", "metadata_labels": 'app="web"\ntier="front"',
    }


async def test_pod_ip_argument_wins_over_status() -> None:
    container = {"name": "c", "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                      {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}
    pod = make_pod(container)
    pod["status"] = {}
    del pod["spec"]["nodeName"]
    result = await container_env(pod, container, Fetcher(), pod_ip="10.1.1.1", node_name="node-b")
    assert result == ["IP=10.1.1.1", "NODE=node-b"]


async def test_resource_field_refs_with_divisors() -> None:
    resources = {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m", "memory": "64Mi"}}

    def ref(name: str, resource: str, divisor: str | None = None) -> dict[str, Any]:
        field: dict[str, Any] = {"resource": resource}
        if divisor:
            field["divisor"] = divisor
        return {"name": name, "valueFrom": {"resourceFieldRef": field}}

    env = await env_of({"name": "c", "resources": resources, "env": [
        ref("LIM_CPU", "limits.cpu"), ref("LIM_CPU_M", "limits.cpu", "1m"), ref("LIM_MEM", "limits.memory"),
        ref("LIM_MEM_MI", "limits.memory", "1Mi"), ref("REQ_CPU_M", "requests.cpu", "1m"),
        ref("REQ_MEM_KI", "requests.memory", "1Ki"), ref("ZERO_DIV", "limits.memory", "0"),
    ]})
    assert env == {"LIM_CPU": "1", "LIM_CPU_M": "500", "LIM_MEM": str(128 * 2**20), "LIM_MEM_MI": "128",
                   "REQ_CPU_M": "250", "REQ_MEM_KI": str(64 * 1024), "ZERO_DIV": str(128 * 2**20)}


def test_unset_limits_fall_back_to_node_allocatable_or_zero() -> None:
    container: dict[str, Any] = {"name": "c"}
    assert resource_field_value(container, {"resource": "limits.memory"}) == "0"
    assert resource_field_value(container, {"resource": "limits.cpu", "divisor": "1m"},
                                {"cpu": "2", "memory": "1Gi"}) == "2000"
    assert resource_field_value(container, {"resource": "requests.cpu"}, {"cpu": "2"}) == "0"


def test_downward_map_format_quotes_like_go() -> None:
    assert go_quote('a"b\\c\n\t\x01é') == '"a\\"b\\\\c\\n\\t\\x01é"'
    assert format_map({"b": "2", "a": "x y"}) == 'a="x y"\nb="2"'
    assert format_map({}) == ""


# ---------------------------------------------------------------------------------------------- argv and image env


@pytest.mark.parametrize(("container", "entrypoint", "cmd", "argv"), [
    ({}, ["/entry"], ["default"], ["/entry", "default"]),
    ({"args": ["a", "b"]}, ["/entry"], ["default"], ["/entry", "a", "b"]),
    ({"command": ["/bin/sh"]}, ["/entry"], ["default"], ["/bin/sh"]),
    ({"command": ["/bin/sh"], "args": ["-c", "x"]}, ["/entry"], ["default"], ["/bin/sh", "-c", "x"]),
    ({}, [], ["/bin/sh", "-c", "x"], ["/bin/sh", "-c", "x"]),
    ({"args": ["only"]}, [], ["ignored"], ["only"]),
    ({}, [""], ["/bin/true"], ["/bin/true"]),
])
def test_resolve_argv(container: dict[str, Any], entrypoint: list[str], cmd: list[str], argv: list[str]) -> None:
    assert resolve_argv(container, entrypoint, cmd) == argv


def test_resolve_argv_expands_container_fields_only() -> None:
    container = {"command": ["/bin/echo", "$(MSG)"], "args": ["$(NOPE)"]}
    assert resolve_argv(container, ["$(MSG)"], [], env=["MSG=hi"]) == ["/bin/echo", "hi", "$(NOPE)"]
    assert resolve_argv({}, ["$(MSG)"], [], env=["MSG=hi"]) == ["$(MSG)"]


def test_no_command_is_a_create_container_error() -> None:
    with pytest.raises(ContainerConfigError) as caught:
        resolve_argv({}, [], [])
    assert caught.value.reason == "CreateContainerError"
    assert caught.value.message == "no command specified"


def test_merge_image_env() -> None:
    image = ["PATH=/usr/bin:/bin", "HOME=/root", "LANG=C"]
    assert merge_image_env(image, ["HOME=/home/app", "X=1=2"]) == \
        ["PATH=/usr/bin:/bin", "HOME=/home/app", "LANG=C", "X=1=2"]
    assert merge_image_env(image, []) == image
