"""Pod startup on one real node: a burst of pods created at once, until each is seen Running through a watch.

Starts a throwaway etcd, an apiserver and one kubelet in a node network namespace (the same
node the kubelet integration tests use), then:

1. the lower bound: `runc run -d` of the same busybox container, bare (no shim, no network),
   first one at a time, then --pods at once;
2. --pods pods bound to the node, created at once; for each, the time from its create call
   to the watch event showing it Running with its container running.

Prints p50/p99 of each and the ratios. Needs root and runc.

    .venv/bin/python bench/pod_startup.py [--pods 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import pct

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.api import registry
from harness.client.rest import Client
from harness.kubelet.images.imagestore import ImageStore
from harness.kubelet.runtime.spec import build_spec
from harness.kubelet.runtime.types import ContainerRequest
from harness.storage.local import LocalEtcd
from tests.integration.node_fixtures import Node, destroy, destroy_network, make_network, make_node, wait_node_ready

PODS = registry.by_path("", "v1", "pods")
NAMESPACES = registry.by_path("", "v1", "namespaces")


def bare_bundles(node: Node, count: int, workdir: Path) -> list[Path]:
    """`count` bundles of the busybox image running `sleep 1000`, read-only root, no network setup."""
    image = ImageStore(node.root / "lib" / "images").ensure_builtin()
    bundles = []
    for i in range(count):
        bundle = workdir / f"bare-{i}"
        bundle.mkdir()
        req = ContainerRequest(id=f"bare-{i}", pod_uid="bare", pod_namespace="bench", pod_name=f"bare-{i}",
                               name="app", attempt=0, image_ref="busybox", image_id=image.id, rootfs=image.rootfs,
                               args=["sleep", "1000"], env=["PATH=/bin"], cgroup_parent="/harness-bench")
        spec = build_spec(req, image.rootfs, cgroups_v2=False, nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        spec["root"] = {"path": str(image.rootfs), "readonly": True}
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] in ("/proc", "/dev", "/dev/pts", "/sys")]
        (bundle / "config.json").write_text(json.dumps(spec))
        bundles.append(bundle)
    return bundles


async def runc_run(root: Path, bundle: Path, cid: str) -> float:
    """Time one `runc run -d`. Its stdio goes to a file: the detached container keeps it open."""
    start = time.perf_counter()
    with open(bundle / "runc.log", "wb") as out:  # noqa: ASYNC230  (a local file, before the timed call)
        proc = await asyncio.create_subprocess_exec("runc", "--root", str(root), "run", "-d", "--bundle",
                                                    str(bundle), cid, stdin=subprocess.DEVNULL, stdout=out,
                                                    stderr=out)
        await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"runc run {cid} failed: {(bundle / 'runc.log').read_text()}")
    return time.perf_counter() - start


async def bare_runc(node: Node, count: int, workdir: Path) -> tuple[list[float], list[float]]:
    root = workdir / "runc"
    bundles = bare_bundles(node, count, workdir)
    try:
        sequential = [await runc_run(root, b, f"seq-{i}") for i, b in enumerate(bundles)]
        await asyncio.to_thread(runc_delete_all, root)
        burst = await asyncio.gather(*(runc_run(root, b, f"burst-{i}") for i, b in enumerate(bundles)))
        return sequential, list(burst)
    finally:
        await asyncio.to_thread(runc_delete_all, root)


def runc_delete_all(root: Path) -> None:
    out = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True,
                         check=False).stdout
    for cid in out.split():
        subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], check=False, capture_output=True)
    for controller in Path("/sys/fs/cgroup").iterdir():
        base = controller / "harness-bench"
        for path in sorted(base.glob("*"), reverse=True) if base.is_dir() else []:
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


async def pod_burst(node: Node, count: int) -> list[float]:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    async with Client.from_kubeconfig(node.kubeconfig) as client:
        await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        listed = await client.list(PODS, ns)
        created: dict[str, float] = {}
        running: dict[str, float] = {}
        done = asyncio.Event()

        async def watch() -> None:
            async for event in client.watch(PODS, ns, resource_version=listed["metadata"]["resourceVersion"]):
                if event.type == "BOOKMARK":
                    continue
                pod = event.obj
                name = pod["metadata"]["name"]
                status = pod.get("status") or {}
                states = [c.get("state", {}) for c in status.get("containerStatuses") or []]
                if name not in running and status.get("phase") == "Running" and states and \
                        all("running" in s for s in states):
                    running[name] = time.perf_counter()
                    if len(running) == count:
                        done.set()
                        return

        watcher = asyncio.create_task(watch())

        async def create(i: int) -> None:
            name = f"p{i}"
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"nodeName": node.name, "terminationGracePeriodSeconds": 0,
                             "containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                             "command": ["sleep", "1000"]}]}}
            created[name] = time.perf_counter()
            await client.create(PODS, body, ns)

        await asyncio.gather(*(create(i) for i in range(count)))
        try:
            waiter = asyncio.create_task(done.wait())
            await asyncio.wait({watcher, waiter}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and watcher.exception():
                raise watcher.exception()  # type: ignore[misc]
            if not done.is_set():
                raise TimeoutError(f"only {len(running)} of {count} pods seen Running within 120 s")
        finally:
            watcher.cancel()
            waiter.cancel()
        latencies = [running[n] - created[n] for n in created]
        for name in created:
            await client.delete(PODS, name, ns, grace_period=0)
        deadline = time.monotonic() + 60
        while node.runc_ids() and time.monotonic() < deadline:  # noqa: ASYNC110  (polling another process)
            await asyncio.sleep(0.2)
        return latencies


async def main(args: argparse.Namespace) -> None:
    with LocalEtcd() as etcd, tempfile.TemporaryDirectory(prefix="bench-pods-") as tmp:
        workdir = Path(tmp)
        net = make_network(etcd, workdir)
        node = make_node(net, workdir)
        node.kubelet_args = ["--log-level", "info"]
        try:
            node.start_kubelet()
            wait_node_ready(node)
            sequential, burst = await bare_runc(node, args.pods, workdir)
            print("bare runc run -d (the lower bound), busybox `sleep`, no network:")
            print(f"  one at a time: p50 {pct(sequential, 0.5):7.1f} ms  p99 {pct(sequential, 0.99):7.1f} ms")
            print(f"  {args.pods} at once:    p50 {pct(burst, 0.5):7.1f} ms  p99 {pct(burst, 0.99):7.1f} ms")
            latencies = await pod_burst(node, args.pods)
            print(f"{args.pods} pods created at once -> Running seen through a watch:")
            print(f"  p50 {pct(latencies, 0.5):7.1f} ms  p99 {pct(latencies, 0.99):7.1f} ms  "
                  f"max {max(latencies) * 1000:7.1f} ms   (target p50 <= 1000 ms, p99 <= 2000 ms)")
            print(f"  ratio to bare runc in a burst: p50 {pct(latencies, 0.5) / pct(burst, 0.5):.1f}x  "
                  f"p99 {pct(latencies, 0.99) / pct(burst, 0.99):.1f}x")
        finally:
            destroy(node)
            destroy_network(net)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=30)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM still runs the teardown
    asyncio.run(main(parser.parse_args()))
