"""LLMRec augmentation (Wei et al., WSDM 2024): top-N candidates from a base model's
representations (:mod:`.candidates`), LM-chosen implicit-feedback triples (:mod:`.implicit`),
item attribute enrichment and user profiles (:mod:`.attributes`) and the versioned Parquet
artefact with its lookup (:mod:`.artifact`). The stage that runs them in order (base model,
artefact, LLMRec's inputs, train job) is :mod:`recmind_dist.pipeline.augmentation`; the
denoising maths is the model's (:mod:`recmind_dist.models.denoise`)."""
