"""Who may do what: users, authorizers (RBAC, Node), the bootstrap policy, service-account tokens.

Pure decisions over API objects, with no I/O: the apiserver feeds them objects from its watch caches and acts on
the answers. The package sits beside `harness.client` and `harness.storage` in the layers, above `harness.api`.
"""
