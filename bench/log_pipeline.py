"""The logging pipeline's throughput: lines/s a log agent tails and forwards with acknowledgements.

One `harness log-aggregator` and one `harness log-agent` run as processes on loopback (temporary directories; the
agent tails a component log file of its own). N lines are appended to that file as fast as Python writes them;
the figure is the time from the first line written until the aggregator has stored (and so acknowledged) all N,
read from its records counter. Baseline in the same run: the same N records sent straight to the aggregator as
PackedForward chunks of 1,000 with acks, from this process (the protocol and the store without the agent's
tailing, buffering and bookkeeping), so `agent / raw` is what the agent costs.

    .venv/bin/python bench/log_pipeline.py [--lines 50000]
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from common import spawn, stop

from harness.logging import forward
from harness.storage.local import free_port


def records_stored(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(m[1]) for m in re.finditer(r"^harness_log_aggregator_records_total\{[^}]*\} (\S+)$", text,
                                                 re.MULTILINE))


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/log_pipeline.py: {what} (waited {timeout:.0f}s)")
        time.sleep(0.02)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def raw_forward(port: int, lines: int, chunk: int = 1000) -> float:
    """Seconds to send `lines` records in acknowledged PackedForward chunks over one connection."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        unpacker = forward.new_unpacker()
        for first in range(0, lines, chunk):
            entries = [forward.Entry(time.time(), {"node": "bench", "component": "raw", "message": f"raw {i}"})
                       for i in range(first, min(lines, first + chunk))]
            chunk_id = forward.new_chunk_id()
            conn.sendall(forward.packed_forward("harness.component.raw", entries, chunk_id))
            while chunk_id not in set(forward.read_acks(unpacker)):
                data = conn.recv(65536)
                if not data:
                    raise SystemExit("the aggregator closed the connection")
                unpacker.feed(data)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-bench-logging-") as tmp:
        root = Path(tmp)
        (root / "components").mkdir()
        fwd, agg_http, agent_http = free_port(), free_port(), free_port()
        procs = [spawn(["log-aggregator", "--bind-address", "127.0.0.1", "--port", str(fwd), "--http-port",
                        str(agg_http), "--data-dir", str(root / "store"), "--log-level", "warning"],
                       root / "aggregator.log")]
        try:
            wait_for(lambda: healthy(agg_http), 30, "the aggregator did not start")
            raw_s = raw_forward(fwd, args.lines)
            baseline = records_stored(agg_http)
            procs.append(spawn(
                ["log-agent", "--aggregator", f"127.0.0.1:{fwd}", "--node-name", "bench",
                 "--data-dir", str(root / "agent"), "--component-logs", str(root / "components" / "*.log"),
                 "--pod-logs", str(root / "pods" / "*" / "*" / "*.log"), "--http-address", "127.0.0.1",
                 "--http-port", str(agent_http), "--log-level", "warning"], root / "agent.log"))
            wait_for(lambda: healthy(agent_http), 30, "the agent did not start")
            log = root / "components" / "bench.log"
            started = time.monotonic()
            with log.open("a") as out:
                for i in range(args.lines):
                    out.write(f'ts=2026-01-01T00:00:00.000Z level=info logger=bench msg="line {i}"\n')
            written = time.monotonic() - started
            wait_for(lambda: records_stored(agg_http) - baseline >= args.lines, 600, "not every line arrived")
            agent_s = time.monotonic() - started
        finally:
            stop(*procs)
    print(f"lines: {args.lines} (written in {written:.2f}s)")
    print(f"raw Forward, acked chunks of 1000: {args.lines / raw_s:>10,.0f} records/s ({raw_s:.2f}s)")
    print(f"log agent, tail -> buffer -> ack:   {args.lines / agent_s:>10,.0f} lines/s ({agent_s:.2f}s)")
    print(f"agent / raw: {raw_s / agent_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
