"""Configuration of the frozen-LM embedding job (:class:`EmbedSpec`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recmind_dist.hashing import stable_hash
from recmind_dist.specs.base import Spec


class EmbedSpec(Spec):
    """What to embed with, and how to spread it over a Ray cluster.

    Every default is chosen for the 2-core, no-GPU laptop and stays sensible on a cluster.
    """

    model: str | None = Field(
        None,
        description="Local model directory or hub id. None = the bundled offline MiniLM "
        "(sentence-transformers/all-MiniLM-L6-v2 weights): small (22M params, 384-d), strong "
        "for short item/user texts and needs no network.",
    )
    pooling: Literal["auto", "mean", "last"] = Field(
        "auto",
        description="auto = 'last' for decoder LMs, 'mean' for encoders (how they were trained).",
    )
    normalize: bool = Field(
        True, description="L2-normalise: cosine = dot product downstream, as MiniLM is trained.")
    max_length: int = Field(
        128, ge=2,
        description="Token budget per text: longer texts are truncated, and attention cost "
        "grows with it. Default fits ml-100k's texts, see docs/benchmarks.md § Why the "
        "defaults are what they are.")
    batch_size: int = Field(
        64, ge=1,
        description="Texts per forward pass. Default: sentence-transformers' 64, for CPUs; "
        "raise it on GPUs, see docs/benchmarks.md § GPU check.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Compute dtype. auto = bfloat16 where the hardware multiplies bf16 "
        "matrices (CUDA GPUs; CPUs with Intel AMX or AVX512-BF16, where fp32 weights run under "
        "autocast), float32 elsewhere; set float32 for bit-stable vectors across machines. "
        "float16 only on GPU. Speed and cosine to fp32: docs/benchmarks.md § Embedding job and "
        "§ Graph baselines and the decoder tower.")
    output_dtype: Literal["float32", "float16"] = Field(
        "float32", description="Stored vector dtype. float16 halves the files for large "
        "catalogues (normalised vectors lose ~1e-3 relative precision).")
    num_replicas: int | Literal["auto"] = Field(
        "auto",
        description="Encoder actors. auto = one per GPU (divided by tensor_parallel) when "
        "gpus_per_replica > 0; on CPUs one per CPU (divided by tensor_parallel) of the Ray "
        "cluster but at most one per 8,192 texts, since each actor pays a fixed start-up "
        "(import torch/transformers, load the model). Layouts measured: docs/benchmarks.md "
        "§ Embedding job.")
    cpus_per_replica: float = Field(
        0.5, gt=0,
        description="Ray CPUs reserved per actor, per tensor-parallel rank (an actor with "
        "tensor_parallel N reserves N x this); the job refuses a pool that leaves no CPU for "
        "Ray Data's read tasks. Default: two actors fit a 2-CPU node beside the reads, see "
        "docs/benchmarks.md § Why the defaults are what they are.")
    gpus_per_replica: float = Field(
        0, ge=0, description="Ray GPUs per actor; 0 = CPU. Set 1 on GPU clusters.")
    tensor_parallel: int = Field(
        1, ge=1,
        description="DeepSpeed AutoTP degree per replica. 1 = whole model per replica (MiniLM "
        "needs nothing else). N > 1: each Ray replica is rank 0 of its own N-rank group and "
        "starts N-1 helper processes on its node (gloo over loopback on CPU, reserving N x "
        "cpus_per_replica CPUs; nccl with gpus_per_replica = N); vectors equal the unsharded "
        "model's up to float round-off. For LMs that do not fit one device: every rank loads "
        "the full model once before keeping its shard. Speed against replicas: "
        "docs/benchmarks.md § Embedding job.")
    torch_threads: int | None = Field(
        None, ge=1,
        description="torch.set_num_threads per actor process (per rank with tensor_parallel > "
        "1). None = a node's CPUs divided among the processes on it when num_replicas is auto "
        "(CPU), else max(1, round(cpus_per_replica)).")
    shard_rows: int = Field(
        2048, ge=1,
        description="Rows per output shard (unit of resume): a crash loses at most one shard's "
        "work, and 100k items make ~50 files. Default sized for MiniLM on a CPU core, see "
        "docs/benchmarks.md § Why the defaults are what they are.")
    block_rows: int | None = Field(
        None, ge=1,
        description="Rows per Ray Data input block (load balancing across actors). None = "
        "about 4 blocks per actor, at least 4 * batch_size and at most 2,048 rows: enough "
        "blocks that no actor idles, few enough that per-block overhead stays small; "
        "length sorting inside a block removes most padding.")
    local_below_texts: int = Field(
        50_000, ge=0,
        description="Runner choice of `backend: auto` (the `embed` command's default): a job "
        "with fewer texts to encode than this runs in-process, since a Ray actor pays a fixed "
        "start-up (import torch/transformers, load the model: ~5 s) before its first text; "
        "from this many on it runs on the Ray Data actor pool. 0 = always Ray. Default from the "
        "measured ratios on 2 cores, see docs/benchmarks.md § First hour (#17); lower it on "
        "nodes with many cores.")
    max_texts: int | None = Field(
        None, ge=1,
        description="Embed only the first N texts (by id) of each kind: quick smoke runs.")

    @model_validator(mode="after")
    def _check(self) -> EmbedSpec:
        if self.tensor_parallel > 1 and self.gpus_per_replica not in (0, self.tensor_parallel):
            raise ValueError("with tensor_parallel > 1 leave gpus_per_replica 0 (CPU) or set it "
                             "to tensor_parallel (GPUs spanned by one replica)")
        return self

    @property
    def threads(self) -> int:
        """Torch threads per replica."""
        return self.torch_threads or max(1, round(self.cpus_per_replica))

    def fingerprint(self, model_id: str) -> str:
        """Hash of everything that changes the vectors (not how they are scheduled)."""
        keys = {"model": model_id, "pooling": self.pooling, "normalize": self.normalize,
                "max_length": self.max_length, "dtype": self.dtype,
                "output_dtype": self.output_dtype}
        return stable_hash(keys)
