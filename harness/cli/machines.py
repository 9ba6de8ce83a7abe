"""`harness up`, `down`, `status` and `ssh`: a cluster of Linux-namespace nodes (`--provider local`, the default) or
of VMs (`--provider vagrant`: the project's Vagrantfile on libvirt), provisioned by Ansible.

`up` makes the machines from the cluster spec (`cluster.yaml`), writes the Ansible inventory
`inventory/<name>/hosts.yml`, runs `ansible/site.yml` through ansible-runner, waits for every worker to be a
Ready Node, writes `inventory/<name>/kubeconfig` and prints a summary. `down` removes everything `up` made and is
safe to run twice or after a failed `up`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from harness.client import kubeconfig
from harness.cluster.accel import AccelError
from harness.cluster.box import BoxError
from harness.cluster.bringup import LOCAL, PROVIDERS, VAGRANT, BringUp, NodesNotReadyError, list_nodes
from harness.cluster.local import LocalProvider, LocalProviderError
from harness.cluster.pki import PKIError, expiring
from harness.cluster.provision import ProvisionError
from harness.cluster.spec import DEFAULT_SPEC_PATH, SpecError, load_spec
from harness.cluster.vagrant import VagrantError, VagrantProvider
from harness.util.x509 import X509Error

INVENTORY = Path("inventory")
DEFAULT_NAME = "local"
SUPERVISORD_CONF = "/etc/harness/supervisor/supervisord.conf"
# What each program serves its health on (port, path), checked from this host at the node's IP; HTTPS ones are
# checked against the cluster CA (their health paths answer anonymous requests, as upstream's).
HTTPS_PROGRAMS = frozenset({"harness-apiserver", "harness-scheduler", "harness-controller-manager",
                            "harness-log-aggregator"})
HEALTH = {
    "harness-apiserver": (6443, "/readyz"),
    "harness-scheduler": (10259, "/healthz"),
    "harness-controller-manager": (10257, "/healthz"),
    "harness-dns": (8080, "/readyz"),
    "harness-kubelet": (10248, "/healthz"),  # --healthz-port: 10250 wants a certificate or token
    "harness-kube-proxy": (10256, "/healthz"),
    "harness-etcd": (2381, "/health"),  # --listen-metrics-urls: the client port wants an etcd client certificate
    "harness-prometheus": (9090, "/-/ready"),
    "harness-log-agent": (24221, "/healthz"),
    "harness-log-aggregator": (24220, "/healthz"),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, help=f"the cluster's name (default {DEFAULT_NAME}; {VAGRANT} with "
                                                f"--provider {VAGRANT})")


def _name(args: argparse.Namespace) -> str:
    """The cluster's name: given, else `vagrant` for the VM provider, else `local`."""
    if args.name:
        return str(args.name)
    return VAGRANT if getattr(args, "provider", None) == VAGRANT else DEFAULT_NAME


def provider_of(name: str) -> str:
    """The provider that made cluster `name` (inventory/<name>/provider), local when it says nothing."""
    try:
        kind = (INVENTORY / name / "provider").read_text().strip()
    except OSError:
        return VAGRANT if name == VAGRANT else LOCAL
    return kind if kind in PROVIDERS else LOCAL


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`harness up` (the COMMANDS entry for this module)."""
    _common(p)
    p.add_argument("--provider", choices=PROVIDERS, default=LOCAL,
                   help="local: Linux-namespace nodes on this machine (default); vagrant: libvirt VMs from the "
                        "Vagrantfile, with the box `harness box build` makes")
    p.add_argument("--spec", default=str(DEFAULT_SPEC_PATH), help="the cluster spec (default cluster.yaml)")
    p.add_argument("--masters", type=int, default=None, help="masters, 1 or 3 (default: the spec's)")
    p.add_argument("--workers", type=int, default=None, help="workers, 0..20 (default: the spec's)")
    p.add_argument("--set", action="append", default=[], metavar="VAR=VALUE", dest="settings",
                   help="a playbook variable for this cluster (repeatable), e.g. "
                        "control_plane_node_monitor_grace_period=20; remembered for later runs")
    p.add_argument("--machines-only", action="store_true",
                   help="make the machines and the inventory, but do not run the playbook")
    p.add_argument("--inventory-only", action="store_true",
                   help="write the PKI, kubeconfigs and inventory for the spec's machines, but make none "
                        "(the Vagrantfile does this before Vagrant's Ansible provisioner runs)")
    p.add_argument("--timeout", type=float, default=180.0, metavar="SECONDS",
                   help="how long to wait for every worker to be Ready (default 180)")


def parse_settings(items: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"harness up: --set wants VAR=VALUE with VAR a variable name, not {item!r}")
        settings[key] = yaml.safe_load(value) if value else ""
    return settings


def provider(name: str) -> LocalProvider | VagrantProvider:
    """The machines of cluster `name`, by the provider that made them."""
    if provider_of(name) == VAGRANT:
        return VagrantProvider(name, spec_path=DEFAULT_SPEC_PATH, hosts=INVENTORY / name / "hosts.yml")
    return LocalProvider(name, state_dir=INVENTORY / name / "machines")


def supervisorctl(machines: LocalProvider | VagrantProvider) -> str:
    """supervisorctl on the machines: from the VM's virtualenv, or the host's that namespace nodes share."""
    bin_dir = f"{machines.venv}/bin" if isinstance(machines, VagrantProvider) else str(Path(sys.executable).parent)
    return f"{bin_dir}/supervisorctl -c {SUPERVISORD_CONF}"


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    args.name = _name(args)
    try:
        spec = load_spec(args.spec)
        spec = (spec.for_vms() if args.provider == VAGRANT else spec).with_overrides(masters=args.masters,
                                                                                      workers=args.workers)
    except SpecError as exc:
        print(f"harness up: {exc}", file=sys.stderr)
        return 2
    if args.provider == VAGRANT and args.name != VAGRANT:
        print(f"harness up: the Vagrantfile makes one cluster per project directory, named {VAGRANT}: "
              f"drop --name {args.name}", file=sys.stderr)
        return 2
    cluster = BringUp(args.name, spec, INVENTORY / args.name, settings=parse_settings(args.settings),
                      kind=args.provider, spec_path=Path(args.spec))

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", flush=True)

    again = f"harness up --provider {VAGRANT}" if args.provider == VAGRANT else f"harness up --name {args.name}"

    def failed(what: object) -> int:
        print(f"\nharness up: {what}\n\nThe machines stay up for a look (`harness ssh --name {args.name} NODE`, "
              f"`harness status --name {args.name}`).\nRe-run `{again}` after a fix (it reuses "
              f"them), or remove everything with `harness down --name {args.name}`"
              f"{' (make vagrant-down)' if args.provider == VAGRANT else ''}.", file=sys.stderr)
        return 1

    kind = "VM" if args.provider == VAGRANT else "namespace node"
    progress(f"cluster {args.name}: {spec.masters} master(s), {spec.workers} worker(s) as {kind}s on {spec.network}")
    try:
        cluster.make_machines(progress, create=not args.inventory_only)
        progress(f"inventory: {cluster.hosts}")
        cluster.make_pki(progress)
        if args.inventory_only:
            cluster.write_kubeconfig()
            return 0
        if args.machines_only:
            print(f"\nCluster {args.name}: machines ready in {time.monotonic() - started:.1f}s (not provisioned)\n"
                  f"Inventory: {cluster.hosts}\nRemove:    harness down --name {args.name}")
            return 0
        progress("provisioning with ansible/site.yml")
        run_ = cluster.provision(progress)
        progress(f"provisioned: {run_.tasks} tasks, {run_.changed()} changes, in {run_.seconds:.1f}s")
        cluster.wait_nodes_ready(progress, timeout=args.timeout)
        cluster.write_kubeconfig()
    except (LocalProviderError, VagrantError, BoxError, AccelError, ProvisionError, NodesNotReadyError, PKIError,
            X509Error) as exc:
        return failed(exc)
    summary(cluster, time.monotonic() - started)
    return 0


def summary(cluster: BringUp, seconds: float) -> None:
    phases = " · ".join(f"{name} {s:.1f}s" for name, s in cluster.phases.items())
    states = {s.name: s for s in cluster.node_states}
    print(f"\nCluster {cluster.name} is up: {len(cluster.masters)} master(s), {len(cluster.workers)} worker(s), "
          f"in {seconds:.1f}s ({phases})\n")
    print(f"  {'NODE':<10} {'ROLE':<7} {'IP':<15} {'POD CIDR':<15} RUNS")
    for n in cluster.nodes:
        runs = ("etcd, apiserver, scheduler, controller-manager, dns" if n.role == "master"
                else "kubelet, kube-proxy (Ready)")
        if n is cluster.masters[0]:
            runs += ", prometheus, log aggregator"
        cidr = states[n.name].pod_cidr if n.name in states else "-"
        print(f"  {n.name:<10} {n.role:<7} {n.ip:<15} {cidr:<15} {runs}")
    venv = Path(sys.executable).parent
    path = f" PATH={venv}:$PATH" if (venv / "kubectl").exists() else ""
    web = f"http://{(cluster.workers or cluster.masters)[0].ip}:30080/hostname"
    host_logs = "" if cluster.kind == VAGRANT else \
        f"\n            (from this host: {(cluster.home / 'machines' / 'nodes').resolve()}/<node>/log/)"
    remove = "make vagrant-down" if cluster.kind == VAGRANT else f"harness down --name {cluster.name}"
    print(f"""
Use it with real kubectl:
  export KUBECONFIG={cluster.kubeconfig.resolve()}{path}
  kubectl get nodes -o wide
  kubectl apply -f examples/web.yaml      # then: curl {web}

Machines:   harness status --name {cluster.name}  ·  harness ssh --name {cluster.name} worker-1
Logs:       /var/log/harness/<component>.log on each node, e.g.
            harness ssh --name {cluster.name} {cluster.masters[0].name} tail /var/log/harness/apiserver.log{host_logs}
Ansible:    inventory {cluster.hosts.resolve()}
            last run's log {(cluster.home / 'ansible' / 'last-run.log').resolve()}
Metrics:    Prometheus http://{cluster.masters[0].ip}:9090 scrapes every component (targets: harness status)
Cluster logs: harness logs --name {cluster.name} [--component kubelet] [--namespace NS --pod P] [--since 10m] [--follow]
Remove:     {remove}""")


def add_down_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)


def run_down(args: argparse.Namespace) -> int:
    args.name = _name(args)
    try:
        machines = provider(args.name)
        machines.destroy()
        if isinstance(machines, VagrantProvider) and (left := machines.leftovers()):
            print(f"harness down: still on this host after removing the VMs: {', '.join(left)}", file=sys.stderr)
            return 1
    except (LocalProviderError, VagrantError) as exc:
        print(f"harness down: {exc}", file=sys.stderr)
        return 1
    home = INVENTORY / args.name
    for generated in ("hosts.yml", "kubeconfig", "settings.yml", "provider"):
        (home / generated).unlink(missing_ok=True)
    for directory in ("ansible", "pki", "kubeconfigs"):  # the PKI goes with its cluster, as `kubeadm reset` removes it
        shutil.rmtree(home / directory, ignore_errors=True)
    with contextlib.suppress(OSError):  # something else may live there (e.g. the dev control plane's files)
        home.rmdir()
    print(f"cluster {args.name}: removed")
    return 0


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)


def _programs(machines: LocalProvider | VagrantProvider, node: str) -> dict[str, str]:
    """{program: supervisorctl status line} on the node (empty when supervisord does not answer)."""
    try:
        argv = machines.ssh_command(node, [f"{supervisorctl(machines)} status"])
    except (LocalProviderError, VagrantError):
        return {}
    with contextlib.suppress(subprocess.TimeoutExpired):
        wait = 90 if isinstance(machines, VagrantProvider) else 15  # a VM under emulation answers slowly
        out = subprocess.run(argv, capture_output=True, text=True, timeout=wait, check=False).stdout
        return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.strip()}
    return {}


def _health(ip: str, program: str, ca_file: Path) -> str:
    if program not in HEALTH:
        return ""
    port, path = HEALTH[program]
    secure = program in HTTPS_PROGRAMS
    try:
        context = ssl.create_default_context(cafile=str(ca_file)) if secure else None
        with urllib.request.urlopen(f"{'https' if secure else 'http'}://{ip}:{port}{path}", timeout=3,
                                    context=context) as resp:
            return "healthy" if resp.status == 200 else f"HTTP {resp.status}"
    except OSError as exc:
        return f"unhealthy ({getattr(exc, 'code', None) or getattr(exc, 'reason', exc)})"


def run_status(args: argparse.Namespace) -> int:
    args.name = _name(args)
    machines = provider(args.name)
    status = machines.status()
    if not status:
        print(f"cluster {args.name}: no machines (make them with `harness up --name {args.name}`)")
        return 1
    with ThreadPoolExecutor(max_workers=8) as pool:
        programs = dict(zip(status, pool.map(lambda n: _programs(machines, n) if status[n]["alive"] else {},
                                             status), strict=True))
        ca_file = INVENTORY / args.name / "pki" / "ca.crt"
        checks = {(n, p): pool.submit(_health, status[n]["ip"], p, ca_file) for n in status for p in programs[n]}
    healthy = True
    for name, s in status.items():
        state = "up" if s["alive"] and s["sshd"] else "running, sshd not answering" if s["alive"] else "down"
        healthy &= state == "up"
        print(f"{name} ({s['role']}, {s['ip']}): machine {state}")
        if state == "up" and not programs[name]:
            print("  supervisord: not answering (not provisioned yet?)")
        for program, line in programs[name].items():
            health = checks[(name, program)].result()
            healthy &= line.startswith("RUNNING") and health in ("", "healthy")
            print(f"  {program:<28} {line:<40} {health}")
    healthy &= _prometheus_targets([s["ip"] for name, s in status.items() if "harness-prometheus" in programs[name]])
    _certificates(INVENTORY / args.name / "pki")
    try:
        nodes = list_nodes(kubeconfig.load(INVENTORY / args.name / "kubeconfig"), timeout=3)
    except kubeconfig.KubeConfigError as exc:
        print(f"\nNodes: {exc} (`harness up --name {args.name}` writes it)")
        return 1
    except OSError as exc:
        print(f"\nNodes: the apiserver does not answer ({exc})")
        return 1
    print("\nNodes: " + (", ".join(f"{n.name} {'Ready' if n.ready else 'NotReady'}" for n in nodes.values())
                         or "none registered"))
    healthy &= all(n.ready for n in nodes.values())
    return 0 if healthy else 1


def _certificates(directory: Path) -> None:
    """Warn of certificates that expire within 30 days (as `kubeadm certs check-expiration` would show)."""
    if not directory.is_dir():
        return
    try:
        due = expiring(directory)
    except (PKIError, X509Error) as exc:
        print(f"\nCertificates: cannot read {directory}: {exc}")
        return
    for cert in due:
        days = cert.description.days_left()
        when = f"expired {-days:.0f} days ago" if days < 0 else f"expires in {days:.0f} days"
        print(f"\nWARNING: certificate {cert.name} {when} ({cert.description.not_after:%Y-%m-%d}): "
              f"renew it with `harness pki rotate`")


def _prometheus_targets(ips: list[str]) -> bool:
    """Print Prometheus's view of its targets; True when every one is up."""
    for ip in ips:
        try:
            with urllib.request.urlopen(f"http://{ip}:9090/api/v1/targets?state=active", timeout=5) as resp:
                targets = json.loads(resp.read())["data"]["activeTargets"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"\nPrometheus http://{ip}:9090: no answer ({exc})")
            return False
        down = [t for t in targets if t.get("health") == "down"]  # "unknown": not scraped yet (just started)
        up = sum(t.get("health") == "up" for t in targets)
        print(f"\nPrometheus http://{ip}:9090: {up}/{len(targets)} targets up")
        for t in sorted(targets, key=lambda t: (t["labels"].get("job", ""), t["labels"].get("instance", ""))):
            error = f"  {t.get('lastError')}" if t.get("lastError") else ""
            print(f"  {t['labels'].get('job', '?'):<20} {t['labels'].get('instance', '?'):<10} {t['health']}{error}")
        return not down
    return True


def add_ssh_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("node", help="the node to log in to, e.g. worker-1")
    p.add_argument("command", nargs=argparse.REMAINDER, help="a command to run instead of a shell")


def run_ssh(args: argparse.Namespace) -> int:
    args.name = _name(args)
    try:
        argv = provider(args.name).ssh_command(args.node, args.command or None)
    except (LocalProviderError, VagrantError) as exc:
        print(f"harness ssh: {exc}", file=sys.stderr)
        return 1
    os.execvp(argv[0], argv)
