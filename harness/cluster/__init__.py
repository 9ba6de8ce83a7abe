"""Clusters as machines: the cluster spec, the local (namespace) and vagrant providers, inventory, `harness up`."""
