#!/usr/bin/env python3
"""Generate harness/api/protobuf/data/k8s-<version>.json: upstream Kubernetes' protobuf messages as data.

Kubernetes clients (kubectl's typed commands, client-go) send and accept `application/vnd.kubernetes.protobuf`.
The messages are declared upstream in `generated.proto` files (one per API group version, written by
go-to-protobuf from the Go types):

    kubernetes/api           core/v1, apps/v1, coordination/v1, rbac/v1, authentication/v1,
                             authorization/v1, autoscaling/v1 and v2, policy/v1, certificates/v1,
                             batch/v1, discovery/v1, networking/v1, storage/v1, scheduling/v1,
                             node/v1, admissionregistration/v1                      (generated.proto)
    kubernetes/apimachinery  pkg/apis/meta/v1, pkg/api/resource, pkg/util/intstr,
                             pkg/runtime, pkg/runtime/schema                        (generated.proto)

This script has its own parser of the part of the .proto language those files use (syntax, package,
import, option, messages with nested messages and enums, `optional` / `repeated` / `required` fields,
`map<K, V>`, field options in brackets, `reserved`, line and block comments) and writes ONE JSON document
of our own: every message of those packages with its fields.

The .proto names are the JSON names almost everywhere, but not quite: the Go JSON tag decides, and it is
only in the Go types. So the script also reads the Go files of each package (`types.go` and friends, found
next to `generated.proto`) for the struct tags `json:"..." protobuf:"..."`, matched by field number, to learn

  - the JSON name where it differs from the .proto name (authentication/v1 BoundObjectReference `uID` is
    `uid` in JSON);
  - the embedded structs whose JSON is inlined in the parent (`json:""`: Volume.volumeSource,
    Probe.handler, the LocalObjectReference of ConfigMapKeySelector, ...): marked `"inline": true`;
  - which fields Go's JSON leaves out when they hold their zero value (a non-pointer scalar tagged
    `omitempty`, or any non-pointer field tagged `omitzero`): marked `"omitZero": true`. Go's protobuf
    encoding writes every non-pointer field, zero or not, so a decoder needs this to show what upstream's
    JSON would.

Messages that mask a Go named slice (`+protobuf.nullable=true`: meta/v1 Verbs, ExtraValue) are marked
`"listWrapper": true`: their JSON is the list of their one repeated field.

Output, keys sorted, one field per line:

    {"format": 1,
     "upstream": [{"repository": "github.com/kubernetes/api", "ref": "v0.37.0-beta.0", "commit": "..."}, ...],
     "files": ["k8s.io/api/core/v1/generated.proto", ...],
     "messages": {"k8s.io.api.core.v1.Pod": {"fields": [
         {"label": "optional", "name": "metadata", "number": 1,
          "type": "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"}, ...]}, ...}}

A field is {"number", "name" (JSON), "type" (a scalar such as "string", "int32", "bytes", or a message's
full name without the leading dot), "label" ("optional", "repeated" or "map", then with "key": the key's
scalar type, "type" being the value's)}, plus "protoName" when the .proto spells the name differently, and
the flags above when true.

To regenerate (e.g. for a newer Kubernetes release):

 1. Fetch the two repositories (`git clone --bare https://github.com/kubernetes/api` and
    `.../kubernetes/apimachinery`, or any mirror), pick the tag of the release (kubernetes vX.Y.Z is tag
    v0.X.Y... of both staging repositories, e.g. v0.37.0 for Kubernetes 1.37.0).
 2. From the repository root run:
        .venv/bin/python scripts/gen_proto_tables.py --api-git /path/to/api.git \\
            --apimachinery-git /path/to/apimachinery.git --ref v0.37.0 \\
            --out harness/api/protobuf/data/k8s-1.37.json
    (or, with the files already laid out as k8s.io/api/<group>/<version>/... and
    k8s.io/apimachinery/pkg/..., `--src DIR --upstream 'github.com/kubernetes/api@<ref> (<commit>)' ...`).
 3. Point `DATA_FILE` in harness/api/protobuf/schema.py at the new file, run
    tests/unit/test_protobuf*.py, and commit the JSON. Do not commit the upstream .proto or .go files.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The upstream packages read: (repository, directory in it). Their messages are all written out.
API_PACKAGES = ("core/v1", "apps/v1", "coordination/v1", "rbac/v1", "authentication/v1", "authorization/v1",
                "autoscaling/v1", "autoscaling/v2", "policy/v1", "certificates/v1", "batch/v1", "discovery/v1",
                "networking/v1", "storage/v1", "scheduling/v1", "node/v1", "admissionregistration/v1")
APIMACHINERY_PACKAGES = ("pkg/apis/meta/v1", "pkg/api/resource", "pkg/util/intstr", "pkg/runtime",
                         "pkg/runtime/schema")
PACKAGES = (*(("api", p) for p in API_PACKAGES), *(("apimachinery", p) for p in APIMACHINERY_PACKAGES))

SCALARS = frozenset({"double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
                     "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes"})
MAP_KEYS = SCALARS - {"double", "float", "bytes"}


class ProtoSyntaxError(Exception):
    pass


# -- the .proto tokenizer and parser -------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?))
  | (?P<ident>\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<symbol>[{}()\[\]<>;=,.])
""", re.VERBOSE | re.DOTALL)


@dataclass
class Token:
    kind: str
    text: str
    line: int
    comments: list[str]  # the comments just before this token


def tokenize(text: str, path: str) -> list[Token]:
    tokens: list[Token] = []
    pending: list[str] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ProtoSyntaxError(f"{path}:{line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        value = m.group()
        if kind == "line_comment":
            pending.append(value[2:])
        elif kind == "block_comment":
            pending.extend(value[2:-2].splitlines())
        elif kind != "space":
            tokens.append(Token(kind, value, line, pending))
            pending = []
        line += value.count("\n")
        pos = m.end()
    return tokens


@dataclass
class ProtoField:
    name: str
    number: int
    type: str  # as written; resolved later
    label: str  # optional, repeated, required, map
    key: str = ""  # map key type


@dataclass
class ProtoMessage:
    full_name: str
    comments: list[str]
    fields: list[ProtoField] = field(default_factory=list)
    scope: str = ""  # the full name used to resolve relative type names (the message itself)


@dataclass
class ProtoFile:
    path: str
    package: str = ""
    imports: list[str] = field(default_factory=list)
    messages: list[ProtoMessage] = field(default_factory=list)
    enums: list[str] = field(default_factory=list)


class Parser:
    def __init__(self, tokens: list[Token], path: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.path = path

    def error(self, message: str) -> ProtoSyntaxError:
        tok = self.tokens[self.pos] if self.pos < len(self.tokens) else None
        where = f"{self.path}:{tok.line}" if tok else f"{self.path}:end"
        return ProtoSyntaxError(f"{where}: {message}")

    def peek(self, ahead: int = 0) -> Token | None:
        i = self.pos + ahead
        return self.tokens[i] if i < len(self.tokens) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of file")
        self.pos += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.next()
        if tok.text != text:
            self.pos -= 1
            raise self.error(f"expected {text!r}, got {tok.text!r}")
        return tok

    def ident(self) -> str:
        tok = self.next()
        if tok.kind != "ident":
            self.pos -= 1
            raise self.error(f"expected a name, got {tok.text!r}")
        return tok.text

    def skip_statement(self) -> None:
        """Skip to the `;` ending this statement (options with nested parentheses or aggregates included)."""
        depth = 0
        while True:
            tok = self.next()
            if tok.text in ("{", "(", "["):
                depth += 1
            elif tok.text in ("}", ")", "]"):
                depth -= 1
            elif tok.text == ";" and depth <= 0:
                return

    def parse_file(self) -> ProtoFile:
        out = ProtoFile(self.path)
        while self.peek() is not None:
            tok = self.next()
            if tok.text == ";":
                continue
            if tok.text == "syntax":
                self.expect("=")
                syntax = self.next().text.strip("\"'")
                if syntax not in ("proto2", "proto3"):
                    raise self.error(f"unknown syntax {syntax!r}")
                self.expect(";")
            elif tok.text == "package":
                out.package = self.ident()
                self.expect(";")
            elif tok.text == "import":
                nxt = self.next()
                if nxt.text in ("public", "weak"):
                    nxt = self.next()
                out.imports.append(nxt.text.strip("\"'"))
                self.expect(";")
            elif tok.text == "option":
                self.skip_statement()
            elif tok.text == "message":
                self.parse_message(out, out.package, tok.comments)
            elif tok.text == "enum":
                self.parse_enum(out, out.package)
            elif tok.text in ("service", "extend"):
                self.skip_block()
            else:
                self.pos -= 1
                raise self.error(f"unexpected {tok.text!r} at the top level")
        return out

    def skip_block(self) -> None:
        while self.next().text != "{":
            pass
        depth = 1
        while depth:
            text = self.next().text
            depth += {"{": 1, "}": -1}.get(text, 0)

    def parse_enum(self, out: ProtoFile, scope: str) -> None:
        name = self.ident()
        out.enums.append(f"{scope}.{name}" if scope else name)
        self.skip_block_body()

    def skip_block_body(self) -> None:
        self.expect("{")
        depth = 1
        while depth:
            text = self.next().text
            depth += {"{": 1, "}": -1}.get(text, 0)

    def parse_message(self, out: ProtoFile, scope: str, comments: list[str]) -> None:
        name = self.ident()
        full = f"{scope}.{name}" if scope else name
        msg = ProtoMessage(full, comments, scope=full)
        out.messages.append(msg)
        self.expect("{")
        while True:
            tok = self.next()
            if tok.text == "}":
                return
            if tok.text == ";":
                continue
            if tok.text == "message":
                self.parse_message(out, full, tok.comments)
            elif tok.text == "enum":
                self.parse_enum(out, full)
            elif tok.text in ("option", "reserved", "extensions"):
                self.skip_statement()
            elif tok.text == "oneof":
                self.ident()
                self.expect("{")
                while self.peek() is not None and self.peek().text != "}":  # type: ignore[union-attr]
                    if self.peek().text == "option":  # type: ignore[union-attr]
                        self.next()
                        self.skip_statement()
                        continue
                    msg.fields.append(self.parse_field("optional"))
                self.expect("}")
            elif tok.text in ("optional", "repeated", "required"):
                msg.fields.append(self.parse_field(tok.text))
            elif tok.text == "map":
                self.pos -= 1
                msg.fields.append(self.parse_field("map"))
            elif tok.kind == "ident":  # proto3 field without a label
                self.pos -= 1
                msg.fields.append(self.parse_field("optional"))
            else:
                self.pos -= 1
                raise self.error(f"unexpected {tok.text!r} in message {full}")

    def parse_field(self, label: str) -> ProtoField:
        key = ""
        if label == "map":
            self.expect("map")
            self.expect("<")
            key = self.ident()
            if key not in MAP_KEYS:
                raise self.error(f"a map key must be an integral or string type, not {key!r}")
            self.expect(",")
            type_ = self.ident()
            self.expect(">")
        else:
            type_ = self.ident()
        if type_ == "group":
            raise self.error("groups are not supported")
        name = self.ident()
        self.expect("=")
        tok = self.next()
        if tok.kind != "number":
            self.pos -= 1
            raise self.error(f"expected a field number, got {tok.text!r}")
        number = int(tok.text, 0)
        if not 1 <= number <= 536870911 or 19000 <= number <= 19999:
            raise self.error(f"invalid field number {number}")
        if self.peek() is not None and self.peek().text == "[":  # type: ignore[union-attr]
            depth = 0
            while True:
                text = self.next().text
                depth += {"[": 1, "]": -1}.get(text, 0)
                if depth == 0:
                    break
        self.expect(";")
        return ProtoField(name, number, type_, label, key)


def parse_proto(text: str, path: str) -> ProtoFile:
    return Parser(tokenize(text, path), path).parse_file()


def resolve(type_: str, scope: str, known: set[str], enums: set[str]) -> str:
    """A type name as written, resolved the way protoc does: scalars as they are, `.a.b.C` absolute, otherwise
    looked up from the innermost scope outwards."""
    if type_ in SCALARS:
        return type_
    if type_.startswith("."):
        name = type_[1:]
        if name in known or name in enums:
            return "int32" if name in enums else name
        raise ProtoSyntaxError(f"unknown type {type_}")
    parts = scope.split(".")
    while True:
        candidate = ".".join([*parts, type_]) if parts else type_
        if candidate in known:
            return candidate
        if candidate in enums:
            return "int32"
        if not parts:
            break
        parts.pop()
    raise ProtoSyntaxError(f"unknown type {type_} (seen from {scope})")


# -- Go struct tags ---------------------------------------------------------------------------------------

_STRUCT = re.compile(r"^type\s+(\w+)\s+struct\s*\{")
_GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
_TAG = re.compile(r'(\w+):"([^"]*)"')


@dataclass(frozen=True)
class GoField:
    json_name: str | None  # None: no json tag
    embedded: bool
    pointer: bool
    omitempty: bool
    omitzero: bool


def go_struct_tags(text: str) -> dict[str, dict[int, GoField]]:
    """For each Go struct of a file: its fields with a protobuf tag, by protobuf field number."""
    out: dict[str, dict[int, GoField]] = {}
    current: dict[int, GoField] | None = None
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        if current is None:
            m = _STRUCT.match(line)
            if m:
                current = out.setdefault(m.group(1), {})
                depth = 1
            continue
        if stripped.startswith("//"):
            continue
        depth += stripped.count("{") - stripped.count("}")
        if depth <= 0:
            current = None
            continue
        m = _GO_FIELD.match(line)
        if m is None:
            continue
        name, go_type, tag = m.groups()
        tags = dict(_TAG.findall(tag))
        pb = tags.get("protobuf")
        if pb is None:
            continue
        parts = pb.split(",")
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        json_tag = tags.get("json")
        json_name, opts = None, []
        if json_tag is not None:
            json_name, *opts = json_tag.split(",")
        current[int(parts[1])] = GoField(json_name, name is None, go_type.startswith("*"), "omitempty" in opts,
                                         "omitzero" in opts)
    return out


# -- putting it together ----------------------------------------------------------------------------------

@dataclass
class Source:
    repository: str
    ref: str
    commit: str


def proto_files(src: Path) -> Iterator[tuple[str, Path]]:
    for repo, pkg in PACKAGES:
        yield f"k8s.io/{repo}/{pkg}", src / "k8s.io" / repo / pkg


def build(src: Path) -> tuple[dict[str, Any], list[str]]:
    files: list[ProtoFile] = []
    go: dict[str, dict[str, dict[int, GoField]]] = {}  # proto package -> Go struct -> fields
    used: list[str] = []
    for rel, directory in proto_files(src):
        path = directory / "generated.proto"
        if not path.is_file():
            raise SystemExit(f"missing {path}")
        parsed = parse_proto(path.read_text(), f"{rel}/generated.proto")
        files.append(parsed)
        used.append(f"{rel}/generated.proto")
        structs: dict[str, dict[int, GoField]] = {}
        for gofile in sorted(directory.glob("*.go")):
            if gofile.name.endswith("_test.go") or gofile.name.startswith(("zz_generated", "generated.pb")):
                continue
            found = {struct: tags for struct, tags in go_struct_tags(gofile.read_text()).items() if tags}
            for struct, tags in found.items():
                structs.setdefault(struct, {}).update(tags)
            if found:
                used.append(f"{rel}/{gofile.name}")
        go[parsed.package] = structs

    known = {m.full_name for f in files for m in f.messages}
    enums = {e for f in files for e in f.enums}
    messages: dict[str, Any] = {}
    for f in files:
        structs = go.get(f.package, {})
        for msg in f.messages:
            short = msg.full_name[len(f.package) + 1:]
            tags = structs.get(short.replace(".", "_"), {})
            out_fields = []
            numbers: set[int] = set()
            for fld in msg.fields:
                if fld.number in numbers:
                    raise ProtoSyntaxError(f"{msg.full_name}: field number {fld.number} is used twice")
                numbers.add(fld.number)
                type_ = resolve(fld.type, msg.scope, known, enums)
                entry: dict[str, Any] = {"number": fld.number, "name": fld.name, "type": type_,
                                         "label": "optional" if fld.label == "required" else fld.label}
                if fld.label == "map":
                    entry["key"] = fld.key
                gf = tags.get(fld.number)
                if gf is not None:
                    if gf.embedded and gf.json_name == "":
                        entry["inline"] = True
                        if type_ in SCALARS or fld.label != "optional":
                            raise ProtoSyntaxError(f"{msg.full_name}.{fld.name}: only a message can be inlined")
                    elif gf.json_name and gf.json_name not in ("-", fld.name):  # "-": custom marshalling
                        entry["protoName"] = fld.name
                        entry["name"] = gf.json_name
                    if fld.label == "optional" and not gf.pointer and (
                            gf.omitzero or (gf.omitempty and type_ in SCALARS)):
                        entry["omitZero"] = True
                out_fields.append(entry)
            doc: dict[str, Any] = {"fields": out_fields}
            if any("+protobuf.nullable=true" in c for c in msg.comments):
                if len(out_fields) != 1 or out_fields[0]["label"] != "repeated":
                    raise ProtoSyntaxError(f"{msg.full_name}: a nullable slice mask must have one repeated field")
                doc["listWrapper"] = True
            messages[msg.full_name] = doc
    return messages, used


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


def export_from_git(api_git: str, apimachinery_git: str, ref: str, dest: Path) -> list[Source]:
    """Write the .proto and non-test .go files of PACKAGES at `ref` into `dest` (laid out as for --src)."""
    sources = []
    for repo, gitdir in (("api", api_git), ("apimachinery", apimachinery_git)):
        commit = git(gitdir, "rev-parse", f"{ref}^{{commit}}").strip()
        sources.append(Source(f"github.com/kubernetes/{repo}", ref, commit))
        for r, pkg in PACKAGES:
            if r != repo:
                continue
            names = git(gitdir, "ls-tree", "--name-only", commit, f"{pkg}/").split()
            for name in names:
                base = name.rsplit("/", 1)[-1]
                if base == "generated.proto" or (base.endswith(".go") and not base.endswith("_test.go")):
                    target = dest / "k8s.io" / repo / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    blob = subprocess.run(["git", "-C", gitdir, "show", f"{commit}:{name}"], check=True,
                                          capture_output=True).stdout
                    target.write_bytes(blob)
    return sources


def render(doc: dict[str, Any]) -> str:
    """Deterministic, diff-friendly JSON: one message per block, one field per line."""
    lines = ["{", f' "format": {json.dumps(doc["format"])},',
             f' "upstream": {json.dumps(doc["upstream"], sort_keys=True)},',
             f' "files": {json.dumps(doc["files"])},', ' "messages": {']
    names = sorted(doc["messages"])
    for i, name in enumerate(names):
        msg = doc["messages"][name]
        extra = "".join(f', {json.dumps(k)}: {json.dumps(v)}' for k, v in sorted(msg.items()) if k != "fields")
        lines.append(f'  {json.dumps(name)}: {{"fields": [')
        for j, fld in enumerate(msg["fields"]):
            comma = "," if j < len(msg["fields"]) - 1 else ""
            lines.append(f"   {json.dumps(fld, sort_keys=True)}{comma}")
        lines.append(f'  ]{extra}}}{"," if i < len(names) - 1 else ""}')
    lines += [" }", "}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, help="a directory laid out as k8s.io/api/... and k8s.io/apimachinery/...")
    parser.add_argument("--upstream", action="append", default=[],
                        help="with --src: 'repository@ref (commit)', once per repository")
    parser.add_argument("--api-git", help="a git directory of kubernetes/api")
    parser.add_argument("--apimachinery-git", help="a git directory of kubernetes/apimachinery")
    parser.add_argument("--ref", help="with --api-git/--apimachinery-git: the tag (or commit) to read")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.api_git or args.apimachinery_git:
            if not (args.api_git and args.apimachinery_git and args.ref):
                parser.error("--api-git, --apimachinery-git and --ref go together")
            src = Path(tmp)
            sources = export_from_git(args.api_git, args.apimachinery_git, args.ref, src)
        elif args.src:
            src = args.src
            sources = []
            for spec in args.upstream:
                m = re.fullmatch(r"(\S+)@(\S+)(?: \((\w+)\))?", spec)
                if m is None:
                    parser.error(f"--upstream {spec!r}: expected 'repository@ref (commit)'")
                sources.append(Source(m.group(1), m.group(2), m.group(3) or ""))
        else:
            parser.error("give --src or --api-git/--apimachinery-git/--ref")
        messages, used = build(src)

    doc = {"format": 1,
           "upstream": [{"repository": s.repository, "ref": s.ref, "commit": s.commit} for s in sources],
           "files": used, "messages": messages}
    text = render(doc)
    json.loads(text)  # what we write must read back
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    nfields = sum(len(m["fields"]) for m in messages.values())
    print(f"wrote {args.out}: {len(messages)} messages, {nfields} fields, {len(text)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
