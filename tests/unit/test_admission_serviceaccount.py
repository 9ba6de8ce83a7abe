"""The ServiceAccount admission plugin: the projected token volume it adds (mount_token) and when it adds it."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from harness.api import errors
from harness.apiserver.admission import Attributes
from harness.apiserver.admission_serviceaccount import ServiceAccount, mount_token
from harness.auth.user import UserInfo

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
EXPECTED_SOURCES = [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
]
VOLUME_NAME = re.compile(r"kube-api-access-[a-z0-9]{5}")


def container(name: str, *mounts: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "busybox"}
    if mounts:
        c["volumeMounts"] = list(mounts)
    return c


def token_volumes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in spec.get("volumes") or [] if v["name"].startswith("kube-api-access-")]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(key) or []]


# -- mount_token ---------------------------------------------------------------------------------------------------

def test_mount_token_adds_one_projected_volume_mounted_in_every_container() -> None:
    spec: dict[str, Any] = {
        "initContainers": [container("init")],
        "containers": [container("a"), container("b", {"name": "data", "mountPath": "/data"})],
        "ephemeralContainers": [container("debug")],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    mount_token(spec)
    (volume,) = token_volumes(spec)
    assert VOLUME_NAME.fullmatch(volume["name"])
    assert volume == {"name": volume["name"],
                      "projected": {"defaultMode": 420, "sources": EXPECTED_SOURCES}}
    assert spec["volumes"][0] == {"name": "data", "emptyDir": {}}
    assert len(spec["volumes"]) == 2
    mount = {"name": volume["name"], "readOnly": True, "mountPath": MOUNT_PATH}
    for c in all_containers(spec):
        assert c["volumeMounts"][-1] == mount, c["name"]
        assert sum(m["mountPath"] == MOUNT_PATH for m in c["volumeMounts"]) == 1
    # Mounts that were there are kept, in order.
    assert spec["containers"][1]["volumeMounts"][0] == {"name": "data", "mountPath": "/data"}


def test_mount_token_leaves_a_container_that_mounts_the_path_itself() -> None:
    own = {"name": "my-token", "mountPath": MOUNT_PATH}
    spec: dict[str, Any] = {"containers": [container("a", own), container("b")]}
    mount_token(spec)
    (volume,) = token_volumes(spec)
    assert spec["containers"][0]["volumeMounts"] == [own]
    assert spec["containers"][1]["volumeMounts"] == [{"name": volume["name"], "readOnly": True,
                                                     "mountPath": MOUNT_PATH}]


def test_mount_token_adds_no_volume_when_no_container_needs_it() -> None:
    own = {"name": "my-token", "mountPath": MOUNT_PATH}
    spec: dict[str, Any] = {"containers": [container("a", own)], "volumes": [{"name": "my-token", "secret": {}}]}
    before = copy.deepcopy(spec)
    mount_token(spec)
    assert spec == before


def test_mount_token_on_a_pod_without_containers_adds_nothing() -> None:
    spec: dict[str, Any] = {}
    mount_token(spec)
    assert token_volumes(spec) == []


def test_mount_token_names_are_random() -> None:
    names = set()
    for _ in range(20):
        spec: dict[str, Any] = {"containers": [container("a")]}
        mount_token(spec)
        names.add(token_volumes(spec)[0]["name"])
    assert len(names) > 1


# -- the plugin ----------------------------------------------------------------------------------------------------

class Accounts:
    """An AccountLookup over a dict; `missing_first` answers None that many times before the account shows up."""

    def __init__(self, *accounts: dict[str, Any], missing_first: int = 0) -> None:
        self.accounts = {(a["metadata"]["namespace"], a["metadata"]["name"]): a for a in accounts}
        self.missing_first = missing_first
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append((namespace, name))
        if len(self.calls) <= self.missing_first:
            return None
        return self.accounts.get((namespace, name))


def account(name: str = "default", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "ns"}, **fields}


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [container("a")], **spec}}


def attrs(obj: dict[str, Any] | None, *, operation: str = "CREATE", kind: str = "Pod", resource: str = "pods",
          subresource: str = "") -> Attributes:
    return Attributes(operation=operation, kind=kind, resource=resource, subresource=subresource, namespace="ns",
                      name="p", obj=obj, old=None, user=UserInfo("alice", ("system:authenticated",)))


async def test_admit_defaults_the_account_and_mounts_its_token() -> None:
    lookup = Accounts(account())
    p = pod()
    await ServiceAccount(lookup, interval=0).admit(attrs(p))
    assert p["spec"]["serviceAccountName"] == "default"
    assert lookup.calls == [("ns", "default")]
    (volume,) = token_volumes(p["spec"])
    assert volume["projected"]["sources"] == EXPECTED_SOURCES
    assert p["spec"]["containers"][0]["volumeMounts"] == [{"name": volume["name"], "readOnly": True,
                                                          "mountPath": MOUNT_PATH}]


async def test_admit_keeps_a_named_account() -> None:
    lookup = Accounts(account("builder"))
    p = pod(serviceAccountName="builder")
    await ServiceAccount(lookup, interval=0).admit(attrs(p))
    assert p["spec"]["serviceAccountName"] == "builder"
    assert lookup.calls == [("ns", "builder")]
    assert len(token_volumes(p["spec"])) == 1


async def test_admit_takes_the_deprecated_service_account_field() -> None:
    lookup = Accounts(account("builder"))
    p = pod(serviceAccount="builder")
    await ServiceAccount(lookup, interval=0).admit(attrs(p))
    assert p["spec"]["serviceAccountName"] == "builder"


async def test_admit_refuses_a_missing_account_after_one_lookup() -> None:
    lookup = Accounts(account())
    with pytest.raises(errors.Forbidden) as info:
        await ServiceAccount(lookup, interval=0).admit(attrs(pod(serviceAccountName="missing")))
    assert str(info.value) == ('pods "p" is forbidden: error looking up service account ns/missing: '
                               'serviceaccount "missing" not found')
    assert info.value.code == 403
    assert lookup.calls == [("ns", "missing")]


async def test_admit_waits_for_the_default_account() -> None:
    lookup = Accounts(account(), missing_first=2)
    p = pod()
    await ServiceAccount(lookup, interval=0).admit(attrs(p))
    assert lookup.calls == [("ns", "default")] * 3
    assert len(token_volumes(p["spec"])) == 1


async def test_admit_gives_up_on_the_default_account_after_its_retries() -> None:
    lookup = Accounts()
    with pytest.raises(errors.Forbidden, match='serviceaccount "default" not found'):
        await ServiceAccount(lookup, retries=4, interval=0).admit(attrs(pod()))
    assert len(lookup.calls) == 4


async def test_admit_does_not_retry_a_named_account() -> None:
    lookup = Accounts(account("builder"), missing_first=1)
    with pytest.raises(errors.Forbidden, match="ns/builder"):
        await ServiceAccount(lookup, interval=0).admit(attrs(pod(serviceAccountName="builder")))
    assert lookup.calls == [("ns", "builder")]


@pytest.mark.parametrize("pod_automount,account_automount,mounted", [
    (False, None, False),
    (None, False, False),
    (True, False, True),
    (False, True, False),
    (None, True, True),
    (None, None, True),
])
async def test_automount_the_pod_decides_then_the_account(pod_automount: bool | None, account_automount: bool | None,
                                                          mounted: bool) -> None:
    sa = account() if account_automount is None else account(automountServiceAccountToken=account_automount)
    p = pod() if pod_automount is None else pod(automountServiceAccountToken=pod_automount)
    await ServiceAccount(Accounts(sa), interval=0).admit(attrs(p))
    assert bool(token_volumes(p["spec"])) is mounted
    assert ("volumeMounts" in p["spec"]["containers"][0]) is mounted
    assert p["spec"]["serviceAccountName"] == "default"


async def test_a_mirror_pod_is_left_alone() -> None:
    lookup = Accounts(account())
    p = pod()
    p["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    before = copy.deepcopy(p)
    await ServiceAccount(lookup, interval=0).admit(attrs(p))
    assert p == before
    assert lookup.calls == []


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
async def test_only_pod_creation_is_admitted(operation: str) -> None:
    lookup = Accounts(account())
    p = pod()
    before = copy.deepcopy(p)
    await ServiceAccount(lookup, interval=0).admit(attrs(p, operation=operation))
    assert p == before and lookup.calls == []


async def test_other_kinds_and_subresources_are_left_alone() -> None:
    lookup = Accounts(account())
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p", "namespace": "ns"}, "data": {}}
    before = copy.deepcopy(cm)
    await ServiceAccount(lookup, interval=0).admit(attrs(cm, kind="ConfigMap", resource="configmaps"))
    assert cm == before
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"name": "n1"}}
    await ServiceAccount(lookup, interval=0).admit(attrs(binding, subresource="binding"))
    await ServiceAccount(lookup, interval=0).admit(attrs(None))
    assert lookup.calls == []


async def test_a_null_automount_on_the_account_means_unset() -> None:
    """BUG: an account stored with `"automountServiceAccountToken": null` turns the mount off.

    `account.get("automountServiceAccountToken", True)` answers None for an explicit null, which is falsy; upstream's
    shouldAutomount reads null as unset (nil *bool) and defaults to true. The pod's own null already falls through
    to the account correctly."""
    p = pod(automountServiceAccountToken=None)
    await ServiceAccount(Accounts(account(automountServiceAccountToken=None)), interval=0).admit(attrs(p))
    assert len(token_volumes(p["spec"])) == 1
