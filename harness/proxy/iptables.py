"""The ServicePort model rendered as `iptables-restore` input, after upstream's iptables proxier (proxier.go).

Pure: no commands are run here. The `nat` table gets the service chains:

    PREROUTING, OUTPUT -> KUBE-SERVICES       (jumps in built-in chains, see `JUMPS`)
    KUBE-SERVICES: per service port `-d clusterIP --dport P -j KUBE-SVC-<hash>`, then,
                   last, `-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`
    KUBE-NODEPORTS: `--dport nodePort -j KUBE-MARK-MASQ`, `--dport nodePort -j KUBE-SVC-<hash>`
    KUBE-SVC-<hash>: `! -s clusterCIDR -j KUBE-MARK-MASQ` (off-cluster clients are masqueraded),
                     ClientIP affinity (`-m recent --rcheck`), then one jump per endpoint with
                     `-m statistic --mode random --probability 1/(n-i)` (the last one unconditional)
    KUBE-SEP-<hash>: `-s <endpoint ip> -j KUBE-MARK-MASQ` (hairpin), `-j DNAT --to-destination ip:port`
    KUBE-MARK-MASQ: `--or-mark 0x4000`;  POSTROUTING -> KUBE-POSTROUTING: MASQUERADE what is marked

The `filter` table REJECTs (icmp-port-unreachable) connections to service ports without endpoints,
so clients fail fast instead of hanging: KUBE-SERVICES for cluster IPs (hooked from OUTPUT and
FORWARD), KUBE-EXTERNAL-SERVICES for node ports (hooked from INPUT and FORWARD); KUBE-FORWARD
accepts marked and established forwarded traffic even where the FORWARD policy is DROP.

Every chain is declared with `:CHAIN - [0:0]`, which under `iptables-restore --noflush` flushes
it (or creates it) atomically with the rest of the table, so a restore of this text replaces
exactly our chains and nothing else. Output is deterministic (services sorted by name,
endpoints by address), so whether anything changed is a string compare.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.proxy.model import ServicePort

MASQ_MARK = "0x4000"
DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"

#: The fixed chains of each table, in the order they are declared.
NAT_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)
FILTER_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD)
#: Prefixes of the per-service chains: ones not in the current rules are stale and are deleted.
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-")


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends traffic to one of ours; installed with -C / -I, removed with -D."""

    table: str
    chain: str
    args: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.args[-1]


def _jump(table: str, chain: str, comment: str, target: str, *, new_only: bool = False) -> Jump:
    state = ("-m", "conntrack", "--ctstate", "NEW") if new_only else ()
    return Jump(table, chain, (*state, "-m", "comment", "--comment", comment, "-j", target))


#: Upstream's iptablesJumpChains (plus KUBE-FORWARD), in the order they are ensured.
JUMPS: tuple[Jump, ...] = (
    _jump("filter", "INPUT", "kubernetes externally-visible service portals", KUBE_EXTERNAL_SERVICES, new_only=True),
    _jump("filter", "FORWARD", "kubernetes externally-visible service portals", KUBE_EXTERNAL_SERVICES,
          new_only=True),
    _jump("filter", "FORWARD", "kubernetes service portals", KUBE_SERVICES, new_only=True),
    _jump("filter", "OUTPUT", "kubernetes service portals", KUBE_SERVICES, new_only=True),
    _jump("filter", "FORWARD", "kubernetes forwarding rules", KUBE_FORWARD),
    _jump("nat", "OUTPUT", "kubernetes service portals", KUBE_SERVICES),
    _jump("nat", "PREROUTING", "kubernetes service portals", KUBE_SERVICES),
    _jump("nat", "POSTROUTING", "kubernetes postrouting rules", KUBE_POSTROUTING),
)


def port_proto_hash(service_port: str, protocol: str) -> str:
    """Upstream's portProtoHash: the first 16 characters of base32(sha256(name + lowercase protocol))."""
    digest = hashlib.sha256((service_port + protocol.lower()).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def service_chain(sp: ServicePort) -> str:
    """KUBE-SVC-<hash>, as upstream's servicePortChainName."""
    return "KUBE-SVC-" + port_proto_hash(sp.key, sp.protocol)


def endpoint_chain(sp: ServicePort, endpoint: str) -> str:
    """KUBE-SEP-<hash>, as upstream's servicePortEndpointChainName (endpoint is `ip:port`)."""
    digest = hashlib.sha256((sp.key + sp.protocol.lower() + endpoint).encode()).digest()
    return "KUBE-SEP-" + base64.b32encode(digest).decode()[:16]


def probability(n: int) -> str:
    """Upstream's computeProbability: 1/n formatted %0.10f."""
    return f"{1.0 / n:0.10f}"


def _quote(comment: str) -> str:
    return f'"{comment}"' if re.search(r"[\s\"']", comment) else comment


def _rule(chain: str, *args: str) -> str:
    return " ".join(("-A", chain, *args))


def _comment(text: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", _quote(text))


def _proto(sp: ServicePort) -> tuple[str, ...]:
    proto = sp.protocol.lower()
    return ("-m", proto, "-p", proto)


@dataclass(frozen=True)
class Rules:
    """The rendered rules: restore text per table, and the chains each declares."""

    nat: str
    filter: str
    nat_chains: tuple[str, ...]
    filter_chains: tuple[str, ...]

    @property
    def text(self) -> str:
        """Both tables, as one `iptables-restore --noflush` input."""
        return self.filter + self.nat

    def with_deletions(self, stale_nat_chains: Iterable[str]) -> str:
        """The restore input that also flushes and deletes `stale_nat_chains` (chains no longer used)."""
        stale = sorted(set(stale_nat_chains) - set(self.nat_chains))
        if not stale:
            return self.text
        head, commit = self.nat.rsplit("COMMIT\n", 1)
        lines = head.splitlines()
        declared = [line for line in lines if line.startswith(":")]
        rules = [line for line in lines if not line.startswith(":") and line != "*nat"]
        nat = "\n".join(["*nat", *declared, *(f":{c} - [0:0]" for c in stale), *rules,
                         *(f"-X {c}" for c in stale), "COMMIT", ""]) + commit
        return self.filter + nat


def render(ports: Sequence[ServicePort], *, cluster_cidr: str = DEFAULT_CLUSTER_CIDR) -> Rules:
    """The full restore text of our chains in `filter` and `nat` for these service ports."""
    nat_chains: list[str] = list(NAT_CHAINS)
    nat: list[str] = [
        _rule(KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j", "RETURN"),
        _rule(KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", MASQ_MARK),  # so a re-sent packet is not re-masqueraded
        _rule(KUBE_POSTROUTING, *_comment("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE"),
        _rule(KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", MASQ_MARK),
    ]
    filter_rules: list[str] = [
        _rule(KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"),
        _rule(KUBE_FORWARD, *_comment("kubernetes forwarding rules"), "-m", "mark", "--mark",
              f"{MASQ_MARK}/{MASQ_MARK}", "-j", "ACCEPT"),
        _rule(KUBE_FORWARD, *_comment("kubernetes forwarding conntrack rule"), "-m", "conntrack", "--ctstate",
              "RELATED,ESTABLISHED", "-j", "ACCEPT"),
    ]
    services: list[str] = []
    nodeports: list[str] = []
    chains: list[str] = []
    for sp in ports:
        svc = service_chain(sp)
        dst = ("-d", f"{sp.cluster_ip}/32", "--dport", str(sp.port))
        if not sp.endpoints:
            filter_rules.append(_rule(KUBE_SERVICES, *_comment(f"{sp.key} has no endpoints"), *_proto(sp), *dst,
                                      "-j", "REJECT", "--reject-with", "icmp-port-unreachable"))
            for ip in sp.external_ips:
                filter_rules.append(_rule(KUBE_EXTERNAL_SERVICES, *_comment(f"{sp.key} has no endpoints"),
                                          *_proto(sp), "-d", f"{ip}/32", "--dport", str(sp.port),
                                          "-j", "REJECT", "--reject-with", "icmp-port-unreachable"))
            if sp.node_port:
                filter_rules.append(_rule(KUBE_EXTERNAL_SERVICES, *_comment(f"{sp.key} has no endpoints"),
                                          "-m", "addrtype", "--dst-type", "LOCAL", *_proto(sp),
                                          "--dport", str(sp.node_port),
                                          "-j", "REJECT", "--reject-with", "icmp-port-unreachable"))
            continue
        chains.append(svc)
        services.append(_rule(KUBE_SERVICES, *_comment(f"{sp.key} cluster IP"), *_proto(sp), *dst, "-j", svc))
        for ip in sp.external_ips:
            ext = ("-d", f"{ip}/32", "--dport", str(sp.port))
            services.append(_rule(KUBE_SERVICES, *_comment(f"{sp.key} external IP"), *_proto(sp), *ext,
                                  "-j", KUBE_MARK_MASQ))
            services.append(_rule(KUBE_SERVICES, *_comment(f"{sp.key} external IP"), *_proto(sp), *ext,
                                  "-j", svc))
        if sp.node_port:
            nodeports.append(_rule(KUBE_NODEPORTS, *_comment(sp.key), *_proto(sp), "--dport", str(sp.node_port),
                                   "-j", KUBE_MARK_MASQ))
            nodeports.append(_rule(KUBE_NODEPORTS, *_comment(sp.key), *_proto(sp), "--dport", str(sp.node_port),
                                   "-j", svc))
        svc_rules = [_rule(svc, *_comment(f"{sp.key} cluster IP"), *_proto(sp), *dst, "!", "-s", cluster_cidr,
                           "-j", KUBE_MARK_MASQ)] if cluster_cidr else []
        sep_rules: list[str] = []
        seps = [(endpoint_chain(sp, str(ep)), ep) for ep in sp.endpoints]
        if sp.affinity_timeout:
            for sep, ep in seps:
                svc_rules.append(_rule(svc, *_comment(f"{sp.key} -> {ep}"), "-m", "recent", "--name", sep,
                                       "--rcheck", "--seconds", str(sp.affinity_timeout), "--reap", "-j", sep))
        n = len(seps)
        for i, (sep, ep) in enumerate(seps):
            chains.append(sep)
            stat = ("-m", "statistic", "--mode", "random", "--probability", probability(n - i)) if i < n - 1 else ()
            svc_rules.append(_rule(svc, *_comment(f"{sp.key} -> {ep}"), *stat, "-j", sep))
            sep_rules.append(_rule(sep, *_comment(sp.key), "-s", f"{ep.ip}/32", "-j", KUBE_MARK_MASQ))
            recent = ("-m", "recent", "--name", sep, "--set") if sp.affinity_timeout else ()
            sep_rules.append(_rule(sep, *_comment(sp.key), *recent, *_proto(sp), "-j", "DNAT", "--to-destination",
                                   str(ep)))
        nat.extend(svc_rules)
        nat.extend(sep_rules)
    services.append(_rule(KUBE_SERVICES, *_comment("kubernetes service nodeports; NOTE: this must be the last rule "
                                                   "in this chain"), "-m", "addrtype", "--dst-type", "LOCAL",
                          "-j", KUBE_NODEPORTS))
    nat_chains.extend(chains)
    nat_text = _table("nat", nat_chains, [*services, *nodeports, *nat])
    filter_text = _table("filter", list(FILTER_CHAINS), filter_rules)
    return Rules(nat=nat_text, filter=filter_text, nat_chains=tuple(nat_chains), filter_chains=FILTER_CHAINS)


def _table(name: str, chains: Sequence[str], rules: Sequence[str]) -> str:
    return "\n".join([f"*{name}", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT", ""])


def cleanup_text(nat_chains: Iterable[str], filter_chains: Iterable[str]) -> str:
    """Restore input that flushes and deletes the given chains (all of ours, for `--cleanup`)."""
    parts = []
    for table, chains in (("filter", sorted(set(filter_chains))), ("nat", sorted(set(nat_chains)))):
        if chains:
            parts.append("\n".join([f"*{table}", *(f":{c} - [0:0]" for c in chains),
                                    *(f"-X {c}" for c in chains), "COMMIT", ""]))
    return "".join(parts)


def chains_in(save_output: str) -> dict[str, set[str]]:
    """Chains per table in `iptables-save` output."""
    tables: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in save_output.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), set())
        elif line.startswith(":") and current is not None:
            current.add(line[1:].split()[0])
    return tables


def ours(chains: Iterable[str], table: str) -> set[str]:
    """Of `chains` (in `table`), those this proxier creates and may delete."""
    fixed = set(NAT_CHAINS if table == "nat" else FILTER_CHAINS)
    return {c for c in chains if c in fixed or c.startswith(SERVICE_CHAIN_PREFIXES)}
