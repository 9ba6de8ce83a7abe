"""kube-proxy: Services and Endpoints turned into iptables rules (or userspace proxy sockets) on every node."""
