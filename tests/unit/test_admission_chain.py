"""The admission chain as upstream builds it: defaults plus --enable-admission-plugins less
--disable-admission-plugins, always in upstream's order; mutating plugins before validation, validating ones after;
bad names and bad configuration refused at start with the flag's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.api import errors
from harness.apiserver import admission
from harness.apiserver.admission import AdmissionConfigError, Attributes, Chain, Phases, PluginContext
from harness.auth.user import UserInfo


def test_the_defaults_with_additions_and_removals_in_upstream_order() -> None:
    assert admission.enabled("", "") == admission.DEFAULT_PLUGINS
    chosen = admission.enabled("NodeRestriction,ServiceAccount", "LimitRanger")
    assert chosen == ("NamespaceLifecycle", "ServiceAccount", "NodeRestriction", "PodSecurity",
                      "DefaultTolerationSeconds", "CertificateApproval", "CertificateSigning",
                      "CertificateSubjectRestriction", "ResourceQuota")


@pytest.mark.parametrize(("enable", "disable", "message"), [
    ("Bogus", "", 'enable-admission-plugins plugin "Bogus" is unknown'),
    ("", "Nope", 'disable-admission-plugins plugin "Nope" is unknown'),
    ("ServiceAccount", "ServiceAccount", "ServiceAccount in enable-admission-plugins and disable-admission-plugins "
                                         "overlapped"),
])
def test_bad_plugin_flags_are_refused(enable: str, disable: str, message: str) -> None:
    with pytest.raises(AdmissionConfigError, match=message):
        admission.enabled(enable, disable)


async def _none(_name: str) -> dict[str, Any] | None:
    return None


def test_plugins_run_in_upstream_order_whatever_the_order_given() -> None:
    chain = Chain.build(("ResourceQuota", "DefaultTolerationSeconds", "NamespaceLifecycle", "PodSecurity"),
                        PluginContext(namespace_lookup=_none))
    assert [p.name for p in chain.plugins] == ["NamespaceLifecycle", "PodSecurity", "DefaultTolerationSeconds",
                                               "ResourceQuota"]


async def test_every_mutation_comes_before_any_validation() -> None:
    seen: list[str] = []

    class Recording(Phases):
        def __init__(self, name: str) -> None:
            self.name = name

        async def admit(self, attrs: Attributes) -> None:
            seen.append(f"admit {self.name}")

        async def validate(self, attrs: Attributes) -> None:
            seen.append(f"validate {self.name}")
            if self.name == "b":
                raise errors.Forbidden("no")

    chain = Chain(authorizer=admission.AlwaysAllow(), plugins=[Recording("a"), Recording("b")])
    attrs = Attributes("CREATE", "Pod", "pods", "", "default", "p", {}, None, UserInfo("u"))
    await chain.admit(attrs)
    with pytest.raises(errors.Forbidden):
        await chain.validate(attrs)
    assert seen == ["admit a", "admit b", "validate a", "validate b"]


def test_a_configuration_file_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "psa.yaml").write_text("apiVersion: pod-security.admission.config.k8s.io/v1\n"
                                       "kind: PodSecurityConfiguration\ndefaults: {enforce: baseline}\n")
    (tmp_path / "admission.yaml").write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\n"
                                             "plugins:\n- name: PodSecurity\n  path: psa.yaml\n")
    config = admission.load_configuration(str(tmp_path / "admission.yaml"))
    assert config["PodSecurity"]["defaults"] == {"enforce": "baseline"}
    admission.check_configuration(admission.DEFAULT_PLUGINS, config)
    config["PodSecurity"]["defaults"] = {"enforce": "superstrict"}
    with pytest.raises(AdmissionConfigError, match=r'defaults\.enforce: Invalid value: "superstrict"'):
        admission.check_configuration(admission.DEFAULT_PLUGINS, config)
    (tmp_path / "other.yaml").write_text("kind: Something\n")
    with pytest.raises(AdmissionConfigError, match="not an AdmissionConfiguration"):
        admission.load_configuration(str(tmp_path / "other.yaml"))
