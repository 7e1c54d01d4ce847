"""The batch-size learning-rate rule (train.lr_scaling) and its use by the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recmind_dist.errors import InputError
from recmind_dist.specs import TrainSpec
from recmind_dist.specs.job import parse_spec
from recmind_dist.train.lr_rule import effective_lr, scaled_lr


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 16.0), ("sqrt", 4.0)])
def test_scaled_lr_follows_the_rule(rule: str, factor: float):
    assert math.isclose(scaled_lr(1e-3, 32768, rule, 2048), 1e-3 * factor, rel_tol=1e-12)
    # below the reference batch the rule shrinks the step the same way
    assert math.isclose(scaled_lr(1e-3, 128, rule, 2048), 1e-3 / factor, rel_tol=1e-12)
    assert scaled_lr(1e-3, 2048, rule, 2048) == 1e-3


def test_default_spec_keeps_lr_unchanged():
    ts = TrainSpec(batch_size=131072, lr=5e-3)
    assert ts.lr_scaling == "none" and effective_lr(ts) == 5e-3
    ts = TrainSpec(batch_size=131072, lr=5e-3, lr_scaling="sqrt", lr_reference_batch=8192)
    assert math.isclose(effective_lr(ts), 5e-3 * 4.0)


def test_spec_rejects_an_unknown_rule_and_a_bad_reference():
    with pytest.raises(InputError, match="lr_scaling"):
        parse_spec({"train": {"lr_scaling": "cubic"}}, "job.yaml")
    with pytest.raises(InputError, match="lr_reference_batch"):
        parse_spec({"train": {"lr_reference_batch": 0}}, "job.yaml")


def test_trainer_steps_with_the_scaled_lr_and_logs_it():
    """Two epochs of LightGCN on a toy split: Adam's lr is the scaled one, every
    history row carries it as train/lr."""
    from recmind_dist.data.split import SplitData
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.models.registry import build_model
    from recmind_dist.specs import EvalSpec, LightGCNSpec
    from recmind_dist.train import loop

    rng = np.random.default_rng(0)
    nu, ni = 20, 30
    pairs = np.unique(np.stack([rng.integers(0, nu, 300), rng.integers(0, ni, 300)], 1), axis=0)
    data = SplitData(nu, ni, pairs[:-40], pairs[-40:-20], pairs[-20:], np.arange(nu),
                     np.arange(ni), "toy", 0)
    seen: list[float] = []
    real = loop.make_optimizer

    def spy(model: torch.nn.Module, lr: float):
        seen.append(lr)
        return real(model, lr)

    ts = TrainSpec(epochs=2, batch_size=64, lr=1e-3, lr_scaling="linear", lr_reference_batch=16)
    model = build_model(LightGCNSpec(dim=8, layers=2), data)
    loop.make_optimizer = spy
    try:
        res = loop.train_model(model, data, ts, SplitEvaluator(data, EvalSpec(ks=[20])), 0,
                               progress=False)
    finally:
        loop.make_optimizer = real
    assert seen == [pytest.approx(4e-3)]
    assert [r["train/lr"] for r in res.history] == [pytest.approx(4e-3)] * 2
