"""Pod networking: a network namespace and veth per pod on the node bridge, host-local IPAM, host-gw routes."""
