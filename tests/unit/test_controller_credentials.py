"""--use-service-account-credentials: each controller's client is its own service account's token, not the
controller-manager's certificate, and the account is made when missing."""

from __future__ import annotations

from typing import Any

import pytest

from harness.api import errors
from harness.client import kubeconfig
from harness.controllers.credentials import ControllerCredentials
from harness.controllers.manager import CONTROLLERS, SERVICE_ACCOUNTS


class Root:
    def __init__(self) -> None:
        self.config = kubeconfig.KubeConfig(servers=["https://10.0.0.1:6443"], ca_file="/pki/ca.crt",
                                            cert_file="/pki/cm.crt", key_file="/pki/cm.key")
        self.timeout = 30.0
        self.user_agent = "harness-controller-manager"
        self.accounts: set[str] = {"deployment-controller"}
        self.calls: list[tuple[str, str]] = []

    async def get(self, kind: Any, name: str, namespace: str = "") -> dict[str, Any]:
        self.calls.append(("get", name))
        if name not in self.accounts:
            raise errors.NotFound(f'serviceaccounts "{name}" not found')
        return {"metadata": {"name": name}}

    async def create(self, kind: Any, obj: dict[str, Any], namespace: str = "") -> dict[str, Any]:
        self.calls.append(("create", obj["metadata"]["name"]))
        self.accounts.add(obj["metadata"]["name"])
        return obj

    async def request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path))
        return {"status": {"token": f"token-for-{path.split('/')[-2]}",
                           "expirationTimestamp": "2099-01-01T00:00:00Z"}}


async def test_a_controller_gets_a_token_client_and_no_certificate() -> None:
    root = Root()
    credentials = ControllerCredentials(root)  # type: ignore[arg-type]
    try:
        client = await credentials.client_for("replicaset-controller")
        assert client.config.token == "token-for-replicaset-controller"
        assert (client.config.cert_file, client.config.key_file) == ("", "")
        assert client.config.ca_file == "/pki/ca.crt"
        assert client.user_agent == "harness-controller-manager/replicaset-controller"
        assert ("create", "replicaset-controller") in root.calls
        assert ("POST", "/api/v1/namespaces/kube-system/serviceaccounts/replicaset-controller/token") in root.calls
        assert await credentials.client_for("replicaset-controller") is client, "one client per account"
        await credentials.client_for("deployment-controller")
        assert ("create", "deployment-controller") not in root.calls, "an existing account is not made again"
    finally:
        await credentials.close()


def test_every_controller_names_its_account() -> None:
    assert set(SERVICE_ACCOUNTS) == set(CONTROLLERS)


def test_controllers_are_chosen_as_upstream_s_flag_chooses_them() -> None:
    from harness.controllers.manager import DISABLED_BY_DEFAULT, select

    everything = select("*")
    assert "tokencleaner" not in everything and "csrsigning" in everything
    assert select("*,tokencleaner") == [*everything, "tokencleaner"]
    assert "csrcleaner" not in select("*,-csrcleaner")
    assert {"tokencleaner"} == DISABLED_BY_DEFAULT
    with pytest.raises(ValueError, match="unknown controller 'nope'"):
        select("nope")
