"""Structured log lines on stderr, the format every component writes (one line per record)."""

from __future__ import annotations

import logging
import sys

from harness.util import rfc3339


class LineFormatter(logging.Formatter):
    """`ts=... level=... logger=... msg="..."`: greppable, and parseable by the log agent."""

    def format(self, record: logging.LogRecord) -> str:
        ts = rfc3339.format_time(record.created, digits=3)
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n").replace('"', '\\"')
            line += f' exc="{exc}"'
        return line


def setup(component: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    logging.getLogger(component).debug("logging configured")
