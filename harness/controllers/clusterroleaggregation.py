"""clusterrole-aggregation: keeps the rules of aggregated ClusterRoles (admin, edit, view) in step with the roles
their selectors match, as upstream's controller does."""

from __future__ import annotations

from typing import Any

from harness.api import errors, registry
from harness.auth.aggregation import aggregated_rules
from harness.controllers.base import Controller

CLUSTER_ROLES = registry.by_path("rbac.authorization.k8s.io", "v1", "clusterroles")


class ClusterRoleAggregationController(Controller):
    name = "clusterrole-aggregation"

    def setup(self) -> None:
        self.ctx.informers(CLUSTER_ROLES).add_handlers(on_add=self._changed,
                                                       on_update=lambda old, new: self._changed(new),
                                                       on_delete=self._changed)

    def _changed(self, role: dict[str, Any]) -> None:
        """Any change to any ClusterRole may change what an aggregated one should hold."""
        for other in self.ctx.informers(CLUSTER_ROLES).cache.list():
            if other.get("aggregationRule"):
                self.queue.add(other["metadata"]["name"])

    async def reconcile(self, key: str) -> None:
        cache = self.ctx.informers(CLUSTER_ROLES).cache
        role = cache.get(key)
        if role is None or not role.get("aggregationRule"):
            return
        rules = aggregated_rules(role, cache.list())
        if rules == (role.get("rules") or []):
            return
        try:
            await self.ctx.client.patch(CLUSTER_ROLES, key, {"rules": rules})
        except errors.NotFound:
            return
