"""Container probes, split as upstream's `pkg/kubelet/prober`: `prober` runs one probe, `worker` keeps one
probe's result over time, `manager` keeps every worker of the node's pods."""
