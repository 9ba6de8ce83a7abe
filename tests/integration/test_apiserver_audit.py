"""The audit log of a real apiserver: one JSON line per stage per request, in upstream's audit.k8s.io/v1 Event
format, at the level the policy gives, with the user, the object, the result and authorization's decision."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.api import errors
from harness.client.rest import Client
from tests.integration.apiserver_fixtures import ApiServerProcess, start_apiserver, stop_apiserver

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: RequestResponse
  resources: [{group: "", resources: ["configmaps"]}]
- level: Metadata
  resources: [{group: "", resources: ["secrets"]}]
- level: None
"""


@pytest.fixture(scope="module")
def audited(etcd: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerProcess, Path]]:
    work = tmp_path_factory.mktemp("audit")
    (work / "policy.yaml").write_text(POLICY)
    log = work / "audit.log"
    server = start_apiserver(etcd.endpoint, work, extra=[  # type: ignore[attr-defined]
        "--audit-policy-file", str(work / "policy.yaml"), "--audit-log-path", str(log)])
    yield server, log
    stop_apiserver(server)


def lines_of(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def events_for(log: Path, name: str, count: int) -> list[dict[str, Any]]:
    """The events naming an object, once `count` are written (each request's line is written as it completes)."""
    found: list[dict[str, Any]] = []
    for _ in range(100):
        lines = await asyncio.to_thread(lines_of, log)
        found = [e for e in map(json.loads, lines) if (e.get("objectRef") or {}).get("name") == name]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(found)} audit events for {name}, wanted {count}")


async def test_each_request_is_one_event_at_its_policy_level(audited: tuple[ApiServerProcess, Path]) -> None:
    server, log = audited
    name = f"audited-{uuid.uuid4().hex[:6]}"
    async with Client.from_kubeconfig(server.kubeconfig) as client:
        await client.request("POST", "/api/v1/namespaces/default/configmaps",
                             body={"metadata": {"name": name}, "data": {"k": "v"}})
        await client.request("POST", "/api/v1/namespaces/default/secrets",
                             body={"metadata": {"name": name}, "stringData": {"p": "hidden"}})
        with pytest.raises(errors.NotFound):
            await client.request("GET", f"/api/v1/namespaces/default/pods/{name}")
    created, secret = await events_for(log, name, 2)
    assert created["kind"] == "Event" and created["apiVersion"] == "audit.k8s.io/v1"
    assert (created["level"], created["stage"], created["verb"]) == ("RequestResponse", "ResponseComplete", "create")
    assert created["objectRef"] == {"resource": "configmaps", "namespace": "default", "name": name,
                                    "apiVersion": "v1"}
    assert created["user"]["username"] == "system:admin"
    assert created["responseStatus"] == {"metadata": {}, "code": 201}
    assert created["requestObject"]["data"] == {"k": "v"}
    assert created["responseObject"]["metadata"]["name"] == name
    assert created["annotations"] == {"authorization.k8s.io/decision": "allow"}
    assert created["requestReceivedTimestamp"] <= created["stageTimestamp"]
    assert (secret["level"], secret["verb"]) == ("Metadata", "create")
    assert "requestObject" not in secret and "hidden" not in json.dumps(secret), "Metadata logs no bodies"
    every = await asyncio.to_thread(lines_of, log)
    assert all(e.get("objectRef", {}).get("resource") != "pods" for e in map(json.loads, every)), "policy: None"
