"""What a container sees as its environment and argv, computed the way the kubelet (and the CRI runtime) does.

- `container_env`: service links, then `envFrom` (ConfigMaps/Secrets, optional prefix), then `env` in order,
  with `$(VAR)` expansion of literal values and `valueFrom` sources (configMapKeyRef, secretKeyRef, fieldRef,
  resourceFieldRef). Later definitions replace earlier ones; missing required references raise
  `ContainerConfigError` with upstream's wording.
- `expand` / `expand_command`: upstream's `$(VAR)` expansion (`$$` escapes, unknown references kept as written).
- `resolve_argv`: image entrypoint/cmd against the container's command/args (containerd's rules).
- `merge_image_env`: the image's env under the container's.

The downward-API helpers (`field_path_value`, `resource_field_value`, `format_map`) are shared with volumes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from harness.api.quantity import int_value, milli_value, parse_quantity
from harness.kubelet.errors import ContainerConfigError

#: How the kubelet reads ConfigMaps and Secrets: fetch(kind, namespace, name) -> object, or None if not found.
Fetch = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]

_OPERATOR = "$"
_OPENER = "("
_CLOSER = ")"


# ---------------------------------------------------------------------------------------------- expansion


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """A lookup trying each context in turn; an unknown name expands to its own `$(name)` reference."""

    def lookup(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"{_OPERATOR}{_OPENER}{name}{_CLOSER}"

    return lookup


def expand(text: str, mapping: Callable[[str], str]) -> str:
    """Replace `$(NAME)` with mapping(NAME); `$$` is a literal `$`; anything else stays as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_variable(text, cursor + 1)
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _read_variable(text: str, start: int) -> tuple[str, bool, int]:
    first = text[start]
    if first == _OPERATOR:
        return _OPERATOR, False, 1
    if first == _OPENER:
        end = text.find(_CLOSER, start + 1)
        if end >= 0:
            return text[start + 1:end], True, end - start + 1
        return _OPERATOR + _OPENER, False, 1
    return _OPERATOR + first, False, 1


def env_map(env: Iterable[str]) -> dict[str, str]:
    """"K=V" strings as a dict; a later definition of a key wins."""
    result: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def expand_command(args: list[str], env: list[str]) -> list[str]:
    """`$(VAR)` expansion of a container's command or args against its final environment."""
    mapping = mapping_for(env_map(env))
    return [expand(arg, mapping) for arg in args]


def expand_static(command: list[str], container: dict[str, Any]) -> list[str]:
    """Expansion against the container's literal `env` values only (what exec probes and hooks get)."""
    static = {item["name"]: item.get("value") or "" for item in container.get("env") or []}
    mapping = mapping_for(static)
    return [expand(arg, mapping) for arg in command]


def expand_subpath_expr(expression: str, env: list[str]) -> str:
    """A volumeMount's `subPathExpr`: every reference must name a variable with a non-empty value."""
    values = env_map(env)
    missing: set[str] = set()

    def lookup(name: str) -> str:
        value = values.get(name, "")
        if not value:
            missing.add(name)
        return value

    expanded = expand(expression, lookup)
    if missing:
        raise ContainerConfigError(f"missing value for {', '.join(sorted(missing))}")
    return expanded


# ---------------------------------------------------------------------------------------------- argv and image env


def resolve_argv(container: dict[str, Any], image_entrypoint: list[str] | None, image_cmd: list[str] | None,
                 *, env: list[str] | None = None) -> list[str]:
    """The process argv, as the CRI runtime builds it from the image config and the container spec.

    `command` replaces the image's entrypoint *and* drops its cmd; `args` alone replace the cmd and keep the
    entrypoint. With `env`, the container's command and args are `$(VAR)`-expanded first (the kubelet's step).
    """
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if env is not None:
        command = expand_command(command, env)
        args = expand_command(args, env)
    if not command:
        if not args:
            args = list(image_cmd or [])
        entrypoint = list(image_entrypoint or [])
        if entrypoint != [""]:
            command = entrypoint
    argv = command + args
    if not argv:
        raise ContainerConfigError("no command specified", reason="CreateContainerError")
    return argv


def merge_image_env(image_env: list[str], env: list[str]) -> list[str]:
    """The image's env with the container's on top: a key keeps the image's position, new keys follow."""
    merged: dict[str, str] = {}
    for item in [*image_env, *env]:
        key, sep, value = item.partition("=")
        if not sep:
            merged.pop(key, None)  # a bare KEY unsets, as in containerd's WithEnv
            continue
        merged[key] = value
    return [f"{key}={value}" for key, value in merged.items()]


# ---------------------------------------------------------------------------------------------- downward API


def go_quote(text: str) -> str:
    """Go's `%q` of a string (strconv.Quote): double quotes, backslash escapes, printable runes kept."""
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               "\\": "\\\\", '"': '\\"'}
    out = ['"']
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif char == " " or char.isprintable():
            out.append(char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """Labels/annotations as the downward API writes them: `key="value"` lines sorted by key, no final newline."""
    return "\n".join(f"{key}={go_quote(values[key])}" for key in sorted(values))


def split_subscript(path: str) -> tuple[str, str] | None:
    """`metadata.labels['app']` -> ("metadata.labels", "app"); None when the path has no subscript."""
    if not path.endswith("']"):
        return None
    head, sep, key = path[:-2].partition("['")
    if not sep or not head:
        return None
    return head, key


def field_path_value(pod: dict[str, Any], path: str) -> str:
    """upstream `fieldpath.ExtractFieldPathAsString`: metadata fields of the pod; ValueError otherwise."""
    meta = pod.get("metadata") or {}
    subscripted = split_subscript(path)
    if subscripted is not None:
        head, key = subscripted
        if head == "metadata.annotations":
            return str((meta.get("annotations") or {}).get(key, ""))
        if head == "metadata.labels":
            return str((meta.get("labels") or {}).get(key, ""))
        raise ValueError(f"fieldPath {go_quote(path)} does not support subscript")
    if path == "metadata.annotations":
        return format_map(meta.get("annotations") or {})
    if path == "metadata.labels":
        return format_map(meta.get("labels") or {})
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.split(".", 1)[1]) or "")
    raise ValueError(f"unsupported fieldPath: {path}")


_CONVERTIBLE = {"metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid",
                "spec.nodeName", "spec.restartPolicy", "spec.serviceAccountName", "spec.schedulerName",
                "status.phase", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"}


def env_field_value(pod: dict[str, Any], field_ref: dict[str, Any], *, pod_ips: list[str], host_ips: list[str],
                    node_name: str) -> str:
    """The value of an env var's `fieldRef` (upstream `podFieldSelectorRuntimeValue`)."""
    version = field_ref.get("apiVersion") or "v1"
    path = str(field_ref.get("fieldPath") or "")
    if version != "v1":
        raise ContainerConfigError(f"unsupported pod version: {version}")
    subscripted = split_subscript(path)
    if subscripted is not None:
        if subscripted[0] not in ("metadata.annotations", "metadata.labels"):
            raise ContainerConfigError(f"field label does not support subscript: {path}")
    elif path == "spec.host":
        path = "spec.nodeName"
    elif path not in _CONVERTIBLE:
        raise ContainerConfigError(f"field label not supported: {path}")
    spec = pod.get("spec") or {}
    if path == "spec.nodeName":
        return str(spec.get("nodeName") or node_name)
    if path == "spec.serviceAccountName":
        return str(spec.get("serviceAccountName") or "")
    if path == "status.hostIP":
        return host_ips[0] if host_ips else ""
    if path == "status.hostIPs":
        return ",".join(host_ips)
    if path == "status.podIP":
        return pod_ips[0] if pod_ips else ""
    if path == "status.podIPs":
        return ",".join(pod_ips)
    try:
        return field_path_value(pod, path)
    except ValueError as err:
        raise ContainerConfigError(str(err)) from None


def find_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if container.get("name") == name:
            return dict(container)
    raise ValueError(f"container {name} not found")


def resource_field_value(container: dict[str, Any], ref: dict[str, Any],
                         node_allocatable: Mapping[str, str | int] | None = None) -> str:
    """upstream `ExtractContainerResourceValue`, after the kubelet defaults unset limits to node allocatable.

    Without `node_allocatable`, an unset limit counts as 0 (upstream would report the node's allocatable).
    Raises ValueError for an unsupported resource.
    """
    resource = str(ref.get("resource") or "")
    divisor_text = ref.get("divisor")
    divisor = parse_quantity(divisor_text) if divisor_text not in (None, "") else 0  # zero means 1
    resources = container.get("resources") or {}
    section, _, name = resource.partition(".")
    if section not in ("limits", "requests") or not name:
        raise ValueError(f"unsupported container resource : {resource}")
    values = dict(resources.get(section) or {})
    if section == "limits" and node_allocatable:
        for key in ("cpu", "memory", "ephemeral-storage"):
            if key not in values and key in node_allocatable:
                values[key] = node_allocatable[key]
    quantity = values.get(name, 0)
    if name == "cpu":
        per = milli_value(str(divisor)) if divisor else 1000
        return str(-(-milli_value(quantity) // per))
    if name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"):
        per = int_value(str(divisor)) if divisor else 1
        return str(-(-int_value(quantity) // per))
    raise ValueError(f"unsupported container resource : {resource}")


# ---------------------------------------------------------------------------------------------- container env


class _Objects:
    """The ConfigMaps and Secrets one computation reads, each fetched once."""

    def __init__(self, fetch: Fetch, namespace: str) -> None:
        self._fetch = fetch
        self._namespace = namespace
        self._seen: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        key = (kind, name)
        if key not in self._seen:
            self._seen[key] = await self._fetch(kind, self._namespace, name)
        return self._seen[key]


def not_found_message(kind: str, name: str) -> str:
    """What the kubelet's ConfigMap/Secret managers say about a missing object."""
    return f'{kind.lower()} "{name}" not found'


def object_data(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """An object's `data` as text: ConfigMap values as they are, Secret values base64-decoded."""
    data = obj.get("data") or {}
    if kind == "ConfigMap":
        return {str(key): str(value) for key, value in data.items()}
    return {str(key): decode_secret_value(value).decode("utf-8", errors="replace") for key, value in data.items()}


def decode_secret_value(value: object) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return str(value).encode()


def _usable_name(name: str) -> bool:
    # Upstream (relaxed env var names, GA) takes every key; only names a "K=V" string cannot carry are dropped.
    return bool(name) and "=" not in name and "\x00" not in name


async def container_env(pod: dict[str, Any], container: dict[str, Any], fetch: Fetch, *,
                        service_env: Mapping[str, str] | None = None, host_ip: str = "", pod_ip: str = "",
                        node_name: str = "", node_allocatable: Mapping[str, str | int] | None = None) -> list[str]:
    """The container's environment as "K=V" strings, lowest precedence first.

    Order: service env vars, `envFrom` sources in order (keys sorted within a source), then `env` entries in order;
    a redefined key keeps its first position and takes the later value.
    """
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    status = pod.get("status") or {}
    pod_ips = [str(item.get("ip")) for item in status.get("podIPs") or [] if item.get("ip")]
    if pod_ip:
        pod_ips = [pod_ip, *(ip for ip in pod_ips if ip != pod_ip)]
    elif not pod_ips and status.get("podIP"):
        pod_ips = [str(status["podIP"])]
    host_ips = [str(item.get("ip")) for item in status.get("hostIPs") or [] if item.get("ip")]
    if host_ip:
        host_ips = [host_ip, *(ip for ip in host_ips if ip != host_ip)]
    elif not host_ips and status.get("hostIP"):
        host_ips = [str(status["hostIP"])]

    objects = _Objects(fetch, namespace)
    env: dict[str, str] = dict(service_env or {})

    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = source.get(field)
            if ref is None:
                continue
            name = str(ref.get("name") or "")
            obj = await objects.get(kind, name)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(not_found_message(kind, name))
            data = object_data(kind, obj)
            for key in sorted(data):
                if _usable_name(prefix + key):
                    env[prefix + key] = data[key]

    mapping = mapping_for(env)
    for item in container.get("env") or []:
        name = str(item["name"])
        value = item.get("value") or ""
        source = item.get("valueFrom")
        if value:
            value = expand(value, mapping)
        elif source:
            resolved = await _value_from(pod, container, source, objects, namespace, pod_ips=pod_ips,
                                         host_ips=host_ips, node_name=node_name, node_allocatable=node_allocatable)
            if resolved is None:
                continue
            value = resolved
        env[name] = value
    return [f"{key}={value}" for key, value in env.items()]


async def _value_from(pod: dict[str, Any], container: dict[str, Any], source: dict[str, Any], objects: _Objects,
                      namespace: str, *, pod_ips: list[str], host_ips: list[str], node_name: str,
                      node_allocatable: Mapping[str, str | int] | None) -> str | None:
    """One `valueFrom`; None when an optional reference is missing (the variable is then not set)."""
    if source.get("fieldRef") is not None:
        return env_field_value(pod, source["fieldRef"], pod_ips=pod_ips, host_ips=host_ips, node_name=node_name)
    if source.get("resourceFieldRef") is not None:
        ref = source["resourceFieldRef"]
        try:
            target = find_container(pod, ref["containerName"]) if ref.get("containerName") else container
            return resource_field_value(target, ref, node_allocatable)
        except ValueError as err:
            raise ContainerConfigError(str(err)) from None
    for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
        ref = source.get(field)
        if ref is None:
            continue
        name = str(ref.get("name") or "")
        key = str(ref.get("key") or "")
        optional = bool(ref.get("optional"))
        obj = await objects.get(kind, name)
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(not_found_message(kind, name))
        data = object_data(kind, obj)
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
        return data[key]
    return ""


__all__ = [
    "Fetch",
    "container_env",
    "decode_secret_value",
    "env_field_value",
    "env_map",
    "expand",
    "expand_command",
    "expand_static",
    "expand_subpath_expr",
    "field_path_value",
    "find_container",
    "format_map",
    "go_quote",
    "mapping_for",
    "merge_image_env",
    "not_found_message",
    "object_data",
    "resolve_argv",
    "resource_field_value",
]
