"""Label and field selectors parse, print and match as apimachinery's `labels` and `fields` packages do."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api import errors, registry
from harness.api.selectors import (
    FIELD_LABELS,
    LabelSelector,
    label_selector_from_spec,
    parse_field_selector,
    parse_label_selector,
)

POD = registry.by_kind("v1", "Pod")
NODE = registry.by_kind("v1", "Node")
EVENT = registry.by_kind("v1", "Event")
SECRET = registry.by_kind("v1", "Secret")
NAMESPACE = registry.by_kind("v1", "Namespace")
SERVICE = registry.by_kind("v1", "Service")
CONFIG_MAP = registry.by_kind("v1", "ConfigMap")
REPLICA_SET = registry.by_kind("apps/v1", "ReplicaSet")
RC = registry.by_kind("v1", "ReplicationController")


# -- label selectors: syntax ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "canonical"), [
    ("", ""),
    ("a=b", "a=b"),
    ("a==b", "a==b"),
    ("a!=b", "a!=b"),
    ("a", "a"),
    ("!a", "!a"),
    ("a in (x,y)", "a in (x,y)"),
    ("a notin (x)", "a notin (x)"),
    ("x=1,a=2", "a=2,x=1"),  # requirements sorted by key
    ("a in (z,y,z)", "a in (y,z)"),  # values sorted and deduplicated
    ("  a  =  b  ,  c  ", "a=b,c"),  # whitespace anywhere between tokens
    ("a\tin\n(x ,  y)", "a in (x,y)"),
    ("a=", "a="),  # an empty value
    ("a in ()", "a in ()"),
    ("a in (,b)", "a in (,b)"),
    ("a in (b,)", "a in (,b)"),
    ("a in (b,,c)", "a in (,b,c)"),
    ("in in (in,notin)", "in in (in,notin)"),  # keywords are identifiers where a key or value goes
    ("a>1", "a>1"),
    ("a<20", "a<20"),
    ("example.com/app=web", "example.com/app=web"),
    ("a=b,!c,d in (e)", "a=b,!c,d in (e)"),
])
def test_label_selector_prints_canonically(text: str, canonical: str) -> None:
    assert str(parse_label_selector(text)) == canonical


def test_canonical_form_parses_back_to_the_same_selector() -> None:
    sel = parse_label_selector("tier notin (b,a), app=web, !canary, env, n>3")
    assert parse_label_selector(str(sel)) == sel


@pytest.mark.parametrize(("text", "message"), [
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("a=b,", "found '', expected: identifier after ','"),
    (",a", "found ',', expected: !, identifier, or 'end of string'"),
    ("=a", "found '=', expected: !, identifier, or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
    ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
    ("a!b", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"),
    ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
    ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value "
            "must be an integer"),
])
def test_label_selector_syntax_errors_are_worded_as_upstream(text: str, message: str) -> None:
    with pytest.raises(errors.BadRequest) as err:
        parse_label_selector(text)
    assert err.value.message == message
    assert err.value.code == 400


@pytest.mark.parametrize(("text", "fragment"), [
    ("-a=b", 'key: Invalid value: "-a": name part must consist of alphanumeric characters'),
    ("a/b/c=d", 'key: Invalid value: "a/b/c"'),
    ("Example.com/a=b", 'key: Invalid value: "Example.com/a": prefix part a lowercase RFC 1123 subdomain'),
    ("a=" + "x" * 64, "values[0][a]: Invalid value: \"" + "x" * 64 + "\": must be no more than 63 characters"),
    ("a in (ok,-bad)", 'values[0][a]: Invalid value: "-bad": a valid label must be an empty string'),
])
def test_invalid_keys_and_values_are_rejected(text: str, fragment: str) -> None:
    with pytest.raises(errors.BadRequest) as err:
        parse_label_selector(text)
    assert err.value.message.startswith("unable to parse requirement: ")
    assert fragment in err.value.message


# -- label selectors: matching ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("", {}, True),
    ("", {"a": "b"}, True),
    ("a=b", {"a": "b"}, True),
    ("a=b", {"a": "c"}, False),
    ("a=b", {}, False),
    ("a==b", {"a": "b", "x": "y"}, True),
    ("a!=b", {"a": "c"}, True),
    ("a!=b", {}, True),  # a missing label is not equal to anything
    ("a!=b", {"a": "b"}, False),
    ("a in (x,y)", {"a": "y"}, True),
    ("a in (x,y)", {"a": "z"}, False),
    ("a in (x,y)", {}, False),
    ("a notin (x,y)", {}, True),
    ("a notin (x,y)", {"a": "x"}, False),
    ("a notin (x,y)", {"a": "z"}, True),
    ("a", {"a": ""}, True),
    ("a", {"b": "a"}, False),
    ("!a", {"b": "a"}, True),
    ("!a", {"a": "x"}, False),
    ("a=", {"a": ""}, True),
    ("a=", {}, False),
    ("a in ()", {"a": ""}, True),
    ("a>5", {"a": "6"}, True),
    ("a>5", {"a": "5"}, False),
    ("a>5", {"a": "x"}, False),
    ("a>5", {}, False),
    ("a<5", {"a": "4"}, True),
    ("a<10", {"a": "9"}, True),  # compared as integers, not strings
    ("app=web,tier in (fe,be),!canary", {"app": "web", "tier": "be"}, True),
    ("app=web,tier in (fe,be),!canary", {"app": "web", "tier": "be", "canary": "1"}, False),
])
def test_label_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_empty_selector_matches_objects_without_labels() -> None:
    assert parse_label_selector("").empty
    assert LabelSelector().matches(None)
    assert not parse_label_selector("a").matches(None)
    assert parse_label_selector("!a").matches(None)


def test_label_selector_exact_value() -> None:
    sel = parse_label_selector("app=web,tier in (fe),env in (a,b),x!=y")
    assert sel.exact("app") == "web"
    assert sel.exact("tier") == "fe"
    assert sel.exact("env") is None
    assert sel.exact("x") is None
    assert sel.exact("missing") is None


# -- label selectors: the object form ---------------------------------------------------------


def test_spec_selector_combines_match_labels_and_expressions() -> None:
    sel = label_selector_from_spec({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "release", "operator": "Exists"},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    })
    assert str(sel) == "app=web,!canary,env notin (dev),release,tier in (be,fe)"
    assert sel.matches({"app": "web", "tier": "fe", "release": "1"})
    assert not sel.matches({"app": "web", "tier": "fe", "release": "1", "canary": "y"})
    assert not sel.matches({"app": "web", "tier": "fe", "release": "1", "env": "dev"})
    assert not sel.matches({"app": "web", "tier": "fe"})


@pytest.mark.parametrize("spec", [None, {}, {"matchLabels": {}, "matchExpressions": []}])
def test_empty_spec_selector_selects_everything(spec: dict[str, Any] | None) -> None:
    sel = label_selector_from_spec(spec)
    assert sel.empty
    assert sel.matches({"any": "thing"})
    assert str(sel) == ""


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
     '"Equals" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
     "for 'in', 'notin' operators, values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
     "values set must be empty for exists and does not exist"),
    ({"matchLabels": {"bad key": "x"}}, 'key: Invalid value: "bad key"'),
    ({"matchLabels": {"a": "bad value"}}, 'values[0][a]: Invalid value: "bad value"'),
])
def test_invalid_spec_selector_is_a_bad_request(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(errors.BadRequest) as err:
        label_selector_from_spec(spec)
    assert fragment in err.value.message


def test_deployment_scale_selector_string() -> None:
    spec = {"matchLabels": {"app": "web", "tier": "fe"}}
    assert str(label_selector_from_spec(spec)) == "app=web,tier=fe"


# -- field selectors --------------------------------------------------------------------------


def _pod(name: str = "p", ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec, "status": {}}


def test_node_name_empty_selects_unscheduled_pods() -> None:
    sel = parse_field_selector("spec.nodeName=", POD)
    assert sel.matches(_pod())
    assert not sel.matches(_pod(nodeName="w1"))
    assert parse_field_selector("spec.nodeName!=", POD).matches(_pod(nodeName="w1"))


def test_field_selector_terms_are_anded() -> None:
    sel = parse_field_selector("metadata.namespace==default,spec.nodeName=w1,status.phase!=Failed", POD)
    pod = _pod(nodeName="w1")
    assert sel.matches(pod)
    pod["status"]["phase"] = "Failed"
    assert not sel.matches(pod)
    assert not sel.matches(_pod(ns="other", nodeName="w1"))


def test_field_selector_prints_sorted_and_escaped() -> None:
    sel = parse_field_selector(r"spec.nodeName==w1,metadata.name=a\,b\=c\\d", POD)
    assert str(sel) == r"metadata.name=a\,b\=c\\d,spec.nodeName=w1"
    assert sel.exact("metadata.name") == "a,b=c\\d"
    assert parse_field_selector(str(sel), POD) == sel


def test_exact_gives_pinned_values_only() -> None:
    sel = parse_field_selector("metadata.name=web,metadata.namespace=prod,spec.nodeName!=w1", POD)
    assert sel.exact("metadata.name") == "web"
    assert sel.exact("metadata.namespace") == "prod"
    assert sel.exact("spec.nodeName") is None
    assert sel.exact("status.phase") is None
    assert parse_field_selector("spec.nodeName=", POD).exact("spec.nodeName") == ""


def test_empty_field_selector_matches_everything() -> None:
    sel = parse_field_selector("", POD)
    assert sel.empty
    assert sel.matches(_pod())
    assert str(sel) == ""


def test_pod_fields() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "w1", "restartPolicy": "Never", "schedulerName": "default-scheduler",
                 "serviceAccountName": "sa", "hostNetwork": True},
        "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                   "nominatedNodeName": "w2"},
    }
    for text in ("spec.restartPolicy=Never", "spec.schedulerName=default-scheduler",
                 "spec.serviceAccountName=sa", "spec.hostNetwork=true", "status.phase=Running",
                 "status.podIP=10.244.1.5", "status.nominatedNodeName=w2", "spec.host=w1"):
        assert parse_field_selector(text, POD).matches(pod), text
    assert parse_field_selector("spec.hostNetwork=false", POD).matches(_pod())


def test_old_spec_host_name_means_node_name() -> None:
    sel = parse_field_selector("spec.host=w1", POD)
    assert sel.exact("spec.nodeName") == "w1"
    assert str(sel) == "spec.nodeName=w1"


def test_event_fields() -> None:
    event = {
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "u-1",
                           "apiVersion": "v1", "resourceVersion": "42", "fieldPath": "spec.containers{web}"},
        "reason": "Scheduled", "type": "Normal", "reportingComponent": "default-scheduler", "source": {},
    }
    sel = parse_field_selector("involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.uid=u-1,"
                               "involvedObject.apiVersion=v1,involvedObject.resourceVersion=42,"
                               "involvedObject.namespace=default,reason=Scheduled,type=Normal,"
                               "reportingComponent=default-scheduler", EVENT)
    assert sel.matches(event)
    assert parse_field_selector("involvedObject.fieldPath=spec.containers{web}", EVENT).matches(event)
    # `source` is source.component, or the reporting component when that is empty.
    assert parse_field_selector("source=default-scheduler", EVENT).matches(event)
    event["source"] = {"component": "kubelet"}
    assert parse_field_selector("source=kubelet", EVENT).matches(event)


@pytest.mark.parametrize(("kind", "text", "obj", "expected"), [
    (NODE, "spec.unschedulable=false", {"metadata": {"name": "n"}, "spec": {}}, True),
    (NODE, "spec.unschedulable=true", {"metadata": {"name": "n"}, "spec": {"unschedulable": True}}, True),
    (NODE, "metadata.namespace=", {"metadata": {"name": "n"}}, True),  # cluster-scoped: no namespace
    (NODE, "metadata.name=n", {"metadata": {"name": "n"}}, True),
    (NAMESPACE, "status.phase=Terminating", {"metadata": {"name": "x"}, "status": {"phase": "Terminating"}}, True),
    (SECRET, "type=kubernetes.io/tls", {"metadata": {"name": "s"}, "type": "kubernetes.io/tls"}, True),
    (SECRET, "type!=Opaque", {"metadata": {"name": "s"}, "type": "Opaque"}, False),
    (SERVICE, "spec.clusterIP=None", {"metadata": {"name": "s"}, "spec": {"clusterIP": "None"}}, True),
    (SERVICE, "spec.type=NodePort", {"metadata": {"name": "s"}, "spec": {"type": "NodePort"}}, True),
    (REPLICA_SET, "status.replicas=0", {"metadata": {"name": "r"}, "status": {}}, True),
    (REPLICA_SET, "status.replicas=3", {"metadata": {"name": "r"}, "status": {"replicas": 3}}, True),
    (RC, "status.replicas!=0", {"metadata": {"name": "r"}, "status": {"replicas": 1}}, True),
    (CONFIG_MAP, "metadata.name=cm", {"metadata": {"name": "cm", "namespace": "d"}}, True),
])
def test_kind_specific_fields(kind: registry.Kind, text: str, obj: dict[str, Any], expected: bool) -> None:
    assert parse_field_selector(text, kind).matches(obj) is expected


def test_unsupported_field_on_a_kind_with_its_own_fields() -> None:
    with pytest.raises(errors.BadRequest) as err:
        parse_field_selector("spec.foo=bar", POD)
    assert err.value.message == "field label not supported: spec.foo"


def test_unsupported_field_on_a_kind_with_only_metadata_fields() -> None:
    with pytest.raises(errors.BadRequest) as err:
        parse_field_selector("data.x=y", CONFIG_MAP)
    assert err.value.message == '"data.x" is not a known field selector: only "metadata.name", "metadata.namespace"'


def test_fields_of_one_kind_are_not_selectable_on_another() -> None:
    with pytest.raises(errors.BadRequest):
        parse_field_selector("spec.nodeName=w1", NODE)


@pytest.mark.parametrize(("text", "message"), [
    ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
    ("a=b,metadata.name", "invalid selector: 'a=b,metadata.name'; can't understand 'metadata.name'"),
    ("metadata.name=a=b", "invalid field selector: unescaped character in value: '='"),
    (r"metadata.name=a\x", r"invalid field selector: invalid escape sequence: \x"),
    ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
    (" metadata.name=a", "field label not supported:  metadata.name"),
])
def test_field_selector_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(errors.BadRequest) as err:
        parse_field_selector(text, POD)
    assert err.value.message == message


def test_field_table_covers_only_registered_kinds() -> None:
    known = {k.kind for k in registry.KINDS}
    assert set(FIELD_LABELS) <= known
