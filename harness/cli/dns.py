"""`harness dns`: the cluster DNS server (CoreDNS's kubernetes plugin, answering from Services and Endpoints)."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from harness.cli import lifecycle, logs
from harness.dns.records import DEFAULT_DOMAIN, DEFAULT_REVERSE_CIDRS
from harness.dns.server import Config, serve

log = logging.getLogger("harness.dns")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", required=True, help="kubeconfig with the apiserver URL(s) and credentials")
    p.add_argument("--bind-address", default="0.0.0.0", help="address for DNS on UDP and TCP (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=53, help="DNS port, UDP and TCP (default 53)")
    p.add_argument("--cluster-domain", default=DEFAULT_DOMAIN, help="the cluster's DNS domain (default cluster.local)")
    p.add_argument("--reverse-cidrs", default=",".join(DEFAULT_REVERSE_CIDRS), metavar="CIDR[,CIDR]",
                   help="IPv4 ranges whose in-addr.arpa names are answered here; other reverse names are REFUSED "
                        f"unless known (default {','.join(DEFAULT_REVERSE_CIDRS)})")
    p.add_argument("--health-port", type=int, default=8080,
                   help="port for /healthz, /readyz and /metrics, on the bind address (default 8080)")
    p.add_argument("--service-ip", default="10.96.0.10",
                   help="keep kube-system/kube-dns at this ClusterIP pointing at this server ('' = do not)")
    p.add_argument("--advertise-address", default="",
                   help="address put in the kube-dns Endpoints (default: the bind address unless 0.0.0.0)")
    p.add_argument("--log-level", default="info")


def config_from(args: argparse.Namespace) -> Config:
    for name, port in (("--port", args.port), ("--health-port", args.health_port)):
        if not 0 <= port <= 65535:
            raise SystemExit(f"harness dns: {name} must be between 0 and 65535")
    cidrs = tuple(c.strip() for c in args.reverse_cidrs.split(",") if c.strip())
    for cidr in cidrs:
        try:
            ipaddress.IPv4Network(cidr)
        except ValueError as exc:
            raise SystemExit(f"harness dns: --reverse-cidrs: {exc}") from None
    domain = args.cluster_domain.strip(".")
    if not domain:
        raise SystemExit("harness dns: --cluster-domain must not be empty")
    return Config(kubeconfig=args.kubeconfig, bind_address=args.bind_address, port=args.port,
                  cluster_domain=domain, health_port=args.health_port, reverse_cidrs=cidrs,
                  service_ip=args.service_ip, advertise_address=args.advertise_address)


def run(args: argparse.Namespace) -> int:
    logs.setup("harness.dns", args.log_level)
    config = config_from(args)
    return lifecycle.serve_until_signalled(lambda stop: serve(config, stop=stop), log)
