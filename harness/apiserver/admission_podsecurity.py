"""The PodSecurity admission plugin: the Pod Security Standards, per namespace, as upstream's pod-security-admission.

A namespace's labels (`pod-security.kubernetes.io/enforce|audit|warn` and `-version`, over the defaults of the
PodSecurityConfiguration) name a level and version per mode. A pod that breaks the enforce level is refused
(403); one that breaks warn gets a warning, audit an audit annotation (`pod-security.kubernetes.io/...`).
Workloads with pod templates are warned and audited, never refused: their pods are held to enforce when they
are made. Namespace writes with labels that do not parse are refused, and raising a namespace's enforce level
warns about the pods already there that would break it. Exempt users, namespaces and runtime classes pass
unchecked. The checks themselves are harness.api.podsecurity's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.api import errors
from harness.api.errors import Cause
from harness.api.podsecurity import (
    PRIVILEGED,
    LevelVersion,
    Policy,
    defaults_from_configuration,
    evaluate,
    forbidden_detail,
    forbidden_reasons,
    policy_from_labels,
)
from harness.api.podsecurity.levels import AUDIT_VIOLATIONS, ENFORCE_POLICY, EXEMPT, MODES, PREFIX, compare_levels
from harness.api.podsecurity.levels import level_label as mode_label
from harness.api.podsecurity.levels import version_label as mode_version_label
from harness.api.validation import formats
from harness.apiserver import audit, discovery, request_warnings
from harness.apiserver.admission import AdmissionConfigError, Attributes, NamespaceLookup, Objects, Phases

if TYPE_CHECKING:
    from harness.apiserver.metrics import Metrics

API_VERSIONS = tuple(f"pod-security.admission.config.k8s.io/{v}" for v in ("v1", "v1beta1", "v1alpha1"))

#: Where each workload kind keeps its pod template (upstream's DefaultPodSpecExtractor).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "replicationcontrollers": ("spec", "template"),
    "podtemplates": ("template",),
    "replicasets": ("spec", "template"),
    "deployments": ("spec", "template"),
    "statefulsets": ("spec", "template"),
    "daemonsets": ("spec", "template"),
    "jobs": ("spec", "template"),
    "cronjobs": ("spec", "jobTemplate", "spec", "template"),
}

#: Pod subresources that cannot change what the checks read; any other is checked, to fail safe.
IGNORED_POD_SUBRESOURCES = frozenset({"exec", "attach", "binding", "eviction", "log", "portforward", "proxy",
                                      "status"})

#: How much of a namespace is checked when its enforce level is raised (upstream's bounds).
MAX_PODS_TO_CHECK = 3000
POD_CHECK_SECONDS = 1.0
LIST_FAILED = "failed to list pods while checking new PodSecurity enforce level"


@dataclass(frozen=True)
class Configuration:
    """A PodSecurityConfiguration: the policy of unlabelled namespaces, and who and what is exempt."""

    defaults: Policy = field(default_factory=Policy)
    usernames: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()
    runtime_classes: frozenset[str] = frozenset()


def load_configuration(doc: Mapping[str, Any] | None) -> Configuration:
    """The plugin's section of --admission-control-config-file; None is the default (everything privileged)."""
    if doc is None:
        return Configuration()
    if doc.get("kind") != "PodSecurityConfiguration" or doc.get("apiVersion") not in API_VERSIONS:
        raise AdmissionConfigError("PodSecurity: expected a PodSecurityConfiguration "
                                   f"({API_VERSIONS[0]}), got {doc.get('apiVersion')}/{doc.get('kind')}")
    defaults_doc = doc.get("defaults")
    defaults, problems = defaults_from_configuration(defaults_doc if isinstance(defaults_doc, dict) else None)
    exemptions = doc.get("exemptions")
    exemptions = exemptions if isinstance(exemptions, dict) else {}
    lists: dict[str, frozenset[str]] = {}
    for key, check in (("namespaces", lambda n: formats.name_is_dns_label(n, False)),
                       ("runtimeClasses", lambda n: formats.name_is_dns_subdomain(n, False)),
                       ("usernames", lambda n: [] if n else ["username must not be empty"])):
        seen: set[str] = set()
        for i, value in enumerate(exemptions.get(key) or []):
            value = str(value)
            wrong = check(value)
            if wrong:
                problems.append(f'exemptions.{key}[{i}]: Invalid value: "{value}": {", ".join(wrong)}')
            elif value in seen:
                problems.append(f'exemptions.{key}[{i}]: Duplicate value: "{value}"')
            seen.add(value)
        lists[key] = frozenset(seen)
    if problems:
        raise AdmissionConfigError(f"PodSecurity invalid: {_aggregate(problems)}")
    return Configuration(defaults, lists["usernames"], lists["namespaces"], lists["runtimeClasses"])


def _aggregate(messages: list[str]) -> str:
    """As apimachinery's aggregate error prints a list."""
    return messages[0] if len(messages) == 1 else f"[{', '.join(messages)}]"


def _causes_text(causes: list[Cause]) -> str:
    return _aggregate([f"{c.field}: {c.message}" for c in causes])


def _labels(obj: Any) -> dict[str, Any]:
    labels = (obj.get("metadata") or {}).get("labels") if isinstance(obj, dict) else None
    return labels if isinstance(labels, dict) else {}


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def is_significant_pod_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether an update may change what the checks read. Pod specs are immutable but for container images
    (and ephemeral containers added), so only those are compared, as upstream."""
    def containers(pod: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        value = (pod.get("spec") or {}).get(key)
        return [c if isinstance(c, dict) else {} for c in value] if isinstance(value, list) else []

    for key in ("containers", "initContainers"):
        now, before = containers(new, key), containers(old, key)
        if len(now) != len(before) or any(a.get("image") != b.get("image") for a, b in zip(now, before, strict=True)):
            return True
    previous = {c.get("name"): c for c in containers(old, "ephemeralContainers")}
    return any(c.get("name") not in previous or c.get("image") != previous[c.get("name")].get("image")
               for c in containers(new, "ephemeralContainers"))


class PodSecurity(Phases):
    name = "PodSecurity"

    def __init__(self, namespace_lookup: NamespaceLookup, objects: Objects | None,
                 configuration: Mapping[str, Any] | None, *, metrics: Metrics | None = None) -> None:
        self.namespace_lookup = namespace_lookup
        self.objects = objects
        self.config = load_configuration(configuration)
        self.metrics = metrics

    async def validate(self, attrs: Attributes) -> None:
        if attrs.operation not in ("CREATE", "UPDATE"):
            return
        if attrs.resource == "namespaces":
            await self._namespace(attrs)
        elif attrs.resource == "pods":
            await self._pod(attrs)
        elif attrs.resource in TEMPLATES:
            await self._workload(attrs)

    # -- namespaces ----------------------------------------------------------------------------------------------

    async def _namespace(self, attrs: Attributes) -> None:
        if attrs.subresource:
            return
        labels = _labels(attrs.obj)
        new, new_causes = policy_from_labels(labels, self.config.defaults)
        if attrs.operation == "CREATE":
            if new_causes:
                raise errors.invalid("Namespace", attrs.name, new_causes)
            self._warn_exempt_namespace(attrs.name, new, labels)
            return
        old, old_causes = policy_from_labels(_labels(attrs.old), self.config.defaults)
        if new_causes and (not old_causes or new_causes != old_causes):
            raise errors.invalid("Namespace", attrs.name, new_causes)
        # Only a stricter (or re-versioned) enforce level is worth checking the namespace's pods against.
        if new.enforce == old.enforce or new.enforce.level == PRIVILEGED or (
                new.enforce.version == old.enforce.version
                and compare_levels(new.enforce.level, old.enforce.level) < 1):
            return
        if attrs.name in self.config.namespaces:
            self._warn_exempt_namespace(attrs.name, new, labels)
            return
        for warning in await self.check_existing_pods(attrs.name, new.enforce):
            request_warnings.add(warning)

    def _warn_exempt_namespace(self, namespace: str, policy: Policy, labels: Mapping[str, Any]) -> None:
        if namespace not in self.config.namespaces or policy.fully_privileged \
                or policy.equivalent(self.config.defaults):
            return
        parts = [f"{mode}={policy.mode(mode)}" for mode in MODES if policy.mode(mode).level != PRIVILEGED
                 and (mode_label(mode) in labels or mode_version_label(mode) in labels)]
        request_warnings.add(f'namespace "{namespace}" is exempt from Pod Security, and the policy '
                             f"({', '.join(parts)}) will be ignored")

    async def check_existing_pods(self, namespace: str, enforce: LevelVersion) -> list[str]:
        """Warnings for the pods of `namespace` that break `enforce`: one line per distinct set of reasons,
        naming the first pod (by name) and how many others share them. One pod per controller is checked
        first; at most MAX_PODS_TO_CHECK pods and POD_CHECK_SECONDS are spent, as upstream."""
        if self.objects is None:
            return [LIST_FAILED]
        try:
            pods = await self.objects.list("pods", namespace)
        except errors.ApiError:
            return [LIST_FAILED]
        ordered = self._prioritize(pods)
        total, deadline = len(ordered), time.monotonic() + POD_CHECK_SECONDS
        checked = min(total, MAX_PODS_TO_CHECK)
        first: dict[str, str] = {}  # reasons -> the lexically first pod with them
        counts: dict[str, int] = {}
        for i, pod in enumerate(ordered[:checked]):
            violations = evaluate(enforce, pod.get("metadata"), pod.get("spec"))
            if violations:
                reasons = forbidden_reasons(violations)
                pod_name = str((pod.get("metadata") or {}).get("name") or "")
                first[reasons] = min(first.get(reasons, pod_name), pod_name)
                counts[reasons] = counts.get(reasons, 0) + 1
            if time.monotonic() > deadline:
                checked = i + 1
                break
        warnings = []
        if checked < total:
            warnings.append(f"new PodSecurity enforce level only checked against the first {checked} of {total} "
                            "existing pods")
        if counts:
            warnings.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level '
                            f'"{enforce}"')
        return warnings + sorted(_decorate(first[r], counts[r], r) for r in counts)

    def _prioritize(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pods not exempt by runtime class; the first of each controller's before the rest of its pods."""
        first, rest, seen = [], [], set()
        for pod in pods:
            if self._exempt_runtime_class(pod.get("spec")):
                continue
            owner = next((ref.get("uid") for ref in (pod.get("metadata") or {}).get("ownerReferences") or []
                          if isinstance(ref, dict) and ref.get("controller") is True), None)
            if owner is None or owner not in seen:
                first.append(pod)
                if owner is not None:
                    seen.add(owner)
            else:
                rest.append(pod)
        return first + rest

    # -- pods and workloads --------------------------------------------------------------------------------------

    async def _pod(self, attrs: Attributes) -> None:
        if attrs.subresource in IGNORED_POD_SUBRESOURCES or self._exempt(attrs):
            return
        namespace = await self.namespace_lookup(attrs.namespace)
        if namespace is None:
            self._error(attrs, fatal=True)
            message = f'failed to lookup namespace "{attrs.namespace}"'
            audit.add_annotations({PREFIX + "error": message})
            raise errors.InternalError(f"Internal error occurred: {message}")
        policy, causes = policy_from_labels(_labels(namespace), self.config.defaults)
        if not causes and policy.fully_privileged:
            self._record("allow", policy.enforce, "enforce", attrs)
            audit.add_annotations({PREFIX + ENFORCE_POLICY: str(LevelVersion())})
            return
        pod = attrs.obj
        if not isinstance(pod, dict):
            self._error(attrs, fatal=True)
            raise errors.BadRequest("failed to decode pod")
        if attrs.operation == "UPDATE" and isinstance(attrs.old, dict) \
                and not is_significant_pod_update(pod, attrs.old):
            return
        self._evaluate(attrs, policy, causes, pod.get("metadata"), pod.get("spec"), enforce=True)

    async def _workload(self, attrs: Attributes) -> None:
        if attrs.subresource or self._exempt(attrs):
            return
        namespace = await self.namespace_lookup(attrs.namespace)
        if namespace is None:
            self._error(attrs, fatal=True)
            audit.add_annotations({PREFIX + "error": f'failed to lookup namespace "{attrs.namespace}"'})
            return
        policy, causes = policy_from_labels(_labels(namespace), self.config.defaults)
        if not causes and policy.warn.level == PRIVILEGED and policy.audit.level == PRIVILEGED:
            return
        template = _dig(attrs.obj, TEMPLATES[attrs.resource])
        if not isinstance(template, dict):
            return  # no pod template (a ReplicationController may omit it): nothing to check
        self._evaluate(attrs, policy, causes, template.get("metadata"), template.get("spec"), enforce=False)

    def _evaluate(self, attrs: Attributes, policy: Policy, causes: list[Cause], metadata: Any, spec: Any, *,
                  enforce: bool) -> None:
        """Enforce (pods only), then audit, then warn (unless refused), each level evaluated once."""
        if self._exempt_runtime_class(spec):
            self._exemption(attrs, "runtimeClass")
            return
        annotations: dict[str, str] = {}
        if causes:
            annotations["error"] = f"Failed to parse policy: {_causes_text(causes)}"
            self._error(attrs, fatal=False)
        results: dict[LevelVersion, list[Any]] = {}

        def result(lv: LevelVersion) -> list[Any]:
            if lv not in results:
                results[lv] = evaluate(lv, metadata, spec)
            return results[lv]

        refusal: errors.Forbidden | None = None
        if enforce:
            annotations[ENFORCE_POLICY] = str(policy.enforce)
            violations = result(policy.enforce)
            self._record("deny" if violations else "allow", policy.enforce, "enforce", attrs)
            if violations:
                what = f'pods "{attrs.name}"' if attrs.name else "pods"
                refusal = errors.Forbidden(f'{what} is forbidden: violates PodSecurity "{policy.enforce}": '
                                           f"{forbidden_detail(violations)}", kind="pods", name=attrs.name)
        violations = result(policy.audit)
        if violations:
            annotations[AUDIT_VIOLATIONS] = f'would violate PodSecurity "{policy.audit}": ' \
                                            f"{forbidden_detail(violations)}"
            self._record("deny", policy.audit, "audit", attrs)
        if refusal is None:
            violations = result(policy.warn)
            if violations:
                request_warnings.add(f'would violate PodSecurity "{policy.warn}": {forbidden_detail(violations)}')
                self._record("deny", policy.warn, "warn", attrs)
        audit.add_annotations({PREFIX + k: v for k, v in annotations.items()})
        if refusal is not None:
            raise refusal

    # -- exemptions and metrics ----------------------------------------------------------------------------------

    def _exempt(self, attrs: Attributes) -> bool:
        if attrs.namespace and attrs.namespace in self.config.namespaces:
            self._exemption(attrs, "namespace")
            return True
        if attrs.user.name and attrs.user.name in self.config.usernames:
            self._exemption(attrs, "user")
            return True
        return False

    def _exempt_runtime_class(self, spec: Any) -> bool:
        runtime_class = spec.get("runtimeClassName") if isinstance(spec, dict) else None
        return bool(runtime_class) and runtime_class in self.config.runtime_classes

    def _exemption(self, attrs: Attributes, reason: str) -> None:
        audit.add_annotations({PREFIX + EXEMPT: reason})
        if self.metrics is not None:
            self.metrics.pod_security_exemptions.labels(*_request_labels(attrs)).inc()

    def _record(self, decision: str, lv: LevelVersion, mode: str, attrs: Attributes) -> None:
        if self.metrics is not None:
            self.metrics.pod_security_evaluations.labels(decision, lv.level, _version_label(lv), mode,
                                                         *_request_labels(attrs)).inc()

    def _error(self, attrs: Attributes, *, fatal: bool) -> None:
        if self.metrics is not None:
            self.metrics.pod_security_errors.labels("true" if fatal else "false", *_request_labels(attrs)).inc()


def _decorate(pod: str, count: int, reasons: str) -> str:
    if count == 1:
        return f"{pod}: {reasons}"
    others = "1 other pod" if count == 2 else f"{count - 1} other pods"
    return f"{pod} (and {others}): {reasons}"


def _request_labels(attrs: Attributes) -> tuple[str, str, str]:
    resource = {"pods": "pod", "namespaces": "namespace"}.get(attrs.resource, "controller")
    return attrs.operation.lower(), resource, attrs.subresource


def _version_label(lv: LevelVersion) -> str:
    """`latest` for latest (and privileged, which does not change); a version newer than this server's is
    `future`."""
    if lv.version.latest or lv.level == PRIVILEGED:
        return "latest"
    return str(lv.version) if (lv.version.minor or 0) <= int(discovery.MINOR) else "future"
