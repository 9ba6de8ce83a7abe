"""A node's heartbeat Lease in kube-node-lease, created or renewed as upstream's node lease controller does.

Shared by the kubelet and the hollow nodes, so both renew the same way.
"""

from __future__ import annotations

from typing import Any

from harness.api import errors, meta, registry
from harness.api import nodes as objects
from harness.client.rest import Client

LEASES = registry.by_path("coordination.k8s.io", "v1", "leases")


async def renew(client: Client, name: str, node_uid: str, lease: dict[str, Any] | None) -> dict[str, Any]:
    """The node's lease renewed now (created if `lease` is None and none exists); retries one conflict.

    NotFound propagates: the lease was deleted under us, and the caller starts over with None.
    """
    renew_time = objects.micro_time(meta.now())
    if lease is None:
        try:
            created: dict[str, Any] = await client.create(
                LEASES, objects.lease_object(name, node_uid, renew_time=renew_time), objects.LEASE_NAMESPACE)
            return created
        except errors.AlreadyExists:
            lease = await client.get(LEASES, name, objects.LEASE_NAMESPACE)
    try:
        renewed: dict[str, Any] = await client.update(
            LEASES, objects.renewed_lease(lease, name, node_uid, renew_time=renew_time))
    except errors.Conflict:
        fresh = await client.get(LEASES, name, objects.LEASE_NAMESPACE)
        renewed = await client.update(LEASES, objects.renewed_lease(fresh, name, node_uid, renew_time=renew_time))
    return renewed
