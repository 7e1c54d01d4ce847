"""Frozen/LoRA language-model text embeddings (encoder, resumable embedding job on Ray Data)."""

from recmind_dist.embed.encoder import (
    MINILM_HUB_ID,
    LoraTextTower,
    TextEncoder,
    add_lora,
    default_model_path,
    shard_with_deepspeed,
)
from recmind_dist.embed.job import EmbedResult, embed_dataset, run_embedding_job
from recmind_dist.embed.ray_runtime import ensure_ray, shutdown_ray
from recmind_dist.embed.shards import read_embeddings

__all__ = ["MINILM_HUB_ID", "EmbedResult", "LoraTextTower", "TextEncoder", "add_lora",
           "default_model_path", "embed_dataset", "ensure_ray", "read_embeddings",
           "run_embedding_job", "shard_with_deepspeed", "shutdown_ray"]
