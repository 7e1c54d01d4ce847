import math

import numpy as np
import pytest
import torch

from recmind_dist.eval.ranking import degree_buckets, evaluate_ranking, interaction_matrix
from recmind_dist.eval.topk import rank_topk


def brute_force(scores, truth_sets, exclude_sets, ks, bucket=None):
    out = {f"{m}_at_{k}": [] for m in ("recall", "ndcg", "precision", "hit", "mrr") for k in ks}
    for u, truth in truth_sets.items():
        rel = {i for i in truth if bucket is None or bucket[i]}
        if not rel:
            continue
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if i not in exclude_sets[u]]
        for k in ks:
            top = ranked[:k]
            hits = [1 if i in rel else 0 for i in top]
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
            first = next((r + 1 for r, h in enumerate(hits) if h), None)
            out[f"recall_at_{k}"].append(sum(hits) / len(rel))
            out[f"precision_at_{k}"].append(sum(hits) / k)
            out[f"hit_at_{k}"].append(float(sum(hits) > 0))
            out[f"ndcg_at_{k}"].append(dcg / idcg)
            out[f"mrr_at_{k}"].append(1 / first if first else 0.0)
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_metrics_match_brute_force_with_buckets():
    rng = np.random.default_rng(0)
    nu, ni, d = 40, 60, 8
    user, item = torch.randn(nu, d), torch.randn(ni, d)
    scores = (user @ item.T).numpy()
    train = np.array([(u, i) for u in range(nu) for i in rng.choice(ni, 10, False)])
    test = np.array([(u, i) for u in range(nu) for i in rng.choice(ni, 6, False)
                     if (u, i) not in set(map(tuple, train))])
    test = test[test[:, 0] % 7 != 0]  # some users have no test items
    ks = [1, 5, 10, 40]
    excl = interaction_matrix(nu, ni, train)
    truth = interaction_matrix(nu, ni, test)
    deg = np.bincount(train[:, 1], minlength=ni)
    buckets = degree_buckets(deg, cold_degree=5, head_fraction=0.2)
    got = evaluate_ranking(user, item, truth, excl, ks, buckets, batch_users=7)
    truth_sets = {u: set(test[test[:, 0] == u, 1]) for u in np.unique(test[:, 0])}
    excl_sets = {u: set(train[train[:, 0] == u, 1]) for u in range(nu)}
    ref = brute_force(scores, truth_sets, excl_sets, ks)
    for k, v in ref.items():
        assert abs(got[k] - v) < 1e-9, k
    for name, mask in buckets.items():
        ref_b = brute_force(scores, truth_sets, excl_sets, ks, bucket=mask)
        for k, v in ref_b.items():
            assert abs(got[f"{name}/{k}"] - v) < 1e-9, (name, k)


def test_metrics_match_pyg_link_pred_metrics():
    from torch_geometric.metrics import LinkPredNDCG, LinkPredRecall

    rng = np.random.default_rng(1)
    nu, ni = 20, 30
    user, item = torch.randn(nu, 4), torch.randn(ni, 4)
    test = np.array([(u, i) for u in range(nu) for i in rng.choice(ni, 4, False)])
    empty = interaction_matrix(nu, ni)
    got = evaluate_ranking(user, item, interaction_matrix(nu, ni, test), empty, [10])
    top = torch.topk(user @ item.T, 10, dim=1).indices
    gt = torch.from_numpy(test.T.copy())
    rec, ndcg = LinkPredRecall(10), LinkPredNDCG(10)
    rec.update(top, gt)
    ndcg.update(top, gt)
    assert abs(got["recall_at_10"] - float(rec.compute())) < 1e-6
    assert abs(got["ndcg_at_10"] - float(ndcg.compute())) < 1e-6


def test_degree_buckets_partition_items():
    deg = np.array([0, 1, 3, 4, 10, 50, 100, 7, 8, 9])
    b = degree_buckets(deg, cold_degree=3, head_fraction=0.2)
    total = b["cold"].astype(int) + b["tail"] + b["head"]
    assert np.all(total == 1)
    assert list(np.flatnonzero(b["cold"])) == [0, 1, 2]
    assert list(np.flatnonzero(b["head"])) == [5, 6]


# --------------------------------------------------------------------------------------------
# chunked full ranking (users x item chunks, running top-K) and the split over workers


def _masked_problem(seed: int = 2, nu: int = 37, ni: int = 53):
    """Tie-free random scores; users 0-2 have all but 2, 1 and 0 unmasked test items (so
    fewer candidates than K), the rest random train/test items; some users have no test."""
    rng = np.random.default_rng(seed)
    user = torch.from_numpy(rng.standard_normal((nu, 6))).float()
    item = torch.from_numpy(rng.standard_normal((ni, 6))).float()
    train, test = [], []
    for u in range(nu):
        perm = rng.permutation(ni)
        if u < 3:
            keep = perm[: 2 - u + 1]  # 3, 2, 1 items left unmasked
            train += [(u, i) for i in perm[len(keep):]]
            test += [(u, i) for i in keep[: 2 - u]]  # 2, 1, 0 of them held out
        else:
            train += [(u, i) for i in perm[:12]]
            if u % 5:
                test += [(u, i) for i in perm[12 : 12 + 1 + u % 4]]
    return user, item, np.array(train), np.array(test)


def _reference(user, item, train, test, ks, buckets):
    scores = (user.double() @ item.double().T).numpy()
    nu = len(user)
    truth_sets = {u: set(test[test[:, 0] == u, 1]) for u in np.unique(test[:, 0])}
    excl_sets = {u: set(train[train[:, 0] == u, 1]) for u in range(nu)}
    ref = brute_force(scores, truth_sets, excl_sets, ks)
    for name, mask in buckets.items():
        ref.update({f"{name}/{k}": v for k, v in
                    brute_force(scores, truth_sets, excl_sets, ks, bucket=mask).items()})
    return ref


@pytest.mark.parametrize("chunk_items,batch_users", [(1, 5), (7, 4), (16, 37), (52, 6),
                                                      (53, 10), (None, 8), (1000, 3)])
def test_chunked_ranking_matches_brute_force(chunk_items, batch_users):
    user, item, train, test = _masked_problem()
    nu, ni = len(user), len(item)
    ks = [1, 3, 10, 20]
    deg = np.bincount(train[:, 1], minlength=ni)
    buckets = degree_buckets(deg, cold_degree=8, head_fraction=0.2)
    got = evaluate_ranking(user, item, interaction_matrix(nu, ni, test),
                           interaction_matrix(nu, ni, train), ks, buckets,
                           batch_users=batch_users, chunk_items=chunk_items)
    ref = _reference(user, item, train, test, ks, buckets)
    assert got["n_users"] == len(np.unique(test[:, 0]))
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k


@pytest.mark.parametrize("chunk_items", [1, 3, 10, 40, 41, None])
def test_rank_topk_chunks_equal_one_dense_topk(chunk_items):
    g = torch.Generator().manual_seed(4)
    user, item = torch.randn(9, 5, generator=g), torch.randn(41, 5, generator=g)
    excl = np.array([(u, i) for u in range(9) for i in range(u, 41, 3)])
    exclude = interaction_matrix(9, 41, excl)
    dense = user @ item.T
    dense[excl[:, 0], excl[:, 1]] = -torch.inf
    want_s, want_i = torch.topk(dense, 12, dim=1)
    users = np.array([8, 0, 3, 5])
    s, i = rank_topk(user, item, users, exclude, 12, chunk_items)
    assert torch.equal(i, want_i[users])
    torch.testing.assert_close(s, want_s[users], rtol=1e-6, atol=1e-6)


def _eval_worker(rank: int, world: int, tmp: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank,
                            world_size=world)
    from recmind_dist.eval import ranking

    ranked = []  # the users this worker scores

    def counting_rank_topk(user_repr, item_repr, users, *args):
        ranked.extend(users.tolist())
        return rank_topk(user_repr, item_repr, users, *args)

    ranking.rank_topk = counting_rank_topk
    user, item, train, test = _masked_problem()
    nu, ni = len(user), len(item)
    buckets = degree_buckets(np.bincount(train[:, 1], minlength=ni), 8, 0.2)
    got = evaluate_ranking(user, item, interaction_matrix(nu, ni, test),
                           interaction_matrix(nu, ni, train), [1, 3, 10, 20], buckets,
                           batch_users=4, chunk_items=7, over_workers=True)
    torch.save({"metrics": got, "ranked": ranked}, f"{tmp}/metrics{rank}.pt")
    from _dist_helpers import end_worker

    end_worker()


def test_ranking_over_two_workers_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_eval_worker, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    user, item, train, test = _masked_problem()
    nu, ni = len(user), len(item)
    buckets = degree_buckets(np.bincount(train[:, 1], minlength=ni), 8, 0.2)
    single = evaluate_ranking(user, item, interaction_matrix(nu, ni, test),
                              interaction_matrix(nu, ni, train), [1, 3, 10, 20], buckets,
                              batch_users=1000)
    outs = [torch.load(tmp_path / f"metrics{r}.pt") for r in range(2)]
    ranked = [o["ranked"] for o in outs]  # each worker ranked its half of the users
    assert sorted(ranked[0] + ranked[1]) == sorted(np.unique(test[:, 0]).tolist())
    assert abs(len(ranked[0]) - len(ranked[1])) <= 1
    for r, out in enumerate(outs):
        got = out["metrics"]
        assert list(got) == list(single)
        for k, v in single.items():
            assert got[k] == pytest.approx(v, abs=1e-6), (r, k)


def test_valid_users_ranks_a_fixed_sample_and_test_every_user():
    """``EvalSpec.valid_users``: validation metrics are those of a brute-force loop over just
    the sampled users (the same sample every time); test metrics do not change."""
    from recmind_dist.data.split import SplitData
    from recmind_dist.eval.evaluator import SplitEvaluator, user_sample
    from recmind_dist.specs import EvalSpec

    rng = np.random.default_rng(3)
    nu, ni = 40, 30
    rows = [[], [], []]
    for u in range(nu):
        perm = rng.permutation(ni)
        rows[0] += [(u, int(i)) for i in perm[:6]]
        rows[1] += [(u, int(i)) for i in perm[6 : 6 + 1 + u % 3]]
        rows[2] += [(u, int(i)) for i in perm[9:11]]
    train, valid, test = (np.array(r, dtype=np.int64) for r in rows)
    data = SplitData(nu, ni, train, valid, test, np.arange(nu), np.arange(ni), "k", 0)
    g = torch.Generator().manual_seed(0)
    user, item = torch.randn(nu, 8, generator=g), torch.randn(ni, 8, generator=g)
    full = SplitEvaluator(data, EvalSpec(ks=[5]))
    sampled = SplitEvaluator(data, EvalSpec(ks=[5], valid_users=7))

    picked = np.unique(user_sample(valid, 7)[:, 0])
    assert len(picked) == 7 and np.array_equal(picked, np.unique(user_sample(valid, 7)[:, 0]))
    recalls = []
    for u in picked:
        scores = (user[u] @ item.T).clone()
        scores[train[train[:, 0] == u, 1]] = -np.inf
        top = set(torch.topk(scores, 5).indices.tolist())
        truth = set(valid[valid[:, 0] == u, 1].tolist())
        recalls.append(len(top & truth) / len(truth))
    got = sampled.evaluate_tables(user, item, "valid", buckets=False)
    assert got["recall_at_5"] == pytest.approx(np.mean(recalls))
    assert got["recall_at_5"] != pytest.approx(
        full.evaluate_tables(user, item, "valid", buckets=False)["recall_at_5"])
    assert sampled.evaluate_tables(user, item, "test") == \
        full.evaluate_tables(user, item, "test")
    assert user_sample(valid, 1000) is valid


def test_rank_within_cold_matches_a_brute_force_loop_over_cold_items():
    """``within_cold/recall_at_k``: each user's held-out cold items found in the top-K of the
    cold items alone (train/valid items excluded), against a plain loop; logged on test only,
    skipped when the bucket has fewer items than K."""
    from recmind_dist.data.split import SplitData
    from recmind_dist.eval.evaluator import SplitEvaluator
    from recmind_dist.specs import EvalSpec

    rng = np.random.default_rng(5)
    nu, ni = 30, 60
    popular, rare = np.arange(40), np.arange(40, ni)
    rows = [[], [], []]
    for u in range(nu):
        liked = rng.choice(popular, 8, replace=False)
        rows[0] += [(u, int(i)) for i in liked[:6]]
        rows[1] += [(u, int(liked[6]))]
        rows[2] += [(u, int(liked[7])), (u, int(rng.choice(rare)))]
    rows[0] += [(0, int(i)) for i in rare[:5]]  # a few training edges on rare items
    train, valid, test = (np.array(r, dtype=np.int64) for r in rows)
    data = SplitData(nu, ni, train, valid, test, np.arange(nu), np.arange(ni), "k", 0)
    g = torch.Generator().manual_seed(1)
    user, item = torch.randn(nu, 8, generator=g), torch.randn(ni, 8, generator=g)
    ev = SplitEvaluator(data, EvalSpec(ks=[3, 5]))
    cold = np.flatnonzero(ev.buckets["cold"])
    assert set(rare) <= set(cold) and len(cold) < ni

    got = ev.evaluate_tables(user, item, "test")
    for k in (3, 5):
        recalls = []
        for u in range(nu):
            truth = set(test[test[:, 0] == u, 1].tolist()) & set(cold.tolist())
            if not truth:
                continue
            seen = set(train[train[:, 0] == u, 1].tolist()) | set(valid[valid[:, 0] == u, 1])
            cand = [i for i in cold if i not in seen]
            scores = (user[u] @ item[cand].T)
            top = {cand[j] for j in torch.topk(scores, k).indices.tolist()}
            recalls.append(len(top & truth) / len(truth))
        assert got[f"within_cold/recall_at_{k}"] == pytest.approx(np.mean(recalls))
        assert got["within_cold/n_users"] == len(recalls)
        # ranked among the cold items only, they are found more often than in the catalogue
        assert got[f"within_cold/recall_at_{k}"] >= got[f"cold/recall_at_{k}"]
    assert not any(k.startswith("within_") for k in ev.evaluate_tables(user, item, "valid"))
    assert not any(k.startswith("within_") for k in SplitEvaluator(
        data, EvalSpec(ks=[3], rank_within=[])).evaluate_tables(user, item, "test"))
    assert not any(k.startswith("within_") for k in SplitEvaluator(
        data, EvalSpec(ks=[len(cold) + 1])).evaluate_tables(user, item, "test"))
