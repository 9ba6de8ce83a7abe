"""Validation of object metadata.

Every cause on upstream's field path, with its reason and wording."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.api.validation import (
    check_create,
    check_status_update,
)
from tests.unit.validation_support import (
    KINDS,
    NS,
    created,
    deployment,
    find,
    only,
    pod,
    prepared,
    service,
    stored,
    updated,
)

# -- metadata -------------------------------------------------------------------------------


def test_name_is_required_unless_generate_name_is_given() -> None:
    only(created("ConfigMap", {"metadata": {}}), "metadata.name", "FieldValueRequired",
         "Required value: name or generateName is required")
    assert created("ConfigMap", {"metadata": {"name": "web-x7k2p", "generateName": "web-"}}) == []


def test_generate_name_prefix_is_validated_and_may_end_in_a_dash() -> None:
    assert created("Pod", {**pod(), "metadata": {"name": "web-abcde", "generateName": "web-"}}) == []
    cause = find(created("Pod", {**pod(), "metadata": {"name": "web-abcde", "generateName": "Web_"}}),
                 "metadata.generateName", "FieldValueInvalid")
    assert cause.message.startswith('Invalid value: "Web_": a lowercase RFC 1123 subdomain must consist of')


@pytest.mark.parametrize(("kind", "name", "message"), [
    ("ConfigMap", "Web", "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                         "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                         "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ("ConfigMap", "x" * 254, "must be no more than 253 characters"),
    ("Namespace", "team.a", "must not contain dots"),
    ("Namespace", "Team", "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                          "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                          "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ("Namespace", "n" * 64, "must be no more than 63 characters"),
    ("Service", "1web", "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                        "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                        "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
    ("Service", "web.svc", "a DNS-1035 label must consist"),
    ("Node", "Worker_1", "a lowercase RFC 1123 subdomain must consist"),
    ("ClusterRole", "a/b", "may not contain '/'"),
    ("Role", "100%", "may not contain '%'"),
    ("ClusterRoleBinding", "..", "may not be '..'"),
])
def test_name_formats_per_kind(kind: str, name: str, message: str) -> None:
    body: dict[str, Any] = {"metadata": {"name": name}}
    if kind == "Service":
        body = {**service(), "metadata": {"name": name}}
    cause = find(created(kind, body), "metadata.name", "FieldValueInvalid", message)
    assert cause.message.startswith(f'Invalid value: "{name}": {message}')


@pytest.mark.parametrize(("kind", "name"), [
    ("Pod", "web.v1"), ("Pod", "1web"), ("ClusterRole", "system:controller:deployment-controller"),
    ("Role", "Weird Name:With Spaces"), ("Node", "192.168.56.21"), ("Namespace", "kube-system"),
])
def test_names_that_are_fine(kind: str, name: str) -> None:
    body = {**pod(), "metadata": {"name": name}} if kind == "Pod" else {"metadata": {"name": name}}
    assert created(kind, body) == []


def test_namespace_is_required_for_namespaced_kinds_and_forbidden_for_the_others() -> None:
    obj = prepared("ConfigMap", {"metadata": {"name": "c"}})
    del obj["metadata"]["namespace"]
    only(check_create(KINDS["ConfigMap"], obj), "metadata.namespace", "FieldValueRequired")
    obj["metadata"]["namespace"] = "Bad_NS"
    only(check_create(KINDS["ConfigMap"], obj), "metadata.namespace", "FieldValueInvalid")
    node = prepared("Node", {"metadata": {"name": "n", "namespace": NS}})
    only(check_create(KINDS["Node"], node), "metadata.namespace", "FieldValueForbidden",
         "Forbidden: not allowed on this type")


@pytest.mark.parametrize(("labels", "value", "message"), [
    ({"Bad Key": "x"}, "Bad Key",
     "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
     "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
     "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
    ({"Bad_Prefix/app": "x"}, "Bad_Prefix/app", "prefix part a lowercase RFC 1123 subdomain must consist of"),
    ({"/app": "x"}, "/app", "prefix part must be non-empty"),
    ({"example.com/": "x"}, "example.com/", "name part must be non-empty"),
    ({"a/b/c": "x"}, "a/b/c", "a qualified name must consist of alphanumeric characters"),
    ({"k" * 64: "x"}, "k" * 64, "name part must be no more than 63 characters"),
    ({"app": "v" * 64}, "v" * 64, "must be no more than 63 characters"),
    ({"app": "-web"}, "-web", "a valid label must be an empty string or consist of alphanumeric characters, '-', "
                              "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  "
                              "or 'my_value',  or '12345', regex used for validation is "
                              "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
])
def test_labels_keys_and_values(labels: dict[str, str], value: str, message: str) -> None:
    cause = find(created("ConfigMap", {"metadata": {"name": "c", "labels": labels}}), "metadata.labels",
                 "FieldValueInvalid", message)
    assert cause.message.startswith(f'Invalid value: "{value}": ')


def test_good_labels() -> None:
    labels = {"app": "web", "app.kubernetes.io/name": "web", "empty": "", "v": "1.2.3_rc-1", "A": "B"}
    assert created("ConfigMap", {"metadata": {"name": "c", "labels": labels}}) == []


def test_annotation_keys_are_qualified_names_in_any_case() -> None:
    ok = {"Example.com/Some-Key": "any value at all: {}", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    assert created("ConfigMap", {"metadata": {"name": "c", "annotations": ok}}) == []
    only(created("ConfigMap", {"metadata": {"name": "c", "annotations": {"bad key": "x"}}}),
         "metadata.annotations", "FieldValueInvalid", 'Invalid value: "bad key": name part must consist')


def test_annotations_may_total_256_kib() -> None:
    fits = {"a": "x" * (256 * 1024 - 1)}
    assert created("ConfigMap", {"metadata": {"name": "c", "annotations": fits}}) == []
    big = {"a": "x" * (256 * 1024)}
    cause = only(created("ConfigMap", {"metadata": {"name": "c", "annotations": big}}), "metadata.annotations",
                 "FieldValueTooLong")
    assert cause.message == "Too long: may not be more than 262144 bytes"


def test_owner_references_must_name_their_owner() -> None:
    causes = created("ConfigMap", {"metadata": {"name": "c", "ownerReferences": [{"controller": True}]}})
    find(causes, "metadata.ownerReferences.apiVersion", "FieldValueInvalid",
         'Invalid value: "": version must not be empty')
    for name in ("kind", "name", "uid"):
        find(causes, f"metadata.ownerReferences.{name}", "FieldValueInvalid", 'Invalid value: "": must not be empty')
    assert len(causes) == 4


def test_only_one_owner_may_be_the_controller() -> None:
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "uid": "u", "controller": True}
    refs = [{**ref, "name": "a"}, {**ref, "name": "b"}]
    only(created("Pod", {**pod(), "metadata": {"name": "p", "ownerReferences": refs}}),
         "metadata.ownerReferences", "FieldValueInvalid",
         'Only one reference can have Controller set to true. Found "true" in references for ReplicaSet/a and '
         'ReplicaSet/b')


def test_events_may_not_own_anything() -> None:
    ref = {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "u"}
    only(created("ConfigMap", {"metadata": {"name": "c", "ownerReferences": [ref]}}), "metadata.ownerReferences",
         "FieldValueInvalid", "/v1, Kind=Event is disallowed from being an owner")


def test_finalizers_are_qualified_or_standard_names() -> None:
    fine = ["kubernetes", "orphan", "example.com/cleanup"]
    assert created("ConfigMap", {"metadata": {"name": "c", "finalizers": fine}}) == []
    only(created("ConfigMap", {"metadata": {"name": "c", "finalizers": ["kubernetes", "cleanup"]}}),
         "metadata.finalizers[1]", "FieldValueInvalid", '"cleanup": name is neither a standard finalizer name nor is '
                                                        'it fully qualified')
    find(created("ConfigMap", {"metadata": {"name": "c", "finalizers": ["example.com/bad name"]}}),
         "metadata.finalizers", "FieldValueInvalid", "name part must consist of")
    find(created("ConfigMap", {"metadata": {"name": "c", "finalizers": ["orphan", "foregroundDeletion"]}}),
         "metadata.finalizers", "FieldValueInvalid", "finalizer orphan and foregroundDeletion cannot be both set")


@pytest.mark.parametrize("field_name", ["name", "namespace", "uid", "creationTimestamp"])
def test_identity_is_immutable_on_update(field_name: str) -> None:
    old = stored("ConfigMap", {"metadata": {"name": "c"}})
    cause = only(updated("ConfigMap", old, lambda new: new["metadata"].update({field_name: "changed"})),
                 f"metadata.{field_name}", "FieldValueInvalid")
    assert cause.message == 'Invalid value: "changed": field is immutable'


def test_metadata_is_revalidated_on_update_and_status_update() -> None:
    old = stored("Deployment", deployment())
    bad_labels = lambda new: new["metadata"].update(labels={"bad key": "x"})  # noqa: E731
    find(updated("Deployment", old, bad_labels), "metadata.labels", "FieldValueInvalid")
    new = copy.deepcopy(old)
    bad_labels(new)
    find(check_status_update(KINDS["Deployment"], new, old), "metadata.labels", "FieldValueInvalid")


def test_no_new_finalizers_once_deletion_started() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "c", "finalizers": ["example.com/a"]}})
    old["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    only(updated("ConfigMap", old, lambda new: new["metadata"]["finalizers"].append("example.com/b")),
         "metadata.finalizers", "FieldValueForbidden",
         "no new finalizers can be added if the object is being deleted, found new finalizers "
         '[]string{"example.com/b"}')
    assert updated("ConfigMap", old, lambda new: new["metadata"].update(finalizers=[])) == []


def test_generation_may_not_go_down() -> None:
    old = stored("Deployment", deployment())
    old["metadata"]["generation"] = 3
    only(updated("Deployment", old, lambda new: new["metadata"].update(generation=2)), "metadata.generation",
         "FieldValueInvalid", "must not be decremented")
