"""The container runtime: OCI bundles run by runc under a small per-container shim."""
