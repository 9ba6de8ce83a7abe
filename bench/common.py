"""What every benchmark shares: percentiles, a bounded-concurrency runner, component processes.

Components run as subprocesses of the benchmark, as users run them, so the load generator
in this process is measured against the real thing.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from harness.client import kubeconfig
from harness.storage.local import free_port


class Report:
    """Figures printed as they are measured, and again together at the end (`summary`)."""

    def __init__(self, width: int = 52) -> None:
        self.width = width
        self.rows: list[tuple[str, str]] = []

    def __call__(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        print(f"  {name:<{self.width}} {value}", flush=True)

    def summary(self) -> None:
        print("\nsummary")
        for name, value in self.rows:
            print(f"  {name:<{self.width}} {value}")


def pct(samples: list[float], q: float) -> float:
    """The q-quantile of latencies in seconds, in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_concurrent(count: int, concurrency: int,
                         op: Callable[[int], Awaitable[object]]) -> tuple[float, list[float]]:
    """Run op(0..count-1) with `concurrency` workers; return (ops/s, latencies in s)."""
    latencies: list[float] = []
    counter = iter(range(count))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start), latencies


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`harness ARGS...` in the background, its output in `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=out, stderr=subprocess.STDOUT)


def start_apiserver(etcd_endpoint: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """An apiserver on a free port: (process, URL, kubeconfig for it)."""
    port = free_port()
    proc = spawn(["apiserver", "--etcd-servers", etcd_endpoint, "--port", str(port), "--log-level", "warning"],
                 workdir / "apiserver.log")
    url = f"http://127.0.0.1:{port}"
    kc = workdir / "kubeconfig"
    kubeconfig.write(kc, kubeconfig.KubeConfig(servers=[url]))
    return proc, url, kc


def start_component(name: str, kc: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """The scheduler or controller-manager, without leader election."""
    return spawn([name, "--kubeconfig", str(kc), "--leader-elect=false", "--secure-port", str(free_port()),
                  "--log-level", "warning"], workdir / f"{name}.log")


def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
