"""What the cluster's security costs: the apiserver as clusters run it against the same apiserver with none of it.

One run starts two etcds (plain, and TLS with client-certificate auth as clusters run it) and two apiservers:

- *open*: plain HTTP, plain etcd, AlwaysAllow, no audit, no encryption;
- *secured*: HTTPS with x509 authentication, etcd over mTLS, `--authorization-mode=Node,RBAC`, the default
  admission chain plus ServiceAccount and NodeRestriction, an audit log of every request at Metadata level, Secrets
  encrypted with aescbc. (The open one has the default chain too; bench/admission.py measures the chain.)

Requests on the secured one come from a user bound to a Role in its namespace (so RBAC evaluates, rather than the
system:masters short cut). It measures pod and secret creates/s and GETs/s over kept-alive connections, and, as the
baseline, raw creates into each etcd through the storage backend. Prints figures and ratios, not pass/fail.

    .venv/bin/python bench/security.py [--concurrency 32] [--count 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import ssl
import tempfile
import uuid
from pathlib import Path

import aiohttp
import orjson
from apiserver import pod, wait_ready
from common import Report, free_port, pct, run_concurrent, spawn, stop

from harness.cluster import pki
from harness.cluster.local import NodeSpec
from harness.storage.etcd import EtcdBackend
from harness.storage.local import LocalEtcd, ServerTLS
from harness.util import x509

POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"


def secret(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {"password": base64.b64encode(os.urandom(24)).decode()}}


async def raw_creates(backend: EtcdBackend, args: argparse.Namespace) -> tuple[float, list[float]]:
    run, value = uuid.uuid4().hex[:6], orjson.dumps(pod("x" * 20))

    async def put(i: int) -> None:
        await backend.create(f"/bench/{run}/{i}", value)

    return await run_concurrent(args.count, args.concurrency, put)


async def api(report: Report, label: str, url: str, tls: ssl.SSLContext | bool, ns: str,
              args: argparse.Namespace, admin: ssl.SSLContext | bool) -> dict[str, float]:
    rates: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8, ssl=admin)) as s:
        await wait_ready(s, url)
        await s.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": ns}})
        rbac = f"{url}/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
        await s.post(f"{rbac}/roles", json={"metadata": {"name": "bench-writer"}, "rules": [
            {"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["create", "get", "list"]}]})
        await s.post(f"{rbac}/rolebindings", json={
            "metadata": {"name": "bench-writer"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                              "kind": "Role", "name": "bench-writer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bench-user"}]})
        await s.post(f"{url}/api/v1/namespaces/{ns}/serviceaccounts", json={"metadata": {"name": "default"}})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency + 8, ssl=tls)) as s:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"verb": "create", "resource": "secrets", "namespace": ns}}}
        for _ in range(200):  # until the binding is in the apiserver's cache
            async with s.post(f"{url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review) as r:
                if (await r.json())["status"]["allowed"]:
                    break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit(f"{label}: the bench user was never allowed to create secrets")
        for what, make in (("pod", pod), ("secret", secret)):
            base = f"{url}/api/v1/namespaces/{ns}/{what}s"

            async def create(i: int, base: str = base, make: object = make) -> None:
                body = orjson.dumps(make(f"b-{i:06d}"))  # type: ignore[operator]
                async with s.post(base, data=body, headers={"Content-Type": "application/json"}) as r:
                    if r.status != 201:
                        raise SystemExit(f"{label} create failed: {r.status} {await r.text()}")
                    await r.read()

            async def get(i: int, base: str = base) -> None:
                async with s.get(f"{base}/b-{i % args.count:06d}") as r:
                    if r.status != 200:
                        raise SystemExit(f"{label} get failed: {r.status} {await r.text()}")
                    await r.read()

            for verb, fn in (("creates", create), ("GETs", get)):
                rate, lat = await run_concurrent(args.count, args.concurrency, fn)
                rates[f"{what} {verb}"] = rate
                report(f"{label} {what} {verb}/s", f"{rate:,.0f}  p50 {pct(lat, .5):.1f} ms  "
                       f"p99 {pct(lat, .99):.1f} ms")
    return rates


async def bench(args: argparse.Namespace) -> None:
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        directory = work / "pki"
        pki.ensure(directory, pki.plan([NodeSpec("m", "master", "127.0.0.1")], service_cidr="10.96.0.0/12"))
        ca = x509.load(directory / "ca.crt", directory / "ca.key")
        x509.save(x509.sign(ca, x509.CertRequest("bench-user")), directory / "user.crt", directory / "user.key")
        (work / "policy.yaml").write_text(POLICY)
        member = directory / "machines" / "m" / "etcd"
        tls = ServerTLS(str(directory / "etcd" / "ca.crt"), str(member / "server.crt"), str(member / "server.key"))
        etcd_files = {"ca_file": str(directory / "etcd" / "ca.crt"),
                      "cert_file": str(directory / "apiserver-etcd-client.crt"),
                      "key_file": str(directory / "apiserver-etcd-client.key")}
        with LocalEtcd() as plain_etcd, LocalEtcd(tls=tls) as tls_etcd:
            async with EtcdBackend([plain_etcd.endpoint]) as backend:
                plain_rate, lat = await raw_creates(backend, args)
            report("raw etcd creates/s (plain)", f"{plain_rate:,.0f}  p99 {pct(lat, .99):.1f} ms")
            async with EtcdBackend([tls_etcd.endpoint], **etcd_files) as backend:
                mtls_rate, lat = await raw_creates(backend, args)
            report("raw etcd creates/s (mTLS)", f"{mtls_rate:,.0f}  p99 {pct(lat, .99):.1f} ms")

            open_port, secure_port, secured_plain = free_port(), free_port(), free_port()
            opened = spawn(["apiserver", "--etcd-servers", plain_etcd.endpoint, "--port", str(open_port),
                            "--log-level", "warning"], work / "open.log")
            secured = spawn([
                "apiserver", "--etcd-servers", tls_etcd.endpoint, "--etcd-cafile", etcd_files["ca_file"],
                "--etcd-certfile", etcd_files["cert_file"], "--etcd-keyfile", etcd_files["key_file"],
                "--port", str(secured_plain), "--secure-port", str(secure_port),
                "--tls-cert-file", str(directory / "apiserver.crt"),
                "--tls-private-key-file", str(directory / "apiserver.key"), "--client-ca-file",
                str(directory / "ca.crt"), "--authorization-mode", "Node,RBAC",
                "--enable-admission-plugins", "NamespaceLifecycle,ServiceAccount,NodeRestriction,"
                "DefaultTolerationSeconds", "--audit-policy-file", str(work / "policy.yaml"),
                "--audit-log-path", str(work / "audit.log"),
                "--encryption-provider-config", str(directory / pki.ENCRYPTION_CONFIG), "--log-level", "warning"],
                work / "secured.log")
            user = ssl.create_default_context(cafile=str(directory / "ca.crt"))
            user.load_cert_chain(directory / "user.crt", directory / "user.key")
            admin = ssl.create_default_context(cafile=str(directory / "ca.crt"))
            admin.load_cert_chain(directory / "admin.crt", directory / "admin.key")
            try:
                o = await api(report, "open   ", f"http://127.0.0.1:{open_port}", False, "bench-open", args, False)
                c = await api(report, "secured", f"https://127.0.0.1:{secure_port}", user, "bench-secured", args,
                              admin)
            finally:
                stop(opened, secured)
            audit_lines = sum(1 for _ in (work / "audit.log").open())
        report("ratio raw etcd mTLS/plain", f"{mtls_rate / plain_rate:.2f}x")
        for key in o:
            report(f"ratio secured/open {key}", f"{c[key] / o[key]:.2f}x")
        report("ratio secured pod creates/raw etcd mTLS", f"{c['pod creates'] / mtls_rate:.2f}x")
        report("audit events written (secured)", f"{audit_lines:,}")
    report.summary()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--count", type=int, default=2000, help="creates and GETs of each kind on each apiserver")
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
