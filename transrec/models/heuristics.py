"""Training-free baselines a user would try before training anything, in the model contract.

- `ContentKNN`: rank items by cosine similarity of their content features to the user's last item
  (`last`) or to the mean of the history (`mean`). Features come from a pretrained content encoder
  (`encoder_features`: its pooled output, no projection) or from TF-IDF over item texts
  (`tfidf_features`). A text item and an image item are never similar (their features live in
  separate blocks).
- `WithPopularityPrior`: any model's score + w * log(1 + count), counts from the training
  interactions; `fit_prior_weight` picks w on validation cases. Content-only heuristics read no
  interaction of the domain; with the prior they read its training counts (label them so).

Both are plain dot products of user and item vectors, so the exact evaluator ranks them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transrec.data.text_features import tfidf_features  # noqa: F401  (re-exported: a heuristic's features)
from transrec.errors import ConfigError

KNN_MODES = ("last", "mean")
#: prior weights tried on validation (0 = no prior); wide, because score scales differ by model (cosines
#: in [-1, 1], trained logits in the tens); the largest make it popularity with content breaking ties
PRIOR_GRID = (0.0, 0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 1000.0)


class ContentKNN(nn.Module):
    """Cosine similarity of unit-norm item features to the last item / the history mean."""

    def __init__(self, features: torch.Tensor, mode: str = "last", max_len: int = 50):
        super().__init__()
        if mode not in KNN_MODES:
            raise ConfigError(f"content_knn mode must be one of {KNN_MODES}, got {mode!r}")
        feats = F.normalize(features.float(), dim=-1)
        feats[0] = 0.0
        self.register_buffer("features", feats)
        self.mode, self.max_len = mode, max_len
        self.num_items = features.shape[0] - 1

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        return self.features[items]

    def all_item_vectors(self) -> torch.Tensor:
        return self.features

    def encode_users(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["items"].to(self.features.device)
        if self.mode == "last":
            return self.features[items[:, -1]]  # left-padded: the last column is the last real item
        return F.normalize(self.features[items].sum(1), dim=-1)  # padding rows are zero

    @staticmethod
    def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T


class FusedScores(nn.Module):
    """sum_k weight_k * score_k(user, item) over models of the contract, as one dot product (user and
    item vectors of the parts concatenated, the users' scaled by the weights). Item vectors are
    computed once (evaluation only)."""

    def __init__(self, parts: list[nn.Module], weights: list[float]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.weights = [float(w) for w in weights]
        self.max_len = getattr(parts[0], "max_len", 50)
        with torch.no_grad():
            vectors = []
            for part in parts:
                was_training = part.training
                part.eval()
                vectors.append(part.all_item_vectors().float().cpu())
                part.train(was_training)
        self.register_buffer("items", torch.cat(vectors, -1))

    def all_item_vectors(self) -> torch.Tensor:
        return self.items

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        return self.items[items]

    def encode_users(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users = [w * part.encode_users(batch).float().cpu() for part, w in zip(self.parts, self.weights)]
        return torch.cat(users, -1)

    @staticmethod
    def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T


class MemoUsers(nn.Module):
    """A part whose user vectors are computed once per distinct batch (a grid search re-reads the same
    validation batches for every weight combination; the user encoder need not run again). Wrap parts
    once to share the memo across several `fit_fusion` calls on the same cases."""

    def __init__(self, part: nn.Module):
        super().__init__()
        self.part = part
        self._users: dict[tuple, torch.Tensor] = {}

    def all_item_vectors(self) -> torch.Tensor:
        return self.part.all_item_vectors()

    def encode_users(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        key = tuple((k, tuple(v.shape), v.cpu().numpy().tobytes()) for k, v in sorted(batch.items()))
        if key not in self._users:
            self._users[key] = self.part.encode_users(batch)
        return self._users[key]


def fit_fusion(parts: list[nn.Module], grids: list[tuple[float, ...]], valid_cases, eval_cfg, max_len: int,
               metric: str = "NDCG@10") -> tuple[list[float], dict[tuple[float, ...], float]]:
    """The weights (one grid per part; the first part's grid is usually (1.0,)) with the best validation
    `metric`, by exhaustive search -> (weights, {weights: metric}). Ties go to the earlier grid point."""
    import itertools

    combos = [tuple(float(w) for w in weights) for weights in itertools.product(*grids) if any(weights)]
    if eval_cfg.protocol == "full":
        tried = grid_metrics(parts, combos, valid_cases, eval_cfg, max_len, metric)
    else:  # the sampled protocol draws negatives per evaluation: rank each weighting the evaluator's way
        from transrec.evaluation.evaluator import evaluate

        fused = FusedScores([p if isinstance(p, MemoUsers) else MemoUsers(p) for p in parts], [1.0] * len(parts))
        tried = {}
        for weights in combos:
            fused.weights = list(weights)
            tried[weights] = evaluate(fused, valid_cases, eval_cfg, max_len)[metric]
    best = max(tried, key=tried.get)  # the first of equal values: grid order
    return list(best), tried


@torch.no_grad()
def grid_metrics(parts: list[nn.Module], combos: list[tuple[float, ...]], cases, eval_cfg, max_len: int,
                 metric: str = "NDCG@10") -> dict[tuple[float, ...], float]:
    """Exact full-ranking `metric` of sum_k w_k * score_k for every weight tuple in `combos`. Each part
    scores every item once per batch of cases; each weighting is then a weighted sum of those score
    matrices, ranked with the evaluator's tie rule (`ranks_from_scores`), instead of a GEMM over the
    parts' concatenated vectors per weighting: a grid of hundreds of points over wide TF-IDF vectors
    and a large catalogue costs about one evaluation per part."""
    from transrec.evaluation.evaluator import eval_loader
    from transrec.evaluation.metrics import metrics_from_ranks
    from transrec.evaluation.ranking import ranks_from_scores

    modes = [part.training for part in parts]
    for part in parts:
        part.eval()  # items and users alike (no dropout), as the evaluator does
    items = [part.all_item_vectors().float().cpu() for part in parts]
    ranks: list[list[torch.Tensor]] = [[] for _ in combos]
    for batch in eval_loader(cases, max_len, eval_cfg.batch_size):
        scores = [part.encode_users(batch).float().cpu() @ vectors.T for part, vectors in zip(parts, items)]
        fused, buffer = torch.empty_like(scores[0]), torch.empty_like(scores[0])
        for i, combo in enumerate(combos):
            terms = [(weight, part_scores) for weight, part_scores in zip(combo, scores) if weight]
            if not terms:
                fused.zero_()
            for j, (weight, part_scores) in enumerate(terms):
                if j == 0:
                    torch.mul(part_scores, weight, out=fused)
                else:
                    fused.add_(part_scores, alpha=weight)
            ranks[i].append(ranks_from_scores(fused, batch["targets"], batch["history"], eval_cfg.exclude_history,
                                              buffer))
    for part, mode in zip(parts, modes):
        part.train(mode)
    ks = tuple(eval_cfg.ks)
    return {combo: metrics_from_ranks(torch.cat(r).numpy(), ks=ks)[metric] for combo, r in zip(combos, ranks)}


class _LogCounts(nn.Module):
    """log(1 + count) per item as a model of the contract (users = 1), from counts rather than sequences."""

    def __init__(self, counts: np.ndarray | torch.Tensor):
        super().__init__()
        log_counts = torch.log1p(torch.as_tensor(np.asarray(counts), dtype=torch.float32))
        log_counts[0] = 0.0
        self.register_buffer("log_counts", log_counts.unsqueeze(-1))

    def all_item_vectors(self) -> torch.Tensor:
        return self.log_counts

    def encode_users(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.ones(batch["items"].shape[0], 1)


class WithPopularityPrior(FusedScores):
    """`model`'s score + weight * log(1 + count); item vectors computed once (evaluation, not training)."""

    def __init__(self, model: nn.Module, counts: np.ndarray | torch.Tensor, weight: float = 0.0):
        prior = _LogCounts(counts)
        with torch.no_grad():
            was_training = model.training
            n = len(model.eval().all_item_vectors())
            model.train(was_training)
        if len(prior.log_counts) != n:
            raise ConfigError(f"popularity counts for {len(prior.log_counts) - 1} items, model has {n - 1}")
        super().__init__([model, prior], [1.0, weight])

    @property
    def weight(self) -> float:
        return self.weights[1]

    @weight.setter
    def weight(self, value: float) -> None:
        self.weights[1] = float(value)


def fit_prior_weight(model: nn.Module, counts: np.ndarray, valid_cases, eval_cfg, max_len: int,
                     grid: tuple[float, ...] = PRIOR_GRID, metric: str = "NDCG@10") -> tuple[float, dict]:
    """The prior weight in `grid` with the best validation `metric` -> (weight, {weight: metric})."""
    weights, tried = fit_fusion([model, _LogCounts(counts)], [(1.0,), grid], valid_cases, eval_cfg, max_len, metric)
    return weights[1], {w: v for (_, w), v in tried.items()}


# ----------------------------------------------------------------------------- features

@torch.no_grad()
def encoder_features(encoder: nn.Module, centred: bool = False, batch_size: int = 256) -> torch.Tensor:
    """Unit-norm pooled features [n+1, h] of every item attached to a content item encoder (row 0 = 0);
    uncentred by default (the plain pretrained-encoder cosine a user would try)."""
    if not hasattr(encoder, "similarity_features"):
        raise ConfigError("encoder features need a content item encoder (text, image, mixture)")
    was_training = encoder.training
    encoder.eval()
    n = encoder.content.num_items
    rows = [encoder.similarity_features(torch.arange(s, min(s + batch_size, n + 1)), centred=centred)
            for s in range(0, n + 1, batch_size)]
    encoder.train(was_training)
    return torch.cat(rows).cpu()

