"""The controller-manager's control loops: one module per controller, started from one table.

Each controller reads from shared informer caches and writes only through the client; its
`reconcile(key)` returning means done, raising means a rate-limited retry (harness.machinery).
"""
