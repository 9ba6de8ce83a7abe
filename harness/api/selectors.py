"""Label and field selectors: the `labelSelector` / `fieldSelector` query parameters and `LabelSelector` specs.

Both parse into immutable selectors that answer `matches`, print in upstream's canonical form
(requirements sorted, values sorted and deduplicated), and expose their requirements so the
apiserver can narrow a storage read (`FieldSelector.exact("metadata.name")`). The grammar,
checks and error words follow apimachinery's `pkg/labels` and `pkg/fields`.

Field selectors only know the fields each kind's apiserver strategy makes selectable: that is
the one table `FIELD_LABELS`. A field the object lacks compares as upstream's zero value:
"" for strings, "false" for flags, "0" for counts — so `spec.nodeName=` selects unscheduled pods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.api import errors
from harness.api.registry import Kind
from harness.api.validation import formats
from harness.api.validation.field_errors import fmt_value

# -- label selectors ------------------------------------------------------------------------

IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN = "exists", "!", "gt", "lt"

_BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)
_SET_OPERATORS = frozenset({IN, NOT_IN})
_EXACT_OPERATORS = frozenset({EQUALS, DOUBLE_EQUALS, NOT_EQUALS})
_ORDER_OPERATORS = frozenset({GREATER_THAN, LESS_THAN})
_ALL_OPERATORS = (*_BINARY_OPERATORS, EXISTS, DOES_NOT_EXIST)
_SPEC_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: a key, an operator and its (sorted, distinct) values."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator in (IN, EQUALS, DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if self.operator in (NOT_IN, NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        return present and self._compare(labels[self.key])

    def _compare(self, value: str) -> bool:
        have = _int64(value)
        want = _int64(self.values[0]) if len(self.values) == 1 else None
        if have is None or want is None:
            return False
        return have > want if self.operator == GREATER_THAN else have < want

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        joined = ",".join(self.values)
        if self.operator in _SET_OPERATORS:
            return f"{self.key} {self.operator} ({joined})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{joined}"


@dataclass(frozen=True)
class LabelSelector:
    """An AND of requirements; with none it selects everything."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)

    def exact(self, key: str) -> str | None:
        """The one value `key` must have (from `key=v` or `key in (v)`), if the selector pins it."""
        for r in self.requirements:
            if r.key == key and r.operator in (IN, EQUALS, DOUBLE_EQUALS) and len(r.values) == 1:
                return r.values[0]
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64): optional sign, decimal digits only, in range."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def new_requirement(key: str, operator: str, values: list[str] | tuple[str, ...] = ()) -> Requirement:
    """A checked requirement (upstream `NewRequirement`); BadRequest listing every problem."""
    problems = _key_problems(key) + _value_problems(key, operator, list(values))
    if problems:
        raise errors.BadRequest(problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]")
    return Requirement(key, operator, tuple(sorted(set(values))))


def _key_problems(key: str) -> list[str]:
    msgs = formats.qualified_name(key)
    return [f"key: Invalid value: {fmt_value(key)}: {'; '.join(msgs)}"] if msgs else []


def _value_problems(key: str, operator: str, values: list[str]) -> list[str]:
    shown = "[" + ",".join(fmt_value(v) for v in values) + "]"
    problems: list[str] = []
    if operator not in _ALL_OPERATORS:
        supported = ", ".join(f'"{op}"' for op in _ALL_OPERATORS)
        problems.append(f"operator: Unsupported value: {fmt_value(operator)}: supported values: {supported}")
    elif operator in _SET_OPERATORS and not values:
        problems.append(f"values: Invalid value: {shown}: for 'in', 'notin' operators, values set can't be empty")
    elif operator in _EXACT_OPERATORS and len(values) != 1:
        problems.append(f"values: Invalid value: {shown}: exact-match compatibility requires one single value")
    elif operator in (EXISTS, DOES_NOT_EXIST) and values:
        problems.append(f"values: Invalid value: {shown}: values set must be empty for exists and does not exist")
    elif operator in _ORDER_OPERATORS:
        if len(values) != 1:
            problems.append(f"values: Invalid value: {shown}: for 'Gt', 'Lt' operators, exactly one value is required")
        problems += [f"values[{i}]: Invalid value: {fmt_value(v)}: for 'Gt', 'Lt' operators, the value must be an "
                     "integer" for i, v in enumerate(values) if _int64(v) is None]
    for i, value in enumerate(values):
        msgs = formats.label_value(value)
        if msgs:
            problems.append(f"values[{i}][{key}]: Invalid value: {fmt_value(value)}: {'; '.join(msgs)}")
    return problems


# The lexer and parser below follow apimachinery's `labels.Parse` token for token, so that the
# same strings are accepted and rejected with the same words.

_SPECIAL = frozenset("=!(),<>")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOLS = {"(": "(", ")": ")", ",": ",", "!": "!", "=": "=", "==": "==", "!=": "!=", ">": ">", "<": "<"}
_OPERATOR_TOKENS = {"in": IN, "notin": NOT_IN, "=": EQUALS, "==": DOUBLE_EQUALS, "!=": NOT_EQUALS,
                    ">": GREATER_THAN, "<": LESS_THAN}
_IDENT, _END = "identifier", "end"


@dataclass(frozen=True)
class _Token:
    kind: str  # _IDENT, _END, or the symbol itself: "(", ")", ",", "!", "=", "==", "!=", ">", "<"
    text: str
    keyword: bool = False  # "in" / "notin": identifiers where a value is expected


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n or text[i] == "\x00":
            tokens.append(_Token(_END, ""))
            return tokens
        start = i
        if text[i] in _SPECIAL:
            # Longest run of special characters that is still a token: "!=" but "=" then "!".
            i += 1
            while i < n and text[start:i + 1] in _SYMBOLS:
                i += 1
            tokens.append(_Token(_SYMBOLS[text[start:i]], text[start:i]))
            continue
        while i < n and text[i] not in _SPECIAL and text[i] not in _WHITESPACE and text[i] != "\x00":
            i += 1
        word = text[start:i]
        tokens.append(_Token(_IDENT, word, keyword=word in (IN, NOT_IN)))


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token = self.peek()
            if token.kind == _END:
                return requirements
            if token.kind not in (_IDENT, "!"):
                raise errors.BadRequest(f"found '{token.text}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self.requirement())
            except errors.BadRequest as exc:
                raise errors.BadRequest(f"unable to parse requirement: {exc.message}") from None
            after = self.take()
            if after.kind == _END:
                return requirements
            if after.kind != ",":
                raise errors.BadRequest(f"found '{after.text}', expected: ',' or 'end of string'")
            if self.peek().kind not in (_IDENT, "!"):
                raise errors.BadRequest(f"found '{self.peek().text}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        negated = self.peek().kind == "!"
        if negated:
            self.take()
        key_token = self.take()
        if key_token.kind != _IDENT:
            raise errors.BadRequest(f"found '{key_token.text}', expected: identifier")
        key = key_token.text
        if problems := _key_problems(key):
            raise errors.BadRequest(problems[0])
        # "!key" takes no operator: whatever follows must be "," or the end ("!a=b" is an error).
        if negated:
            return new_requirement(key, DOES_NOT_EXIST)
        if self.peek().kind in (_END, ","):
            return new_requirement(key, EXISTS)
        operator = self.operator()
        values = self.value_set() if operator in _SET_OPERATORS else self.exact_value()
        return new_requirement(key, operator, sorted(set(values)))

    def operator(self) -> str:
        token = self.take()
        operator = _OPERATOR_TOKENS.get(token.text) if token.keyword or token.kind != _IDENT else None
        if operator is None:
            raise errors.BadRequest(f"found '{token.text}', expected: {', '.join(_BINARY_OPERATORS)}")
        return operator

    def value_set(self) -> list[str]:
        token = self.take()
        if token.kind != "(":
            raise errors.BadRequest(f"found '{token.text}' expected: '('")
        nxt = self.peek()
        if nxt.kind == ")":
            self.take()
            return [""]
        if nxt.kind not in (_IDENT, ","):
            raise errors.BadRequest(f"found '{nxt.text}', expected: ',', ')' or identifier")
        values = self.value_list()
        self.take()  # the ")" value_list stopped at
        return values

    def value_list(self) -> list[str]:
        values: list[str] = []
        while True:
            token = self.take()
            if token.kind == _IDENT:
                values.append(token.text)
                nxt = self.peek()
                if nxt.kind == ")":
                    return values
                if nxt.kind != ",":
                    raise errors.BadRequest(f"found '{nxt.text}', expected: ',' or ')'")
            elif token.kind == ",":
                # An empty slot, as in "(,a)", "(a,,b)" or "(a,)", is the empty value.
                if not values or self.peek().kind in (",", ")"):
                    values.append("")
                if self.peek().kind == ")":
                    return values
            else:
                raise errors.BadRequest(f"found '{token.text}', expected: ',', or identifier")

    def exact_value(self) -> list[str]:
        if self.peek().kind in (_END, ","):
            return [""]
        token = self.take()
        if token.kind != _IDENT:
            raise errors.BadRequest(f"found '{token.text}', expected: identifier")
        return [token.text]


def _sorted(requirements: Iterable[Requirement]) -> tuple[Requirement, ...]:
    return tuple(sorted(requirements, key=lambda r: r.key))


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the string form (`app=web,tier in (a,b),!canary`); BadRequest when it does not parse."""
    return LabelSelector(_sorted(_Parser(text).parse()))


def label_selector_from_spec(spec: Mapping[str, Any] | None) -> LabelSelector:
    """The selector of a `LabelSelector` object (`matchLabels` AND `matchExpressions`).

    An empty spec selects everything. Upstream turns a nil `*LabelSelector` into "nothing";
    None here gives the empty selector too, so callers that must select nothing for a missing
    selector check for None themselves.
    """
    if not spec:
        return LabelSelector()
    requirements = [new_requirement(str(k), EQUALS, [_label_str(v)])
                    for k, v in (spec.get("matchLabels") or {}).items()]
    for expr in spec.get("matchExpressions") or []:
        operator = _SPEC_OPERATORS.get(expr.get("operator"))
        if operator is None:
            raise errors.BadRequest(f'"{expr.get("operator")}" is not a valid label selector operator')
        values = [_label_str(v) for v in expr.get("values") or []]
        requirements.append(new_requirement(str(expr.get("key", "")), operator, values))
    return LabelSelector(_sorted(requirements))


def _label_str(value: Any) -> str:
    if not isinstance(value, str):
        raise errors.BadRequest(f"label selector values must be strings, got {fmt_value(value)}")
    return value


# -- field selectors ------------------------------------------------------------------------

Getter = Callable[[dict[str, Any]], str]


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _text(*path: str) -> Getter:
    def get(obj: dict[str, Any]) -> str:
        value = _dig(obj, path)
        return "" if value is None else str(value)
    return get


def _flag(*path: str) -> Getter:
    return lambda obj: "true" if _dig(obj, path) is True else "false"


def _count(*path: str) -> Getter:
    def get(obj: dict[str, Any]) -> str:
        value = _dig(obj, path)
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else "0"
    return get


def _pod_ip(obj: dict[str, Any]) -> str:
    ips = _dig(obj, ("status", "podIPs"))
    if isinstance(ips, list) and ips and isinstance(ips[0], dict):
        return str(ips[0].get("ip") or "")
    return _text("status", "podIP")(obj)


def _event_source(obj: dict[str, Any]) -> str:
    return _text("source", "component")(obj) or _text("reportingComponent")(obj)


_COMMON: dict[str, Getter] = {
    "metadata.name": _text("metadata", "name"),
    "metadata.namespace": _text("metadata", "namespace"),
}

#: Kind -> the fields its field selectors may use beyond metadata.name and metadata.namespace.
FIELD_LABELS: dict[str, dict[str, Getter]] = {
    "Pod": {
        "spec.nodeName": _text("spec", "nodeName"),
        "spec.restartPolicy": _text("spec", "restartPolicy"),
        "spec.schedulerName": _text("spec", "schedulerName"),
        "spec.serviceAccountName": _text("spec", "serviceAccountName"),
        "spec.hostNetwork": _flag("spec", "hostNetwork"),
        "status.phase": _text("status", "phase"),
        "status.podIP": _pod_ip,
        "status.nominatedNodeName": _text("status", "nominatedNodeName"),
    },
    "Event": {
        **{f"involvedObject.{f}": _text("involvedObject", f)
           for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": _text("reason"),
        "reportingComponent": _text("reportingComponent"),
        "source": _event_source,
        "type": _text("type"),
    },
    "Node": {"spec.unschedulable": _flag("spec", "unschedulable")},
    "Namespace": {"status.phase": _text("status", "phase")},
    "Secret": {"type": _text("type")},
    "Service": {"spec.clusterIP": _text("spec", "clusterIP"), "spec.type": _text("spec", "type")},
    "ReplicaSet": {"status.replicas": _count("status", "replicas")},
    "ReplicationController": {"status.replicas": _count("status", "replicas")},
}

#: Old names upstream still accepts, and what they mean now.
_ALIASES: dict[str, dict[str, str]] = {"Pod": {"spec.host": "spec.nodeName"}}


def _getter(kind: str, field: str) -> Getter:
    """The value function of `field` for `kind`; BadRequest, worded as upstream, if unsupported."""
    getter = _COMMON.get(field) or FIELD_LABELS.get(kind, {}).get(field)
    if getter is not None:
        return getter
    if kind in FIELD_LABELS:
        raise errors.BadRequest(f"field label not supported: {field}")
    raise errors.BadRequest(f'"{field}" is not a known field selector: only "metadata.name", "metadata.namespace"')


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    operator: str  # "=" or "!="
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """An AND of `field=value` / `field!=value` terms over one kind's selectable fields."""

    kind: str
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: dict[str, Any]) -> bool:
        for r in self.requirements:
            equal = _getter(self.kind, r.field)(obj) == r.value
            if equal != (r.operator == EQUALS):
                return False
        return True

    def exact(self, field: str) -> str | None:
        """The value `field` must equal, if a `field=value` term pins it (upstream RequiresExactMatch)."""
        for r in self.requirements:
            if r.field == field and r.operator == EQUALS:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def parse_field_selector(text: str, kind: Kind) -> FieldSelector:
    """Parse `a=b,c!=d` for `kind`; BadRequest on bad syntax or a field the kind does not select on."""
    terms = [_parse_term(text, term) for term in sorted(_split_terms(text)) if term]
    # Syntax first, then fields, so a bad term is reported before an unknown field.
    aliases = _ALIASES.get(kind.kind, {})
    requirements = tuple(FieldRequirement(aliases.get(f, f), op, value) for f, op, value in terms)
    for r in requirements:
        _getter(kind.kind, r.field)
    return FieldSelector(kind.kind, requirements)


def _parse_term(text: str, term: str) -> tuple[str, str, str]:
    field, operator, raw = _split_term(text, term)
    return field, NOT_EQUALS if operator == NOT_EQUALS else EQUALS, _unescape(raw)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not escaped with a backslash."""
    if not text:
        return []
    terms, start, escaped = [], 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(text: str, term: str) -> tuple[str, str, str]:
    for i in range(len(term)):
        for operator in (NOT_EQUALS, DOUBLE_EQUALS, EQUALS):
            if term.startswith(operator, i):
                return term[:i], operator, term[i + len(operator):]
    raise errors.BadRequest(f"invalid selector: '{text}'; can't understand '{term}'")


def escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise errors.BadRequest(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise errors.BadRequest(f"invalid field selector: unescaped character in value: '{ch}'")
        else:
            out.append(ch)
    if escaped:
        raise errors.BadRequest("invalid field selector: invalid escape sequence: \\")
    return "".join(out)
