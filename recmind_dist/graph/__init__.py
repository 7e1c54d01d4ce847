"""Graph construction, partitioning and propagation."""
