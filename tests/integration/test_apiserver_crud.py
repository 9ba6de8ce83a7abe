"""The API contract over HTTP: verbs, conflicts, pagination, bad input, subresources."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.integration.apiserver_fixtures import Api


def cm(name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {}}


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": "busybox:1.36",
                                                           "ports": [{"containerPort": 80}]}]}}}}


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


async def test_create_stamps_metadata_and_get_returns_it(api: Api, ns: str) -> None:
    status, obj = await api.post(f"/api/v1/namespaces/{ns}/configmaps", cm("a", {"k": "v"}))
    assert status == 201, obj
    md = obj["metadata"]
    assert md["namespace"] == ns and md["uid"] and md["creationTimestamp"].endswith("Z")
    assert int(md["resourceVersion"]) > 0
    status, got = await api.get(f"/api/v1/namespaces/{ns}/configmaps/a")
    assert status == 200 and got == obj


async def test_generate_name_creates_unique_names(api: Api, ns: str) -> None:
    names = set()
    for _ in range(5):
        status, obj = await api.post(f"/api/v1/namespaces/{ns}/configmaps",
                                     {"metadata": {"generateName": "gen-"}, "data": {}})
        assert status == 201, obj
        names.add(obj["metadata"]["name"])
    assert len(names) == 5 and all(n.startswith("gen-") and len(n) == 9 for n in names)


async def test_create_of_existing_name_is_409_already_exists(api: Api, ns: str) -> None:
    assert (await api.post(f"/api/v1/namespaces/{ns}/configmaps", cm("dup")))[0] == 201
    status, body = await api.post(f"/api/v1/namespaces/{ns}/configmaps", cm("dup"))
    assert status == 409 and body["reason"] == "AlreadyExists", body
    assert body["details"] == {"name": "dup", "kind": "configmaps"}


async def test_update_with_stale_resource_version_is_409_conflict(api: Api, ns: str) -> None:
    _, obj = await api.post(f"/api/v1/namespaces/{ns}/configmaps", cm("c", {"v": "1"}))
    fresh = {**obj, "data": {"v": "2"}}
    assert (await api.put(f"/api/v1/namespaces/{ns}/configmaps/c", fresh))[0] == 200
    stale = {**obj, "data": {"v": "3"}}
    status, body = await api.put(f"/api/v1/namespaces/{ns}/configmaps/c", stale)
    assert status == 409 and body["reason"] == "Conflict", body
    _, stored = await api.get(f"/api/v1/namespaces/{ns}/configmaps/c")
    assert stored["data"] == {"v": "2"}


async def test_concurrent_read_modify_write_never_loses_an_update(api: Api, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps/counter"
    await api.post(f"/api/v1/namespaces/{ns}/configmaps", cm("counter", {"n": "0"}))

    async def increment() -> int:
        _, obj = await api.get(path)
        obj["data"]["n"] = str(int(obj["data"]["n"]) + 1)
        status, body = await api.put(path, obj)
        assert status in (200, 409), body
        if status == 409:
            assert body["reason"] == "Conflict"
        return status

    results = await asyncio.gather(*(increment() for _ in range(100)))
    _, final = await api.get(path)
    assert int(final["data"]["n"]) == results.count(200)
    assert results.count(200) + results.count(409) == 100


async def test_pagination_is_one_consistent_snapshot_while_writes_happen(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for i in range(25):
        await api.post(base, cm(f"p{i:02d}"))
    status, page = await api.get(base, params={"limit": "10"})
    assert status == 200 and len(page["items"]) == 10
    snapshot_rv = page["metadata"]["resourceVersion"]
    assert page["metadata"]["remainingItemCount"] == 15
    seen = [o["metadata"]["name"] for o in page["items"]]
    # Writes between pages: new objects and a deletion must not show up in later pages.
    await api.post(base, cm("p99"))
    await api.delete(f"{base}/p20")
    token = page["metadata"]["continue"]
    while token:
        status, page = await api.get(base, params={"limit": "10", "continue": token})
        assert status == 200, page
        assert page["metadata"]["resourceVersion"] == snapshot_rv
        seen += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue", "")
    assert seen == [f"p{i:02d}" for i in range(25)]


async def test_list_filters_by_label_and_field_selectors(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        await api.post(base, {"metadata": {"name": name, "labels": {"tier": tier}}, "data": {}})
    _, lst = await api.get(base, params={"labelSelector": "tier in (web)"})
    assert [o["metadata"]["name"] for o in lst["items"]] == ["a", "c"]
    _, lst = await api.get(base, params={"fieldSelector": "metadata.name=b"})
    assert [o["metadata"]["name"] for o in lst["items"]] == ["b"]
    _, lst = await api.get(base, params={"labelSelector": "tier!=web", "resourceVersion": "0"})
    assert [o["metadata"]["name"] for o in lst["items"]] == ["b"]
    status, body = await api.get(base, params={"fieldSelector": "spec.bogus=1"})
    assert status == 400 and body["reason"] == "BadRequest", body


async def test_bad_input_gets_a_status_and_changes_nothing(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    _, before = await api.get(base)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("malformed JSON", {"raw": b'{"metadata": {"name": '}, 400, "BadRequest"),
        ("malformed YAML", {"raw": b"metadata: [unclosed", "content_type": "application/yaml"}, 400, "BadRequest"),
        ("wrong kind for the URL", {"body": pod("p")}, 400, "BadRequest"),
        ("wrong version for the URL", {"body": {**cm("x"), "apiVersion": "apps/v1"}}, 400, "BadRequest"),
        ("invalid name", {"body": cm("Not_A_Name")}, 422, "Invalid"),
        ("not an object", {"raw": b"[1, 2]"}, 400, "BadRequest"),
        ("oversize body", {"raw": b'{"data": {"k": "' + b"x" * (3 * 1024 * 1024 + 10) + b'"}}'}, 413,
         "RequestEntityTooLarge"),
    ]
    for what, kw, code, reason in cases:
        body = kw.pop("body", None)
        status, doc = await api.post(base, body, **kw)
        assert status == code, f"{what}: {status} {doc}"
        assert isinstance(doc, dict) and doc["kind"] == "Status" and doc["reason"] == reason, f"{what}: {doc}"
    status, doc = await api.post("/api/v1/namespaces/no-such-ns/configmaps", cm("x"))
    assert status == 404 and doc["reason"] == "NotFound" and "no-such-ns" in doc["message"], doc
    _, after = await api.get(base)
    assert after["items"] == before["items"]


async def test_invalid_object_lists_every_cause_with_its_field(api: Api, ns: str) -> None:
    bad = deployment("web")
    bad["spec"]["template"]["spec"]["containers"].append({"name": "web", "image": ""})
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    status, body = await api.post(f"/apis/apps/v1/namespaces/{ns}/deployments", bad)
    assert status == 422 and body["reason"] == "Invalid", body
    fields = {c["field"] for c in body["details"]["causes"]}
    assert "spec.template.spec.containers[0].ports[0].containerPort" in fields, fields
    assert "spec.template.spec.containers[1].name" in fields, fields
    assert "spec.template.spec.containers[1].image" in fields, fields


async def test_strict_field_validation_rejects_unknown_fields(api: Api, ns: str) -> None:
    obj = {**cm("strict"), "bogus": 1}
    status, body = await api.post(f"/api/v1/namespaces/{ns}/configmaps", obj,
                                  params={"fieldValidation": "Strict"})
    assert status == 400 and 'unknown field "bogus"' in body["message"], body
    status, body = await api.post(f"/api/v1/namespaces/{ns}/configmaps", obj)
    assert status == 201 and "bogus" not in body, body


async def test_patch_flavours(api: Api, ns: str) -> None:
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    assert (await api.post(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web")))[0] == 201
    status, d = await api.patch(path, {"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert status == 200 and d["spec"]["replicas"] == 3, d
    smp = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:1.37"}]}}}}
    status, d = await api.patch(path, smp, "application/strategic-merge-patch+json")
    assert status == 200, d
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "busybox:1.37" and c["ports"][0]["containerPort"] == 80
    assert d["metadata"]["generation"] == 3
    jp = [{"op": "replace", "path": "/spec/replicas", "value": 1}]
    status, d = await api.patch(path, jp, "application/json-patch+json")
    assert status == 200 and d["spec"]["replicas"] == 1, d
    status, body = await api.patch(path, [{"op": "test", "path": "/spec/replicas", "value": 9}],
                                   "application/json-patch+json")
    assert status in (409, 422), body
    status, body = await api.patch(path, {"spec": {}}, "text/plain")
    assert status == 415 and body["reason"] == "UnsupportedMediaType", body


async def test_status_subresource_changes_only_status(api: Api, ns: str) -> None:
    base = f"/apis/apps/v1/namespaces/{ns}/deployments"
    _, d = await api.post(base, deployment("s"))
    d["status"] = {"replicas": 2, "readyReplicas": 1}
    d["spec"]["replicas"] = 7
    status, out = await api.put(f"{base}/s/status", d)
    assert status == 200, out
    assert out["status"]["readyReplicas"] == 1 and out["spec"]["replicas"] == 2
    # ...and the main resource ignores status.
    out["status"] = {"replicas": 99}
    status, out = await api.put(f"{base}/s", out)
    assert status == 200 and out["status"]["replicas"] == 2, out


async def test_scale_subresource_reads_and_writes_replicas(api: Api, ns: str) -> None:
    base = f"/apis/apps/v1/namespaces/{ns}/deployments"
    await api.post(base, deployment("sc", replicas=2))
    status, scale = await api.get(f"{base}/sc/scale")
    assert status == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2, scale
    assert scale["status"]["selector"] == "app=sc"
    status, scale = await api.patch(f"{base}/sc/scale", {"spec": {"replicas": 5}}, "application/merge-patch+json")
    assert status == 200 and scale["spec"]["replicas"] == 5, scale
    _, d = await api.get(f"{base}/sc")
    assert d["spec"]["replicas"] == 5


async def test_binding_assigns_a_pod_once(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/pods"
    _, p = await api.post(base, pod("b"))
    assert p["status"]["phase"] == "Pending"
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    status, body = await api.post(f"{base}/b/binding", binding)
    assert status == 201, body
    _, p = await api.get(f"{base}/b")
    assert p["spec"]["nodeName"] == "node-1"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in p["status"]["conditions"])
    status, body = await api.post(f"{base}/b/binding", {**binding, "target": {"kind": "Node", "name": "node-2"}})
    assert status == 409 and "already assigned" in body["message"], body


async def test_graceful_pod_deletion_then_final_delete(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/pods"
    await api.post(base, pod("g"))
    await api.post(f"{base}/g/binding", {"kind": "Binding", "metadata": {"name": "g"},
                                         "target": {"kind": "Node", "name": "n1"}})
    status, p = await api.delete(f"{base}/g", {"gracePeriodSeconds": 30})
    assert status == 202 and p["metadata"]["deletionTimestamp"] and p["metadata"]["deletionGracePeriodSeconds"] == 30
    assert (await api.get(f"{base}/g"))[0] == 200
    status, p = await api.delete(f"{base}/g", {"gracePeriodSeconds": 0})
    assert status == 200, p
    assert (await api.get(f"{base}/g"))[0] == 404


async def test_finalizers_hold_deletion_until_removed(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    await api.post(base, {"metadata": {"name": "f", "finalizers": ["example.com/hold"]}, "data": {}})
    status, obj = await api.delete(f"{base}/f", {"propagationPolicy": "Foreground"})
    assert status == 202 and obj["metadata"]["deletionTimestamp"], obj
    assert obj["metadata"]["finalizers"] == ["example.com/hold", "foregroundDeletion"]
    status, obj = await api.patch(f"{base}/f", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert status == 200, obj
    assert (await api.get(f"{base}/f"))[0] == 404


async def test_delete_collection_by_label(api: Api, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for name, app in (("d1", "x"), ("d2", "x"), ("d3", "y")):
        await api.post(base, {"metadata": {"name": name, "labels": {"app": app}}, "data": {}})
    status, body = await api.delete(base, params={"labelSelector": "app=x"})
    assert status == 200, body
    _, lst = await api.get(base)
    assert [o["metadata"]["name"] for o in lst["items"]] == ["d3"]


async def test_dry_run_create_stores_nothing(api: Api, ns: str) -> None:
    status, obj = await api.post(f"/api/v1/namespaces/{ns}/configmaps", cm("dry"), params={"dryRun": "All"})
    assert status == 201 and obj["metadata"]["name"] == "dry", obj
    assert (await api.get(f"/api/v1/namespaces/{ns}/configmaps/dry"))[0] == 404


async def test_system_namespaces_exist_and_cannot_be_deleted(api: Api) -> None:
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        status, obj = await api.get(f"/api/v1/namespaces/{name}")
        assert status == 200 and obj["status"]["phase"] == "Active", obj
    status, body = await api.delete("/api/v1/namespaces/kube-system")
    assert status == 403, body


async def test_discovery_version_health_and_metrics(api: Api) -> None:
    status, v = await api.get("/version")
    assert status == 200 and v["major"] == "1", v
    status, groups = await api.get("/apis")
    assert status == 200 and {g["name"] for g in groups["groups"]} >= {"apps", "coordination.k8s.io"}
    status, res = await api.get("/api/v1")
    assert status == 200 and "pods/status" in {r["name"] for r in res["resources"]}
    for path in ("/healthz", "/livez", "/readyz"):
        async with api.session.get(api.base + path) as resp:
            assert resp.status == 200 and await resp.text() == "ok"
    async with api.session.get(api.base + "/metrics") as resp:
        text = await resp.text()
    assert 'apiserver_request_total{' in text and "apiserver_request_duration_seconds_bucket{" in text


async def test_table_view_for_kubectl_get(api: Api, ns: str) -> None:
    await api.post(f"/api/v1/namespaces/{ns}/pods", pod("t"))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table = await api.get(f"/api/v1/namespaces/{ns}/pods", headers={"Accept": accept})
    assert status == 200 and table["kind"] == "Table", table
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Ready", "Status", "Restarts", "Age"], names
    assert table["rows"][0]["cells"][:3] == ["t", "0/1", "Pending"]


async def test_unknown_paths_are_404_status(api: Api) -> None:
    for path in ("/api/v1/nonsense", "/apis/nogroup/v1/things", "/api/v1/namespaces/default/pods/x/bogus"):
        status, body = await api.get(path)
        assert status == 404 and body["kind"] == "Status", (path, body)
    raw = orjson.dumps(cm("x"))
    status, body = await api.request("POST", "/api/v1/namespaces/default/configmaps/x", raw=raw)
    assert status == 405, body
