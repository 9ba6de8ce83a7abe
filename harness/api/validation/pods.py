"""Validation of pod specs: Pods themselves and the pod templates of every workload.

`validate_pod_spec` is the one checker of a PodSpec (containers, volumes, probes, resources,
policies); Pod and each template call it with their own field path. What a Pod update may
change is in `pod_updates`.
"""

from __future__ import annotations

from typing import Any

from harness.api.errors import Cause
from harness.api.validation import field_errors as f
from harness.api.validation import formats
from harness.api.validation import meta as vmeta
from harness.api.validation.resources import validate_container_resources

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
HTTP_SCHEMES = ("HTTP", "HTTPS")
MAX_INT32 = 2**31 - 1
#: Volume sources in upstream's order: the first one set counts, each later one is an error.
VOLUME_SOURCES = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret", "nfs", "iscsi",
    "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs", "quobyte", "downwardAPI", "fc",
    "flexVolume", "configMap", "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume",
    "azureDisk", "storageos", "projected", "scaleIO", "csi", "ephemeral", "image",
)
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
LIFECYCLE_HANDLERS = ("exec", "httpGet", "tcpSocket", "sleep")


# -- the pod spec ---------------------------------------------------------------------------


def validate_pod_spec(spec: dict[str, Any], path: str) -> list[Cause]:
    volumes, causes = _volumes(spec.get("volumes"), f"{path}.volumes")
    causes += _containers(spec, path, volumes)
    causes += _init_containers(spec, path, volumes)
    causes += f.one_of(f"{path}.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES)
    causes += f.one_of(f"{path}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES)
    causes += _dns_config(spec, f"{path}.dnsConfig")
    causes += vmeta.validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    if "terminationGracePeriodSeconds" not in spec or spec["terminationGracePeriodSeconds"] is None:
        causes.append(f.required(f"{path}.terminationGracePeriodSeconds"))
    causes += f.check_int(f"{path}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
    causes += _names(spec, path)
    causes += _active_deadline(spec.get("activeDeadlineSeconds"), f"{path}.activeDeadlineSeconds", low=1)
    causes += validate_tolerations(spec.get("tolerations"), f"{path}.tolerations")
    return causes


def _names(spec: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for name, check in (("serviceAccountName", formats.dns1123_subdomain), ("nodeName", formats.dns1123_subdomain),
                        ("hostname", formats.dns1123_label), ("subdomain", formats.dns1123_label),
                        ("priorityClassName", formats.dns1123_subdomain),
                        ("schedulerName", formats.dns1123_subdomain)):
        value = spec.get(name)
        if value:
            causes += f.invalid_each(f"{path}.{name}", value, check(f.as_str(value)) if isinstance(value, str)
                                     else ["must be a string"])
    return causes


def _active_deadline(value: Any, path: str, *, low: int) -> list[Cause]:
    if value is None:
        return []
    if not f.is_int(value):
        return [f.invalid(path, value, f.NOT_AN_INTEGER)]
    if not low <= value <= MAX_INT32:
        return [f.invalid(path, value, formats.inclusive_range_error(low, MAX_INT32))]
    return []


def _dns_config(spec: dict[str, Any], path: str) -> list[Cause]:
    if spec.get("dnsPolicy") != "None":
        return []
    config = spec.get("dnsConfig")
    if not isinstance(config, dict):
        return [f.required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
    if not f.as_list(config.get("nameservers")):
        return [f.required(f"{path}.nameservers",
                           "must provide at least one DNS nameserver when `dnsPolicy` is None")]
    return []


def validate_tolerations(tolerations: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, tol in enumerate(f.as_dicts(tolerations)):
        causes += _toleration(tol, f"{path}[{i}]")
    return causes


def _toleration(tol: dict[str, Any], path: str) -> list[Cause]:
    key, operator, value, effect = (tol.get(name) or "" for name in ("key", "operator", "value", "effect"))
    causes = vmeta.validate_label_name(key, f"{path}.key") if key else []
    if not key and operator != "Exists":
        causes.append(f.invalid(f"{path}.operator", operator, "operator must be Exists when `key` is empty, "
                                                              'which means "match all values and all keys"'))
    if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
        causes.append(f.invalid(f"{path}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
    if operator in ("Equal", ""):
        msgs = formats.label_value(value) if isinstance(value, str) else ["must be a string"]
        if msgs:
            causes.append(f.invalid(f"{path}.operator", value, ";".join(msgs)))
    elif operator == "Exists":
        if value:
            causes.append(f.invalid(f"{path}.operator", value, "value must be empty when `operator` is 'Exists'"))
    else:
        causes.append(f.not_supported(f"{path}.operator", operator, TOLERATION_OPERATORS))
    if effect and effect not in TAINT_EFFECTS:
        causes.append(f.not_supported(f"{path}.effect", effect, TAINT_EFFECTS))
    return causes


# -- volumes --------------------------------------------------------------------------------


def _volumes(volumes: Any, path: str) -> tuple[set[Any], list[Cause]]:
    """The names of the valid volumes, and what is wrong with the others."""
    names: set[Any] = set()
    causes: list[Cause] = []
    for i, vol in enumerate(f.as_dicts(volumes)):
        here = f"{path}[{i}]"
        name = vol.get("name")
        found = _volume_source(vol, here)
        if not name:
            found.append(f.required(f"{here}.name"))
        else:
            found += f.invalid_each(f"{here}.name", name, formats.dns1123_label(f.as_str(name)))
        if name in names:
            found.append(f.duplicate(f"{here}.name", name))
        if found:
            causes += found
        else:
            names.add(name)
    return names, causes


def _volume_source(vol: dict[str, Any], path: str) -> list[Cause]:
    sources = [s for s in VOLUME_SOURCES if vol.get(s) is not None]
    if not sources:
        return [f.required(path, "must specify a volume type")]
    causes = [f.forbidden(f"{path}.{extra}", "may not specify more than 1 volume type") for extra in sources[1:]]
    return causes + _source_fields(sources[0], f.as_dict(vol.get(sources[0])), f"{path}.{sources[0]}")


_SOURCE_REQUIRED = {"hostPath": "path", "secret": "secretName", "configMap": "name",
                    "persistentVolumeClaim": "claimName", "nfs": "server", "gitRepo": "repository"}


def _source_fields(source: str, spec: dict[str, Any], path: str) -> list[Cause]:
    needed = _SOURCE_REQUIRED.get(source)
    if needed and not spec.get(needed):
        return [f.required(f"{path}.{needed}")]
    return []


# -- containers -----------------------------------------------------------------------------


def _containers(spec: dict[str, Any], path: str, volumes: set[Any]) -> list[Cause]:
    containers = f.as_dicts(spec.get("containers"))
    if not containers:
        return [f.required(f"{path}.containers")]
    causes: list[Cause] = []
    names: set[Any] = set()
    for i, ctr in enumerate(containers):
        here = f"{path}.containers[{i}]"
        causes += _container_common(ctr, here, volumes)
        if ctr.get("name") in names:
            causes.append(f.duplicate(f"{here}.name", ctr.get("name")))
        names.add(ctr.get("name"))
        causes += _probes_and_lifecycle(ctr, here)
        if ctr.get("restartPolicy") is not None:
            causes.append(f.forbidden(f"{here}.restartPolicy", "may not be set for non-init containers"))
    return causes + _host_port_conflicts(containers, f"{path}.containers")


def _init_containers(spec: dict[str, Any], path: str, volumes: set[Any]) -> list[Cause]:
    names = {c.get("name") for c in f.as_dicts(spec.get("containers"))}
    causes: list[Cause] = []
    for i, ctr in enumerate(f.as_dicts(spec.get("initContainers"))):
        here = f"{path}.initContainers[{i}]"
        causes += _container_common(ctr, here, volumes)
        policy = ctr.get("restartPolicy")
        if policy is not None and policy != "Always":
            causes.append(f.not_supported(f"{here}.restartPolicy", policy, ("Always",)))
        if ctr.get("name") in names:
            causes.append(f.duplicate(f"{here}.name", ctr.get("name")))
        elif ctr.get("name"):
            names.add(ctr.get("name"))
        causes += _host_port_conflicts([ctr], f"{path}.initContainers")
        if policy == "Always":
            causes += _probes_and_lifecycle(ctr, here)
        else:
            causes += [f.forbidden(f"{here}.{name}", "may not be set for init containers without restartPolicy=Always")
                       for name in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe")
                       if ctr.get(name) is not None]
    return causes


def _container_common(ctr: dict[str, Any], path: str, volumes: set[Any]) -> list[Cause]:
    name = ctr.get("name")
    if not name:
        causes = [f.required(f"{path}.name")]
    else:
        causes = f.invalid_each(f"{path}.name", name, formats.dns1123_label(f.as_str(name)))
    if not ctr.get("image"):
        causes.append(f.required(f"{path}.image"))
    causes += f.one_of(f"{path}.terminationMessagePolicy", ctr.get("terminationMessagePolicy"),
                       TERMINATION_MESSAGE_POLICIES)
    causes += _container_ports(ctr.get("ports"), f"{path}.ports")
    causes += _env(ctr.get("env"), f"{path}.env")
    causes += _env_from(ctr.get("envFrom"), f"{path}.envFrom")
    causes += _volume_mounts(ctr.get("volumeMounts"), volumes, f"{path}.volumeMounts")
    causes += f.one_of(f"{path}.imagePullPolicy", ctr.get("imagePullPolicy"), PULL_POLICIES)
    return causes + validate_container_resources(ctr.get("resources"), f"{path}.resources")


def _container_ports(ports: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    names: set[Any] = set()
    for i, port in enumerate(f.as_dicts(ports)):
        here = f"{path}[{i}]"
        name = port.get("name")
        if name:
            msgs = formats.port_name(name) if isinstance(name, str) else ["must be a string"]
            if msgs:
                causes += f.invalid_each(f"{here}.name", name, msgs)
            elif name in names:
                causes.append(f.duplicate(f"{here}.name", name))
            names.add(name)
        causes += _port_number(port.get("containerPort"), f"{here}.containerPort", required=True)
        causes += _port_number(port.get("hostPort"), f"{here}.hostPort", required=False)
        causes += f.one_of(f"{here}.protocol", port.get("protocol"), PROTOCOLS)
    return causes


def _port_number(value: Any, path: str, *, required: bool) -> list[Cause]:
    if value is None or value == 0:
        return [f.required(path)] if required else []
    if not f.is_int(value):
        return [f.invalid(path, value, f.NOT_AN_INTEGER)]
    return f.invalid_each(path, value, formats.port_num(value))


def validate_port_num_or_name(value: Any, path: str) -> list[Cause]:
    """An IntOrString port: a number 1-65535 or an IANA service name."""
    if f.is_int(value):
        return f.invalid_each(path, value, formats.port_num(value))
    if isinstance(value, str):
        return f.invalid_each(path, value, formats.port_name(value))
    return [f.invalid(path, value, "must be an integer or a string")]


def _host_port_conflicts(containers: list[dict[str, Any]], path: str) -> list[Cause]:
    seen: set[str] = set()
    causes: list[Cause] = []
    for ci, ctr in enumerate(containers):
        for pi, port in enumerate(f.as_dicts(ctr.get("ports"))):
            host_port = port.get("hostPort")
            if not host_port:
                continue
            key = f"{port.get('protocol') or ''}/{port.get('hostIP') or ''}/{host_port}"
            if key in seen:
                causes.append(f.duplicate(f"{path}[{ci}].ports[{pi}].hostPort", key))
            seen.add(key)
    return causes


def _env(env: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, var in enumerate(f.as_dicts(env)):
        here = f"{path}[{i}]"
        name = var.get("name")
        if not name:
            causes.append(f.required(f"{here}.name"))
        else:
            msgs = formats.env_var_name(name) if isinstance(name, str) else ["must be a string"]
            causes += f.invalid_each(f"{here}.name", name, msgs)
        causes += _env_value_from(var, f"{here}.valueFrom")
    return causes


_VALUE_FROM = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")


def _env_value_from(var: dict[str, Any], path: str) -> list[Cause]:
    value_from = var.get("valueFrom")
    if value_from is None:
        return []
    value_from = f.as_dict(value_from)
    sources = [s for s in _VALUE_FROM if value_from.get(s) is not None]
    if not sources:
        return [f.invalid(path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or "
                                    "`secretKeyRef`")]
    if var.get("value"):
        return [f.invalid(path, "", "may not be specified when `value` is not empty")]
    if len(sources) > 1:
        return [f.invalid(path, "", "may not have more than one field specified at a time")]
    source = f.as_dict(value_from.get(sources[0]))
    here = f"{path}.{sources[0]}"
    if sources[0] in ("configMapKeyRef", "secretKeyRef"):
        return _key_selector(source, here)
    if sources[0] == "fieldRef" and not source.get("fieldPath"):
        return [f.required(f"{here}.fieldPath")]
    if sources[0] == "resourceFieldRef" and not source.get("resource"):
        return [f.required(f"{here}.resource")]
    return []


def _key_selector(selector: dict[str, Any], path: str) -> list[Cause]:
    name, key = f.as_str(selector.get("name")), selector.get("key")
    causes = f.invalid_each(f"{path}.name", name, formats.name_is_dns_subdomain(name, False))
    if not key:
        return [*causes, f.required(f"{path}.key")]
    return causes + f.invalid_each(f"{path}.key", key, formats.config_map_key(f.as_str(key)))


def _env_from(env_from: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, source in enumerate(f.as_dicts(env_from)):
        here = f"{path}[{i}]"
        prefix = source.get("prefix")
        if prefix:
            causes += f.invalid_each(f"{here}.prefix", prefix, formats.env_var_name(f.as_str(prefix)))
        refs = [r for r in ("configMapRef", "secretRef") if source.get(r) is not None]
        if not refs:
            causes.append(f.invalid(path, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif len(refs) > 1:
            causes.append(f.invalid(path, "", "may not have more than one field specified at a time"))
        for ref in refs:
            name = f.as_dict(source.get(ref)).get("name")
            if not name:
                causes.append(f.required(f"{here}.{ref}.name"))
            else:
                msgs = formats.name_is_dns_subdomain(f.as_str(name), True)
                causes += f.invalid_each(f"{here}.{ref}.name", name, msgs)
    return causes


def _volume_mounts(mounts: Any, volumes: set[Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    mount_paths: set[Any] = set()
    for i, mount in enumerate(f.as_dicts(mounts)):
        here = f"{path}[{i}]"
        name, mount_path = mount.get("name"), mount.get("mountPath")
        if not name:
            causes.append(f.required(f"{here}.name"))
        if name not in volumes:
            causes.append(f.not_found(f"{here}.name", name or ""))
        if not mount_path:
            causes.append(f.required(f"{here}.mountPath"))
        elif mount_path in mount_paths:
            causes.append(f.invalid(f"{here}.mountPath", mount_path, "must be unique"))
        mount_paths.add(mount_path)
        sub_path = mount.get("subPath")
        if sub_path:
            causes += _local_descending_path(f.as_str(sub_path), f"{path}.subPath")
    return causes


def _local_descending_path(value: str, path: str) -> list[Cause]:
    causes = []
    if value.startswith("/"):
        causes.append(f.invalid(path, value, "must be a relative path"))
    if ".." in value.split("/"):
        causes.append(f.invalid(path, value, "must not contain '..'"))
    return causes


# -- probes and lifecycle hooks -------------------------------------------------------------


def _probes_and_lifecycle(ctr: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    lifecycle = ctr.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            if lifecycle.get(hook) is not None:
                causes += _handler(f.as_dict(lifecycle[hook]), LIFECYCLE_HANDLERS, f"{path}.lifecycle.{hook}")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = ctr.get(name)
        if probe is not None:
            causes += _probe(name, f.as_dict(probe), f"{path}.{name}")
    return causes


def _probe(kind: str, probe: dict[str, Any], path: str) -> list[Cause]:
    causes = _handler(probe, PROBE_HANDLERS, path)
    for name in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        causes += f.nonnegative(f"{path}.{name}", probe.get(name))
    success = probe.get("successThreshold")
    if kind in ("livenessProbe", "startupProbe") and f.is_int(success) and success != 1:
        causes.append(f.invalid(f"{path}.successThreshold", success, "must be 1"))
    grace = probe.get("terminationGracePeriodSeconds")
    if kind == "readinessProbe" and grace is not None:
        causes.append(f.invalid(f"{path}.terminationGracePeriodSeconds", grace, "must not be set for readinessProbes"))
    elif f.is_int(grace) and grace <= 0:
        causes.append(f.invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than 0"))
    return causes


def _handler(handler: dict[str, Any], kinds: tuple[str, ...], path: str) -> list[Cause]:
    present = [k for k in kinds if handler.get(k) is not None]
    if not present:
        return [f.required(path, "must specify a handler type")]
    causes = [f.forbidden(f"{path}.{extra}", "may not specify more than 1 handler type") for extra in present[1:]]
    action, here = f.as_dict(handler.get(present[0])), f"{path}.{present[0]}"
    if present[0] == "exec" and not f.as_list(action.get("command")):
        causes.append(f.required(f"{here}.command"))
    elif present[0] == "httpGet":
        causes += _http_get(action, here)
    elif present[0] in ("tcpSocket", "grpc"):
        causes += validate_port_num_or_name(action.get("port"), f"{here}.port")
    return causes


def _http_get(action: dict[str, Any], path: str) -> list[Cause]:
    causes = [] if action.get("path") else [f.required(f"{path}.path")]
    causes += validate_port_num_or_name(action.get("port"), f"{path}.port")
    scheme = action.get("scheme")
    if scheme not in HTTP_SCHEMES:
        causes.append(f.not_supported(f"{path}.scheme", scheme or "", HTTP_SCHEMES))
    for header in f.as_dicts(action.get("httpHeaders")):
        name = f.as_str(header.get("name"))
        causes += f.invalid_each(f"{path}.httpHeaders", name, formats.http_header_name(name))
    return causes


# -- Pod and pod templates ------------------------------------------------------------------


def validate_pod(obj: dict[str, Any]) -> list[Cause]:
    spec = f.as_dict(obj.get("spec"))
    causes = validate_pod_spec(spec, "spec")
    for group in ("containers", "initContainers"):
        for i, ctr in enumerate(f.as_dicts(spec.get(group))):
            image = ctr.get("image")
            if isinstance(image, str) and image != image.strip():
                causes.append(f.invalid(f"spec.{group}[{i}].image", image, "must not have leading or trailing "
                                                                           "whitespace"))
    return causes


def validate_pod_template(template: dict[str, Any], path: str) -> list[Cause]:
    """A PodTemplateSpec: its labels and annotations, then its pod spec."""
    md = f.as_dict(template.get("metadata"))
    causes = vmeta.validate_labels(md.get("labels"), f"{path}.labels")
    causes += vmeta.validate_annotations(md.get("annotations"), f"{path}.annotations")
    causes += validate_pod_spec(f.as_dict(template.get("spec")), f"{path}.spec")
    if f.as_list(f.as_dict(template.get("spec")).get("ephemeralContainers")):
        causes.append(f.forbidden(f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod "
                                                                      "template"))
    return causes


def validate_workload_template(template: dict[str, Any], path: str, owner: str) -> list[Cause]:
    """A template of a controller that keeps pods running: restartPolicy Always, no deadline."""
    causes = validate_pod_template(template, path)
    spec = f.as_dict(template.get("spec"))
    policy = spec.get("restartPolicy")
    if policy in RESTART_POLICIES and policy != "Always":
        causes.append(f.not_supported(f"{path}.spec.restartPolicy", policy, ("Always",)))
    if spec.get("activeDeadlineSeconds") is not None:
        causes.append(f.forbidden(f"{path}.spec.activeDeadlineSeconds",
                                  f"activeDeadlineSeconds in {owner} is not Supported"))
    return causes
