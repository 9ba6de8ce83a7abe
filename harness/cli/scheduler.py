"""`harness scheduler`: bind pending pods to nodes (kube-scheduler's flags where they exist)."""

from __future__ import annotations

import argparse
import logging

from harness.cli import lifecycle, logs
from harness.cli.flags import add_secure_serving, boolean, seconds, secure_serving_from
from harness.scheduler.profile import DEFAULT_SCHEDULER_NAME
from harness.scheduler.server import Config, serve

log = logging.getLogger("harness.scheduler")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", required=True, help="kubeconfig with the apiserver URL(s) and credentials")
    p.add_argument("--scheduler-name", default=DEFAULT_SCHEDULER_NAME,
                   help="schedule pods whose spec.schedulerName is this (default default-scheduler)")
    p.add_argument("--bind-address", default="127.0.0.1", help="address for /healthz and /metrics (default 127.0.0.1)")
    p.add_argument("--secure-port", type=int, default=10259,
                   help="port for /healthz, /livez, /readyz and /metrics (plain HTTP for now; default 10259)")
    p.add_argument("--leader-elect", type=boolean, nargs="?", const=True, default=True, metavar="BOOL",
                   help="elect a leader among replicas before scheduling (default true)")
    p.add_argument("--leader-elect-lease-duration", type=seconds, default=15.0, metavar="DURATION",
                   help="how long a lease lasts without renewal (default 15)")
    p.add_argument("--leader-elect-renew-deadline", type=seconds, default=10.0, metavar="DURATION",
                   help="a leader that cannot renew within this stops leading (default 10)")
    p.add_argument("--leader-elect-retry-period", type=seconds, default=2.0, metavar="DURATION",
                   help="how often to try to acquire or renew the lease (default 2)")
    p.add_argument("--leader-elect-resource-name", default="kube-scheduler", help="the Lease's name")
    p.add_argument("--leader-elect-resource-namespace", default="kube-system", help="the Lease's namespace")
    p.add_argument("--percentage-of-nodes-to-score", type=int, default=0, metavar="PERCENT",
                   help="stop filtering once this share of nodes is feasible; 0 = adaptive (default)")
    p.add_argument("--pod-max-in-unschedulable-pods-duration", type=float, default=60.0, metavar="SECONDS",
                   help="retry unschedulable pods at least this often (default 60)")
    add_secure_serving(p)
    p.add_argument("--log-level", default="info")


def config_from(args: argparse.Namespace) -> Config:
    if not 0 <= args.percentage_of_nodes_to_score <= 100:
        raise SystemExit("harness scheduler: --percentage-of-nodes-to-score must be between 0 and 100")
    return Config(kubeconfig=args.kubeconfig, scheduler_name=args.scheduler_name, bind_address=args.bind_address,
                  secure=secure_serving_from(args, "scheduler"),
                  port=args.secure_port, leader_elect=args.leader_elect,
                  lease_duration=args.leader_elect_lease_duration, renew_deadline=args.leader_elect_renew_deadline,
                  retry_period=args.leader_elect_retry_period, lease_name=args.leader_elect_resource_name,
                  lease_namespace=args.leader_elect_resource_namespace,
                  percentage_of_nodes_to_score=args.percentage_of_nodes_to_score,
                  unschedulable_timeout=args.pod_max_in_unschedulable_pods_duration)


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.scheduler", args.log_level)
    config = config_from(args)
    return lifecycle.serve_until_signalled(lambda stop: serve(config, stop=stop), log)
