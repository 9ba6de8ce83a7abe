"""Cluster DNS: answers <svc>.<ns>.svc.cluster.local and friends from Services and Endpoints."""
