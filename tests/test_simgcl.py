"""SimGCL / XSimGCL and the sampled-softmax ranking loss against independent references:
dense-matrix propagation, losses written out as loops, and the model's noise redrawn from a
generator seeded the same way."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recmind_dist.data.split import make_split
from recmind_dist.errors import InputError
from recmind_dist.graph.adjacency import normalized_adjacency
from recmind_dist.losses import infonce, softmax_loss
from recmind_dist.models.base import Batch
from recmind_dist.models.lightgcn import LightGCN
from recmind_dist.models.registry import REGISTRY, build_model
from recmind_dist.models.simgcl import SimGCL, XSimGCL, sign_noise
from recmind_dist.specs import LightGCNSpec, SimGCLSpec, SplitSpec, XSimGCLSpec, parse_spec

NU, NI = 5, 6
EDGES = np.array([[0, 0], [0, 2], [1, 1], [1, 2], [2, 3], [2, 5], [3, 0], [3, 4], [4, 1],
                  [4, 5], [0, 4], [2, 1]])
BATCH = Batch(torch.tensor([0, 2, 4, 0]), torch.tensor([2, 3, 5, 4]), torch.tensor([1, 0, 2, 3]))
SEED = 11


def _dense_adj() -> torch.Tensor:
    """Â = D^{-1/2} A D^{-1/2} of the bipartite graph, built densely from the edge list."""
    n = NU + NI
    a = torch.zeros(n, n)
    for u, i in EDGES:
        a[u, NU + i] = a[NU + i, u] = 1.0
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def _adj() -> torch.Tensor:
    return normalized_adjacency(NU, NI, EDGES)


def _nll(logits: list[float], target: int) -> float:
    return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _bpr_reference(h: torch.Tensor, e0: torch.Tensor, reg: float) -> float:
    total = 0.0
    for u, i, j in zip(*(t.tolist() for t in (BATCH.users, BATCH.pos, BATCH.neg)), strict=True):
        x = float(h[u] @ h[NU + i] - h[u] @ h[NU + j])
        total += math.log1p(math.exp(-x))
    rows = [e0[u] for u in BATCH.users] + [e0[NU + i] for i in BATCH.pos] + \
        [e0[NU + j] for j in BATCH.neg]
    l2 = sum(float(r @ r) for r in rows) / (2 * len(BATCH.users))
    return total / len(BATCH.users) + reg * l2


def _infonce_reference(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    return sum(_nll([_cos(a[i], b[j]) / tau for j in range(len(b))], i)
               for i in range(len(a))) / len(a)


# ------------------------------------------------------------------------------ pieces


def test_sign_noise_keeps_the_sign_and_has_norm_eps_per_row():
    x = torch.randn(50, 16, dtype=torch.float64)
    noise = sign_noise(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(torch.sign(noise), torch.sign(x))  # same orthant
    np.testing.assert_allclose(noise.norm(dim=1).numpy(), 0.3, rtol=1e-12)
    # magnitudes are |Δ|/‖Δ‖ with Δ ~ U(0, 1): redraw Δ from the same seed
    delta = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    torch.testing.assert_close(noise.abs(), 0.3 * delta / delta.norm(dim=1, keepdim=True))
    # a zero coordinate gets no noise
    x[0, :8] = 0
    assert torch.all(sign_noise(x, 0.3, torch.Generator().manual_seed(1))[0, :8] == 0)


def test_infonce_equals_hand_computed_value():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    tau = 0.5
    s = 1 / math.sqrt(2)
    # cosines a_i · b_j, by hand: rows a_0=(1,0), a_1=(0,1), a_2=(s,s); b_0=(1,0), b_1=(.6,.8), b_2=(0,-1)
    cos = [[1.0, 0.6, 0.0], [0.0, 0.8, -1.0], [s, 1.4 * s, -s]]
    expected = sum(_nll([c / tau for c in cos[i]], i) for i in range(3)) / 3
    assert infonce(a, b, tau).item() == pytest.approx(expected, rel=1e-6)


def test_softmax_loss_equals_a_loop_over_rows():
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(7, generator=gen), torch.randn(7, 4, generator=gen)
    tau = 0.2
    expected = sum(_nll([pos[b].item() / tau] + [x / tau for x in neg[b].tolist()], 0)
                   for b in range(7)) / 7
    assert softmax_loss(pos, neg, tau).item() == pytest.approx(expected, rel=1e-5)
    # one negative: a temperature-scaled BPR
    one = softmax_loss(pos, neg[:, :1], tau).item()
    bpr = float(np.mean([math.log1p(math.exp(-(p - n) / tau))
                         for p, n in zip(pos.tolist(), neg[:, 0].tolist(), strict=True)]))
    assert one == pytest.approx(bpr, rel=1e-5)


def test_lightgcn_softmax_loss_uses_its_own_and_shared_uniform_negatives():
    spec = LightGCNSpec(dim=4, layers=2, reg=1e-3, loss="softmax", n_negatives=4,
                        softmax_tau=0.3)
    torch.manual_seed(0)
    model = LightGCN(NU, NI, _adj(), spec, SEED)
    _, parts = model.training_loss(BATCH, 1)
    # reference: the same generator draws the 3 shared negatives; loop over rows and negatives
    shared = torch.randint(0, NI, (3,), generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        hu, hi = model.representations()
    total = 0.0
    for u, i, j in zip(*(t.tolist() for t in (BATCH.users, BATCH.pos, BATCH.neg)), strict=True):
        negs = [j, *shared.tolist()]
        total += _nll([_cos(hu[u], hi[k]) / 0.3 for k in [i, *negs]], 0)
    assert parts["softmax"] == pytest.approx(total / len(BATCH.users), rel=1e-5)
    # it scores by the cosine it was trained on: unit rows
    torch.testing.assert_close(torch.cat([hu, hi]).norm(dim=1), torch.ones(NU + NI))
    # the next step draws the next shared negatives, not the same ones again
    _, again = model.training_loss(BATCH, 1)
    assert again["softmax"] != pytest.approx(parts["softmax"])
    # bpr (the default) leaves LightGCN's state dict as it was: no generator state
    assert "rng._extra_state" in model.state_dict()
    assert not any("rng" in k for k in LightGCN(NU, NI, _adj(), LightGCNSpec(dim=4), 0)
                   .state_dict())


# ------------------------------------------------------------------------------ SimGCL


def _simgcl(**kw) -> SimGCL:
    torch.manual_seed(0)
    spec = SimGCLSpec(dim=4, layers=3, reg=1e-3, **kw)
    return SimGCL(NU, NI, _adj(), spec, SEED)


def _perturbed_states(e0: torch.Tensor, eps: float, gen: torch.Generator) -> list[torch.Tensor]:
    """E'^1..E'^3 with dense Â, noise redrawn in the model's order from ``gen``."""
    adj, x, out = _dense_adj(), e0, []
    for _ in range(3):
        x = adj @ x
        delta = torch.rand(x.shape, generator=gen, dtype=x.dtype)
        x = x + eps * torch.sign(x) * delta / delta.norm(dim=1, keepdim=True)
        out.append(x)
    return out


def test_simgcl_without_noise_and_contrast_is_bpr_on_the_mean_without_layer_0():
    model = _simgcl(eps=0.0, lambda_cl=0.0)
    loss, parts = model.training_loss(BATCH, 1)
    e0 = model.embedding.weight.detach()
    adj = _dense_adj()
    h = (adj @ e0 + adj @ adj @ e0 + adj @ adj @ adj @ e0) / 3  # E^1..E^3, no E^0
    assert loss.item() == pytest.approx(_bpr_reference(h, e0, 1e-3), rel=1e-5)
    assert set(parts) == {"bpr", "reg"}
    hu, hi = model.representations()
    torch.testing.assert_close(torch.cat([hu, hi]), h)


def test_simgcl_contrasts_two_independently_perturbed_views():
    model = _simgcl(eps=0.2, lambda_cl=0.5, tau_cl=0.25)
    loss, parts = model.training_loss(BATCH, 1)
    e0 = model.embedding.weight.detach()
    adj = _dense_adj()
    clean = (adj @ e0 + adj @ adj @ e0 + adj @ adj @ adj @ e0) / 3
    gen = torch.Generator().manual_seed(SEED)
    v1 = sum(_perturbed_states(e0, 0.2, gen)) / 3
    v2 = sum(_perturbed_states(e0, 0.2, gen)) / 3
    users, items = [0, 2, 4], [NU + i for i in (2, 3, 4, 5)]  # distinct batch users / positives
    cl = (_infonce_reference(v1[users], v2[users], 0.25)
          + _infonce_reference(v1[items], v2[items], 0.25))
    assert parts["cl"] == pytest.approx(cl, rel=1e-5)
    assert loss.item() == pytest.approx(_bpr_reference(clean, e0, 1e-3) + 0.5 * cl, rel=1e-5)
    # evaluation stays clean and deterministic
    torch.testing.assert_close(torch.cat(model.representations()), clean)


def test_xsimgcl_contrasts_the_final_mean_with_layer_l_star_of_one_perturbed_pass():
    torch.manual_seed(0)
    spec = XSimGCLSpec(dim=4, layers=3, reg=1e-3, eps=0.2, lambda_cl=0.3, tau_cl=0.2,
                       cl_layer=2)
    model = XSimGCL(NU, NI, _adj(), spec, SEED)
    loss, parts = model.training_loss(BATCH, 1)
    e0 = model.embedding.weight.detach()
    states = _perturbed_states(e0, 0.2, torch.Generator().manual_seed(SEED))
    h = sum(states) / 3
    users, items = [0, 2, 4], [NU + i for i in (2, 3, 4, 5)]
    cl = (_infonce_reference(h[users], states[1][users], 0.2)
          + _infonce_reference(h[items], states[1][items], 0.2))
    assert parts["cl"] == pytest.approx(cl, rel=1e-5)
    assert loss.item() == pytest.approx(_bpr_reference(h, e0, 1e-3) + 0.3 * cl, rel=1e-5)
    adj = _dense_adj()
    clean = (adj @ e0 + adj @ adj @ e0 + adj @ adj @ adj @ e0) / 3
    torch.testing.assert_close(torch.cat(model.representations()), clean)


def test_the_noise_stream_is_part_of_the_state_dict():
    """A model restored from a checkpoint draws the noise the original draws next."""
    a = _simgcl(eps=0.2, lambda_cl=0.5)
    a.training_loss(BATCH, 1)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    _, next_a = a.training_loss(BATCH, 1)
    b = _simgcl(eps=0.2, lambda_cl=0.5)
    b.load_state_dict(state)
    _, next_b = b.training_loss(BATCH, 1)
    assert next_b == next_a
    fresh = _simgcl(eps=0.2, lambda_cl=0.5)  # its first draw is the seed's first, not this
    assert fresh.training_loss(BATCH, 1)[1]["cl"] != pytest.approx(next_a["cl"])


# ------------------------------------------------------------------------------ specs


def test_specs_and_registry(tiny_dataset):
    data = make_split(tiny_dataset, SplitSpec(threshold=None), seed=0)
    job = parse_spec({"model": {"name": "xsimgcl", "dim": 8, "layers": 2, "cl_layer": 2,
                                "loss": "softmax", "n_negatives": 8}}, "test")
    model = build_model(job.model, data)
    assert isinstance(model, XSimGCL) and model.cl_layer == 2 and model.ranking.n_shared == 7
    loss, parts = model.training_loss(Batch(torch.tensor([0, 1]), torch.tensor([0, 1]),
                                            torch.tensor([2, 3])), 1)
    assert set(parts) == {"softmax", "reg", "cl"} and torch.isfinite(loss)
    assert isinstance(build_model(SimGCLSpec(dim=8), data), SimGCL)
    with pytest.raises(Exception, match="cl_layer"):
        parse_spec({"model": {"name": "xsimgcl", "layers": 2, "cl_layer": 3}}, "test")
    with pytest.raises(Exception, match="layers"):
        parse_spec({"model": {"name": "simgcl", "layers": 0}}, "test")
    # the partitioned trainer's LightGCN has BPR only: the softmax loss is refused, not ignored
    with pytest.raises(InputError, match="model.loss"):
        REGISTRY["lightgcn"].partitioned(LightGCNSpec(loss="softmax"), data, None,
                                         torch.device("cpu"), None, 0)
