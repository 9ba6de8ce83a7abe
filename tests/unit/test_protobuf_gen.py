"""scripts/gen_proto_tables.py: its .proto parser and Go struct-tag reader on small inputs, and the committed data
file it wrote (canonical, with the facts the decoder relies on)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.api.protobuf import schema

ROOT = Path(__file__).resolve().parents[2]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto_tables", ROOT / "scripts" / "gen_proto_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = _load_script()

PROTO = '''
/* a licence
   in a block comment */
syntax = "proto2";

package example.v1;

import "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto";

// Package-wide variables from generator "generated".
option go_package = "example.com/v1";

// Outer is a message.
// +protobuf.nullable=true
message Outer {
  // a field comment with { braces } and "quotes"
  optional string name = 1;

  repeated Inner inners = 2 [packed = false, (gogoproto.nullable) = false];

  map<string, Inner> byName = 3;

  map<int32, bytes> blobs = 4;

  optional .example.v1.Outer.Nested nested = 5;

  reserved 6, 7 to 9;

  message Nested {
    optional Kind kind = 1;
    enum Kind { A = 0; B = 1; }
  }

  oneof choice {
    string left = 10;
    int64 right = 11;
  }
}

message Inner {
  required int32 count = 1;
  optional Outer.Nested nested = 2;
}
'''


def test_the_proto_parser_reads_the_subset_upstream_uses() -> None:
    parsed = gen.parse_proto(PROTO, "example.proto")
    assert parsed.package == "example.v1"
    assert parsed.imports == ["k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto"]
    by_name = {m.full_name: m for m in parsed.messages}
    assert set(by_name) == {"example.v1.Outer", "example.v1.Outer.Nested", "example.v1.Inner"}
    outer = by_name["example.v1.Outer"]
    assert any("+protobuf.nullable=true" in c for c in outer.comments)
    fields = {f.name: f for f in outer.fields}
    assert (fields["inners"].label, fields["inners"].type, fields["inners"].number) == ("repeated", "Inner", 2)
    assert (fields["byName"].label, fields["byName"].key, fields["byName"].type) == ("map", "string", "Inner")
    assert (fields["blobs"].key, fields["blobs"].type) == ("int32", "bytes")
    assert (fields["left"].label, fields["right"].number) == ("optional", 11)
    known = set(by_name)
    enums = set(parsed.enums)
    assert gen.resolve("Outer.Nested", "example.v1.Inner", known, enums) == "example.v1.Outer.Nested"
    assert gen.resolve("Nested", "example.v1.Outer", known, enums) == "example.v1.Outer.Nested"
    assert gen.resolve(".example.v1.Outer.Nested", "x", known, enums) == "example.v1.Outer.Nested"
    assert gen.resolve("Kind", "example.v1.Outer.Nested", known, enums) == "int32"
    assert gen.resolve("string", "x", known, enums) == "string"
    with pytest.raises(gen.ProtoSyntaxError):
        gen.resolve("Missing", "example.v1.Outer", known, enums)


@pytest.mark.parametrize("bad", [
    "message M { optional string a = 0; }",
    "message M { optional string a = 1 }",
    "message M { map<double, string> m = 1; }",
    "message M { optional string a = 1;",
    "syntax = \"proto4\";",
    "message M { optional group G = 1 {} }",
    "frobnicate;",
])
def test_the_proto_parser_refuses_what_it_does_not_understand(bad: str) -> None:
    with pytest.raises(gen.ProtoSyntaxError):
        gen.parse_proto(bad, "bad.proto")


GO = '''
type Volume struct {
	Name string `json:"name" protobuf:"bytes,1,opt,name=name"`
	// an embedded struct: its JSON is inlined
	VolumeSource `json:"" protobuf:"bytes,2,opt,name=volumeSource"`
}

type BoundObjectReference struct {
	UID types.UID `json:"uid,omitempty" protobuf:"bytes,4,opt,name=uID,casttype=k8s.io/apimachinery/pkg/types.UID"`
	Replicas *int32 `json:"replicas,omitempty" protobuf:"varint,5,opt,name=replicas"`
	Created metav1.Time `json:"created,omitempty,omitzero" protobuf:"bytes,6,opt,name=created"`
	Labels map[string]string `json:"labels,omitempty" protobuf:"bytes,7,rep,name=labels"`
	Untagged string
}
'''


def test_go_struct_tags() -> None:
    tags = gen.go_struct_tags(GO)
    volume = tags["Volume"]
    assert volume[2].embedded and volume[2].json_name == ""
    assert volume[1].json_name == "name" and not volume[1].omitempty
    ref = tags["BoundObjectReference"]
    assert ref[4].json_name == "uid" and ref[4].omitempty and not ref[4].pointer
    assert ref[5].pointer
    assert ref[6].omitzero
    assert set(ref) == {4, 5, 6, 7}


def test_the_committed_data_file_is_what_the_script_writes() -> None:
    text = schema.DATA_FILE.read_text()
    doc = json.loads(text)
    assert gen.render(doc) == text  # canonical: regenerating from the same sources gives the same bytes
    assert doc["format"] == 1
    assert len(text) < 1_500_000
    assert all(f.endswith((".proto", ".go")) for f in doc["files"])
    messages = doc["messages"]
    for name in ("k8s.io.api.core.v1.Pod", "k8s.io.api.apps.v1.Deployment", "k8s.io.api.coordination.v1.Lease",
                 "k8s.io.api.rbac.v1.ClusterRole", "k8s.io.api.authentication.v1.TokenRequest",
                 "k8s.io.api.authorization.v1.SelfSubjectRulesReview", "k8s.io.api.autoscaling.v1.Scale",
                 "k8s.io.api.policy.v1.Eviction", "k8s.io.api.core.v1.Binding",
                 "k8s.io.apimachinery.pkg.apis.meta.v1.Status", "k8s.io.apimachinery.pkg.apis.meta.v1.WatchEvent",
                 "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions", "k8s.io.apimachinery.pkg.runtime.Unknown",
                 *schema.SPECIALS):
        assert name in messages, name
    volume = {f["name"]: f for f in messages["k8s.io.api.core.v1.Volume"]["fields"]}
    assert volume["volumeSource"]["inline"]
    assert messages["k8s.io.apimachinery.pkg.apis.meta.v1.Verbs"].get("listWrapper")
    labels = {f["name"]: f for f in messages["k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["fields"]}["labels"]
    assert (labels["label"], labels["key"], labels["type"]) == ("map", "string", "string")
