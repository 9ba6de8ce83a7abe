"""Cluster logging: a per-node agent that tails component and container logs and forwards them over the Fluentd
Forward protocol with acknowledgements, and an aggregator on the first master that stores them by day and source
and answers queries (`harness logs`)."""
