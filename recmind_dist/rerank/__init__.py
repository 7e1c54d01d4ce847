"""LM re-ranking of a recommender's top-K with one-sentence justifications."""

from recmind_dist.rerank.core import (
    Reranked,
    Reranker,
    evaluate_rerank,
    item_infos,
    ungrounded_likes,
)

__all__ = ["Reranked", "Reranker", "evaluate_rerank", "item_infos", "ungrounded_likes"]
