"""The official `kubernetes` Python client against the apiserver: list, watch, CRUD, patch."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.integration.apiserver_fixtures import ApiServerProcess


@pytest.fixture
def k8s(apiserver: ApiServerProcess) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(apiserver.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(k8s: client.ApiClient) -> str:
    name = f"py-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(k8s).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def test_create_get_replace_patch_delete(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"a": "1"}), data={"k": "v"})
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid and created.data == {"k": "v"}
    got = core.read_namespaced_config_map("cfg", namespace)
    got.data["k"] = "w"
    replaced = core.replace_namespaced_config_map("cfg", namespace, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    patched = core.patch_namespaced_config_map("cfg", namespace, {"metadata": {"labels": {"b": "2"}}})
    assert patched.metadata.labels == {"a": "1", "b": "2"}
    stale = got  # carries the resourceVersion from before the replace
    stale.data["k"] = "x"
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("cfg", namespace, stale)
    assert exc.value.status == 409
    core.delete_namespaced_config_map("cfg", namespace)
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("cfg", namespace)
    assert exc.value.status == 404


def test_list_and_deployment_roundtrip(k8s: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(k8s)
    labels = {"app": "py"}
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))))
    apps.create_namespaced_deployment(namespace, dep)
    listed = apps.list_namespaced_deployment(namespace)
    assert [d.metadata.name for d in listed.items] == ["py"]
    d = listed.items[0]
    assert d.spec.strategy.type == "RollingUpdate" and d.spec.template.spec.restart_policy == "Always"
    scale = apps.patch_namespaced_deployment_scale("py", namespace, {"spec": {"replicas": 4}})
    assert scale.spec.replicas == 4
    assert len(client.AppsV1Api(k8s).list_deployment_for_all_namespaces(label_selector="").items) >= 1


def test_watch_streams_events(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def consume() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=20):
            seen.append((ev["type"], ev["object"].metadata.name))
            if len(seen) == 3:
                w.stop()
        done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w")))
    core.patch_namespaced_config_map("w", namespace, {"data": {"x": "y"}})
    core.delete_namespaced_config_map("w", namespace)
    assert done.wait(25), f"watch saw only {seen}"
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
