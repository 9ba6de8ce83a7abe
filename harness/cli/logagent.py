"""`harness log-agent`: tail the node's component and container logs and forward them to the log aggregator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from pathlib import Path

from harness.cli import lifecycle, logs
from harness.logging.agent import (
    DEFAULT_COMPONENT_LOGS,
    DEFAULT_DATA_DIR,
    DEFAULT_HTTP_PORT,
    DEFAULT_POD_LOGS,
    Agent,
    AgentConfig,
    AgentError,
)
from harness.logging.buffer import DEFAULT_MAX_BYTES, LogBufferError
from harness.logging.forward import DEFAULT_PORT

log = logging.getLogger("harness.logging.agent")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `harness log-agent` flags."""
    p.add_argument("--aggregator", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT",
                   help=f"the log aggregator's Forward address (default 127.0.0.1:{DEFAULT_PORT})")
    p.add_argument("--node-name", default=socket.gethostname(),
                   help="the node name put in every record (default: the hostname)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"tail positions and the buffer of unacknowledged records (default {DEFAULT_DATA_DIR})")
    p.add_argument("--component-logs", default=DEFAULT_COMPONENT_LOGS, metavar="GLOB",
                   help=f"component log files, named <component>.log ('' = none; default {DEFAULT_COMPONENT_LOGS})")
    p.add_argument("--pod-logs", default=DEFAULT_POD_LOGS, metavar="GLOB",
                   help=f"container log files, <namespace>_<pod>_<uid>/<container>/<n>.log ('' = none; "
                        f"default {DEFAULT_POD_LOGS})")
    p.add_argument("--http-address", default="0.0.0.0", help="address for /healthz and /metrics (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                   help=f"port for /healthz and /metrics (default {DEFAULT_HTTP_PORT})")
    p.add_argument("--flush-interval", type=float, default=1.0,
                   help="seconds a chunk of records collects before it is sent (default 1.0); files are looked at "
                        "twice as often, within 0.25-1 s")
    p.add_argument("--ack-timeout", type=float, default=30.0,
                   help="seconds to wait for the aggregator's acknowledgement before sending again (default 30)")
    p.add_argument("--buffer-max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="bytes of unacknowledged records kept on disk before reading pauses (default 256 MiB)")
    p.add_argument("--log-level", default="info")


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) as (host, port); ValueError if it is not one."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host, int(port_text)


def config_from(args: argparse.Namespace) -> AgentConfig:
    """The agent's configuration from the flags; SystemExit naming the flag that is wrong."""
    try:
        host, port = parse_address(args.aggregator)
    except ValueError as exc:
        raise SystemExit(f"harness log-agent: --aggregator: {exc}") from None
    if not 0 <= args.http_port <= 65535:
        raise SystemExit("harness log-agent: --http-port must be between 0 and 65535")
    for name, value in (("--flush-interval", args.flush_interval), ("--ack-timeout", args.ack_timeout)):
        if not value > 0:
            raise SystemExit(f"harness log-agent: {name} must be positive")
    if args.buffer_max_bytes < 1024 * 1024:
        raise SystemExit("harness log-agent: --buffer-max-bytes must be at least 1 MiB")
    if not args.node_name:
        raise SystemExit("harness log-agent: --node-name must not be empty")
    return AgentConfig(node=args.node_name, data_dir=args.data_dir, aggregator_host=host, aggregator_port=port,
                       component_logs=args.component_logs, pod_logs=args.pod_logs, http_address=args.http_address,
                       http_port=args.http_port, flush_interval=args.flush_interval, ack_timeout=args.ack_timeout,
                       buffer_max_bytes=args.buffer_max_bytes,
                       chunk_max_bytes=min(1024 * 1024, args.buffer_max_bytes // 8))


async def main(config: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT (0), or 1 if it could not start."""
    stop = lifecycle.stop_on_signals()
    try:
        agent = Agent(config)
    except (AgentError, LogBufferError) as exc:
        log.error("%s", exc)
        return 1
    code = await agent.run(stop)
    log.info("stopped")
    return code


def run(args: argparse.Namespace) -> int:
    """Entry point of `harness log-agent`: log as every component does, run until signalled."""
    logs.setup("harness.logging", args.log_level)
    return asyncio.run(main(config_from(args)))
