"""Model specs: one class per model, a discriminated union on ``name``.

A setting lives here and only here: models take their spec and keep no defaults of their own.
Ablation variants are presets resolved when the spec is validated (:func:`_apply_preset`), so
the values MLflow logs are the values the model uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from recmind_dist.specs.base import Spec
from recmind_dist.specs.generation import GenerateSpec

#: Validation context key: the preset's values win over conflicting ones instead of raising.
#: Only for specs logged before presets existed (their job_spec.yaml kept the raw values of a
#: variant, e.g. ``variant: no_align`` beside ``lambda_align: 0.1``, which the model ignored).
LEGACY_PRESETS = "legacy_presets"


def _apply_preset(raw: Any, presets: dict[str, dict[str, Any]], section: str,
                  legacy: bool = False) -> Any:
    """Expand ``variant`` into the settings it stands for.

    A preset fills the keys it names; a key the user also set must agree with it (a preset
    never overrides a value silently; ``legacy``: it does, see :data:`LEGACY_PRESETS`). The
    variant name itself is kept as a label only: no model reads it, every model reads the
    resolved settings."""
    if not isinstance(raw, dict):
        return raw
    variant = raw.get("variant", "full")
    if variant not in presets:
        return raw  # the Literal on ``variant`` reports the unknown name
    out = dict(raw)
    for key, value in presets[variant].items():
        if key in raw and raw[key] != value and not legacy:
            raise ValueError(
                f"{section}.variant={variant} sets {section}.{key}={value!r}, but the spec "
                f"also sets {key}={raw[key]!r}; drop one of them"
            )
        out[key] = value
    return out


#: RecMind ablations as presets of its component settings (gate, readout, alignment).
RECMIND_PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_align": {"lambda_align": 0.0, "warmup_epochs": 0},
    "late_fusion": {"gate": "none", "readout": "late"},
    "fixed_gate": {"gate": "fixed"},
    "llm_only": {"gate": "none", "readout": "language", "lambda_align": 0.0, "warmup_epochs": 0},
    "no_warmup": {"warmup_epochs": 0},
}

#: LLMRec ablations as presets of its settings.
LLMREC_PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_prune": {"prune_rate": 0.0},
    "no_mae": {"mae_weight": 0.0},
    "edges_only": {"side_features": False, "mae_weight": 0.0},
}


class MFSpec(Spec):
    name: Literal["mf"] = "mf"
    dim: int = Field(64, gt=0)
    reg: float = Field(1e-4, ge=0, description="λ of the L2 term on batch embeddings")


class LightGCNSpec(Spec):
    name: Literal["lightgcn"] = "lightgcn"
    dim: int = Field(64, gt=0)
    layers: int = Field(3, ge=0)
    reg: float = Field(1e-4, ge=0, description="λ of the L2 term on layer-0 batch embeddings")
    loss: Literal["bpr", "softmax"] = Field(
        "bpr", description="ranking loss: bpr = −log σ(h_uᵀh_i − h_uᵀh_j) with the trainer's "
        "one negative per edge; softmax = sampled softmax on cosine scores over n_negatives "
        "negatives at temperature softmax_tau (recmind_dist.models.ranking_loss)")
    n_negatives: int = Field(
        256, ge=1, description="loss: softmax -- negatives per positive: the trainer's own "
        "negative (uniform, never a training positive) plus n_negatives − 1 items drawn "
        "uniformly over all items once per batch and shared by its rows (from the model's "
        "generator, seeded from the run seed)")
    softmax_tau: float = Field(
        0.2, gt=0, description="loss: softmax -- temperature τ on the cosine scores. The "
        "softmax defaults are the ones chosen on ml-100k validation, see docs/benchmarks.md "
        "§ Graph baselines and the decoder tower")


class SimGCLSpec(LightGCNSpec):
    """SimGCL (see :mod:`recmind_dist.models.simgcl`): LightGCN's settings, readout without
    layer 0, plus two noise-perturbed views tied by InfoNCE. Defaults: the settings chosen on
    ml-100k validation, see docs/benchmarks.md § Graph baselines and the decoder tower."""

    name: Literal["simgcl"] = "simgcl"  # type: ignore[assignment]
    layers: int = Field(3, ge=1, description="propagation layers L (the readout is E^1..E^L)")
    eps: float = Field(0.1, ge=0, description="ε: norm of the noise added to every row of "
                       "every propagated layer in a perturbed view")
    lambda_cl: float = Field(0.01, ge=0, description="λ: weight of the InfoNCE term (user "
                             "term + item term, each a mean over the batch's distinct nodes)")
    tau_cl: float = Field(0.05, gt=0, description="τ of the InfoNCE on cosine similarities")


class XSimGCLSpec(SimGCLSpec):
    """XSimGCL (see :mod:`recmind_dist.models.simgcl`): one perturbed propagation whose mean
    is the ranking representation, contrasted with its own layer ``cl_layer``. Defaults: the
    settings chosen on ml-100k validation (same section as SimGCL's)."""

    name: Literal["xsimgcl"] = "xsimgcl"  # type: ignore[assignment]
    eps: float = Field(0.2, ge=0, description="ε: norm of the noise added to every row of "
                       "every propagated layer of the perturbed pass")
    lambda_cl: float = Field(0.02, ge=0, description="λ: weight of the cross-layer InfoNCE "
                             "term (user term + item term, each a mean over the batch's "
                             "distinct nodes)")
    cl_layer: int = Field(1, ge=1, description="l*: the layer contrasted with the final mean "
                          "(1..layers)")

    @model_validator(mode="after")
    def _cl_layer_exists(self) -> XSimGCLSpec:
        if self.cl_layer > self.layers:
            raise ValueError(f"cl_layer {self.cl_layer} > layers {self.layers}")
        return self


class RecMindSpec(Spec):
    """RecMind (see :mod:`recmind_dist.models.recmind` for the equations). Defaults: the
    LightGCN backbone settings of ``configs/ml100k_lightgcn.yaml`` (so the two compare at
    equal capacity) plus the choices below."""

    name: Literal["recmind"] = "recmind"
    dim: int = Field(64, gt=0, description="ID/graph/language view size (= LightGCN's)")
    layers: int = Field(3, ge=0, description="propagation layers L (= LightGCN's)")
    reg: float = Field(
        1e-4, ge=0, description="λ of LightGCN's L2 term on the batch's layer-0 rows (same value)"
    )
    variant: Literal["full", "no_align", "late_fusion", "fixed_gate", "llm_only", "no_warmup"] = (
        Field("full", description="ablation preset (RECMIND_PRESETS): the settings it stands "
              "for are filled in at validation; the model reads only those settings")
    )
    gate: Literal["learned", "fixed", "none"] = Field(
        "learned", description="intra-layer fusion: learned γ = σ(wᵀ[E^l ‖ z ‖ d̃] + b), a "
        "constant γ = fixed_gamma, or none (plain LightGCN propagation)")
    readout: Literal["fused", "late", "language"] = Field(
        "fused", description="final representation: fused = layer mean of the fused states; "
        "late = graph view and z combined after propagation (late_fusion); language = z alone "
        "(needs gate none)")
    backbone: Literal["lightgcn", "simgcl", "xsimgcl"] = Field(
        "lightgcn", description="graph backbone the gate and the alignment act on: lightgcn "
        "(plain propagation), simgcl (+ two noise-perturbed gated passes tied by InfoNCE) or "
        "xsimgcl (one perturbed gated pass, its mean contrasted with its layer cl_layer); "
        "cl_* are the contrastive settings (recmind_dist.models.simgcl)")
    cl_eps: float = Field(0.2, ge=0, description="backbone simgcl/xsimgcl: ε, norm of the "
                          "noise added to every propagated row (XSimGCL's tuned value)")
    cl_lambda: float = Field(0.02, ge=0, description="backbone simgcl/xsimgcl: λ of the "
                             "graph InfoNCE term (XSimGCL's tuned value)")
    cl_tau: float = Field(0.05, gt=0, description="backbone simgcl/xsimgcl: τ of the graph "
                          "InfoNCE (XSimGCL's tuned value)")
    cl_layer: int = Field(1, ge=1, description="backbone xsimgcl: l*, the layer contrasted "
                          "with the final mean (1..layers)")
    readout_layer0: bool = Field(
        True, description="include the fused layer 0 in the layer mean h (LightGCN's "
        "readout); false = mean of layers 1..L (SimGCL/XSimGCL's readout; an edgeless "
        "pinned node's h is still z)")
    tau: float = Field(
        0.2, gt=0,
        description="InfoNCE temperature on cosine similarities; 0.2 is the usual value for "
        "graph contrastive learning (SGL, SimGCL) — lower over-weights hard negatives that are "
        "often false negatives in small catalogues",
    )
    lambda_align: float = Field(
        0.1, ge=0,
        description="weight of the alignment loss after warm-up; 0.1 keeps the InfoNCE "
        "gradient (loss ~log B) below BPR's so it regularises rather than dominates",
    )
    warmup_epochs: int = Field(
        3, ge=0,
        description="alignment-only epochs T_w before joint BPR + λ·align; a few epochs pull "
        "the ID table towards the text geometry without delaying BPR much (early stopping "
        "patience is 30 validations)",
    )
    queue_size: int = Field(
        1024, ge=0,
        description="keys per MoCo queue (one per node type and view): each query sees "
        "align_nodes − 1 in-batch + queue_size queued negatives, and the queue is where the "
        "language view of unseen items gets its negatives; 0 = in-batch negatives only. "
        "Default chosen on the ml-100k cold-item split, see docs/benchmarks.md § RecMind",
    )
    momentum: float = Field(
        0.99, ge=0, le=1,
        description="EMA of the key projection; 0.99 (time constant ~100 steps, ~4 epochs on "
        "ml-100k) suits runs of a few thousand steps (MoCo's 0.999 is for ~10^5 steps)",
    )
    adapter_hidden: int = Field(
        0, ge=0,
        description="hidden width of the residual adapter MLP over the frozen LM vector "
        "(0 = linear W_proj only). Default chosen on ml-100k validation, see "
        "docs/benchmarks.md § RecMind",
    )
    gate_init: float = Field(
        0.1, gt=0, lt=1,
        description="initial γ = σ(b) of the learned gate (weights start at 0): training "
        "starts close to LightGCN and the gate learns where language helps",
    )
    fixed_gamma: float = Field(
        0.1, ge=0, le=1,
        description="constant γ of gate=fixed (= the learned gate's start); "
        "0 reduces RecMind exactly to LightGCN",
    )
    late_fusion: Literal["concat", "mean"] = Field(
        "concat",
        description="readout=late: h = [g ‖ z] (scores add a text dot product) or "
        "(g + z)/2",
    )
    text_control: Literal["none", "shuffled", "random"] = Field(
        "none", description="control runs: shuffled = each node type's texts permuted among "
        "its nodes (seeded); random = the LM vectors replaced by Gaussian vectors of the same "
        "shape and norms (precomputed encoder only); none = the real texts")
    fallback: Literal["mlp", "zero"] = Field(
        "mlp",
        description="z of nodes without text: an MLP over [ID embedding ‖ normalised "
        "degree] (mlp) or the zero vector (zero: such nodes are plain LightGCN nodes)",
    )
    fallback_hidden: int = Field(64, gt=0, description="hidden width of the fallback MLP")
    align_view: Literal["graph", "fused"] = Field(
        "graph",
        description="graph side of the alignment: mean of un-fused layer states E^l (graph: "
        "no direct copy of the node's own z, so the gate cannot trivially satisfy the loss) "
        "or the final fused h",
    )
    id_init: Literal["random", "text"] = Field(
        "random",
        description="layer-0 ID rows: N(0, 0.1²) as LightGCN, or (text) the top-dim principal "
        "components of the centred LM vectors scaled to the same std (nodes without text stay "
        "random): starts neighbours in text space near each other",
    )
    text_pca: int = Field(
        64, ge=0,
        description="project the centred frozen LM vectors once onto their top-k principal "
        "directions (0 = keep all 384): z of all N nodes is recomputed every step, so this "
        "sets the projection's cost. Default chosen on ml-100k validation, see "
        "docs/benchmarks.md § RecMind",
    )
    align_nodes: int = Field(
        64, ge=0,
        description="alignment uses this many random distinct batch users and as many items "
        "per step (fewer if the batch has fewer of either type; both types always align the "
        "same number, so they share one batched loss; 0 = as many as the rarer type has); "
        "each query sees n − 1 + queue_size negatives, and the [n × (n + queue)] logits set "
        "the alignment's step time. Default chosen on ml-100k validation and epoch time, see "
        "docs/benchmarks.md § RecMind",
    )
    align_grad: Literal["both", "language"] = Field(
        "language",
        description="which side the alignment loss trains: only the language side (graph "
        "view as a stop-gradient target: z learns to predict the collaborative embedding, "
        "which is what the gate and unseen items use) or both views (symmetric). Default "
        "chosen on ml-100k validation, see docs/benchmarks.md § Why the defaults are what "
        "they are",
    )
    isolated_text_only: bool = Field(
        True,
        description="learned gate: nodes with no training edge get γ ≡ 1 (h = z), since their "
        "ID row never saw a positive; this is what lets RecMind rank unseen items",
    )
    isolated_norm: Literal["z", "warm_mean"] = Field(
        "z",
        description="scoring norm of items with no training edge (h = z direction): z's own "
        "(learned scale) or the mean ‖h‖ of the items with edges. An item's ‖h‖ carries its "
        "popularity, an unseen item's z never met a BPR gradient. Data-dependent, so off by "
        "default, see docs/benchmarks.md § Why the defaults are what they are",
    )
    cold_dropout: float = Field(
        0.2, ge=0, lt=1,
        description="joint phase, learned gate: in each BPR triple the positive's and the "
        "negative's representation h is replaced by its language view z, independently with "
        "this probability (DropoutNet-style item dropout). An item with no training edge is "
        "scored with z, which otherwise never meets a BPR gradient. Default chosen on the "
        "ml-100k cold-item split, see docs/benchmarks.md § RecMind",
    )
    warm_negatives: bool = Field(
        True,
        description="drop BPR triples whose sampled negative has no training edge (unseen "
        "items are unknown at training time; as negatives they would teach the adapter to "
        "bury them). Only cold-item splits (and a few items of a random split) are affected",
    )
    encoder: Literal["precomputed", "lora"] = Field(
        "precomputed",
        description="precomputed = z from the embedding job's cached frozen-LM vectors + the "
        "trainable adapter (cheap; default). lora = end-to-end through LoRA adapters on the "
        "LM named by embed.model (small LMs): all node texts re-encoded without gradient each "
        "epoch, lora_nodes of them with gradient each step. Epoch times: docs/benchmarks.md "
        "§ RecMind",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank r (encoder: lora)")
    lora_alpha: int = Field(16, ge=1, description="LoRA scale α; the update is (α/r)·B·A")
    lora_nodes: int = Field(
        64, ge=2,
        description="encoder: lora -- nodes per step (half users, half positive items of the "
        "batch) re-encoded through the LM with gradient; the LM forward+backward on them is "
        "the step's main cost")
    lora_max_length: int = Field(
        64, ge=2, description="encoder: lora -- token budget per node text; see "
        "docs/benchmarks.md § Why the defaults are what they are")
    features_backend: Literal["local", "ray"] = Field(
        "local",
        description="embedding-job backend for the node texts: local (in-process, best for "
        "a few thousand texts) or ray (Ray Data actor pool)",
    )
    features_cache: Path | None = Field(
        None, description="feature cache root; None = <data.cache_dir>/features"
    )


    @model_validator(mode="before")
    @classmethod
    def _resolve_variant(cls, raw: Any, info: ValidationInfo) -> Any:
        legacy = bool(info.context and info.context.get(LEGACY_PRESETS))
        return _apply_preset(raw, RECMIND_PRESETS, "model", legacy)

    @model_validator(mode="after")
    def _effective(self) -> RecMindSpec:
        if self.text_control == "random" and self.encoder == "lora":
            raise ValueError("text_control=random replaces frozen LM vectors; it needs "
                             "encoder=precomputed (use shuffled with lora)")
        if self.readout != "fused" and self.gate != "none":
            raise ValueError(f"readout={self.readout} combines views after propagation; it "
                             f"needs gate=none (got gate={self.gate})")
        if not self.readout_layer0 and self.layers < 1:
            raise ValueError("readout_layer0=false reads out layers 1..L: it needs layers >= 1")
        if self.backbone != "lightgcn":
            if self.readout == "language":
                raise ValueError(f"backbone={self.backbone} perturbs the graph propagation; "
                                 "readout=language has none (use backbone=lightgcn)")
            if self.layers < 1 or self.cl_layer > self.layers:
                raise ValueError(f"backbone={self.backbone} needs 1 <= cl_layer <= layers "
                                 f"(got cl_layer {self.cl_layer}, layers {self.layers})")
        if self.lambda_align == 0 and self.warmup_epochs:  # nothing to warm up with
            self.warmup_epochs = 0
        if self.gate != "learned" and self.isolated_text_only:  # pins γ of the learned gate
            self.isolated_text_only = False
        return self


class GATLLMSpec(Spec):
    """GAT over LM-written (or templated) profiles, BPR + α·cosine, hard negatives
    (see :mod:`recmind_dist.models.gat_llm`)."""

    name: Literal["gat_llm"] = "gat_llm"
    features: Literal["text", "id", "text_id"] = Field(
        "text", description="initial node features: projected profile vectors, ID embeddings "
        "only (ablation), or both summed")
    dim: int = Field(64, gt=0)
    layers: int = Field(2, ge=0, description="GAT layers")
    heads: int = Field(2, gt=0, description="attention heads per layer (dim % heads == 0)")
    gat_version: Literal["v1", "v2"] = Field("v1", description="GATConv or GATv2Conv")
    dropout: float = Field(0.0, ge=0, lt=1, description="attention dropout")
    alpha: float = Field(0.1, ge=0, description="weight of the cosine term; 0 = ablation")
    reg: float = Field(1e-4, ge=0, description="λ of the L2 term on the batch's layer-0 rows")
    hard_negative_ratio: float = Field(0.3, ge=0, le=1, description="share of hard negatives")
    hard_negative_pool: int = Field(50, gt=0, description="ranks a hard negative is drawn from")
    hard_negative_skip: int = Field(
        5, ge=0, description="top ranks never used as negatives (likely false negatives)")
    hard_negative_refresh: int = Field(5, gt=0, description="re-mine every N epochs")
    hard_negative_start: int = Field(5, ge=1, description="first epoch with hard negatives")
    forward_every: int = Field(
        1, gt=0, description="full-graph GAT forward once per k batches (1 = every batch)")
    features_backend: Literal["local", "ray"] = Field(
        "local", description="embedding-job backend for the profiles")
    features_cache: Path | None = Field(
        None, description="feature cache root; None = <data.cache_dir>/features")
    profiles: GenerateSpec | None = Field(
        None, description="LM that rewrites each node's templated facts into a profile "
        "(recmind_dist.generation backends); None = the templated texts are the profiles")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> GATLLMSpec:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        return self


class PopularitySpec(Spec):
    name: Literal["popularity"] = "popularity"


class LLMRecSpec(Spec):
    """LLMRec (WSDM 2024) on LightGCN: see :mod:`recmind_dist.models.llmrec` (model) and
    :mod:`recmind_dist.augment` (candidates, LM augmentation, artefact). Train with
    `recmind-dist train` (:mod:`recmind_dist.pipeline.augmentation` makes or reuses the
    augmentation artefact first)."""

    name: Literal["llmrec"] = "llmrec"
    dim: int = Field(64, gt=0, description="= LightGCN's")
    layers: int = Field(3, ge=0, description="= LightGCN's")
    reg: float = Field(1e-4, ge=0, description="= LightGCN's L2 on layer-0 batch rows")
    variant: Literal["full", "no_prune", "no_mae", "edges_only"] = Field(
        "full", description="ablation preset (LLMREC_PRESETS): no_prune (prune_rate 0), no_mae "
        "(mae_weight 0), edges_only (no side features: LightGCN + augmented triples)")
    side_features: bool = Field(
        True, description="add the projected LM-enriched item attributes and user profiles to "
        "the layer-0 rows (False: augmented triples only)")
    base_run: str | None = Field(
        None, description="MLflow run id of the base model (LightGCN/MF, same split) whose "
        "top-N are the candidates; None = train LightGCN in-process with this job's settings")
    candidates: int = Field(10, ge=2, description="candidates per user shown to the LM (the "
                            "paper's |C| = 10)")
    max_history: int = Field(20, ge=1, description="training items shown per user")
    max_users: int | None = Field(None, ge=1, description="augment only the first N users")
    enrich_fields: list[str] = Field(
        default_factory=lambda: ["director", "country", "language"],
        description="item attributes asked of a generative LM when the catalogue lacks them")
    aug_weight: float = Field(
        1.0, ge=0, description="weight of one augmented triple relative to one original edge")
    prune_rate: float = Field(
        0.2, ge=0, lt=1, description="ω: fraction of augmented triples with the largest BPR "
        "loss dropped every epoch")
    mae_ratio: float = Field(0.3, ge=0, lt=1, description="fraction of feature dims masked")
    mae_weight: float = Field(0.1, ge=0, description="weight of the MAE reconstruction loss")
    mae_rows: int | None = Field(
        512, ge=1, description="users (and as many items) whose masked features are rebuilt "
        "per step (an unbiased estimate of the all-node MAE loss); None = all nodes")
    lm: GenerateSpec = Field(
        default_factory=GenerateSpec, description="generative backend (default offline: "
        "templates + encoder similarity, no generative model)")
    augment_cache: Path = Field(Path("data/augment"), description="augmentation artefacts "
                                "(and the LM prompt cache under generations/)")


    @model_validator(mode="before")
    @classmethod
    def _resolve_variant(cls, raw: Any, info: ValidationInfo) -> Any:
        legacy = bool(info.context and info.context.get(LEGACY_PRESETS))
        return _apply_preset(raw, LLMREC_PRESETS, "model", legacy)

    @model_validator(mode="after")
    def _effective(self) -> LLMRecSpec:
        if not self.side_features and self.mae_weight:  # MAE refines the side features
            self.mae_weight = 0.0
        return self


ModelSpec = Annotated[
    MFSpec | LightGCNSpec | SimGCLSpec | XSimGCLSpec | PopularitySpec | RecMindSpec
    | LLMRecSpec | GATLLMSpec,
    Field(discriminator="name"),
]


