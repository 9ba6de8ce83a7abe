"""Old Events expire: the apiserver writes Events with an etcd lease (--event-ttl), other objects without."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.apiserver_fixtures import ApiServerProcess, start_apiserver, stop_apiserver


@pytest.fixture
def short_ttl_apiserver(etcd: Any, tmp_path: Path) -> Iterator[ApiServerProcess]:
    server = start_apiserver(etcd.endpoint, tmp_path, extra=["--event-ttl", "2s"])
    yield server
    stop_apiserver(server)


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_events_expire_after_the_event_ttl_and_other_objects_stay(short_ttl_apiserver: ApiServerProcess) -> None:
    base = short_ttl_apiserver.url
    ns = f"ttl-{uuid.uuid4().hex[:6]}"
    assert call(f"{base}/api/v1/namespaces", "POST", {"metadata": {"name": ns}})[0] == 201
    event = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns},
             "reason": "Test", "message": "expires", "type": "Normal", "source": {"component": "test"}}
    config = {"metadata": {"name": "stays"}, "data": {"k": "v"}}
    assert call(f"{base}/api/v1/namespaces/{ns}/events", "POST", event)[0] == 201
    assert call(f"{base}/api/v1/namespaces/{ns}/configmaps", "POST", config)[0] == 201
    created = time.monotonic()
    assert call(f"{base}/api/v1/namespaces/{ns}/events/e1")[0] == 200
    deadline = created + 20
    while call(f"{base}/api/v1/namespaces/{ns}/events/e1")[0] != 404:
        assert time.monotonic() < deadline, "the Event outlived --event-ttl 2s by far"
        time.sleep(0.2)
    gone_after = time.monotonic() - created
    assert gone_after >= 1.5, f"the Event went after {gone_after:.1f}s, before its TTL"
    assert call(f"{base}/api/v1/namespaces/{ns}/configmaps/stays")[0] == 200
    listed = call(f"{base}/api/v1/namespaces/{ns}/events")[1]
    assert listed["items"] == []  # the watch cache saw the expiry (a DELETE from etcd)
