import math

import numpy as np
import torch

from recmind_dist.eval.ranking import degree_buckets, evaluate_ranking, interaction_matrix


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
