"""LLMRec augmentation throughput (users/s) and its cache hit on rerun.

Runs :func:`recmind_dist.pipeline.augmentation.ensure_augmentation` twice for a job spec: the first call
makes the artefact (base-model candidates, LM liked/disliked choice per user, item attribute
enrichment, user profiles, encoder vectors) unless it exists already (``--fresh`` moves the
artefact and the LM prompt cache aside first), the second must be a hit that calls no
generator. Prints one table row per call.

    python benchmarks/augment_throughput.py --config configs/ml100k_llmrec.yaml \
        --set seed=2020 --set model.base_run=<LightGCN run id> --fresh
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from recmind_dist.augment.artifact import artifact_dir
from recmind_dist.pipeline import prepare
from recmind_dist.pipeline.augmentation import ensure_augmentation
from recmind_dist.specs import load_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--fresh", action="store_true",
                    help="move an existing artefact and prompt cache aside (measure a cold run)")
    args = ap.parse_args()
    spec = load_spec(args.config, args.overrides)
    dataset, data = prepare(spec)
    if args.fresh:
        root = Path(spec.model.augment_cache)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for p in [root / "generations", *(root / str(dataset.checksum)[:16]).glob("llmrec-*")]:
            if p.exists():
                shutil.move(str(p), str(p.with_name(f".{p.name}.aside-{stamp}")))
    print("| call | cache hit | users prompted | triples | skipped | invalid | LM users/s "
          "| total s | generator calls |")
    print("|---|---|---|---|---|---|---|---|---|")
    for call in (1, 2):
        t0 = time.perf_counter()
        art = ensure_augmentation(spec, dataset, data)
        dt = time.perf_counter() - t0
        st = art.meta["stats"]
        calls = "0 (no generator built)" if art.hit else f"{int(st['generator_requests'])}"
        print(f"| {call} | {art.hit} | {st['users_prompted']} | {st['triples']} | "
              f"{st['skipped']} | {st['invalid']} | "
              f"{st['users_per_s']:.1f} (made) | {dt:.1f} | {calls} |")
    print(f"\nartefact: {artifact_dir(spec.model.augment_cache, dataset.checksum, art.key)}")
    print(f"backend: {art.backend} / {art.meta.get('model')}; made in "
          f"{st['total_seconds']:.1f}s (candidates {st['candidate_seconds']:.1f}s, "
          f"liked/disliked {st['implicit_seconds']:.1f}s, side-text embedding "
          f"{st['embed_seconds']:.1f}s)")


if __name__ == "__main__":
    main()
