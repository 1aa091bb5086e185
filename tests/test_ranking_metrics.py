"""Ranking and metrics against plain brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transrec.evaluation.metrics import KS, format_table, metric_names, metrics_from_ranks
from transrec.evaluation.ranking import TIE_RTOL, exact_ranks, ranks_from_scores, sampled_ranks


def brute_ranks(U, V, targets, history, exclude_history):
    """Full float64 score matrix and python loops: the definition, written plainly."""
    U, V = np.asarray(U, np.float64), np.asarray(V, np.float64)
    S = U @ V.T
    out = []
    for u, t in enumerate(targets):
        st = float(U[u] @ V[t])
        thr = st - TIE_RTOL * (abs(st) + 1)
        skip = {0, t}
        if exclude_history and history is not None:
            skip |= {int(i) for i in history[u] if int(i) != t}
        out.append(sum(1 for j in range(1, V.shape[0]) if j not in skip and S[u, j] >= thr))
    return out


def make_case(seed, b=13, n=40, d=6, h=8, ties=True):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(b, d, generator=g, dtype=torch.float64)
    V = torch.randn(n + 1, d, generator=g, dtype=torch.float64)
    if ties:  # duplicate item vectors give exact ties
        V[5] = V[3]
        V[17] = V[3]
        V[30] = V[12]
    targets = torch.randint(1, n + 1, (b,), generator=g)
    targets[0], targets[1] = 3, 12  # targets with tied twins
    hist = torch.randint(0, n + 1, (b, h), generator=g)
    hist[:, -2:] = 0  # trailing padding
    hist[2, :3] = torch.tensor([7, 7, 7])  # duplicates
    hist[3, 1] = targets[3]  # target re-consumed
    hist[0, 0] = 5  # tied twin of the target in the history
    return U, V, targets, hist


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [1, 7, 40, 1000])
@pytest.mark.parametrize("exclude", [True, False])
def test_exact_matches_brute_force(seed, chunk, exclude):
    U, V, t, hist = make_case(seed)
    got = exact_ranks(U, V, t, hist, exclude_history=exclude, chunk_size=chunk)
    assert got.dtype == torch.long
    assert got.tolist() == brute_ranks(U, V, t.tolist(), hist.tolist(), exclude)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exclude", [True, False])
def test_ranks_from_scores_match_brute_force(seed, exclude):
    U, V, t, hist = make_case(seed)
    got = ranks_from_scores(U @ V.T, t, hist, exclude_history=exclude)
    assert got.tolist() == brute_ranks(U, V, t.tolist(), hist.tolist(), exclude)
    assert ranks_from_scores(U @ V.T, t, None).tolist() == brute_ranks(U, V, t.tolist(), None, False)


def test_no_history_equals_unmasked():
    U, V, t, hist = make_case(4)
    a = exact_ranks(U, V, t, None)
    b = exact_ranks(U, V, t, hist, exclude_history=False)
    assert a.tolist() == b.tolist() == brute_ranks(U, V, t.tolist(), None, False)


def test_ties_are_pessimistic_and_padding_never_candidate():
    V = torch.tensor([[100.0], [1.0], [1.0], [1.0], [0.5]], dtype=torch.float64)
    U = torch.ones(2, 1, dtype=torch.float64)
    t = torch.tensor([1, 4])
    # row 0 (score 100) is padding and ignored; target 1 ties with items 2, 3
    assert exact_ranks(U, V, t, None).tolist() == [2, 3]
    # excluding a tied twin via history lowers the rank; duplicates subtract once
    hist = torch.tensor([[2, 2, 0], [0, 0, 0]])
    assert exact_ranks(U, V, t, hist).tolist() == [1, 3]


def test_target_in_history_stays_rankable():
    V = torch.tensor([[0.0], [3.0], [2.0], [1.0]], dtype=torch.float64)
    U = torch.ones(1, 1, dtype=torch.float64)
    hist = torch.tensor([[2, 2, 2, 0]])  # target 2 re-consumed
    assert exact_ranks(U, V, torch.tensor([2]), hist).tolist() == [1]
    hist = torch.tensor([[1, 2, 0]])
    assert exact_ranks(U, V, torch.tensor([2]), hist).tolist() == [0]


def test_float32_well_separated():
    g = torch.Generator().manual_seed(5)
    b, n, d = 16, 200, 8
    U = torch.randn(b, d, generator=g)
    # items on distinct, well-separated scores along a direction shared by all users
    V = torch.zeros(n + 1, d)
    V[1:, 0] = torch.randperm(n, generator=g).float() * 0.05
    U[:, 0] = U[:, 0].abs() + 0.5
    U[:, 1:] = 0
    t = torch.randint(1, n + 1, (b,), generator=g)
    hist = torch.randint(0, n + 1, (b, 10), generator=g)
    for chunk in (1, 7, n, 4 * n):
        got = exact_ranks(U, V, t, hist, chunk_size=chunk)
        assert got.tolist() == brute_ranks(U.numpy(), V.numpy(), t.tolist(), hist.tolist(), True)


def test_exact_input_errors():
    U, V, t, hist = make_case(0)
    with pytest.raises(ValueError):
        exact_ranks(U, V, torch.zeros_like(t), hist)
    with pytest.raises(ValueError):
        exact_ranks(U, V, t, hist, chunk_size=0)


def test_metrics_hand_computed():
    ranks = [0, 3, 9, 25]
    m = metrics_from_ranks(torch.tensor(ranks))
    assert list(m) == metric_names() == [
        "HR@5", "NDCG@5", "MRR@5", "HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20"
    ]
    assert m["HR@5"] == pytest.approx(0.5)
    assert m["NDCG@5"] == pytest.approx((1 / math.log2(2) + 1 / math.log2(5)) / 4)
    assert m["MRR@5"] == pytest.approx((1 + 1 / 4) / 4)
    assert m["HR@10"] == pytest.approx(0.75)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 4)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 4 + 1 / 10) / 4)
    assert m["HR@20"] == pytest.approx(0.75)
    assert m["MRR@20"] == m["MRR@10"]
    assert all(type(v) is float for v in m.values())
    assert metrics_from_ranks(np.array(ranks)) == m
    assert metric_names((1,)) == ["HR@1", "NDCG@1", "MRR@1"]
    assert KS == (5, 10, 20)


def test_metrics_errors():
    with pytest.raises(ValueError):
        metrics_from_ranks(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError):
        metrics_from_ranks(np.array([-1]))


def test_format_table():
    s = format_table({"sasrec": metrics_from_ranks([0, 3, 9, 25]), "pop": {"HR@10": 0.1}})
    lines = s.splitlines()
    assert lines[0] == "| model | HR@10 | NDCG@10 | MRR@10 | HR@20 | NDCG@20 |"
    assert lines[2].startswith("| sasrec | 0.7500 | ")
    assert lines[3] == "| pop | 0.1000 | - | - | - | - |"


def test_sampled_ranks():
    U, V, t, hist = make_case(1, b=20, n=300, ties=False)
    hist[:, :6] = torch.randint(1, 301, (20, 6), generator=torch.Generator().manual_seed(9))
    a = sampled_ranks(U, V, t, hist, generator=torch.Generator().manual_seed(3))
    b = sampled_ranks(U, V, t, hist, generator=torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist()
    assert a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) <= 99
    # a sampled rank never exceeds the exact one (negatives are a subset of candidates)
    assert (a <= exact_ranks(U, V, t, hist)).all()


def test_sampled_negatives_exclude_target_and_history():
    # Item j scores -j, so a lower id scores higher.
    n = 200
    V = torch.zeros(n + 1, 1, dtype=torch.float64)
    V[1:, 0] = -torch.arange(1, n + 1, dtype=torch.float64)
    U = torch.ones(1, 1, dtype=torch.float64)
    # With history exclusion: items 1..100 in history, target 101, so all negatives come
    # from 102..200 (99 items, exactly enough) and every one scores below the target.
    t = torch.tensor([101])
    hist = torch.arange(1, 101)[None]
    r = sampled_ranks(U, V, t, hist, generator=torch.Generator().manual_seed(0))
    assert r.tolist() == [0]
    # Without exclusion, sampling still never picks the target but can pick history.
    r = sampled_ranks(U, V, t, hist, generator=torch.Generator().manual_seed(0), exclude_history=False)
    assert 0 < int(r) <= 99
    # Too few candidates -> error rather than an infinite loop.
    with pytest.raises(ValueError):
        sampled_ranks(U, V, torch.tensor([150]), torch.arange(1, 102)[None])


def test_sampled_target_never_negative():
    # All items tie with the target: the target itself would add +1 if sampled; with n-1 = 99
    # other items the only possible draw is all of them, rank exactly 99.
    V = torch.ones(101, 2, dtype=torch.float64)
    U = torch.ones(3, 2, dtype=torch.float64)
    r = sampled_ranks(U, V, torch.tensor([1, 50, 100]), None, generator=torch.Generator().manual_seed(1))
    assert r.tolist() == [99, 99, 99]
