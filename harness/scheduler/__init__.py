"""The scheduler: binds each pending pod to a node, after the kube-scheduler framework.

`framework` declares the extension points (and `nodeinfo` the node and pod data plugins
read), `plugins/` holds one module per plugin, found through `plugins.REGISTRY`, `profile`
names which run where and `runtime` builds and runs them. `cache` and `queue` are the
scheduler's view of the cluster and of the pods waiting, fed by `eventhandlers`;
`algorithm` picks a node and `scheduler` runs the cycle; `server` wires it all to
informers, leader election and /metrics.
"""
