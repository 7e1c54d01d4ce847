"""Partitioned RecMind (2 and 3 gloo workers) == single-process RecMind.

On a synthetic 60 users x 80 items graph (6 items without a training edge, 7 nodes without
text), the workers and the single process run the same two epochs of fixed global batches
(epoch 1 warm-up: alignment only; epoch 2 joint: BPR + L2 + λ·alignment, cold-item dropout,
warm negatives), each worker on its contiguous slice with the loss scaled by its share, Adam
(fused) after every step. Compared to 1e-5: h of every node (own rows and the gathered
scored representations), the loss of every step (sum of the workers' scaled parts), every
parameter's gradient at the first step of each phase (own rows of E⁰; the replicated ones on
every worker, including which are None), every parameter, buffer and queue after each epoch
(the gathered single-process state dict), and the state mapping back to a worker
(:func:`local_state`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmind_dist.data.split import SplitData
from recmind_dist.errors import InputError
from recmind_dist.graph.adjacency import bipartite_adjacency, normalize_symmetric
from recmind_dist.graph.partition import metis_partition, random_partition
from recmind_dist.graph.partitioned import split_graph
from recmind_dist.models.base import Batch
from recmind_dist.models.inputs import ModelInputs, NodeFeatures
from recmind_dist.models.recmind import RecMind
from recmind_dist.models.registry import REGISTRY, build_model
from recmind_dist.specs import RecMindSpec
from recmind_dist.train.loop import make_optimizer

NU, NI, D_LM = 60, 80, 12
N_COLD = 6  # items NI-6.. have no training edge
BATCH, STEPS, EPOCHS = 48, 3, (1, 2)  # 48: equal slices for 2 and 3 workers
TOL = {"atol": 1e-5, "rtol": 1e-5}

CONFIGS = {
    # the defaults: learned gate, language-side alignment, fallback MLP, cold dropout, queues
    "learned": {"adapter_hidden": 4, "text_pca": 6},
    # both views trained, fused graph view, text-initialised ID rows, warm-mean cold norms
    "both_fused": {"align_grad": "both", "align_view": "fused", "id_init": "text",
                   "isolated_norm": "warm_mean", "cold_dropout": 0.5, "align_nodes": 0},
    # ablation: plain propagation, late fusion [g ‖ z], no cold dropout (fixed-gate path)
    "late_fusion": {"variant": "late_fusion"},
}


def _data() -> SplitData:
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, NU, 420), rng.integers(0, NI - N_COLD, 420)],
                               1), axis=0)
    return SplitData(NU, NI, pairs, pairs[:5], pairs[5:10], np.arange(NU), np.arange(NI),
                     key="p", seed=0)


def _features() -> NodeFeatures:
    rng = np.random.default_rng(1)
    uv, iv = rng.normal(size=(NU, D_LM)), rng.normal(size=(NI, D_LM))
    uh, ih = np.ones(NU, bool), np.ones(NI, bool)
    uh[[3, 17, 42]] = False
    ih[[0, 9, 33, NI - 2]] = False  # NI-2: cold and without text
    uv[~uh] = 0
    iv[~ih] = 0
    return NodeFeatures(uv, iv, uh, ih)


def _single(config: str) -> RecMind:
    torch.manual_seed(0)
    spec = RecMindSpec(dim=8, layers=2, queue_size=24, warmup_epochs=1,
                       lambda_align=0.5, **{"align_nodes": 10, **CONFIGS[config]})
    model = build_model(spec, _data(), ModelInputs(features=_features()), "cpu")
    assert isinstance(model, RecMind)
    return model


def _batches() -> dict[int, list[Batch]]:
    """Fixed global batches per epoch (negatives uniform over all items: some are cold)."""
    data, rng = _data(), np.random.default_rng(2)
    out = {}
    for epoch in EPOCHS:
        out[epoch] = []
        for _ in range(STEPS):
            e = data.train[rng.choice(len(data.train), BATCH, replace=False)]
            out[epoch].append(Batch(torch.from_numpy(e[:, 0]), torch.from_numpy(e[:, 1]),
                                    torch.from_numpy(rng.integers(0, NI, BATCH))))
    return out


def _graph_parts(world: int, method: str) -> tuple[object, np.ndarray]:
    an = normalize_symmetric(bipartite_adjacency(NU, NI, _data().train))
    parts = metis_partition(an, world) if method == "metis" else random_partition(
        an.shape[0], world, 5)
    return an, parts


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.detach().clone()
            for n, p in model.named_parameters()}


def _train(model: RecMind, slices: dict[int, list[Batch]], scale: float, state) -> dict:
    """Two epochs as the trainers run them; ``state()`` gives the comparable state dict."""
    torch.manual_seed(5)  # the same random draws (alignment subsets, cold dropout)
    opt = make_optimizer(model, 0.02)
    rec: dict = {"loss": [], "grads": {}, "state": {}}
    for epoch in EPOCHS:
        model.train()
        model.on_epoch_start(epoch, STEPS)
        for step, batch in enumerate(slices[epoch]):
            loss, _ = model.training_loss(batch, epoch)
            opt.zero_grad(set_to_none=True)
            (loss * scale).backward()
            if step == 0:
                rec["grads"][epoch] = _grads(model)
            if model.in_warmup(epoch) and model.spec.align_grad == "language":
                # s's exact gradient is 0 here (the InfoNCE on ẑ is invariant to s; the graph
                # view is a target); the computed one is round-off (~1e-7), which Adam
                # (eps 1e-8) turns into ±lr steps with the round-off's sign -- chaotic in any
                # two runs whose sums are ordered differently, so it is compared, then dropped
                model.language.z_scale.grad = None
            opt.step()
            rec["loss"].append(float(loss.detach()) * scale)
        rec["state"][epoch] = state()
    return rec


# ------------------------------------------------------------------ spawned workers


def _worker(rank: int, world: int, tmp: str, config: str, method: str) -> None:
    from recmind_dist.models.partitioned_recmind import PartitionedRecMind, local_state
    from recmind_dist.train.collectives import all_gather_autograd

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank,
                            world_size=world)
    an, parts = _graph_parts(world, method)
    lg = split_graph(an, parts, world)[rank]
    single = _single(config)
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    model = PartitionedRecMind(single, lg, "cpu")
    model.set_gather(all_gather_autograd)  # as the distributed trainer installs it
    mapped = local_state(initial, lg.own)
    same_start = all(torch.equal(v, mapped[k]) for k, v in model.state_dict().items())
    h_own = model.forward_views().h.detach().clone()
    model.gather_for_eval()
    reps = model.representations() if rank == 0 else None
    slices = {ep: [Batch(*(x[BATCH * rank // world : BATCH * (rank + 1) // world]
                           for x in (b.users, b.pos, b.neg))) for b in bs]
              for ep, bs in _batches().items()}
    rec = _train(model, slices, 1.0 / world, model.single_state)
    # checkpoint mapping: the gathered single-process state, cut again, restores this worker
    box = [rec["state"][EPOCHS[-1]]]
    dist.broadcast_object_list(box, src=0)
    again = PartitionedRecMind(_single(config), lg, "cpu")
    again.load_state_dict(local_state(box[0], lg.own))
    restored = all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    torch.save({"own": torch.from_numpy(lg.own), "h_own": h_own, "reps": reps,
                "same_start": same_start, "restored": restored, **rec}, f"{tmp}/out{rank}.pt")
    from _dist_helpers import end_worker

    end_worker()


@pytest.mark.parametrize(("world", "method", "config"),
                         [(2, "metis", "learned"), (3, "random", "both_fused"),
                          (2, "random", "late_fusion")])
def test_partitioned_recmind_equals_single_process(tmp_path: Path, world: int, method: str,
                                                   config: str):
    mp.start_processes(_worker, args=(world, str(tmp_path), config, method), nprocs=world,
                       start_method="spawn")
    outs = [torch.load(tmp_path / f"out{r}.pt", weights_only=False) for r in range(world)]

    ref = _single(config)
    h_ref = ref.forward_views().h.detach()
    users_ref, items_ref = ref.representations()
    rec = _train(ref, _batches(), 1.0, lambda: {k: v.clone() for k, v in ref.state_dict().items()})

    seen = torch.zeros(NU + NI, dtype=torch.bool)
    for o in outs:
        own = o["own"]
        seen[own] = True
        assert o["same_start"] and o["restored"]
        torch.testing.assert_close(o["h_own"], h_ref[own], **TOL)
        for epoch in EPOCHS:
            for name, g_ref in rec["grads"][epoch].items():
                got = o["grads"][epoch][name]
                assert (got is None) == (g_ref is None), (epoch, name)
                if g_ref is not None:
                    want = g_ref[own] if name == "embedding.weight" else g_ref
                    torch.testing.assert_close(got, want, **TOL, msg=f"{epoch} {name}")
    assert seen.all()
    if ref.spec.gate == "learned":  # warm-up: the gate gets a gradient only through ĝ
        assert (rec["grads"][1]["gate.b"] is None) == (ref.spec.align_grad == "language")
    users, items = outs[0]["reps"]
    torch.testing.assert_close(users, users_ref.detach(), **TOL)
    torch.testing.assert_close(items, items_ref.detach(), **TOL)
    loss = np.sum([o["loss"] for o in outs], axis=0)
    np.testing.assert_allclose(loss, rec["loss"], **TOL)
    for epoch in EPOCHS:
        got, want = outs[0]["state"][epoch], rec["state"][epoch]
        assert list(got) == list(want)
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, **TOL, msg=f"{epoch} {key}")
        assert int(got["alignment.queues.z.count"]) > 0


def test_partitioned_recmind_refuses_what_it_cannot_run():
    an, parts = _graph_parts(2, "random")
    lg = split_graph(an, parts, 2)[0]
    spec = _single("learned").spec
    with pytest.raises(InputError, match="driver's single-process model"):
        REGISTRY["recmind"].partitioned(spec, _data(), lg, torch.device("cpu"), None, 0)
    single = _single("learned")
    single.language.text_tower = object()  # stands in for the LoRA tower: refused first
    from recmind_dist.models.partitioned_recmind import PartitionedRecMind

    with pytest.raises(InputError, match="encoder"):
        PartitionedRecMind(single, lg, "cpu")


# ------------------------------------------------------------------ train.mode: partitioned


def test_train_mode_partitioned_follows_single_process(tmp_path: Path, monkeypatch):
    """Ray Train, 2 workers, ``train.mode: partitioned`` with a RecMind spec, worker 1 killed
    after the first batch of epoch 3 and the group resumed from the epoch-2 checkpoint (every
    worker's own rows, optimiser state and queues): the final parameters (gathered to the
    single-process state dict, loaded into the driver's model) and the test metrics follow
    the uninterrupted single-process run. The workers reseed torch's RNG
    before training; the reference does too, so both draw the same alignment subsets and
    cold-dropout masks. Both alignment views are trained (so no parameter's update is
    round-off, see :func:`_train`)."""
    import pickle

    from _dist_helpers import tiny_spec, write_tiny

    from recmind_dist.embed.ray_runtime import ensure_ray, shutdown_ray
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.pipeline import prepare, worker_model
    from recmind_dist.train.distributed import (
        FAIL_AT_EPOCH_ENV,
        FAIL_MARKER_ENV,
        FAIL_RANK_ENV,
        train_distributed,
    )
    from recmind_dist.train.loop import seed_everything, train_model

    spec = tiny_spec(write_tiny(tmp_path), epochs=3)
    spec = spec.model_copy(update={
        "model": RecMindSpec(dim=16, layers=2, warmup_epochs=1, align_nodes=16, queue_size=32,
                             cold_dropout=0.2, align_grad="both", adapter_hidden=0),
        "train": spec.train.model_copy(update={"workers": 2, "mode": "partitioned",
                                               "partitioner": "metis", "max_failures": 1}),
        "data": spec.data.model_copy(update={"cache_dir": tmp_path / "cache"})})
    seed_everything(spec.seed)
    _, data = prepare(spec)
    rng = np.random.default_rng(4)
    uh, ih = rng.random(data.n_users) > 0.1, rng.random(data.n_items) > 0.1
    feats = NodeFeatures(rng.normal(size=(data.n_users, 12)) * uh[:, None],
                         rng.normal(size=(data.n_items, 12)) * ih[:, None], uh, ih)
    inputs = ModelInputs(features=feats)
    model = build_model(spec.model, data, inputs)
    init = pickle.loads(pickle.dumps(model))  # deepcopy cannot copy sparse CSR tensors
    seed_everything(spec.seed)  # as every worker does before training
    ref = train_model(model, data, spec.train.model_copy(update={"workers": 1}),
                      SplitEvaluator(data, spec.eval), spec.seed, progress=False)
    marker = tmp_path / "killed.marker"
    monkeypatch.setenv(FAIL_AT_EPOCH_ENV, "3")
    monkeypatch.setenv(FAIL_MARKER_ENV, str(marker))
    monkeypatch.setenv(FAIL_RANK_ENV, "1")
    ensure_ray(num_cpus=2)
    try:
        out = train_distributed(spec, data, worker_model(spec, data, inputs), model=init,
                                storage_path=tmp_path / "ray")
    finally:
        shutdown_ray()
    assert marker.exists() and out.restarts == 1, "the test hook did not fire"
    # every worker wrote its own piece of each checkpoint; none gathered the model's state
    final = {p.name for p in Path(out.checkpoint_path).iterdir()}
    assert final == {"state.pt", "result.json", "piece-0.pt", "piece-1.pt"}, final
    epoch_dirs = sorted((tmp_path / "ray").glob("*/checkpoint_epoch*"))
    assert epoch_dirs and all({p.name for p in d.iterdir()} == {"state.pt", "piece-0.pt",
                                                                "piece-1.pt"} for d in epoch_dirs)
    init.load_state_dict(out.state_dict)  # the driver's model takes the gathered state
    want = model.state_dict()
    assert list(out.state_dict) == list(want)
    for key, value in want.items():
        torch.testing.assert_close(out.state_dict[key], value, atol=1e-4, rtol=1e-4, msg=key)
    assert [r["epoch"] for r in out.result.history] == [1, 2, 3]
    for a, b in zip(out.result.history, ref.history, strict=True):
        assert a["train/align"] == pytest.approx(b["train/align"], abs=1e-4)
    for k in ("recall_at_20", "ndcg_at_20"):
        assert out.result.test[k] == pytest.approx(ref.test[k], abs=1e-3)
