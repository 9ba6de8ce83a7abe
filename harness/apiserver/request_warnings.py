"""Warnings a request earns on its way (`Warning: 299 - "..."` headers), as upstream's warning recorder.

Admission plugins and handlers call `add(message)` anywhere below the `collect` middleware; the messages go
out as one `Warning` header on the response, errors included, each once and in the order added. kubectl
prints each as `Warning: <message>`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web

_RECORDED: ContextVar[list[str] | None] = ContextVar("harness_warnings", default=None)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add(message: str) -> None:
    """Record a warning for the current request (ignored outside one, e.g. in a unit test)."""
    recorded = _RECORDED.get()
    if recorded is not None and message not in recorded:
        recorded.append(message)


def header_value(messages: list[str]) -> str:
    """`299 - "<message>"` for each, joined as upstream's header (quotes and backslashes escaped)."""
    return ", ".join('299 - "{}"'.format(m.replace("\\", "\\\\").replace('"', '\\"')) for m in messages)


@web.middleware
async def collect(request: web.Request, handler: Handler) -> web.StreamResponse:
    recorded: list[str] = []
    token = _RECORDED.set(recorded)
    try:
        response = await handler(request)
    finally:
        _RECORDED.reset(token)
    if recorded and not response.prepared:
        existing = response.headers.get("Warning")
        value = header_value(recorded)
        response.headers["Warning"] = f"{existing}, {value}" if existing else value
    return response
