"""The apiserver's codec with protobuf: request bodies of every kind decoded and checked against the URL as JSON
bodies are, responses encoded when the client asks for protobuf first, JSON unchanged otherwise."""

from __future__ import annotations

import contextvars
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from harness.api import errors, registry
from harness.api import protobuf as pb
from harness.api.registry import Kind
from harness.apiserver import codec
from tests.unit.test_protobuf import OTHERS, SAMPLES

PB = codec.PROTOBUF
KUBECTL_ACCEPT = "application/vnd.kubernetes.protobuf,application/json"
PODS = registry.by_path("", "v1", "pods")
DEPLOYMENTS = registry.by_path("apps", "v1", "deployments")


@pytest.mark.parametrize(("accept", "view", "media"), [
    (KUBECTL_ACCEPT, "", PB),
    ("application/vnd.kubernetes.protobuf", "", PB),
    ("application/vnd.kubernetes.protobuf, */*", "", PB),
    ("application/vnd.kubernetes.protobuf;stream=watch", "", PB),
    ("application/json, application/vnd.kubernetes.protobuf", "", codec.JSON),
    ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json", "Table", codec.JSON),
    ("application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
     "PartialObjectMetadata", codec.JSON),
    ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io", "Table", codec.JSON),
    ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", "Table", codec.JSON),
])
def test_negotiate_serves_protobuf_when_asked_first(accept: str, view: str, media: str) -> None:
    out = codec.negotiate(accept)
    assert (out.view, out.media_type) == (view, media)


def test_negotiate_still_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(errors.NotAcceptable, match="protobuf"):
        codec.negotiate("application/cbor")


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_decode_object_reads_protobuf_for_every_kind(kind: str) -> None:
    k = next(k for k in registry.KINDS if k.kind == kind)
    obj = SAMPLES[kind]
    assert codec.decode_object(pb.encode(obj), PB, k) == obj
    assert codec.decode_object(pb.encode(obj), f"{PB}; charset=binary", k) == obj


def test_decode_object_checks_the_envelope_against_the_url_as_json_is_checked() -> None:
    service = pb.encode(SAMPLES["Service"])
    with pytest.raises(errors.BadRequest) as pb_err:
        codec.decode_object(service, PB, PODS)
    with pytest.raises(errors.BadRequest) as json_err:
        codec.decode_object(orjson.dumps(SAMPLES["Service"]), codec.JSON, PODS)
    assert pb_err.value.message == json_err.value.message == \
        "the kind in the data (Service) does not match the expected kind (Pod)"
    apps_pod = pb.wrap("apps/v1", "Pod", pb.unwrap(pb.encode(SAMPLES["Pod"])).raw)
    with pytest.raises(errors.BadRequest, match=r"the API version in the data \(apps/v1\) does not match"):
        codec.decode_object(apps_pod, PB, PODS)


def test_an_envelope_without_a_type_is_the_urls_kind() -> None:
    raw = pb.unwrap(pb.encode(SAMPLES["Deployment"])).raw
    got = codec.decode_object(pb.wrap("", "", raw), PB, DEPLOYMENTS)
    assert got == SAMPLES["Deployment"]


@pytest.mark.parametrize("data", [b"", b"k8s\x00\x0a\x05\x0a\x02v1", b"{}", pb.encode(SAMPLES["Pod"])[:-30]])
def test_bad_protobuf_bodies_are_400(data: bytes) -> None:
    with pytest.raises(errors.BadRequest) as err:
        codec.decode_object(data, PB, PODS)
    assert err.value.code == 400


def test_a_kind_without_a_message_is_415() -> None:
    job = Kind("batch", "v1", "Job", "jobs", True)
    body = pb.wrap("batch/v1", "Job", b"")
    with pytest.raises(errors.UnsupportedMediaType):
        codec.decode_object(body, PB, job)


def test_subresource_bodies() -> None:
    scale, eviction, binding, token_request = OTHERS[:4]
    got = codec.decode_object(pb.encode(scale), PB, DEPLOYMENTS, expect_kind="Scale",
                              expect_api_version="autoscaling/v1")
    assert got == scale
    sa = registry.by_path("", "v1", "serviceaccounts")
    assert codec.decode_object(pb.encode(token_request), PB, sa, expect_kind="TokenRequest",
                               expect_api_version="authentication.k8s.io/v1") == token_request
    assert codec.decode_document(pb.encode(eviction), PB, what="Eviction") == eviction
    assert codec.decode_document(pb.encode(binding), PB, what="Binding") == binding
    # an envelope that names no type is read as the kind asked for
    raw = pb.unwrap(pb.encode(binding)).raw
    assert codec.decode_document(pb.wrap("", "", raw), PB, what="Binding") == binding


def test_delete_options_under_any_group_version() -> None:
    msg = pb.message_for("meta.k8s.io/v1", "DeleteOptions")
    assert msg is not None
    raw = pb.encode_raw(msg, {"propagationPolicy": "Foreground", "gracePeriodSeconds": 0})
    for api_version in ("v1", "apps/v1", "meta.k8s.io/v1"):
        doc = codec.decode_document(pb.wrap(api_version, "DeleteOptions", raw), PB, what="DeleteOptions")
        assert doc == {"apiVersion": api_version, "kind": "DeleteOptions", "propagationPolicy": "Foreground",
                       "gracePeriodSeconds": 0}
    doc = codec.decode_document(pb.wrap("", "", raw), PB, what="DeleteOptions")
    assert doc["kind"] == "DeleteOptions" and doc["gracePeriodSeconds"] == 0


def test_json_and_yaml_bodies_are_read_as_before() -> None:
    assert codec.decode_object(b'{"metadata": {"name": "x"}}', "application/json", PODS) == {
        "metadata": {"name": "x"}, "apiVersion": "v1", "kind": "Pod"}
    assert codec.decode_document(b"a: 1\n", "application/yaml", what="X") == {"a": 1}
    with pytest.raises(errors.UnsupportedMediaType):
        codec.decode_object(b"{}", "text/plain", PODS)
    with pytest.raises(errors.BadRequest, match="empty"):
        codec.decode_object(b"  ", "application/json", PODS)


# -- responses ------------------------------------------------------------------------------------------


def test_respond_in_protobuf_when_negotiated() -> None:
    deployment = SAMPLES["Deployment"]
    resp = codec.respond(deployment, status=201, media_type=PB)
    assert resp.status == 201 and resp.content_type == PB
    assert isinstance(resp.body, bytes) and pb.decode(resp.body) == deployment


def test_what_protobuf_cannot_carry_is_answered_in_json() -> None:
    table = {"apiVersion": "meta.k8s.io/v1", "kind": "Table", "columnDefinitions": [], "rows": []}
    resp = codec.respond(table, media_type=PB)
    assert resp.content_type == codec.JSON and resp.body == orjson.dumps(table)
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 7}}
    resp = codec.respond(bad, media_type=PB)
    assert resp.content_type == codec.JSON and resp.body == orjson.dumps(bad)


def test_json_responses_are_unchanged() -> None:
    obj: dict[str, Any] = SAMPLES["Pod"]
    for resp in (codec.respond(obj), codec.respond(obj, media_type=codec.JSON)):
        assert resp.content_type == codec.JSON and resp.body == orjson.dumps(obj)


def _in_request(accept: str, fn: Any) -> Any:
    """Run fn as if inside a request with this Accept header (a fresh context, as each aiohttp request has)."""
    def run() -> Any:
        codec._ACCEPT.set(accept)
        return fn()
    return contextvars.copy_context().run(run)


def test_respond_and_errors_follow_the_requests_accept() -> None:
    review = SAMPLES["SelfSubjectAccessReview"]
    resp = _in_request(KUBECTL_ACCEPT, lambda: codec.respond(review, status=201))
    assert resp.content_type == PB and pb.decode(resp.body) == review
    err = _in_request(KUBECTL_ACCEPT, lambda: codec.error_response(errors.NotFound('pods "x" not found',
                                                                                   kind="pods", name="x")))
    assert err.status == 404 and err.content_type == PB
    assert pb.decode(err.body) == errors.NotFound('pods "x" not found', kind="pods", name="x").to_status()
    for accept in ("application/json", "", "application/json, application/vnd.kubernetes.protobuf",
                   "application/vnd.kubernetes.protobuf;as=Table;g=meta.k8s.io;v=v1,application/json"):
        resp = _in_request(accept, lambda: codec.respond(review))
        assert resp.content_type == codec.JSON and resp.body == orjson.dumps(review)
    # discovery documents have no message: JSON whatever was asked
    resp = _in_request(KUBECTL_ACCEPT, lambda: codec.respond({"kind": "APIVersions", "versions": ["v1"]}))
    assert resp.content_type == codec.JSON


async def test_the_negotiation_middleware_remembers_accept_for_the_request_only() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return codec.error_response(errors.BadRequest("no"))

    request = make_mocked_request("GET", "/api/v1/pods", headers={"Accept": KUBECTL_ACCEPT})
    resp = await codec.negotiation(request, handler)
    assert resp.content_type == PB and pb.decode(resp.body)["reason"] == "BadRequest"  # type: ignore[attr-defined]
    assert codec._ACCEPT.get() is None
    assert codec.error_response(errors.BadRequest("no")).content_type == codec.JSON


class _Payload:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int = -1) -> bytes:
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


async def test_read_body_remembers_accept_for_the_response() -> None:
    data = pb.encode(SAMPLES["SelfSubjectReview"])
    request = make_mocked_request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                  headers={"Accept": KUBECTL_ACCEPT, "Content-Type": PB,
                                           "Content-Length": str(len(data))},
                                  payload=_Payload(data))
    assert await codec.read_body(request) == data
    resp = codec.respond(codec.decode_object(data, PB, registry.by_kind("authentication.k8s.io/v1",
                                                                        "SelfSubjectReview")), status=201)
    assert resp.content_type == PB


def test_no_accept_leaks_out_of_a_request() -> None:
    assert codec._ACCEPT.get() is None
    assert codec.respond(SAMPLES["Pod"]).content_type == codec.JSON
