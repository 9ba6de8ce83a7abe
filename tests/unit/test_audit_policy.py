"""The audit policy as upstream's checker reads it: the first rule that matches sets the level."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.apiserver.audit import AuditConfigError, LogWriter, load_policy
from harness.auth.authorizer import RequestInfo
from harness.auth.user import UserInfo

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "configmaps"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["pods/log", "*/status"]
- level: Request
  userGroups: ["devs"]
  namespaces: ["team"]
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: Metadata
  omitStages: [ResponseStarted]
"""

ALICE = UserInfo("alice", ("devs", "system:authenticated"))
PROXY = UserInfo("system:kube-proxy", ("system:authenticated",))


def res(verb: str, resource: str, namespace: str = "default", subresource: str = "", group: str = "") -> RequestInfo:
    return RequestInfo(verb, group, "v1", resource, subresource, namespace, "x")


@pytest.mark.parametrize(("user", "info", "level"), [
    (PROXY, res("watch", "services"), "None"),
    (PROXY, res("list", "services"), "Metadata"),
    (ALICE, res("get", "secrets"), "Metadata"),
    (ALICE, res("get", "pods", subresource="log"), "RequestResponse"),
    (ALICE, res("update", "deployments", subresource="status", group="apps"), "Metadata"),  # other group
    (ALICE, res("update", "pods", subresource="status"), "RequestResponse"),
    (ALICE, res("get", "pods"), "Metadata"),  # "pods/log" is not "pods"
    (ALICE, res("create", "pods", namespace="team"), "Request"),
    (ALICE, RequestInfo("get", resource_request=False, path="/healthz/etcd"), "None"),
    (ALICE, RequestInfo("get", resource_request=False, path="/version"), "None"),
    (ALICE, RequestInfo("get", resource_request=False, path="/metrics"), "Metadata"),
])
def test_the_first_matching_rule_decides(tmp_path: Path, user: UserInfo, info: RequestInfo, level: str) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    assert load_policy(tmp_path / "p.yaml").decide(user, info)[0] == level


def test_omitted_stages_add_up(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    policy = load_policy(tmp_path / "p.yaml")
    assert policy.decide(ALICE, RequestInfo("get", resource_request=False, path="/metrics"))[1] == (
        "RequestReceived", "ResponseStarted")


@pytest.mark.parametrize(("text", "message"), [
    ("kind: Policy\napiVersion: v1\n", "want apiVersion audit.k8s.io/v1, kind Policy"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Loud}]\n", "rules[0].level: want one of"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, omitStages: [Never]}]\n",
     "rules[0].omitStages"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, users: alice}]\n",
     "rules[0].users: want a list of strings"),
])
def test_bad_policies_say_which_field(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(AuditConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_policy(tmp_path / "p.yaml")


def test_the_log_rotates_into_upstream_named_copies(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "audit.log", max_size=1, max_backups=2)
    event = {"kind": "Event", "pad": "x" * 300_000}
    for _ in range(8):
        writer.write(event)
    writer.close()
    copies = sorted(p.name for p in tmp_path.glob("audit-*.log"))
    assert len(copies) == 2, copies
    assert all(len(name) == len("audit-2026-12-07T10-00-00.000.log") for name in copies)
    assert (tmp_path / "audit.log").stat().st_size <= 1024 * 1024
    assert oct((tmp_path / "audit.log").stat().st_mode & 0o777) == "0o600"
