"""The plugin table: profiles name plugins, and find them here (and only here).

Each plugin is a small module with a `NAME` and one class implementing the extension points
it takes part in (see harness.scheduler.framework); it is built as `cls(handle, **args)`.
"""

from __future__ import annotations

from harness.scheduler.plugins import (
    balanced_allocation,
    default_binder,
    node_affinity,
    node_name,
    node_ports,
    node_resources_fit,
    node_unschedulable,
    selector_spread,
    taint_toleration,
)

REGISTRY: dict[str, type] = {
    node_name.NAME: node_name.NodeName,
    node_unschedulable.NAME: node_unschedulable.NodeUnschedulable,
    taint_toleration.NAME: taint_toleration.TaintToleration,
    node_affinity.NAME: node_affinity.NodeAffinity,
    node_ports.NAME: node_ports.NodePorts,
    node_resources_fit.NAME: node_resources_fit.NodeResourcesFit,
    balanced_allocation.NAME: balanced_allocation.BalancedAllocation,
    selector_spread.NAME: selector_spread.SelectorSpread,
    default_binder.NAME: default_binder.DefaultBinder,
}
