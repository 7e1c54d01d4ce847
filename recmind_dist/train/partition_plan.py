"""Driver side of ``train.mode: partitioned``: partition the training graph, cut Â per worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recmind_dist.data.split import SplitData
from recmind_dist.graph.partitioned import split_graph
from recmind_dist.specs import JobSpec


def plan_partition(spec: JobSpec, data: SplitData, world: int,
                   cache_dir: str | Path | None = None) -> list[Any]:
    """Driver side: partition the training graph and cut Â; returns one Ray object ref
    per worker (each worker fetches only its own share)."""
    import ray

    from recmind_dist.graph.adjacency import bipartite_adjacency, normalize_symmetric
    from recmind_dist.graph.partition import load_or_partition

    a = bipartite_adjacency(data.n_users, data.n_items, data.train)
    cache = cache_dir or Path(spec.data.cache_dir) / "partitions"
    parts = load_or_partition(a, world, spec.train.partitioner, cache, seed=spec.seed)
    graphs = split_graph(normalize_symmetric(a), parts, world)
    return [ray.put(g) for g in graphs]
