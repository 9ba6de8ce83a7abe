"""`harness log-aggregator` (receive and store the cluster's logs) and `harness logs` (query them).

`harness logs` asks the aggregator's /query (the first master's, https port 24220, found through
`inventory/<name>/hosts.yml` and verified against the cluster CA in its PKI directory, or `--server URL`) and prints
one line per record:

    2026-11-26T02:40:01.123Z worker-1 kubelet: <message>
    2026-11-26T02:40:01.123Z worker-1 default/web-abc/httpd stdout: <message>
    2026-11-26T02:40:01.123Z - other/<tag>: <message, or the record as JSON>

or, with --json, the records as the aggregator stores them (one JSON object per line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from harness.cli import lifecycle, logs
from harness.logging import forward
from harness.logging.aggregator import DEFAULT_DATA_DIR, DEFAULT_HTTP_PORT, Config, serve
from harness.util import rfc3339

log = logging.getLogger("harness.logging")

#: Where `harness up` writes each cluster's inventory (relative to the working directory, as harness.cli.machines).
INVENTORY = Path("inventory")
DEFAULT_NAME = "local"
CONNECT_TIMEOUT = 5.0


class LogsError(Exception):
    """`harness logs` cannot answer: no inventory, aggregator unreachable, a refused query. Exit code 1."""


# --------------------------------------------------------------------------------------------------- log-aggregator


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`harness log-aggregator`."""
    p.add_argument("--bind-address", default="0.0.0.0", help="address for both ports (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=forward.DEFAULT_PORT,
                   help=f"Fluentd Forward port, TCP (default {forward.DEFAULT_PORT})")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                   help=f"port for /query, /healthz, /readyz and /metrics (default {DEFAULT_HTTP_PORT})")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                   help=f"where logs are stored, by day and source (default {DEFAULT_DATA_DIR})")
    p.add_argument("--retention-days", type=int, default=7, help="days of logs kept (default 7)")
    p.add_argument("--tls-cert-file", default="",
                   help="serve both ports over TLS with this certificate (PEM, leaf first), as in_forward's "
                        "<transport tls> cert_path; the HTTP port becomes HTTPS (default: plain TCP and HTTP)")
    p.add_argument("--tls-private-key-file", default="", help="the key of --tls-cert-file (private_key_path)")
    p.add_argument("--client-ca-file", default="",
                   help="with TLS: the Forward port requires client certificates of this CA (client_cert_auth, "
                        "ca_path); the HTTP port does not ask for one")
    p.add_argument("--shared-key-file", default="",
                   help="a file holding the shared key every Forward client must prove in the handshake before "
                        "sending events (in_forward's <security> shared_key; default: no handshake)")
    p.add_argument("--self-hostname", default=f"{socket.gethostname()}-log-aggregator",
                   help="the name the aggregator gives in the handshake (<security> self_hostname; default "
                        "<hostname>-log-aggregator); it must differ from every agent's")
    p.add_argument("--log-level", default="info")


def config_from(args: argparse.Namespace) -> Config:
    """The aggregator's Config from its flags; SystemExit with a message for a bad one."""
    for name, port in (("--port", args.port), ("--http-port", args.http_port)):
        if not 0 <= port <= 65535:
            raise SystemExit(f"harness log-aggregator: {name} must be between 0 and 65535")
    if args.retention_days < 1:
        raise SystemExit("harness log-aggregator: --retention-days must be at least 1")
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        raise SystemExit("harness log-aggregator: --tls-cert-file and --tls-private-key-file go together")
    if args.client_ca_file and not args.tls_cert_file:
        raise SystemExit("harness log-aggregator: --client-ca-file needs --tls-cert-file and --tls-private-key-file")
    shared_key = ""
    if args.shared_key_file:
        try:
            shared_key = forward.read_shared_key(args.shared_key_file)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"harness log-aggregator: --shared-key-file: {exc}") from None
    if shared_key and not args.self_hostname:
        raise SystemExit("harness log-aggregator: --self-hostname must not be empty")
    return Config(bind_address=args.bind_address, port=args.port, http_port=args.http_port,
                  data_dir=Path(args.data_dir), retention_days=args.retention_days, tls_cert_file=args.tls_cert_file,
                  tls_key_file=args.tls_private_key_file, client_ca_file=args.client_ca_file, shared_key=shared_key,
                  self_hostname=args.self_hostname)


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.logging", args.log_level)
    config = config_from(args)
    return lifecycle.serve_until_signalled(lambda stop: serve(config, stop=stop), log)


# --------------------------------------------------------------------------------------------------- logs


def add_logs_arguments(p: argparse.ArgumentParser) -> None:
    """`harness logs`."""
    p.add_argument("--name", default=DEFAULT_NAME, help=f"the cluster's name (default {DEFAULT_NAME})")
    p.add_argument("--server", default="", metavar="URL",
                   help=f"the aggregator's URL (default: https://<first master>:{DEFAULT_HTTP_PORT}, "
                        "from inventory/<name>/hosts.yml)")
    p.add_argument("--ca-file", default="", metavar="FILE",
                   help="the CA an https server's certificate must chain to (default: the cluster's, "
                        "inventory/<name>/pki/ca.crt, without --server; the system's with it)")
    p.add_argument("--node", help="only this node's records")
    p.add_argument("--component", help="only this component's records (apiserver, kubelet, ...)")
    p.add_argument("--namespace", help="only containers of pods in this namespace (default with --pod: default)")
    p.add_argument("--pod", help="only this pod's containers")
    p.add_argument("--container", help="only containers of this name")
    p.add_argument("--since", metavar="WHEN",
                   help="only records since then: a duration ago (10m, 1h, 30s), an RFC 3339 time or epoch seconds")
    p.add_argument("--grep", metavar="RE", help="only records whose message matches this regular expression")
    p.add_argument("--limit", type=int, metavar="N", help="at most the newest N records (with --follow: to start)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records until interrupted")
    p.add_argument("--json", action="store_true", help="print the records as JSON, one per line")


def _inventory(name: str, inventory: Path) -> tuple[Path, Any]:
    hosts = inventory / name / "hosts.yml"
    try:
        return hosts, yaml.safe_load(hosts.read_text())
    except FileNotFoundError:
        raise LogsError(f"no inventory for cluster {name!r} ({hosts}): run `harness up --name {name}` first, "
                        "or give --server URL") from None
    except (OSError, yaml.YAMLError) as exc:
        raise LogsError(f"cannot read {hosts}: {exc}") from None


def ca_from_inventory(name: str, inventory: Path = INVENTORY) -> Path:
    """The cluster CA's certificate: `ca.crt` in the inventory's pki_source (where `harness up` keeps the PKI)."""
    _hosts, doc = _inventory(name, inventory)
    try:
        source = doc["all"]["vars"]["pki_source"]
    except (KeyError, TypeError):
        source = None
    return Path(source) / "ca.crt" if source else inventory / name / "pki" / "ca.crt"


def server_from_inventory(name: str, inventory: Path = INVENTORY) -> str:
    """The aggregator's URL for a cluster: its first master's node_ip, https, port 24220."""
    hosts, doc = _inventory(name, inventory)
    try:
        masters = doc["all"]["children"]["masters"]["hosts"]
        first = masters[next(iter(masters))] or {}
        ip = first.get("node_ip") or first.get("ansible_host")
    except (KeyError, TypeError, StopIteration, AttributeError):
        ip = None
    if not ip:
        raise LogsError(f"{hosts} names no master with a node_ip: run `harness up --name {name}` again")
    return f"https://{ip}:{DEFAULT_HTTP_PORT}"


def query_params(args: argparse.Namespace) -> dict[str, str]:
    """The /query parameters for the command's flags (--pod alone means namespace default)."""
    params: dict[str, str] = {}
    for key in ("node", "component", "namespace", "pod", "container", "since", "grep"):
        value = getattr(args, key)
        if value:
            params[key] = str(value)
    if args.pod and not args.namespace:
        params["namespace"] = "default"
    if args.limit is not None:
        if args.limit < 0:
            raise LogsError("--limit must not be negative")
        params["limit"] = str(args.limit)
    if args.follow:
        params["follow"] = "1"
    return params


def _timestamp(value: Any) -> str:
    try:
        return rfc3339.format_time(float(value), digits=3)
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def format_record(record: dict[str, Any]) -> str:
    """One record as a line: time, node, source, message."""
    node = record.get("node", "-")
    if record.get("component"):
        source = str(record["component"])
    elif all(record.get(k) for k in ("namespace", "pod", "container")):
        source = f"{record['namespace']}/{record['pod']}/{record['container']}"
        if record.get("stream"):
            source += f" {record['stream']}"
    else:
        source = f"other/{record.get('tag', '?')}"
    message = record.get("message")
    if not isinstance(message, str):
        rest = {k: v for k, v in record.items() if k not in ("time", "node", "tag")}
        message = json.dumps(rest, ensure_ascii=False, default=str)
    return f"{_timestamp(record.get('time'))} {node} {source}: {message.rstrip(chr(10))}"


async def fetch_logs(url: str, params: dict[str, str], *, as_json: bool, follow: bool, ca_file: str = "") -> None:
    """Ask the aggregator and print what it answers, line by line, as it arrives (https verified against
    `ca_file`, or the system's CAs)."""
    target = f"{url.rstrip('/')}/query?{urllib.parse.urlencode(params)}"
    try:
        context = ssl.create_default_context(cafile=ca_file or None) if url.startswith("https:") else None
    except (OSError, ssl.SSLError) as exc:
        raise LogsError(f"cannot use the CA file {ca_file}: {exc}") from None
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT,
                                    sock_read=None if follow else 60.0)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(target, ssl=context if context is not None else True) as response:
            if response.status != 200:
                text = (await response.text()).strip()
                raise LogsError(f"the log aggregator at {url} refused the query: {text or response.reason}")
            async for line in response.content:
                if line.strip():
                    _print(line, as_json=as_json, flush=follow)
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise LogsError(f"cannot reach the log aggregator at {url} ({exc or type(exc).__name__}): the cluster must be "
                        "up (`harness up`, `harness status`)") from None


def _print(line: bytes, *, as_json: bool, flush: bool) -> None:
    """Print one NDJSON line from the aggregator, raw or formatted."""
    if as_json:
        sys.stdout.write(line.decode(errors="replace").rstrip("\n") + "\n")
    else:
        try:
            record = json.loads(line)
        except ValueError:
            return
        sys.stdout.write(format_record(record) + "\n")
    if flush:
        sys.stdout.flush()


def run_logs(args: argparse.Namespace) -> int:
    """`harness logs`: 0, or 1 with a message on stderr when there is no answer."""
    try:
        url = args.server or server_from_inventory(args.name)
        ca_file = args.ca_file or ("" if args.server else str(ca_from_inventory(args.name)))
        asyncio.run(fetch_logs(url, query_params(args), as_json=args.json, follow=args.follow, ca_file=ca_file))
        sys.stdout.flush()
    except LogsError as exc:
        print(f"harness logs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `harness logs | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
