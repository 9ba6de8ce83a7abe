"""Helpers that know nothing of Kubernetes: time stamps, log-file formats, mount tables, atomic file writes.

The bottom layer: it imports nothing else of harness (`.importlinter` checks it), so every layer may use it.
Stdlib only, and nothing is imported here, so that the container shim, which imports a few of these modules, starts
fast.
"""
