"""The learning rate a run trains with: the spec's ``lr`` scaled with the batch size.

Large batches cut the number of full-graph propagations per epoch (a LightGCN step costs
about the same at any batch size: its six sparse products with Â dominate), but take fewer,
less noisy steps; the usual remedy is to grow the step size with the batch:

    lr_eff = lr · (B / B_ref)^p,    p = 0 (``none``), 1 (``linear``), 1/2 (``sqrt``)

with ``B`` = ``train.batch_size`` and ``B_ref`` = ``train.lr_reference_batch`` (the batch
size ``lr`` was chosen at). ``linear`` is Goyal et al.'s rule for SGD; ``sqrt`` keeps the
variance of the update per sample constant and is the usual rule for Adam. ``none`` (the
default) is ``lr`` unchanged.
"""

from __future__ import annotations

import logging

from recmind_dist.specs import TrainSpec

log = logging.getLogger(__name__)

__all__ = ["LR_SCALING_POWERS", "effective_lr", "scaled_lr"]

#: The exponent ``p`` of each ``train.lr_scaling`` rule.
LR_SCALING_POWERS: dict[str, float] = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}


def scaled_lr(lr: float, batch_size: int, scaling: str, reference_batch: int) -> float:
    """``lr · (batch_size / reference_batch)^p`` for the rule ``scaling`` (see the module)."""
    power = LR_SCALING_POWERS[scaling]
    if power == 0.0:
        return lr
    return lr * (batch_size / reference_batch) ** power


def effective_lr(spec: TrainSpec) -> float:
    """The learning rate the trainer gives the optimiser for ``spec`` (logged once)."""
    lr = scaled_lr(spec.lr, spec.batch_size, spec.lr_scaling, spec.lr_reference_batch)
    if spec.lr_scaling != "none":
        log.info("lr %.3g scaled %s from batch %d to %d: %.4g", spec.lr, spec.lr_scaling,
                 spec.lr_reference_batch, spec.batch_size, lr)
    return lr
