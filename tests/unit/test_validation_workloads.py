"""Validation of deployments, replica sets, daemon sets.

Every cause on upstream's field path, with its reason and wording."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.validation_support import (
    created,
    deployment,
    find,
    only,
    pod,
    status_updated,
    stored,
    tspec,
    updated,
)

# -- workloads ------------------------------------------------------------------------------


def test_selector_is_required() -> None:
    dep = deployment()
    del dep["spec"]["selector"]
    only(created("Deployment", dep), "spec.selector", "FieldValueRequired", "Required value")


def test_empty_selector_is_invalid() -> None:
    dep = deployment()
    dep["spec"]["selector"] = {}
    only(created("Deployment", dep), "spec.selector", "FieldValueInvalid",
         "Invalid value: {}: empty selector is invalid for deployment")


def test_selector_must_match_template_labels() -> None:
    dep = deployment()
    dep["spec"]["selector"] = {"matchLabels": {"app": "api"}}
    cause = only(created("Deployment", dep), "spec.template.metadata.labels", "FieldValueInvalid")
    assert cause.message == ('Invalid value: {"app":"web","tier":"frontend"}: '
                             "`selector` does not match template `labels`")


@pytest.mark.parametrize(("expression", "matches"), [
    ({"key": "tier", "operator": "In", "values": ["frontend", "backend"]}, True),
    ({"key": "tier", "operator": "NotIn", "values": ["frontend"]}, False),
    ({"key": "canary", "operator": "DoesNotExist"}, True),
    ({"key": "canary", "operator": "Exists"}, False),
])
def test_match_expressions_select_too(expression: dict[str, Any], matches: bool) -> None:
    dep = deployment()
    dep["spec"]["selector"]["matchExpressions"] = [expression]
    causes = created("Deployment", dep)
    assert (causes == []) is matches, causes


@pytest.mark.parametrize(("expression", "field", "reason", "message"), [
    ({"key": "tier", "operator": "In"}, "values", "FieldValueRequired",
     "must be specified when `operator` is 'In' or 'NotIn'"),
    ({"key": "tier", "operator": "Exists", "values": ["x"]}, "values", "FieldValueForbidden",
     "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
    ({"key": "tier", "operator": "Near", "values": ["x"]}, "operator", "FieldValueInvalid",
     'Invalid value: "Near": not a valid selector operator'),
    ({"key": "bad key", "operator": "Exists"}, "key", "FieldValueInvalid", "name part must consist of"),
    ({"key": "tier", "operator": "In", "values": ["-x"]}, "values[0]", "FieldValueInvalid", "a valid label must be"),
])
def test_bad_match_expressions(expression: dict[str, Any], field: str, reason: str, message: str) -> None:
    dep = deployment()
    dep["spec"]["selector"]["matchExpressions"] = [expression]
    find(created("Deployment", dep), f"spec.selector.matchExpressions[0].{field}", reason, message)


def test_replicas_may_not_be_negative() -> None:
    dep = deployment()
    dep["spec"]["replicas"] = -1
    only(created("Deployment", dep), "spec.replicas", "FieldValueInvalid",
         "Invalid value: -1: must be greater than or equal to 0")


def test_templates_are_validated_like_pods_on_their_own_path() -> None:
    dep = deployment()
    tspec(dep)["containers"][1]["image"] = ""
    tspec(dep)["volumes"] = [{"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}]
    dep["spec"]["template"]["metadata"]["annotations"] = {"bad key": "x"}
    causes = created("Deployment", dep)
    find(causes, "spec.template.spec.containers[1].image", "FieldValueRequired")
    find(causes, "spec.template.spec.volumes[0].hostPath", "FieldValueForbidden")
    find(causes, "spec.template.annotations", "FieldValueInvalid")
    assert len(causes) == 3


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet", "ReplicationController"])
def test_workload_templates_must_restart_always(kind: str) -> None:
    dep = deployment()
    spec = {"selector": dep["spec"]["selector"], "template": dep["spec"]["template"]}
    if kind == "ReplicationController":
        spec["selector"] = {"app": "web"}
    spec["template"]["spec"]["restartPolicy"] = "OnFailure"
    spec["template"]["spec"]["activeDeadlineSeconds"] = 10
    causes = created(kind, {"metadata": {"name": "w"}, "spec": spec})
    find(causes, "spec.template.spec.restartPolicy", "FieldValueNotSupported",
         'Unsupported value: "OnFailure": supported values: "Always"')
    find(causes, "spec.template.spec.activeDeadlineSeconds", "FieldValueForbidden", "is not Supported")
    assert len(causes) == 2


def strategy(**rolling: Any) -> dict[str, Any]:
    dep = deployment()
    dep["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": rolling}
    return dep


@pytest.mark.parametrize(("rolling", "field", "reason", "message"), [
    ({"maxSurge": 0, "maxUnavailable": 0}, "maxUnavailable", "FieldValueInvalid",
     "Invalid value: 0: may not be 0 when `maxSurge` is 0"),
    ({"maxSurge": "0%", "maxUnavailable": 0}, "maxUnavailable", "FieldValueInvalid",
     "may not be 0 when `maxSurge` is 0"),
    ({"maxSurge": "lots"}, "maxSurge", "FieldValueInvalid",
     "Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  "
     "or '93%', regex used for validation is '[0-9]+%')"),
    ({"maxUnavailable": "150%"}, "maxUnavailable", "FieldValueInvalid", "must not be greater than 100%"),
    ({"maxSurge": -1}, "maxSurge", "FieldValueInvalid", "must be greater than or equal to 0"),
    ({"maxSurge": 1.5}, "maxSurge", "FieldValueInvalid", "must be an integer or percentage (e.g '5%')"),
])
def test_rolling_update_parameters(rolling: dict[str, Any], field: str, reason: str, message: str) -> None:
    only(created("Deployment", strategy(**rolling)), f"spec.strategy.rollingUpdate.{field}", reason, message)


def test_rolling_update_parameters_that_are_fine() -> None:
    assert created("Deployment", strategy(maxSurge=0, maxUnavailable=1)) == []
    assert created("Deployment", strategy(maxSurge="100%", maxUnavailable="0%")) == []
    assert created("Deployment", strategy(maxSurge="200%")) == []


def test_recreate_carries_no_rolling_update_and_types_are_known() -> None:
    dep = deployment()
    dep["spec"]["strategy"] = {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}
    only(created("Deployment", dep), "spec.strategy.rollingUpdate", "FieldValueForbidden",
         "may not be specified when strategy `type` is 'Recreate'")
    dep["spec"]["strategy"] = {"type": "Recreate"}
    assert created("Deployment", dep) == []
    dep["spec"]["strategy"] = {"type": "BlueGreen"}
    only(created("Deployment", dep), "spec.strategy", "FieldValueNotSupported",
         'Unsupported value: {"type":"BlueGreen"}: supported values: "Recreate", "RollingUpdate"')


def test_progress_deadline_exceeds_min_ready() -> None:
    dep = deployment()
    dep["spec"].update(minReadySeconds=30, progressDeadlineSeconds=30)
    only(created("Deployment", dep), "spec.progressDeadlineSeconds", "FieldValueInvalid",
         "must be greater than minReadySeconds")
    dep["spec"].update(revisionHistoryLimit=-1, progressDeadlineSeconds=600)
    only(created("Deployment", dep), "spec.revisionHistoryLimit", "FieldValueInvalid")


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_apps_selectors_are_immutable(kind: str) -> None:
    dep = deployment()
    old = stored(kind, {"metadata": {"name": "w"}, "spec": {"selector": dep["spec"]["selector"],
                                                            "template": dep["spec"]["template"]}})

    def change(new: dict[str, Any]) -> None:
        new["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "frontend"}}
    cause = only(updated(kind, old, change), "spec.selector", "FieldValueInvalid")
    assert cause.message == 'Invalid value: {"matchLabels":{"app":"web","tier":"frontend"}}: field is immutable'
    assert updated(kind, old, lambda new: tspec(new)["containers"][0].update(image="nginx:1.28")) == []


def test_scaling_and_template_changes_are_fine() -> None:
    old = stored("Deployment", deployment())

    def change(new: dict[str, Any]) -> None:
        new["spec"]["replicas"] = 10
        new["spec"]["template"]["metadata"]["labels"]["version"] = "2"
        tspec(new)["containers"][0]["ports"][0]["containerPort"] = 8080
    assert updated("Deployment", old, change) == []


def test_deployment_status_updates() -> None:
    old = stored("Deployment", deployment())
    good = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2,
            "unavailableReplicas": 1}
    assert status_updated("Deployment", old, good) == []
    causes = status_updated("Deployment", old, {**good, "readyReplicas": 4, "availableReplicas": 5, "replicas": -1})
    find(causes, "status.replicas", "FieldValueInvalid", "must be greater than or equal to 0")
    find(causes, "status.readyReplicas", "FieldValueInvalid", "cannot be greater than status.replicas")
    find(causes, "status.availableReplicas", "FieldValueInvalid", "cannot be greater than readyReplicas")


def test_replica_set_status_updates() -> None:
    old = stored("ReplicaSet", {"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
                                                                     "template": {"metadata": {"labels": {"a": "b"}},
                                                                                  "spec": pod()["spec"]}}})
    assert status_updated("ReplicaSet", old, {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 1}) == []
    only(status_updated("ReplicaSet", old, {"replicas": 1, "fullyLabeledReplicas": 2}), "status.fullyLabeledReplicas",
         "FieldValueInvalid", "Invalid value: 2: cannot be greater than status.replicas")


def daemon_set(**update_strategy: Any) -> dict[str, Any]:
    dep = deployment()
    return {"metadata": {"name": "agent"}, "spec": {"selector": dep["spec"]["selector"],
                                                    "template": dep["spec"]["template"],
                                                    "updateStrategy": update_strategy}}


def test_daemon_set_update_strategy() -> None:
    assert created("DaemonSet", daemon_set(type="OnDelete")) == []
    assert created("DaemonSet", daemon_set(type="RollingUpdate", rollingUpdate={"maxSurge": "10%",
                                                                                "maxUnavailable": 0})) == []
    only(created("DaemonSet", daemon_set(type="RollingUpdate", rollingUpdate={"maxSurge": 1, "maxUnavailable": 1})),
         "spec.updateStrategy.rollingUpdate.maxSurge", "FieldValueInvalid",
         "may not be set when maxUnavailable is non-zero")
    only(created("DaemonSet", daemon_set(type="RollingUpdate", rollingUpdate={"maxSurge": 0, "maxUnavailable": 0})),
         "spec.updateStrategy.rollingUpdate.maxUnavailable", "FieldValueRequired", "cannot be 0 when maxSurge is 0")
    only(created("DaemonSet", daemon_set(type="Surge")), "spec.updateStrategy", "FieldValueNotSupported",
         'supported values: "RollingUpdate", "OnDelete"')


def test_daemon_set_selector() -> None:
    ds = daemon_set()
    ds["spec"]["selector"] = {}
    only(created("DaemonSet", ds), "spec.selector", "FieldValueInvalid", "empty selector is invalid for daemonset")
    del ds["spec"]["selector"]
    only(created("DaemonSet", ds), "spec.selector", "FieldValueRequired")
    old = stored("DaemonSet", daemon_set())
    find(status_updated("DaemonSet", old, {"numberReady": -1}), "status.numberReady", "FieldValueInvalid")


def test_replication_controller_selector() -> None:
    tmpl = {"metadata": {"labels": {"app": "web"}}, "spec": pod()["spec"]}
    only(created("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"selector": {"app": "api"},
                                                                                "template": tmpl}}),
         "spec.template.metadata.labels", "FieldValueInvalid", "`selector` does not match template `labels`")
    only(created("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"selector": {"app": "web"}}}),
         "spec.template", "FieldValueRequired")
    only(created("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"template": {"spec": pod()["spec"]}}}),
         "spec.selector", "FieldValueRequired")
    old = stored("ReplicationController", {"metadata": {"name": "rc"}, "spec": {"template": tmpl}})

    def change(new: dict[str, Any]) -> None:  # core/v1 selectors may change
        new["spec"]["selector"] = {}
        new["spec"]["template"]["metadata"]["labels"] = {"app": "api"}
    assert updated("ReplicationController", old, change) == []
