"""What the admission chain costs a pod create: one etcd, one apiserver with every admission plugin turned off and
one with the chain clusters run, into a namespace as users set one up (a LimitRange with container defaults, a
ResourceQuota on pods and cpu/memory requests, the `baseline` Pod Security level enforced). ResourceQuota charges
the quota's status.used in etcd on every admitted create (with the quota's resourceVersion as precondition, as
upstream), which is most of the cost. As the baseline, raw creates into the same etcd. Prints figures and ratios.

    .venv/bin/python bench/admission.py [--concurrency 32] [--count 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from apiserver import pod, wait_ready
from common import Report, free_port, pct, run_concurrent, spawn, stop

from harness.apiserver.admission import DEFAULT_PLUGINS
from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd

FULL = "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,DefaultTolerationSeconds,ResourceQuota"


def bare_pod(name: str) -> dict[str, Any]:
    """A pod that says nothing of resources: the LimitRange fills them in."""
    p = pod(name)
    del p["spec"]["containers"][0]["resources"]
    return p


async def setup_namespace(s: aiohttp.ClientSession, url: str, ns: str, guarded: bool) -> None:
    labels = {"pod-security.kubernetes.io/enforce": "baseline"} if guarded else {}
    await s.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": ns, "labels": labels}})
    await s.post(f"{url}/api/v1/namespaces/{ns}/serviceaccounts", json={"metadata": {"name": "default"}})
    if not guarded:
        return
    await s.post(f"{url}/api/v1/namespaces/{ns}/limitranges", json={
        "metadata": {"name": "defaults"}, "spec": {"limits": [{"type": "Container",
                                                               "defaultRequest": {"cpu": "10m", "memory": "16Mi"},
                                                               "default": {"cpu": "100m", "memory": "64Mi"}}]}})
    await s.post(f"{url}/api/v1/namespaces/{ns}/resourcequotas", json={
        "metadata": {"name": "quota"}, "spec": {"hard": {"pods": "1000000", "requests.cpu": "100000",
                                                          "requests.memory": "10000Gi"}}})
    for _ in range(200):  # until the quota's status is set (the controller-manager's job; here, ours)
        async with s.get(f"{url}/api/v1/namespaces/{ns}/resourcequotas/quota") as r:
            quota = await r.json()
        if (quota.get("status") or {}).get("hard"):
            return
        quota["status"] = {"hard": quota["spec"]["hard"], "used": {k: "0" for k in quota["spec"]["hard"]}}
        await s.put(f"{url}/api/v1/namespaces/{ns}/resourcequotas/quota/status", json=quota)
    raise SystemExit("the quota's status was never set")


async def creates(report: Report, label: str, url: str, ns: str, args: argparse.Namespace,
                  guarded: bool) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency + 8)) as s:
        await wait_ready(s, url)
        await setup_namespace(s, url, ns, guarded)
        base = f"{url}/api/v1/namespaces/{ns}/pods"

        async def create(i: int) -> None:
            body = orjson.dumps(bare_pod(f"b-{i:06d}"))
            async with s.post(base, data=body, headers={"Content-Type": "application/json"}) as r:
                if r.status != 201:
                    raise SystemExit(f"{label} create failed: {r.status} {await r.text()}")
                created = await r.json()
            if guarded and not created["spec"]["containers"][0].get("resources", {}).get("requests"):
                raise SystemExit(f"{label}: LimitRanger did not default the pod's requests")

        rate, lat = await run_concurrent(args.count, args.concurrency, create)
        report(f"{label} pod creates/s", f"{rate:,.0f}  p50 {pct(lat, .5):.1f} ms  p99 {pct(lat, .99):.1f} ms")
        if guarded:
            async with s.get(f"{url}/api/v1/namespaces/{ns}/resourcequotas/quota") as r:
                used = (await r.json())["status"]["used"]["pods"]
            report(f"{label} quota pods used", f"{used} (of {args.count} created)")
        return rate


async def bench(args: argparse.Namespace) -> None:
    report = Report()
    with tempfile.TemporaryDirectory() as tmp, LocalEtcd() as etcd:
        work = Path(tmp)
        async with EtcdBackend([etcd.endpoint]) as backend:
            run, value = uuid.uuid4().hex[:6], orjson.dumps(pod("x" * 20))

            async def put(i: int) -> None:
                await backend.create(f"/bench/{run}/{i}", value)

            raw, lat = await run_concurrent(args.count, args.concurrency, put)
        report("raw etcd creates/s", f"{raw:,.0f}  p99 {pct(lat, .99):.1f} ms")
        bare_port, full_port = free_port(), free_port()
        bare = spawn(["apiserver", "--etcd-servers", etcd.endpoint, "--port", str(bare_port), "--log-level",
                      "warning", "--disable-admission-plugins", ",".join(DEFAULT_PLUGINS)], work / "bare.log")
        full = spawn(["apiserver", "--etcd-servers", etcd.endpoint, "--port", str(full_port), "--log-level",
                      "warning", "--enable-admission-plugins", FULL], work / "full.log")
        try:
            b = await creates(report, "no admission  ", f"http://127.0.0.1:{bare_port}", "bench-bare", args, False)
            f = await creates(report, "full chain    ", f"http://127.0.0.1:{full_port}", "bench-full", args, True)
        finally:
            stop(bare, full)
        report("no admission / raw etcd", f"{b / raw:.2f}x")
        report("full chain / no admission", f"{f / b:.2f}x")
    report.summary()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--count", type=int, default=2000)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
