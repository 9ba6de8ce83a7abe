"""The node's image store: OCI images unpacked to root file systems, with a built-in busybox."""
