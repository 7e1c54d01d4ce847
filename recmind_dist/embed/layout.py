"""How an embedding job spreads its texts over a Ray cluster: replicas, threads, block size.

:func:`plan_layout` chooses a :class:`Layout` for ``n`` texts on a cluster of ``C`` CPUs /
``G`` GPUs (largest node ``c`` CPUs). With tensor-parallel degree ``N`` a replica runs ``N``
processes, so on CPUs

    replicas = max(1, min(C // N, ceil(n / MIN_TEXTS_PER_REPLICA)))
    threads  = c // (replicas_per_node * N)

and on GPUs ``replicas = G // gpus_per_replica``. :func:`check_fits` refuses a layout the
cluster cannot run, with an :class:`~recmind_dist.errors.InputError` naming the spec field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recmind_dist.errors import InputError
from recmind_dist.specs import EmbedSpec

__all__ = ["MIN_TEXTS_PER_REPLICA", "NO_LAYOUT", "Layout", "check_fits", "plan_layout"]

#: An actor that starts costs ~4-5 s (import torch + transformers, load the model) before its
#: first text; below this many texts per replica another replica does not pay for its start.
MIN_TEXTS_PER_REPLICA = 8192


@dataclass(frozen=True)
class Layout:
    """How the texts are spread: actors, torch threads per process (an actor, or each rank
    of its tensor-parallel group), input block size, ranks per actor."""

    replicas: int
    threads: int
    block_rows: int
    tensor_parallel: int = 1


NO_LAYOUT = Layout(replicas=0, threads=0, block_rows=0)  # nothing was encoded in this run


def plan_layout(spec: EmbedSpec, n_rows: int, cluster_cpus: float, cluster_gpus: float,
                node_cpus: float) -> Layout:
    """Choose replicas, threads per process and block size for ``n_rows`` texts.

    A replica with ``tensor_parallel`` N runs N processes (N GPUs, or N CPU processes that
    each count like one replica for CPUs and threads).

    * ``num_replicas: auto`` on GPUs: one per ``gpus_per_replica``. On CPUs: one per N
      cluster CPUs, but at most one per :data:`MIN_TEXTS_PER_REPLICA` texts -- a 2,625-text
      job runs one actor, not two that each pay the start-up.
    * ``torch_threads`` unset: the CPUs of a node divided among the processes that share it
      (2 CPUs, 1 replica -> 2 threads; 2 replicas, or 1 replica at tensor_parallel 2 -> 1
      thread each); explicit replicas keep the spec's rule (``max(1, round(cpus_per_replica))``).
    * ``block_rows`` unset: about 4 blocks per replica (load balance) of at least
      ``4 * batch_size`` and at most 2,048 rows (per-block overhead vs. memory).
    """
    tp = spec.tensor_parallel
    if spec.num_replicas != "auto":
        reps = int(spec.num_replicas)
        threads = spec.threads
    elif spec.gpus_per_replica > 0:
        reps = max(1, int(cluster_gpus // spec.gpus_per_replica))
        threads = spec.threads
    else:
        reps = max(1, min(int(cluster_cpus // tp), math.ceil(n_rows / MIN_TEXTS_PER_REPLICA)))
        per_node = max(1, math.ceil(reps * node_cpus / max(cluster_cpus, 1)))
        threads = spec.torch_threads or max(1, int(node_cpus // (per_node * tp)))
    if spec.block_rows:
        block = spec.block_rows
    else:
        block = min(2048, max(4 * spec.batch_size, math.ceil(n_rows / (4 * reps))))
    reps = max(1, min(reps, math.ceil(n_rows / block)))
    return Layout(replicas=reps, threads=threads, block_rows=block, tensor_parallel=tp)


def check_fits(spec: EmbedSpec, layout: Layout, cluster_cpus: float, node_cpus: float,
               node_gpus: float) -> None:
    """Refuse (``InputError`` naming the spec field) a layout the Ray cluster cannot run.

    ``node_cpus``/``node_gpus``: the largest node's. A replica's tensor-parallel ranks are
    processes on its node, so one node must hold N CPUs (one per rank) or N GPUs. The actors
    together (``replicas x tensor_parallel x cpus_per_replica``) must leave one cluster CPU
    for Ray Data's read tasks, or the job waits forever (STACK-NOTES).
    """
    tp = spec.tensor_parallel
    if spec.gpus_per_replica > node_gpus:
        field, why = "gpus_per_replica", ""
        if tp > 1:
            field, why = "tensor_parallel", f" (one per rank, tensor_parallel={tp})"
        raise InputError("embed spec", field,
                         f"a replica needs {spec.gpus_per_replica:g} GPUs on one node{why}, but "
                         f"the largest node has {node_gpus:g}")
    if tp > 1 and spec.gpus_per_replica == 0 and tp > node_cpus:
        raise InputError("embed spec", "tensor_parallel",
                         f"tensor_parallel={tp} runs {tp} processes of one replica on one node, "
                         f"but the largest node has {node_cpus:g} CPUs")
    need = layout.replicas * tp * spec.cpus_per_replica
    if need > cluster_cpus - 1 + 1e-9:
        # the actors would hold every CPU and Ray Data's read tasks (1 CPU each) never run
        ranks = f" x {tp} tensor-parallel ranks" if tp > 1 else ""
        raise InputError("embed spec", "cpus_per_replica",
                         f"{layout.replicas} replicas{ranks} x {spec.cpus_per_replica} CPU "
                         f"leave less than one of the cluster's {cluster_cpus:g} CPUs for Ray "
                         "Data's read tasks; the job would wait forever. Lower "
                         "cpus_per_replica or num_replicas")
