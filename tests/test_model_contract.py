"""The model contract: every registered model reads its settings from its spec alone, and the
parameters MLflow logs for a run are exactly the settings the model uses.

* Constructors keep no defaults of their own (a default there could drift from the spec's).
* The model holds the validated spec object it was built from; the run's logged ``model.*``
  params equal that spec's fields (variant presets already resolved, e.g. ``no_align`` logs
  ``lambda_align = 0.0``, the value the loss uses).
* A variant is a label: the same resolved settings without the label give the same model,
  the same loss and the same gradients.
"""

from __future__ import annotations

import inspect

import mlflow
import numpy as np
import pytest
import torch

from recmind_dist import tracking
from recmind_dist.data.split import SplitData
from recmind_dist.models.base import Batch
from recmind_dist.models.inputs import LLMRecInputs, ModelInputs, NodeFeatures
from recmind_dist.models.registry import REGISTRY, build_model, needed_inputs
from recmind_dist.specs import JobSpec, parse_spec
from recmind_dist.specs.models import LLMREC_PRESETS, RECMIND_PRESETS
from recmind_dist.tracking import flatten

NU, NI, D_TEXT = 24, 30, 16


def _split() -> SplitData:
    rng = np.random.default_rng(0)
    pairs = {(u, int(i)) for u in range(NU) for i in rng.choice(NI - 2, 5, replace=False)}
    train = np.array(sorted(pairs), dtype=np.int64)  # the last two items have no edge
    return SplitData(NU, NI, train, train[:NU], train[:NU], np.arange(NU), np.arange(NI),
                     key="k", seed=3)


def _inputs(spec, data: SplitData) -> ModelInputs:
    rng = np.random.default_rng(1)
    needs = needed_inputs(spec)
    feats = None
    if {"text_features", "profiles"} & needs:
        uhas, ihas = rng.random(NU) > 0.2, rng.random(NI) > 0.2
        feats = NodeFeatures(rng.normal(size=(NU, D_TEXT)) * uhas[:, None],
                             rng.normal(size=(NI, D_TEXT)) * ihas[:, None], uhas, ihas)
    aug = None
    if "augmentation" in needs:
        users = rng.integers(0, NU, 40)
        aug = LLMRecInputs(np.stack([users, rng.integers(0, NI, 40), rng.integers(0, NI, 40)], 1),
                           rng.normal(size=(NU, D_TEXT)), rng.normal(size=(NI, D_TEXT)))
    return ModelInputs(features=feats, augmentation=aug)


SPECS = [
    {"name": "popularity"},
    {"name": "mf", "dim": 8, "reg": 0.01},
    {"name": "lightgcn", "dim": 8, "layers": 2},
    {"name": "lightgcn", "dim": 8, "layers": 2, "loss": "softmax", "n_negatives": 4},
    {"name": "simgcl", "dim": 8, "layers": 2},
    {"name": "xsimgcl", "dim": 8, "layers": 2},
    {"name": "gat_llm", "dim": 8, "heads": 2, "layers": 1, "alpha": 0.3},
    {"name": "gat_llm", "dim": 8, "heads": 1, "layers": 1, "features": "id"},
    *({"name": "recmind", "dim": 8, "layers": 2, "queue_size": 8, "align_nodes": 4,
       "text_pca": 0, "variant": v} for v in RECMIND_PRESETS),
    *({"name": "llmrec", "dim": 8, "layers": 2, "variant": v} for v in LLMREC_PRESETS),
]


def _ids(s: dict) -> str:
    return "-".join(str(v) for v in s.values() if isinstance(v, str))


def test_every_registered_model_is_covered():
    assert {s["name"] for s in SPECS} == set(REGISTRY)


@pytest.mark.parametrize("raw", SPECS, ids=_ids)
def test_constructor_has_no_defaults_and_model_holds_its_spec(raw):
    spec = parse_spec({"model": raw}, "t").model
    data = _split()
    torch.manual_seed(0)
    model = build_model(spec, data, _inputs(spec, data))
    params = inspect.signature(type(model).__init__).parameters.values()
    with_default = [p.name for p in params if p.default is not inspect.Parameter.empty]
    assert with_default == [], f"{type(model).__name__} keeps its own defaults: {with_default}"
    if spec.name != "popularity":  # no settings at all
        assert model.spec is spec


@pytest.mark.parametrize("raw", SPECS, ids=_ids)
def test_logged_params_are_the_settings_the_model_uses(raw, tmp_path):
    spec = parse_spec({"model": raw, "tracking": {
        "uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "contract"}}, "t")
    data = _split()
    model = build_model(spec.model, data, _inputs(spec.model, data))
    used = getattr(model, "spec", spec.model)
    with tracking.mlflow_run(spec) as run:
        pass
    logged = mlflow.get_run(run.info.run_id).data.params
    expected = flatten(used.model_dump(mode="json"), "model.")
    assert {k: v for k, v in logged.items() if k.startswith("model.")} == {
        k: ("" if v is None else str(v)) for k, v in expected.items()}
    if raw.get("variant") == "no_align":
        assert logged["model.lambda_align"] == "0.0" and logged["model.warmup_epochs"] == "0"
    if raw.get("variant") == "no_prune":
        assert logged["model.prune_rate"] == "0.0"


def _loss_and_grads(spec, data, inputs, epoch: int):
    torch.manual_seed(0)
    model = build_model(spec, data, inputs)
    model.train()
    model.on_epoch_start(epoch, 1)
    b = torch.arange(0, len(data.train), 3)
    batch = Batch(torch.as_tensor(data.train[b, 0]), torch.as_tensor(data.train[b, 1]),
                  torch.as_tensor((data.train[b, 1] + 7) % NI))
    torch.manual_seed(1)
    loss, _ = model.training_loss(batch, epoch)
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


@pytest.mark.parametrize("raw", [s for s in SPECS if s.get("variant", "full") != "full"],
                         ids=_ids)
@pytest.mark.parametrize("epoch", [1, 5])
def test_a_variant_is_only_a_label_for_its_settings(raw, epoch):
    """The preset's resolved settings, given explicitly under variant=full, train the same."""
    spec = parse_spec({"model": raw}, "t").model
    explicit = {k: v for k, v in spec.model_dump(mode="json").items() if k != "variant"}
    twin = parse_spec({"model": explicit}, "t").model
    assert twin.variant == "full" and twin.model_dump(exclude={"variant"}) == spec.model_dump(
        exclude={"variant"})
    data = _split()
    inputs = _inputs(spec, data)
    loss_a, grads_a = _loss_and_grads(spec, data, inputs, epoch)
    loss_b, grads_b = _loss_and_grads(twin, data, inputs, epoch)
    assert loss_a == loss_b
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], rtol=0, atol=0)


def test_job_spec_round_trips_through_the_logged_yaml():
    """What a run logs (job_spec.yaml) validates back to the same settings."""
    import yaml

    for raw in SPECS:
        spec = parse_spec({"model": raw}, "t")
        again = parse_spec(yaml.safe_load(yaml.safe_dump(spec.model_dump(mode="json"))), "t")
        assert again == spec and isinstance(again, JobSpec)
