"""The `harness` command: each component is a subcommand, plus the cluster commands.

One table, `COMMANDS`, maps a subcommand to the module that defines its arguments
(`add_arguments(parser)`) and runs it (`run(args) -> int`); `module:name` names a module
holding several commands, as `add_<name>_arguments` and `run_<name>`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("harness.cli.machines", "create a local cluster: namespace nodes provisioned by ansible/site.yml"),
    "down": ("harness.cli.machines:down", "remove everything `harness up` made for a cluster"),
    "status": ("harness.cli.machines:status", "show a cluster's machines, supervisord programs and their health"),
    "ssh": ("harness.cli.machines:ssh", "log in to a node of a local cluster (or run a command there)"),
    "box": ("harness.cli.box", "build the VM box (Debian bookworm with everything the roles install) for Vagrant"),
    "pki": ("harness.cli.pki", "show a cluster's certificates (subject, names, expiry) or rotate them"),
    "apiserver": ("harness.cli.apiserver", "run the API server against etcd"),
    "scheduler": ("harness.cli.scheduler", "run the scheduler"),
    "controller-manager": ("harness.cli.controller_manager", "run the control loops (replicasets, namespaces, ...)"),
    "dev": ("harness.cli.dev", "start or stop a local control plane (etcd + apiserver) on loopback"),
    "kubelet": ("harness.cli.kubelet", "run the node agent: pods in runc containers, pod network, logs API"),
    "images": ("harness.cli.images", "list and import the node's container images"),
    "proxy": ("harness.cli.proxy", "run kube-proxy: Services and Endpoints as iptables rules on this node"),
    "dns": ("harness.cli.dns", "serve cluster DNS (<svc>.<ns>.svc.cluster.local) from Services and Endpoints"),
    "pod-routes": ("harness.cli.podroutes", "host-gw routes to every Node's podCIDR, for machines with no kubelet"),
    "log-agent": ("harness.cli.logagent", "tail component and container logs, forward them to the aggregator"),
    "log-aggregator": ("harness.cli.logaggregator", "receive logs (Fluentd Forward), store them by day and source"),
    "logs": ("harness.cli.logaggregator:logs", "query the cluster's logs: by node, component, pod, time, pattern"),
    "hollow-nodes": ("harness.cli.hollow", "simulate N nodes that run pods without running anything"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `harness` parser; with `only`, just that subcommand's module is imported (each component
    pulls in a lot — the apiserver the whole kubernetes client — and a kubelet should not wait for that)."""
    parser = argparse.ArgumentParser(prog="harness", description="A Kubernetes-style cluster in Python.")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module_path, _, part = module_name.partition(":")
            module = importlib.import_module(module_path)
            getattr(module, f"add_{part}_arguments" if part else "add_arguments")(sub)
            sub.set_defaults(_run=getattr(module, f"run_{part}" if part else "run"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    result: int = args._run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
