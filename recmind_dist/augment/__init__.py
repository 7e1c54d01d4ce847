"""LLMRec augmentation (Wei et al., WSDM 2024): base-model candidates (:mod:`.candidates`),
LM-chosen implicit-feedback triples (:mod:`.implicit`), item attribute enrichment and user
profiles (:mod:`.attributes`), denoising (:mod:`.denoise`), the versioned Parquet artefact
(:mod:`.artifact`) and the train job :func:`recmind_dist.augment.run.run_llmrec`."""
