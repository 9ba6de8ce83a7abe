"""Running a component's main coroutine until it is told to stop (the components' `serve`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


async def run_until_stopped(main: Coroutine[Any, Any, Any], stop: asyncio.Event, *, name: str,
                            log: logging.Logger) -> int:
    """Run `main` until `stop` is set (0), or until it ends by itself (1: logged, with its exception if any)."""
    task = asyncio.create_task(main, name=name)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            error = task.exception()
            log.error("%s", error or f"{name} stopped by itself")
            return 1
        return 0
    finally:
        for t in (task, stopping):
            t.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
