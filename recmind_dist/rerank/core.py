"""Re-rank a model's top-K per user with a generative backend and justify every item.

For a user u (local id) and the model's top-K items (best first), the generator
(:func:`recmind_dist.generation.tasks.rerank.rerank_with_justifications_many`) sees

* the user's profile (templated demographics + training-history summary),
* up to ``max_history`` of the user's TRAINING items (title, description, genres, year),
* the K candidates in the model's order,

and returns a permutation with one sentence per item. Grounding: the only items a
justification may call "liked" are the user's training items. LM sentences that name another
catalogue title after "liked" (:func:`ungrounded_likes`), and sentences an answer left out,
are replaced by :func:`~recmind_dist.generation.tasks.rerank.template_justification` (counted in
``stats``). A request the backend cannot answer after its retries keeps the model's order.

:func:`evaluate_rerank` measures Recall/NDCG/... @k of the test users' top-K before and
after re-ranking (same truth and exclusions as :class:`~recmind_dist.eval.evaluator.
SplitEvaluator`'s test split).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recmind_dist.data.split import SplitData
from recmind_dist.generation import (
    Generator,
    ItemInfo,
    rerank_with_justifications_many,
    template_justification,
)
from recmind_dist.specs import TextSpec
from recmind_dist.text.templates import item_texts, training_user_texts

log = logging.getLogger(__name__)


def _clean(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    s = str(v).strip()
    return s or None


def item_infos(dataset: Any, text_spec: TextSpec | None = None) -> dict[int, ItemInfo]:
    """canonical item id -> :class:`ItemInfo` (title, templated description, genres, year)."""
    spec = text_spec or TextSpec()
    texts = item_texts(dataset, spec)
    text_by_id = dict(zip(texts["id"].tolist(), texts["text"].tolist(), strict=True))
    rows: dict[int, dict[str, Any]] = {}
    if dataset.items is not None and len(dataset.items):
        rows = dataset.items.set_index("id").to_dict("index")
    out = {}
    for i in range(dataset.n_items):
        r = rows.get(i, {})
        title = _clean(r.get(spec.title_column)) or f"item {dataset.item_raw_ids[i]}"
        attrs = {k: v for k in ("genres", "year") if (v := _clean(r.get(k)))}
        out[i] = ItemInfo(title=title, text=text_by_id.get(i) or title, attrs=attrs)
    return out


def ungrounded_likes(sentence: str, history_titles: Sequence[str],
                     catalogue_titles: Sequence[str]) -> list[str]:
    """Catalogue titles the sentence presents as liked (after the word "liked"/"loved"/
    "enjoyed") that are not in the user's training history."""
    low = sentence.lower()
    m = re.search(r"\b(liked|loved|enjoyed|watched)\b", low)
    if not m:
        return []
    tail = low[m.end():]
    hist = {t.lower() for t in history_titles}
    bad = []
    for t in catalogue_titles:
        tl = t.lower()
        if len(tl) >= 4 and tl in tail and tl not in hist and not any(tl in h for h in hist):
            bad.append(t)
    return bad


@dataclass
class Reranked:
    """One user's list: ``items`` (local ids, best first), a sentence each, who wrote it."""

    user: int
    items: list[int]
    justifications: list[str]
    backend: str
    model: str
    ok: bool
    before: list[int] = field(default_factory=list)


class Reranker:
    """Builds the generator's inputs from a dataset + split and applies its answers."""

    def __init__(self, gen: Generator, dataset: Any, data: SplitData,
                 text_spec: TextSpec | None = None, max_history: int = 20) -> None:
        self.gen, self.data, self.max_history = gen, data, max_history
        self.text_spec = text_spec or TextSpec()
        self.infos = item_infos(dataset, self.text_spec)
        self.catalogue_titles = sorted({i.title for i in self.infos.values()})
        prof = training_user_texts(dataset, data, self.text_spec)
        self.profile = dict(zip(prof["id"].tolist(), prof["text"].tolist(), strict=True))
        # training history per local user, most popular first (like the templated profile)
        deg = data.item_degree
        order = np.lexsort((data.train[:, 1], -deg[data.train[:, 1]], data.train[:, 0]))
        tr = data.train[order]
        starts = np.searchsorted(tr[:, 0], np.arange(data.n_users + 1))
        self.history = [tr[starts[u]: starts[u + 1], 1] for u in range(data.n_users)]
        self.stats = {"users": 0, "ungrounded_replaced": 0, "filled": 0, "kept_order": 0}

    def info(self, local_item: int) -> ItemInfo:
        return self.infos[int(self.data.item_ids[local_item])]

    def history_infos(self, user: int) -> list[ItemInfo]:
        return [self.info(i) for i in self.history[user][: self.max_history]]

    def rerank(self, users: Sequence[int], topk: np.ndarray) -> list[Reranked]:
        """``topk[r]``: user ``users[r]``'s local items, best first."""
        cases = []
        for u, items in zip(users, topk, strict=True):
            cases.append((self.profile.get(int(self.data.user_ids[u]), ""),
                          [self.info(i) for i in items], self.history_infos(int(u))))
        outs = rerank_with_justifications_many(self.gen, cases)
        result = []
        for (u, items), (_, cands, hist), o in zip(zip(users, topk, strict=True), cases, outs,
                                                    strict=True):
            items = [int(i) for i in items]
            hist_titles = [h.title for h in hist]
            if not o.ok:
                order = [(k, "") for k in range(len(items))]
                self.stats["kept_order"] += 1
            else:
                order = o.parsed
            new, why = [], []
            for k, sentence in order:
                if sentence and ungrounded_likes(sentence, hist_titles, self.catalogue_titles):
                    self.stats["ungrounded_replaced"] += 1
                    sentence = ""
                if not sentence:
                    self.stats["filled"] += 1
                    sentence = template_justification(cands[k], self._anchor(cands[k], hist))
                new.append(items[k])
                why.append(sentence)
            self.stats["users"] += 1
            result.append(Reranked(int(u), new, why, o.backend, o.model, o.ok, items))
        return result

    @staticmethod
    def _anchor(item: ItemInfo, hist: list[ItemInfo]) -> ItemInfo | None:
        """The training item sharing most genres with ``item`` (None without history)."""
        if not hist:
            return None
        g = set((item.attrs.get("genres") or "").split(", "))
        return max(hist, key=lambda h: len(g & set((h.attrs.get("genres") or "").split(", "))))


def topk_for_users(model: Any, data: SplitData, exclude: Any, users: np.ndarray, k: int
                   ) -> np.ndarray:
    """Model top-``k`` local items per user, excluding ``exclude`` (CSR) rows' items."""
    from recmind_dist.eval.topk import rank_topk

    model.eval()
    with torch.no_grad():
        ur, ir = model.representations()
    _, items = rank_topk(ur, ir, np.asarray(users), exclude, k)
    return items.numpy()


def list_metrics(topk: np.ndarray, users: np.ndarray, truth: Any, ks: Sequence[int]
                 ) -> dict[str, float]:
    """Mean Recall/NDCG/Precision/Hit/MRR@k of fixed lists (the evaluator's formulas)."""
    from recmind_dist.eval.ranking import METRICS, _batch_metrics

    rel = truth[users].toarray().astype(bool)
    n_rel = torch.as_tensor(rel.sum(1), dtype=torch.float64)
    topk = np.array(topk, dtype=np.int64, copy=True)
    hits = torch.as_tensor(np.take_along_axis(rel, topk, axis=1))
    keep = n_rel > 0
    out = {f"{m}_at_{k}": 0.0 for m in METRICS for k in ks}
    _batch_metrics(hits[keep], n_rel[keep], ks, out)
    n = max(int(keep.sum()), 1)
    return {**{k: v / n for k, v in out.items()}, "n_users": float(keep.sum())}


def evaluate_rerank(model: Any, data: SplitData, evaluator: Any, reranker: Reranker,
                    k: int = 20, ks: Sequence[int] = (10, 20), users: np.ndarray | None = None
                    ) -> dict[str, Any]:
    """Test metrics of the model's top-``k`` before and after re-ranking (same lists)."""
    if users is None:
        users = np.unique(data.test[:, 0])
    users = np.asarray(users)
    topk = topk_for_users(model, data, evaluator.test_exclude, users, k)
    before = list_metrics(topk, users, evaluator.test_mat, ks)
    lists = reranker.rerank(users.tolist(), topk)
    after_topk = np.array([r.items for r in lists], dtype=np.int64).reshape(topk.shape)
    after = list_metrics(after_topk, users, evaluator.test_mat, ks)
    return {"before": before, "after": after, "stats": dict(reranker.stats),
            "generator": dict(reranker.gen.stats), "lists": lists}
