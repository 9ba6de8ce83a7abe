"""`kubectl exec` on the kubelet: a command in a running container, its stdio over a WebSocket.

The channel protocol is Kubernetes' (`v5.channel.k8s.io`, `v4.channel.k8s.io`): every binary
message starts with a byte naming its stream — 0 stdin, 1 stdout, 2 stderr, 3 the final
status (a `Status` object), 4 terminal resize; v5 adds 255, "close this stream", which is how
kubectl says stdin reached its end. The command runs through `runc exec` with pipes; a TTY is
not offered (`-t` runs the command without one).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from aiohttp import WSMsgType, web

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exit_status(argv: list[str], code: int) -> dict[str, Any]:
    """The status kubectl turns into its own exit code."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command {argv}, "
                       f"exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


async def serve(request: web.Request, command: list[str], *, argv: list[str], stdin: bool) -> web.WebSocketResponse:
    """Run `command` (the runc exec of `argv`) and stream its stdio over the WebSocket of `request`."""
    ws = web.WebSocketResponse(protocols=PROTOCOLS, heartbeat=30)
    await ws.prepare(request)
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        while stream is not None and (chunk := await stream.read(32 * 1024)):
            await ws.send_bytes(bytes([channel]) + chunk)

    async def feed() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data or proc.stdin is None:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and data:
                proc.stdin.write(data)
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                proc.stdin.close()
        if proc.stdin is not None:  # the client went away: so does the command's input
            proc.stdin.close()

    feeder = asyncio.create_task(feed())
    try:
        await asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
        code = await proc.wait()
        await ws.send_bytes(bytes([ERROR]) + orjson.dumps(exit_status(argv, code)))
    finally:
        feeder.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await ws.close()
    return ws
