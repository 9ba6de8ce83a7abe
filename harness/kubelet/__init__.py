"""The node agent: registers the Node, runs its pods' containers with runc, networks them, serves logs."""
