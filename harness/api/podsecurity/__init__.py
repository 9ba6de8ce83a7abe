"""The Pod Security Standards, as upstream's pod-security-admission library states them: levels and policy
versions read from namespace labels (`levels`), and the checks a pod or pod template is held to (`checks`).

Pure functions of the objects given; the PodSecurity admission plugin (harness.apiserver.admission_podsecurity)
decides what to do with the answers.
"""

from harness.api.podsecurity.checks import CHECKS, Violation, evaluate, forbidden_detail, forbidden_reasons
from harness.api.podsecurity.levels import (
    BASELINE,
    LATEST,
    PRIVILEGED,
    RESTRICTED,
    LevelVersion,
    Policy,
    Version,
    defaults_from_configuration,
    policy_from_labels,
)

__all__ = ["BASELINE", "CHECKS", "LATEST", "PRIVILEGED", "RESTRICTED", "LevelVersion", "Policy", "Version",
           "Violation", "defaults_from_configuration", "evaluate", "forbidden_detail", "forbidden_reasons",
           "policy_from_labels"]
