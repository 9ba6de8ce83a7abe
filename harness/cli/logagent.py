"""`harness log-agent`: tail the node's component and container logs and forward them to the log aggregator."""

from __future__ import annotations

import argparse
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
from harness.logging.forward import DEFAULT_PORT, read_shared_key

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
    p.add_argument("--ca-file", default="",
                   help="connect with TLS and verify the aggregator's certificate (for the --aggregator host) against "
                        "this CA, as out_forward's `transport tls` and tls_cert_path (default: plain TCP)")
    p.add_argument("--tls-cert-file", default="",
                   help="with --ca-file: a client certificate to present, for an aggregator with --client-ca-file")
    p.add_argument("--tls-private-key-file", default="", help="the key of --tls-cert-file")
    p.add_argument("--shared-key-file", default="",
                   help="a file holding the Forward handshake's shared key (out_forward's <security> shared_key); "
                        "the aggregator must have the same (default: no handshake)")
    p.add_argument("--self-hostname", default="",
                   help="the name this agent gives in the handshake (<security> self_hostname; default: "
                        "--node-name); it must differ from the aggregator's")
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
    if (args.tls_cert_file or args.tls_private_key_file) and not args.ca_file:
        raise SystemExit("harness log-agent: --tls-cert-file and --tls-private-key-file need --ca-file (TLS)")
    shared_key = ""
    if args.shared_key_file:
        try:
            shared_key = read_shared_key(args.shared_key_file)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"harness log-agent: --shared-key-file: {exc}") from None
    return AgentConfig(node=args.node_name, data_dir=args.data_dir, aggregator_host=host, aggregator_port=port,
                       component_logs=args.component_logs, pod_logs=args.pod_logs, http_address=args.http_address,
                       http_port=args.http_port, flush_interval=args.flush_interval, ack_timeout=args.ack_timeout,
                       buffer_max_bytes=args.buffer_max_bytes,
                       chunk_max_bytes=min(1024 * 1024, args.buffer_max_bytes // 8), ca_file=args.ca_file,
                       tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_private_key_file,
                       shared_key=shared_key, self_hostname=args.self_hostname)


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
    return lifecycle.run(main(config_from(args)))
