"""Hollow nodes, like kubemark's and kwok's: simulated kubelets that run pods without running anything.

A hollow node registers a real Node, renews its Lease and posts its status the way the
kubelet does, and marks the pods bound to it Running (and finishes them when they are
deleted) — so the scheduler, the controllers and the apiserver can be driven at the scale of
a thousand nodes from one process. `HollowCluster` is the entry point.
"""

from harness.hollow.cluster import HollowCluster

__all__ = ["HollowCluster"]
