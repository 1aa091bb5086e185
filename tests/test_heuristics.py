"""Training-free baselines: ranks equal a brute-force reference; the popularity prior is what it says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transrec.config import EvalConfig
from transrec.data.splits import EvalSet
from transrec.evaluation.evaluator import evaluate
from transrec.evaluation.metrics import metrics_from_ranks
from transrec.models.heuristics import (ContentKNN, FusedScores, WithPopularityPrior, _LogCounts, fit_fusion,
                                       fit_prior_weight, grid_metrics, tfidf_features)

TEXTS = ["red apple pie", "green apple", "red car fast", "blue car", "apple apple tart", "fast blue boat", ""]


def brute_force_ranks(scores: np.ndarray, cases: EvalSet, exclude_history: bool = True) -> np.ndarray:
    """0-based rank: items (not padding, not in the history) scoring >= the target, the target excluded."""
    ranks = []
    for u, (hist, target) in enumerate(zip(cases.histories, cases.targets)):
        s = scores[u].astype(np.float64)
        allowed = np.ones(len(s), bool)
        allowed[0] = False
        if exclude_history:
            allowed[hist] = False
        allowed[target] = False
        ranks.append(int(((s >= s[target]) & allowed).sum()))
    return np.array(ranks)


@pytest.fixture
def cases() -> EvalSet:
    histories = [np.array([1, 3]), np.array([2]), np.array([4, 6, 5]), np.array([3, 1, 7])]
    return EvalSet(users=np.arange(4), histories=histories, targets=np.array([5, 1, 2, 6]))


def test_tfidf_matches_a_hand_computation():
    feats = tfidf_features(TEXTS)
    n = len(TEXTS)
    df_apple = 3  # docs 1, 2, 5
    idf_apple = math.log((1 + n) / (1 + df_apple)) + 1
    idf_tart = math.log((1 + n) / 2) + 1
    # item 5: "apple apple tart": tf apple 1 + log 2
    raw = {"apple": (1 + math.log(2)) * idf_apple, "tart": idf_tart}
    norm = math.sqrt(sum(v * v for v in raw.values()))
    row = feats[5]
    assert row.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert sorted(row[row > 0].tolist()) == pytest.approx(sorted(v / norm for v in raw.values()), rel=1e-5)
    assert torch.equal(feats[0], torch.zeros_like(feats[0])) and torch.equal(feats[7], torch.zeros_like(feats[7]))


@pytest.mark.parametrize("mode", ["last", "mean"])
def test_content_knn_ranks_equal_brute_force(cases, mode):
    torch.manual_seed(0)
    raw = torch.randn(8, 5)
    raw[0] = 0
    model = ContentKNN(raw, mode, max_len=10)
    unit = F.normalize(raw, dim=-1).numpy()
    unit[0] = 0
    scores = []
    for hist in cases.histories:
        if mode == "last":
            user = unit[hist[-1]]
        else:
            user = unit[hist].sum(0)
            user = user / np.linalg.norm(user)
        scores.append(unit @ user)
    expected = metrics_from_ranks(brute_force_ranks(np.stack(scores), cases), ks=(5, 10, 20))
    got = evaluate(model, cases, EvalConfig(), max_len=10)
    assert got == pytest.approx(expected, abs=1e-9)


def test_popularity_prior_adds_weighted_log_counts(cases):
    feats = tfidf_features(TEXTS)
    counts = np.array([0, 5, 1, 0, 9, 2, 3, 0], dtype=float)
    base = ContentKNN(feats, "last", max_len=10)
    weight = 0.3
    prior = WithPopularityPrior(base, counts, weight)
    unit = feats.numpy()
    scores = np.stack([unit @ unit[h[-1]] + weight * np.log1p(counts) for h in cases.histories])
    expected = metrics_from_ranks(brute_force_ranks(scores, cases), ks=(5, 10, 20))
    assert evaluate(prior, cases, EvalConfig(), max_len=10) == pytest.approx(expected, abs=1e-9)
    # a huge weight is popularity order; weight 0 is the content score alone
    w, tried = fit_prior_weight(base, counts, cases, EvalConfig(), max_len=10, grid=(0.0, 1000.0))
    assert set(tried) == {0.0, 1000.0} and tried[w] == max(tried.values())


def test_fusion_grid_metrics_equal_the_evaluator_on_each_weighting(cases):
    """The grid search ranks weighted sums of per-part scores; each point must equal evaluating that
    fusion with the evaluator (a GEMM over the concatenated vectors), ties included."""
    torch.manual_seed(1)
    counts = np.array([0, 5, 1, 0, 9, 2, 3, 0], dtype=float)

    class WithDropout(ContentKNN):  # left in training mode: the search must score it in eval mode
        def __init__(self, features):
            super().__init__(features, "last", 10)
            self.dropout = torch.nn.Dropout(0.5)

        def encode_users(self, batch):
            return self.dropout(super().encode_users(batch))

    parts = [WithDropout(torch.randn(8, 5)).train(), ContentKNN(tfidf_features(TEXTS), "mean", 10),
             _LogCounts(counts)]
    grids = [(1.0,), (0.0, 0.5, 3.0), (0.0, 0.2, 1000.0)]
    combos = [(1.0, a, b) for a in grids[1] for b in grids[2]]
    found = grid_metrics(parts, combos, cases, EvalConfig(), max_len=10, metric="MRR@20")
    for combo in combos:
        expected = evaluate(FusedScores(parts, list(combo)), cases, EvalConfig(), max_len=10)["MRR@20"]
        assert found[combo] == pytest.approx(expected, abs=1e-12), combo
    weights, tried = fit_fusion(parts, grids, cases, EvalConfig(), max_len=10, metric="MRR@20")
    assert tried == pytest.approx(found) and tried[tuple(weights)] == max(found.values())
    assert parts[0].training  # modes restored


def test_tfidf_vocabulary_shrinks_on_a_catalogue_too_large_for_dense_rows(monkeypatch):
    import transrec.data.text_features as text_features

    texts = [f"common word{i} rare{i}" for i in range(600)] + ["common shared", "shared common"]
    full = tfidf_features(texts)
    assert full.shape == (603, 1202)  # common, shared, 600 word<i>, 600 rare<i>: nothing capped
    monkeypatch.setattr(text_features, "MAX_CELLS", 603 * 300)  # room for 300 columns: the floor of 256 is kept
    small = tfidf_features(texts)
    assert small.shape == (603, 300)
    # the terms kept are those found in the most items: the two shared ones match as before
    assert (small[601] @ small[602]).item() == pytest.approx((full[601] @ full[602]).item(), rel=1e-6)


def test_lexical_texts_can_drop_numbers_and_the_model_keeps_the_choice(tmp_path):
    from transrec.data.schema import ItemCatalog
    from transrec.hub import load_model, save_model
    from transrec.models.recommender import SequentialRecommender, lexical_texts

    catalog = ItemCatalog.from_records(["a", "b", "c"], ["text", "image", "text"],
                                       ["Heat (1995). Year: 1995.", None, "Rocky II (1979)"],
                                       [None, "x.png", None])
    assert lexical_texts(catalog) == ["Heat (1995). Year: 1995.", None, "Rocky II (1979)"]
    assert lexical_texts(catalog, numbers=False) == ["Heat ( ). Year:  .", None, "Rocky II ( )"]
    model = SequentialRecommender(num_items=3, lexical_numbers=False)
    save_model(model, tmp_path / "m", ["a", "b", "c"])
    assert load_model(tmp_path / "m").lexical_numbers is False
