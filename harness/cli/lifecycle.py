"""How every long-running `harness` component runs and ends: SIGTERM or SIGINT sets one event it waits on, and its
TLS certificates follow their files meanwhile (`harness.util.certreload`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from harness.util import certreload


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (supervisord's stop, Ctrl-C); call from inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(main: Awaitable[int]) -> int:
    """`asyncio.run(main)` with the component's certificates following their files while it runs."""

    async def wrapped() -> int:
        reloader = asyncio.create_task(certreload.keep_current(), name="certificate reloader")
        try:
            return await main
        finally:
            reloader.cancel()

    return asyncio.run(wrapped())


def serve_until_signalled(serve: Callable[[asyncio.Event], Awaitable[int]], log: logging.Logger) -> int:
    """Run `serve(stop)` in a new event loop, with `stop` set by SIGTERM/SIGINT; its exit code (logged "stopped")."""

    async def main() -> int:
        code = await serve(stop_on_signals())
        log.info("stopped")
        return code

    return run(main())
