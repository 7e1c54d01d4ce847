"""Side information for LLMRec: item attribute enrichment and user profiles, as text and vectors.

Items
  The base text is the catalogue's own metadata (``"{title} ({year}). Genres: {genres}."``).
  With a generative backend (``hf`` / ``openai``) the LM is asked for the attributes the
  catalogue LACKS (by default director, country, language: only those absent from
  ``items.parquet``) in ``key: value`` lines; a parsed answer is appended ("Director: ...").
  The ``offline`` backend has no generative model and cannot know a director, so it invents
  nothing: it appends an audience summary computed from the TRAINING interactions (the most
  common age band, gender and occupations of the item's training users, when users have
  demographics). Every row records which backend made it; an item whose answer did not parse
  keeps its base text (``backend = "template"``) and is counted.

Users
  Facts = demographics + top genres + liked titles from TRAINING interactions only
  (:func:`recmind_dist.text.templates.training_user_texts`), rewritten into a short profile by
  :func:`recmind_dist.generation.tasks.profile.write_profiles` (offline: the facts themselves).

:func:`embed_side_texts` embeds both with the frozen encoder (MiniLM by default).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from recmind_dist.data.split import SplitData
from recmind_dist.specs import TextSpec
from recmind_dist.text.templates import item_texts, training_user_texts

log = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTES",
    "embed_side_texts",
    "enrich_items",
    "item_base_texts",
    "parse_attributes",
    "prompt_attributes",
    "user_profiles",
]

ATTRIBUTES = ("director", "country", "language")


def item_base_texts(dataset: Any, data: SplitData, text_spec: TextSpec | None = None
                    ) -> list[str]:
    """Metadata text of every LOCAL item of ``data`` (title, year, genres)."""
    texts = item_texts(dataset, text_spec or TextSpec())
    by_id = dict(zip(texts["id"].tolist(), texts["text"].tolist(), strict=True))
    return [by_id.get(int(c), "") or f"Item {int(c)}" for c in data.item_ids]


def prompt_attributes(item_text: str, fields: tuple[str, ...]) -> str:
    lines = "\n".join(f"{f}: <{f}>" for f in fields)
    return (f"Movie: {item_text}\n"
            f"Give this movie's {', '.join(fields)}. If unsure, give your best guess. "
            f"Answer with exactly these lines:\n{lines}")


_KV = re.compile(r"^\s*[-*]?\s*([A-Za-z ]{3,20})\s*[:=]\s*(.+?)\s*$")


def parse_attributes(text: str, req: Any) -> dict[str, str]:
    """``{field: value}`` for the requested fields; raises when none is usable.

    A value must be 1..8 words, mostly letters, not a placeholder (``<director>``) nor an
    echo of the field name.
    """
    fields = tuple(req.payload["fields"])
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _KV.match(line)
        if not m:
            continue
        key = m.group(1).strip().lower()
        val = m.group(2).strip().strip(".\"'")
        if key not in fields or key in out:
            continue
        words = val.split()
        letters = sum(ch.isalpha() for ch in val)
        if not 1 <= len(words) <= 8 or letters < 0.6 * len(val.replace(" ", "")) or \
                "<" in val or val.lower() in fields or val.lower() in ("unknown", "n/a", "none"):
            continue
        out[key] = val
    if not out:
        raise ValueError(f"no usable '{'/'.join(fields)}: value' line")
    return out


def _audience(dataset: Any, data: SplitData) -> list[str]:
    """Per local item, a sentence on who watched it in TRAINING (empty without demographics)."""
    users = dataset.users
    if users is None or not len(users):
        return [""] * data.n_items
    u = users.set_index("id")
    canon_u = data.user_ids[data.train[:, 0]]
    df = pd.DataFrame({"item": data.train[:, 1], "user": canon_u})
    cols = {}
    if "age" in u.columns:
        age = pd.to_numeric(u["age"], errors="coerce")
        band = (age // 10 * 10).astype("Int64").astype(str) + "s"
        cols["age"] = band.where(age.notna(), None)
    for c in ("gender", "occupation"):
        if c in u.columns:
            cols[c] = u[c].astype(object).where(u[c].notna(), None)
    if not cols:
        return [""] * data.n_items
    for c, s in cols.items():
        df[c] = s.reindex(df["user"]).to_numpy()
    out = [""] * data.n_items
    gender = {"M": "men", "F": "women"}
    for item, grp in df.groupby("item", sort=True):
        parts = []
        if "age" in grp and grp["age"].notna().any():
            parts.append(f"viewers in their {Counter(grp['age'].dropna()).most_common(1)[0][0]}")
        if "gender" in grp and grp["gender"].notna().any():
            g = Counter(grp["gender"].dropna()).most_common(1)[0][0]
            parts.append(f"mostly {gender.get(str(g), str(g))}")
        if "occupation" in grp and grp["occupation"].notna().any():
            occ = [o for o, _ in Counter(grp["occupation"].dropna()).most_common(2)]
            parts.append("often " + " and ".join(f"{o}s" for o in occ))
        if parts:
            out[int(item)] = "Audience: " + ", ".join(parts) + "."
    return out


def enrich_items(gen: Any, dataset: Any, data: SplitData, text_spec: TextSpec | None = None,
                 fields: tuple[str, ...] = ATTRIBUTES) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Enriched text per LOCAL item: ``DataFrame(id canonical, text, backend)`` + stats."""
    base = item_base_texts(dataset, data, text_spec)
    cols = set(dataset.items.columns) if dataset.items is not None else set()
    missing = tuple(f for f in fields if f not in cols)
    stats: dict[str, Any] = {"items": data.n_items, "fields_asked": list(missing)}
    if gen.backend_name == "offline" or not missing:
        aud = _audience(dataset, data)
        texts = [f"{b} {a}".strip() for b, a in zip(base, aud, strict=True)]
        backend = [gen.backend_name if a else "template" for a in aud]
        stats.update(enriched=sum(bool(a) for a in aud), skipped=0,
                     how="audience from training interactions (offline: no attribute is invented)")
    else:
        from recmind_dist.generation import Request

        reqs = [Request("item_attributes", prompt_attributes(b, missing),
                        {"fields": list(missing), "item": b}) for b in base]
        outs = gen.run(reqs, parse_attributes)
        texts, backend = [], []
        for b, o in zip(base, outs, strict=True):
            if o.ok and o.parsed:
                extra = " ".join(f"{k.capitalize()}: {v}." for k, v in o.parsed.items())
                texts.append(f"{b} {extra}")
                backend.append(str(o.backend))
            else:
                texts.append(b)
                backend.append("template")
        stats.update(enriched=sum(b != "template" for b in backend),
                     skipped=sum(b == "template" for b in backend), how="lm")
    table = pd.DataFrame({"id": data.item_ids.astype(np.int64), "text": texts,
                          "backend": backend})
    return table, stats


def user_profiles(gen: Any, dataset: Any, data: SplitData, text_spec: TextSpec | None = None
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Profile per LOCAL user (from TRAINING interactions only) + stats."""
    from recmind_dist.generation import ProfileRecord, write_profiles

    facts = training_user_texts(dataset, data, text_spec or TextSpec())
    by_id = dict(zip(facts["id"].tolist(), facts["text"].tolist(), strict=True))
    recs = [ProfileRecord("user", int(c), by_id.get(int(c), "")) for c in data.user_ids]
    outs = write_profiles(gen, recs)
    texts, backend = [], []
    for r, o in zip(recs, outs, strict=True):
        if o.ok and o.parsed:
            texts.append(str(o.parsed))
            backend.append(str(o.backend))
        else:  # unparsable LM answer: keep the templated facts
            texts.append(r.facts)
            backend.append("template")
    table = pd.DataFrame({"id": data.user_ids.astype(np.int64), "text": texts,
                          "backend": backend})
    return table, {"users": data.n_users, "profiled": sum(b != "template" for b in backend),
                   "skipped": sum(b == "template" for b in backend)}


def embed_side_texts(texts: list[str], encoder: Any = None, batch_size: int = 64) -> np.ndarray:
    """[n, D] float32 vectors of ``texts`` (empty text -> zero row) with the frozen encoder."""
    if encoder is None:
        from recmind_dist.embed.encoder import TextEncoder

        encoder = TextEncoder(normalize=True)
    return np.asarray(encoder.encode(texts, batch_size=batch_size), dtype=np.float32)
