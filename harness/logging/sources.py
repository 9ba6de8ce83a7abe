"""What a log line becomes: the records the agent forwards, built from component and container log files.

- component logs (`/var/log/harness/<component>.log`): one record per line, {"node", "component", "message"} plus
  "level" and "logger" when the line is in the components' `ts=... level=... logger=... msg="..."` format (the
  event time is then `ts`);
- container logs (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`, CRI format): one record per
  message, partial lines joined, {"node", "namespace", "pod", "container", "stream", "message"}, timed by the
  runtime's timestamp.

A `Source` turns the lines a tailer read from one file into records, and says how far the file may be committed
(a container line still waiting for its end holds the position back).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.logging import forward
from harness.logging.tail import FileId, Line
from harness.util.crilog import CriJoiner, CriMessage, CriParseError, parse_line
from harness.util.rfc3339 import parse_epoch

#: The tag of a chunk whose records come from more than one source.
GENERIC_TAG = "harness.logs"
#: A partial container line whose end has not come after this long is forwarded as it is.
PARTIAL_MAX_AGE = 5.0
COMPONENT, CONTAINER = "component", "container"


class SourcePathError(ValueError):
    """A container log path that is not `.../<namespace>_<pod>_<uid>/<container>/<file>`."""



_COMPONENT_LINE = re.compile(
    r'ts=(?P<ts>\S+) level=(?P<level>\S+) logger=(?P<logger>\S+) msg="(?P<msg>(?:[^"\\]|\\.)*)"'
    r'(?: exc="(?P<exc>(?:[^"\\]|\\.)*)")?'
)
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n"}


@dataclass(frozen=True, slots=True)
class ComponentLine:
    """A component log line in the `ts= level= logger= msg=` format (harness.cli.logs.LineFormatter)."""

    time: float | None
    level: str
    logger: str
    message: str


def _unescape(value: str) -> str:
    """Undo LineFormatter's escaping of a quoted value (\\n, \\", \\\\)."""
    return _ESCAPE.sub(lambda m: _UNESCAPED.get(m[1], m[1]), value) if "\\" in value else value


def parse_component_line(text: str) -> ComponentLine | None:
    """The fields of a line in our components' format; None for any other line (e.g. a raw traceback)."""
    m = _COMPONENT_LINE.match(text)
    if m is None:
        return None
    try:
        when: float | None = parse_epoch(m["ts"])
    except ValueError:
        when = None
    message = _unescape(m["msg"])
    if m["exc"] is not None:
        message += "\n" + _unescape(m["exc"])
    return ComponentLine(when, m["level"], m["logger"], message)


def component_name(path: str) -> str:
    """The component a supervisord log file is of: its name without `.log` (`/var/log/harness/kubelet.log`)."""
    name = os.path.basename(path)
    return name[:-4] if name.endswith(".log") else name


def component_record(node: str, component: str, text: str, read_time: float) -> tuple[float, dict[str, Any]]:
    """(event time, record) of one component log line."""
    record: dict[str, Any] = {"node": node, "component": component}
    parsed = parse_component_line(text)
    if parsed is None:
        record["message"] = text
        return read_time, record
    record.update(message=parsed.message, level=parsed.level, logger=parsed.logger)
    return (parsed.time if parsed.time is not None else read_time), record


@dataclass(frozen=True, slots=True)
class PodLogSource:
    """Whose a container log file is, from its path `<namespace>_<pod>_<uid>/<container>/<restart>.log`."""

    namespace: str
    pod: str
    uid: str
    container: str


def pod_log_source(path: str) -> PodLogSource:
    """The pod and container of a container log path; SourcePathError if it is not laid out as the kubelet does.

    Kubernetes names cannot contain `_`, so the namespace is what precedes the first `_` and the uid what follows
    the last one; the pod name is in between."""
    parts = Path(path).parts
    if len(parts) < 3:
        raise SourcePathError(f"not a container log path: {path}")
    pod_dir, container = parts[-3], parts[-2]
    namespace, sep1, rest = pod_dir.partition("_")
    pod, sep2, uid = rest.rpartition("_")
    if not (sep1 and sep2 and namespace and pod and uid and container):
        raise SourcePathError(f"not a <namespace>_<pod>_<uid> pod log directory: {path}")
    return PodLogSource(namespace, pod, uid, container)


def container_record(node: str, source: PodLogSource, message: CriMessage) -> tuple[float, dict[str, Any]]:
    """(event time, record) of one container log message."""
    return message.time, {"node": node, "namespace": source.namespace, "pod": source.pod,
                          "container": source.container, "stream": message.stream,
                          "message": message.content.decode("utf-8", "replace")}


def record_tag(record: dict[str, Any]) -> str:
    """The Forward tag of a record: `harness.component.<component>` or `harness.pod.<ns>.<pod>.<container>`."""
    if "component" in record:
        return f"harness.component.{record['component']}"
    if "pod" in record:
        return f"harness.pod.{record.get('namespace')}.{record['pod']}.{record.get('container')}"
    return GENERIC_TAG


def chunk_tag(entries: Iterable[forward.Entry]) -> str:
    """The tag to send a chunk with: its records' tag if they share one, else the generic `harness.logs`."""
    tags = {record_tag(e.record) for e in entries}
    return tags.pop() if len(tags) == 1 else GENERIC_TAG


# --------------------------------------------------------------------------------------------------- sources


class ComponentSource:
    """Turns a component log file's lines into records."""

    kind = COMPONENT

    def __init__(self, node: str, path: str) -> None:
        self.node = node
        self.component = component_name(path)

    def records(self, lines: Iterable[Line], read_time: float, now: float) -> list[tuple[float, dict[str, Any]]]:
        """Records of complete lines (a trailing carriage return dropped)."""
        out = []
        for line in lines:
            text = line.data.decode("utf-8", "replace")
            if text.endswith("\r"):
                text = text[:-1]
            out.append(component_record(self.node, self.component, text, read_time))
        return out

    def hold(self, ident: FileId) -> int | None:
        """Nothing is held back: every line read is a record."""
        return None

    def stale(self, now: float) -> list[tuple[float, dict[str, Any]]]:
        """Nothing waits: component lines are never joined."""
        return []

    def finish(self) -> list[tuple[float, dict[str, Any]]]:
        """Nothing is left when the file goes away."""
        return []


class PodSource:
    """Turns a container log file's CRI lines into records, joining partial lines."""

    kind = CONTAINER

    def __init__(self, node: str, path: str) -> None:
        self.node = node
        self.source = pod_log_source(path)
        self.joiner = CriJoiner()

    def records(self, lines: Iterable[Line], read_time: float, now: float) -> list[tuple[float, dict[str, Any]]]:
        """Records of the messages these lines complete; a line that is not CRI is forwarded as it is."""
        out = []
        for line in lines:
            try:
                cri = parse_line(line.data)
            except CriParseError:
                raw = CriMessage(read_time, "unknown", line.data)
                out.append(container_record(self.node, self.source, raw))
                continue
            message = self.joiner.feed(cri, (line.ident, line.start), now)
            if message is not None:
                out.append(container_record(self.node, self.source, message))
        return out

    def hold(self, ident: FileId) -> int | None:
        """Where in file `ident` the oldest unfinished message starts: its position must not be committed past."""
        starts = [m[1] for m in self.joiner.marks() if isinstance(m, tuple) and m[0] == ident]
        return min(starts) if starts else None

    def stale(self, now: float) -> list[tuple[float, dict[str, Any]]]:
        """Unfinished messages waited on for too long, forwarded as they are."""
        return [container_record(self.node, self.source, m) for m in self.joiner.flush_stale(now, PARTIAL_MAX_AGE)]

    def finish(self) -> list[tuple[float, dict[str, Any]]]:
        """The file is gone: forward what is unfinished."""
        return [container_record(self.node, self.source, m) for m in self.joiner.flush()]


Source = ComponentSource | PodSource


__all__ = ["COMPONENT", "CONTAINER", "GENERIC_TAG", "PARTIAL_MAX_AGE", "ComponentLine", "ComponentSource",
           "PodLogSource", "PodSource", "Source", "SourcePathError", "chunk_tag", "component_name",
           "component_record", "container_record", "parse_component_line", "pod_log_source", "record_tag"]
