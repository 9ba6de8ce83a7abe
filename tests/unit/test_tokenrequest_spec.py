"""The TokenRequest API's request checks (harness.apiserver.tokenrequest.spec_of) and the watch-cache lookup the
service-account token checker reads objects through (CacheLookup)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from harness.api import errors, registry
from harness.apiserver.tokenrequest import CacheLookup, spec_of

CONFIG_AUDIENCES = ["https://kubernetes.default.svc.cluster.local"]


def request(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


def refused(spec: dict[str, Any], max_seconds: int = 0) -> errors.ApiError:
    with pytest.raises(errors.Invalid) as info:
        spec_of(request(**spec), "builder", CONFIG_AUDIENCES, max_seconds)
    return info.value


def causes(err: errors.ApiError) -> list[dict[str, str]]:
    out: list[dict[str, str]] = err.to_status()["details"]["causes"]
    return out


# -- defaults ------------------------------------------------------------------------------------------------------

def test_defaults_audiences_from_config_and_an_hour() -> None:
    spec = spec_of(request(), "builder", CONFIG_AUDIENCES, 0)
    assert spec == {"audiences": CONFIG_AUDIENCES, "expirationSeconds": 3600}
    # The config's list is not shared with the answer.
    assert spec["audiences"] is not CONFIG_AUDIENCES


def test_no_spec_at_all_gets_the_defaults() -> None:
    spec = spec_of({"kind": "TokenRequest"}, "builder", CONFIG_AUDIENCES, 0)
    assert spec == {"audiences": CONFIG_AUDIENCES, "expirationSeconds": 3600}


def test_asked_values_are_kept_and_the_request_is_not_changed() -> None:
    asked = request(audiences=["vault"], expirationSeconds=7200)
    spec = spec_of(asked, "builder", CONFIG_AUDIENCES, 0)
    assert spec == {"audiences": ["vault"], "expirationSeconds": 7200}
    assert asked["spec"] == {"audiences": ["vault"], "expirationSeconds": 7200}


def test_an_empty_audience_list_gets_the_configured_audiences() -> None:
    assert spec_of(request(audiences=[]), "builder", CONFIG_AUDIENCES, 0)["audiences"] == CONFIG_AUDIENCES


# -- expirationSeconds ---------------------------------------------------------------------------------------------

def test_less_than_ten_minutes_is_invalid() -> None:
    err = refused({"expirationSeconds": 599})
    assert err.code == 422
    assert "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes" in str(err)
    assert str(err) == ('TokenRequest.authentication.k8s.io "builder" is invalid: spec.expirationSeconds: '
                        'Invalid value: 599: may not specify a duration less than 10 minutes')
    assert causes(err) == [{"reason": "FieldValueInvalid",
                            "message": "Invalid value: 599: may not specify a duration less than 10 minutes",
                            "field": "spec.expirationSeconds"}]
    details = err.to_status()["details"]
    assert details["kind"] == "TokenRequest" and details["group"] == "authentication.k8s.io"
    assert details["name"] == "builder"


def test_more_than_two_to_the_32_seconds_is_invalid() -> None:
    err = refused({"expirationSeconds": 2**32 + 1})
    assert f"Invalid value: {2**32 + 1}: may not specify a duration larger than 2^32 seconds" in str(err)
    assert [c["field"] for c in causes(err)] == ["spec.expirationSeconds"]


@pytest.mark.parametrize("seconds", [600, 2**32])
def test_the_bounds_themselves_are_valid(seconds: int) -> None:
    assert spec_of(request(expirationSeconds=seconds), "builder", CONFIG_AUDIENCES, 0)["expirationSeconds"] == seconds


@pytest.mark.parametrize("asked,max_seconds,granted", [
    (86400, 7200, 7200),  # capped
    (3600, 7200, 3600),  # under the cap
    (7200, 7200, 7200),  # at the cap
    (86400, 0, 86400),  # no cap configured
])
def test_the_configured_maximum_caps_the_lifetime(asked: int, max_seconds: int, granted: int) -> None:
    spec = spec_of(request(expirationSeconds=asked), "builder", CONFIG_AUDIENCES, max_seconds)
    assert spec["expirationSeconds"] == granted


def test_the_minimum_is_checked_before_the_cap() -> None:
    refused({"expirationSeconds": 599}, max_seconds=7200)


@pytest.mark.parametrize("value", ["3600", 3600.0, True])
def test_a_non_integer_lifetime_is_invalid(value: Any) -> None:
    err = refused({"expirationSeconds": value})
    assert [c["field"] for c in causes(err)] == ["spec.expirationSeconds"]


def test_a_null_lifetime_gets_the_default() -> None:
    """BUG: `"expirationSeconds": null` is refused as "Invalid value: None: must be an integer".

    Upstream decodes null into a nil *int64, which SetDefaults_TokenRequestSpec sets to 3600 (as `audiences: null`
    already gets the configured audiences here)."""
    spec = spec_of(request(expirationSeconds=None), "builder", CONFIG_AUDIENCES, 0)
    assert spec["expirationSeconds"] == 3600


@pytest.mark.parametrize("audiences", ["api", [""], [1]])
def test_bad_audiences_are_invalid(audiences: Any) -> None:
    err = refused({"audiences": audiences})
    assert [c["field"] for c in causes(err)] == ["spec.audiences"]


# -- boundObjectRef ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["Pod", "Secret", "Node"])
def test_bindable_kinds_are_accepted(kind: str) -> None:
    ref = {"kind": kind, "apiVersion": "v1", "name": "x"}
    assert spec_of(request(boundObjectRef=ref), "builder", CONFIG_AUDIENCES, 0)["boundObjectRef"] == ref


def test_binding_to_a_config_map_is_an_unsupported_value() -> None:
    err = refused({"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "cm"}})
    assert err.code == 422
    assert 'Unsupported value: "ConfigMap": supported values: "Pod", "Secret", "Node"' in str(err)
    (cause,) = causes(err)
    assert cause["field"] == "spec.boundObjectRef.kind"
    assert cause["message"] == 'Unsupported value: "ConfigMap": supported values: "Pod", "Secret", "Node"'


def test_a_bound_object_without_a_name_is_required() -> None:
    err = refused({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1"}})
    (cause,) = causes(err)
    assert cause["field"] == "spec.boundObjectRef.name"
    assert "Required value" in cause["message"]
    assert "spec.boundObjectRef.name: Required value" in str(err)


def test_bound_object_ref_causes_carry_the_reason_their_message_names() -> None:
    """BUG: every cause is built by `_invalid` with reason FieldValueInvalid, even for "Unsupported value" and
    "Required value" messages; upstream's field.NotSupported / field.Required give FieldValueNotSupported and
    FieldValueRequired (the reason and the message prefix always agree)."""
    (unsupported,) = causes(refused({"boundObjectRef": {"kind": "ConfigMap", "name": "cm"}}))
    assert unsupported["reason"] == "FieldValueNotSupported"
    (required,) = causes(refused({"boundObjectRef": {"kind": "Pod"}}))
    assert required["reason"] == "FieldValueRequired"


def test_a_bound_object_ref_that_is_no_object_is_refused() -> None:
    err = refused({"boundObjectRef": "Pod/web"})
    assert [c["field"] for c in causes(err)] == ["spec.boundObjectRef.kind"]


# -- CacheLookup ---------------------------------------------------------------------------------------------------

SERVICE_ACCOUNTS = registry.by_path("", "v1", "serviceaccounts")
PODS = registry.by_path("", "v1", "pods")
NODES = registry.by_path("", "v1", "nodes")
SECRETS = registry.by_path("", "v1", "secrets")


def cache_of(kind: registry.Kind, *objs: dict[str, Any]) -> SimpleNamespace:
    """A stand-in for the apiserver's watch cache: `.objects` keyed by the kind's storage key."""
    return SimpleNamespace(objects={kind.key(o["metadata"].get("namespace"), o["metadata"]["name"]): o
                                    for o in objs})


def test_cache_lookup_reads_namespaced_and_cluster_scoped_objects() -> None:
    sa = {"metadata": {"name": "builder", "namespace": "ns", "uid": "sa-uid"}}
    pod = {"metadata": {"name": "web", "namespace": "ns", "uid": "pod-uid"}}
    node = {"metadata": {"name": "n1", "uid": "node-uid"}}
    lookup = CacheLookup({SERVICE_ACCOUNTS: cache_of(SERVICE_ACCOUNTS, sa), PODS: cache_of(PODS, pod),
                          NODES: cache_of(NODES, node)})
    assert lookup.get("ServiceAccount", "ns", "builder") is sa
    assert lookup.get("Pod", "ns", "web") is pod
    assert lookup.get("Node", "", "n1") is node
    assert lookup.get("ServiceAccount", "other", "builder") is None
    assert lookup.get("Pod", "ns", "gone") is None
    assert lookup.get("Node", "", "n2") is None


def test_cache_lookup_without_a_cache_of_the_kind_finds_nothing() -> None:
    lookup = CacheLookup({})
    assert lookup.get("Secret", "ns", "s") is None
    assert lookup.get("ServiceAccount", "ns", "builder") is None
