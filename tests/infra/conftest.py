"""The infra suites' options and the cluster they run against.

    pytest tests/infra --hosts='ansible://all' --ansible-inventory=inventory/<cluster>/hosts.yml   # any cluster
    pytest tests/infra --cluster NAME            # the same, for the local cluster inventory/NAME/hosts.yml
    pytest tests/infra --new-cluster             # a fresh local cluster for this run (what `make test` does),
                                                 # removed afterwards unless --keep-cluster
    pytest tests/infra --new-cluster --provider vagrant    # the same as VMs (`make vagrant-test`)

A new cluster gets its own name and node network (a user's cluster is never touched) and the shortened periods
below, so that node failure and eviction take seconds. When a test failed, its logs (every node's
/var/log/harness and /var/log/pods, the Ansible log) are kept in reports/failed-<cluster>/ before it is removed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.clusters import LocalCluster, VagrantCluster, keep_logs, new_cluster
from tests.infra.support import ROOT, VENV_BIN, InfraCluster

# Periods of a test cluster: a stopped kubelet makes its Node NotReady within ~10 s, its pods go 5 s later.
TEST_SETTINGS = {
    "node_kubelet_lease_renew_interval": 2,
    "node_kubelet_status_update_frequency": 10,
    "control_plane_node_monitor_period": 1,
    "control_plane_node_monitor_grace_period": 10,
    "control_plane_default_not_ready_toleration_seconds": 5,
    "control_plane_default_unreachable_toleration_seconds": 5,
}
NEW_CLUSTER_KEY = pytest.StashKey[LocalCluster | VagrantCluster]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "the harness cluster the infra suites run against")
    group.addoption("--cluster", metavar="NAME",
                    help="the local cluster NAME: same as --hosts=ansible://all "
                         "--ansible-inventory=inventory/NAME/hosts.yml")
    group.addoption("--new-cluster", action="store_true",
                    help="bring up a fresh local cluster (1 master, 2 workers) for this run and remove it after")
    group.addoption("--new-cluster-masters", type=int, default=1, metavar="N", help="masters of --new-cluster")
    group.addoption("--keep-cluster", action="store_true", help="leave the --new-cluster cluster up afterwards")
    group.addoption("--provider", choices=("local", "vagrant"), default="local",
                    help="what --new-cluster is made of: local namespace nodes (default), or VMs (the project's "
                         "Vagrantfile; 1 master + 1 worker unless --new-cluster-masters/--new-cluster-workers)")
    group.addoption("--new-cluster-workers", type=int, default=None, metavar="N",
                    help="workers of --new-cluster (default 2 local, 1 vagrant)")


def pytest_configure(config: pytest.Config) -> None:
    # testinfra's Ansible backend runs ansible-inventory; the virtualenv's, with the project's ansible.cfg
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible" / "ansible.cfg"))
    if config.getoption("--new-cluster", default=False):
        workers = config.getoption("--new-cluster-workers")
        cluster: LocalCluster | VagrantCluster
        if config.getoption("--provider") == "vagrant":
            cluster = VagrantCluster(masters=config.getoption("--new-cluster-masters"),
                                     workers=1 if workers is None else workers)
        else:
            cluster = new_cluster(Path(tempfile.mkdtemp(prefix="harness-infra-")),
                                  masters=config.getoption("--new-cluster-masters"),
                                  workers=2 if workers is None else workers, prefix="ci")
        config.stash[NEW_CLUSTER_KEY] = cluster
        # VMs keep upstream's periods: under emulation a kubelet can miss a 10 s grace period while busy, and with
        # one worker there is no node failure to test (test_node_failure.py says so)
        settings = [] if isinstance(cluster, VagrantCluster) else [f"--set={k}={v}" for k, v in TEST_SETTINGS.items()]
        print(f"\nharness up --name {cluster.name} (192.168.{cluster.subnet}.0/24) for the infra suites ...",
              file=sys.stderr, flush=True)
        up = cluster.up(*settings)
        if isinstance(cluster, LocalCluster):  # a VM cluster's progress was shown as it came
            sys.stderr.write(up.stdout[-1500:])
        if up.returncode != 0:
            keep_logs(cluster)
            cluster.down()
            raise pytest.UsageError(f"could not bring up the test cluster {cluster.name}:\n"
                                    f"{up.stdout[-4000:]}{up.stderr[-3000:]}")
        config.option.ansible_inventory = str(cluster.home / "hosts.yml")
    elif config.getoption("--cluster", default=None):
        name = config.getoption("--cluster")
        inventory = ROOT / "inventory" / name / "hosts.yml"
        if not inventory.exists():
            raise pytest.UsageError(f"no inventory {inventory}: bring the cluster up with `harness up --name {name}`")
        config.option.ansible_inventory = str(inventory)


def _inventory(config: pytest.Config) -> str | None:
    value: str | None = config.getoption("ansible_inventory", default=None)
    return value


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without a cluster (a plain `pytest`), the infra suites are not collected; the header says how to run them."""
    if _inventory(config) is None and collection_path.name.startswith("test_"):
        return True
    return None


def pytest_report_header(config: pytest.Config) -> str:
    inventory = _inventory(config)
    if inventory is None:
        return ("infra suites: no cluster given, not collected (--new-cluster, --cluster NAME, or "
                "--hosts=ansible://all --ansible-inventory=inventory/<cluster>/hosts.yml)")
    return f"infra suites: the cluster of {inventory}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--hosts` chooses the machines and each file's `testinfra_hosts` narrows them to its role: with
    --hosts=ansible://all, test_etcd.py still runs only on the etcd group (testinfra alone would run it on all)."""
    inventory = _inventory(config)
    if not inventory or not config.getoption("hosts", default=None):
        return
    cluster = InfraCluster.load(Path(inventory))
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        host = callspec.params.get("_testinfra_host") if callspec else None
        patterns = getattr(getattr(item, "module", None), "testinfra_hosts", None)
        if host is None or patterns is None:
            keep.append(item)
            continue
        allowed = {name for pattern in patterns for name in cluster.hosts_matching(pattern.removeprefix("ansible://"))}
        (keep if host.backend.get_hostname() in allowed else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cluster = session.config.stash.get(NEW_CLUSTER_KEY, None)
    if cluster is None:
        return
    if exitstatus != 0:
        kept = keep_logs(cluster)
        print(f"\ncluster {cluster.name}: logs of the failed run kept in {kept}", file=sys.stderr)
    if session.config.getoption("--keep-cluster"):
        print(f"\ncluster {cluster.name} left up: inventory {cluster.home / 'hosts.yml'}, "
              f"kubeconfig {cluster.kubeconfig}; remove it with "
              f"`cd {cluster.cwd} && {VENV_BIN}/harness down --name {cluster.name}`", file=sys.stderr)
        return
    down = cluster.down()
    if down.returncode != 0:  # for VMs also: something was left on the host (harness down lists it)
        print(f"harness down --name {cluster.name} failed:\n{down.stdout}{down.stderr}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> InfraCluster:
    inventory = pytestconfig.getoption("ansible_inventory", default=None)
    if not inventory:
        pytest.fail("no cluster: give --new-cluster, --cluster NAME, or --hosts=ansible://all "
                    "--ansible-inventory=inventory/<cluster>/hosts.yml")
    return InfraCluster.load(Path(inventory).resolve())
