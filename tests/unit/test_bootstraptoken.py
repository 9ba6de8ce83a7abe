"""Bootstrap tokens as upstream checks them: format, the kube-system Secret's secret, expiry, usage, deletion and
extra groups; kubeadm's Secret layout."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from harness.auth import bootstraptoken as bt
from harness.auth.user import UserInfo

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
TOKEN = "abcdef.0123456789abcdef"


def stored(**changes: Any) -> dict[str, Any]:
    """The Secret as the apiserver stores it (stringData folded into base64 data)."""
    secret = bt.secret_for(TOKEN, expiration=NOW + dt.timedelta(hours=1),
                           extra_groups=("system:bootstrappers:kubeadm:default-node-token",))
    data = {**secret.pop("stringData"), **changes}
    secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items() if v is not None}
    return secret


def lookup_of(secret: dict[str, Any] | None) -> bt.SecretLookup:
    return lambda name: secret if secret is not None and name == secret["metadata"]["name"] else None


def test_a_good_token_is_its_bootstrap_user() -> None:
    user, why = bt.authenticate(TOKEN, lookup_of(stored()), NOW)
    assert (user, why) == (UserInfo("system:bootstrap:abcdef", ("system:bootstrappers",
                                                                "system:bootstrappers:kubeadm:default-node-token")), "")


@pytest.mark.parametrize(("token", "secret", "why"), [
    ("not-a-token", stored(), ""),
    ("abcdef.0123456789abcdeX", stored(), ""),
    (TOKEN, None, "no secret of name bootstrap-token-abcdef to match bootstrap bearer token"),
    ("abcdef.ffffffffffffffff", stored(), "bootstrap token abcdef does not match its secret"),
    (TOKEN, stored(expiration="2029-12-31T00:00:00Z"), "bootstrap token abcdef has expired"),
    (TOKEN, stored(expiration="soon"), "bootstrap token abcdef has expired"),
    (TOKEN, stored(**{"usage-bootstrap-authentication": "false"}),
     "bootstrap token abcdef is not usable for authentication"),
    (TOKEN, stored(**{"auth-extra-groups": "system:masters"}),
     "bootstrap token abcdef has invalid auth-extra-groups ['system:masters']"),
    (TOKEN, {**stored(), "type": "Opaque"},
     "secret bootstrap-token-abcdef is not of type bootstrap.kubernetes.io/token"),
    (TOKEN, {**stored(), "metadata": {**stored()["metadata"], "deletionTimestamp": "2029-01-01T00:00:00Z"}},
     "secret bootstrap-token-abcdef is being deleted"),
])
def test_bad_tokens_are_refused_saying_why(token: str, secret: dict[str, Any] | None, why: str) -> None:
    assert bt.authenticate(token, lookup_of(secret), NOW) == (None, why)


def test_new_tokens_are_kubeadm_shaped_and_their_secret_names_them() -> None:
    token = bt.new_token()
    assert bt.TOKEN.match(token)
    secret = bt.secret_for(token)
    assert secret["metadata"] == {"name": f"bootstrap-token-{token[:6]}", "namespace": "kube-system"}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["stringData"]["token-secret"] == token[7:]
    with pytest.raises(ValueError):
        bt.secret_for("short.token")
