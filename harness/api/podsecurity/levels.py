"""Pod Security levels, policy versions, and the policy a namespace's labels ask for (upstream's `api` package).

A namespace says, per mode (enforce, audit, warn), which level of the Pod Security Standards applies
(`pod-security.kubernetes.io/<mode>`) and at which version of the standards (`<mode>-version`: `latest` or
`v1.X`). A label missing falls back to the cluster's default; a label that does not parse falls back to the
strictest choice for enforce (`restricted`, `latest`) and to `privileged` for audit and warn (fail open), and
is reported so that namespace writes can be refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.api.errors import Cause
from harness.api.validation.field_errors import invalid

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
MODES = ("enforce", "audit", "warn")

PREFIX = "pod-security.kubernetes.io/"
#: Audit annotation keys, after PREFIX (upstream's api/constants.go).
EXEMPT, AUDIT_VIOLATIONS, ENFORCE_POLICY = "exempt", "audit-violations", "enforce-policy"

LEVEL_ERROR = f"must be one of {', '.join(LEVELS)}"
VERSION_ERROR = 'must be "latest" or "v1.x"'
_VERSION = re.compile(r"v1\.([0-9]|[1-9][0-9]*)")


def level_label(mode: str) -> str:
    return PREFIX + mode


def version_label(mode: str) -> str:
    return f"{PREFIX}{mode}-version"


@dataclass(frozen=True)
class Version:
    """`v1.<minor>`, or `latest` (minor None): newer than every numbered version, future ones included."""

    minor: int | None = None

    @property
    def latest(self) -> bool:
        return self.minor is None

    def older(self, other: Version) -> bool:
        if self.minor is None:
            return False
        return other.minor is None or self.minor < other.minor

    def __str__(self) -> str:
        return "latest" if self.minor is None else f"v1.{self.minor}"


LATEST = Version()


def parse_level(value: str) -> tuple[str, str]:
    """(level, error): an unknown level is `restricted` with upstream's error."""
    return (value, "") if value in LEVELS else (RESTRICTED, LEVEL_ERROR)


def parse_version(value: str) -> tuple[Version, str]:
    """(version, error): anything but `latest` or `v1.X` is latest with upstream's error."""
    if value == "latest":
        return LATEST, ""
    match = _VERSION.fullmatch(value)
    return (Version(int(match.group(1))), "") if match else (LATEST, VERSION_ERROR)


def compare_levels(a: str, b: str) -> int:
    """-1, 0 or 1 as `a` is less strict than, as strict as, or stricter than `b`."""
    rank = {PRIVILEGED: 0, BASELINE: 1, RESTRICTED: 2}
    if a == b or a not in rank or b not in rank:
        return 0
    return 1 if rank[a] > rank[b] else -1


@dataclass(frozen=True)
class LevelVersion:
    level: str = PRIVILEGED
    version: Version = LATEST

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"

    def equivalent(self, other: LevelVersion) -> bool:
        """Both privileged (the version does not matter then), or the same level and version."""
        return (self.level == PRIVILEGED and other.level == PRIVILEGED) or self == other


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion = LevelVersion()
    audit: LevelVersion = LevelVersion()
    warn: LevelVersion = LevelVersion()

    def mode(self, mode: str) -> LevelVersion:
        lv: LevelVersion = getattr(self, mode)
        return lv

    @property
    def fully_privileged(self) -> bool:
        return all(self.mode(m).level == PRIVILEGED for m in MODES)

    def equivalent(self, other: Policy) -> bool:
        return all(self.mode(m).equivalent(other.mode(m)) for m in MODES)


def policy_from_labels(labels: Mapping[str, Any] | None, defaults: Policy) -> tuple[Policy, list[Cause]]:
    """The policy a namespace's labels ask for, over `defaults`, and the labels that do not parse (upstream's
    `PolicyToEvaluate`). Warn follows an explicitly stricter enforce level unless the warn label is set."""
    labels = labels or {}
    modes = {m: defaults.mode(m) for m in MODES}
    causes: list[Cause] = []
    has_enforce_level = False
    for mode in MODES:
        lv = modes[mode]
        key = level_label(mode)
        if key in labels:
            value = str(labels[key])
            level, err = parse_level(value)
            if err:
                causes.append(invalid(f"metadata.labels[{key}]", value, err))
                if mode != "enforce":
                    level = PRIVILEGED  # audit and warn fail open
            elif mode == "enforce":
                has_enforce_level = True
            lv = LevelVersion(level, lv.version)
        key = version_label(mode)
        if key in labels:
            value = str(labels[key])
            version, err = parse_version(value)
            if err:
                causes.append(invalid(f"metadata.labels[{key}]", value, err))
            lv = LevelVersion(lv.level, version)
        modes[mode] = lv
    if level_label("warn") not in labels and has_enforce_level \
            and compare_levels(modes["enforce"].level, modes["warn"].level) > 0:
        version = modes["warn"].version if version_label("warn") in labels else modes["enforce"].version
        modes["warn"] = LevelVersion(modes["enforce"].level, version)
    return Policy(**modes), causes


def defaults_from_configuration(defaults: Mapping[str, Any] | None) -> tuple[Policy, list[str]]:
    """A PodSecurityConfiguration's `defaults` (every mode privileged at latest unless set), and what is wrong
    with it, each as `defaults.<field>: Invalid value: ...`."""
    defaults = defaults or {}
    modes: dict[str, LevelVersion] = {}
    problems: list[str] = []
    for mode in MODES:
        level_value = str(defaults.get(mode) or PRIVILEGED)
        version_value = str(defaults.get(f"{mode}-version") or "latest")
        level, level_err = parse_level(level_value)
        version, version_err = parse_version(version_value)
        for name, value, err in ((mode, level_value, level_err), (f"{mode}-version", version_value, version_err)):
            if err:
                cause = invalid(f"defaults.{name}", value, err)
                problems.append(f"{cause.field}: {cause.message}")
        modes[mode] = LevelVersion(level, version)
    return Policy(**modes), problems
