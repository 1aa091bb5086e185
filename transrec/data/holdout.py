"""Split one dataset into two disjoint catalogues (and, optionally, user bases): a pseudo new domain for
checking how a content model does on items it never saw, without touching the real target.

A uniformly random half of a catalogue is a mild shift: every held-out item has near neighbours in the
kept half, and the same users rate both. A real new domain is a different catalogue rated by other
people. `by="content"` holds out whole clusters of similar item texts (spherical k-means on TF-IDF),
so the held-out side's content differs from the kept side's; `users=True` gives each side its own users.
"""

from __future__ import annotations

import numpy as np
import torch

from transrec.data.schema import RecDataset
from transrec.data.text_features import tfidf_features
from transrec.errors import ConfigError

HOLDOUT_BY = ("random", "content")
#: clusters of the content hold-out: enough that a half is several whole topics, few enough to be topics
N_CLUSTERS = 16
KMEANS_ITERATIONS = 25


def hold_out_items(dataset: RecDataset, share: float, side: str, seed: int = 0, by: str = "random",
                   users: bool = False) -> RecDataset:
    """Hold out a seeded `share` of the items (and of the users if `users`) and keep one side with its
    interactions: `train` the rest, `heldout` the held-out items (rated by the held-out users)."""
    from transrec.data.pipeline import restrict_dataset

    _check(share, side, "item_holdout")
    if by not in HOLDOUT_BY:
        raise ConfigError(f"data.item_holdout_by must be one of {', '.join(HOLDOUT_BY)}, got {by!r}")
    rng = np.random.default_rng(seed)
    n = dataset.items.num_items
    held = np.zeros(n + 1, dtype=bool)
    held[1 + _held_positions(dataset, share, rng, by)] = True
    keep = np.flatnonzero(held if side == "heldout" else ~held)
    keep = keep[keep > 0]
    user_mask = _user_side(len(dataset.interactions.users), share, side, rng) if users else None
    name = f"{dataset.name}[{side} items{' and users' * users}, holdout {share:g} by {by}]"
    return restrict_dataset(dataset, keep, name, user_mask)


def hold_out_users(dataset: RecDataset, share: float, side: str, seed: int = 0) -> RecDataset:
    """Keep one side of a seeded `share` of the users (`heldout`) or the rest (`train`), every item kept:
    two configs that differ only in the side get disjoint user bases (users are drawn by their index in
    the loaded file, before any domain filter, so a source and a target config of one dataset agree)."""
    from transrec.data.pipeline import restrict_dataset

    _check(share, side, "user_holdout")
    user_mask = _user_side(len(dataset.interactions.users), share, side, np.random.default_rng(seed))
    every_item = np.arange(1, dataset.items.num_items + 1)
    return restrict_dataset(dataset, every_item, f"{dataset.name}[{side} users, holdout {share:g}]", user_mask)


def _check(share: float, side: str, key: str) -> None:
    if not 0 < share < 1:
        raise ConfigError(f"data.{key} must be in (0, 1), got {share}")
    if side not in ("train", "heldout"):
        raise ConfigError(f"data.{key}_side must be train or heldout, got {side!r}")


def _user_side(num_users: int, share: float, side: str, rng: np.random.Generator) -> np.ndarray:
    """Mask over user indices (0 = padding) of one side of a seeded `share` of the users."""
    held = np.zeros(num_users + 1, dtype=bool)
    held[1 + rng.permutation(num_users)[: max(1, round(share * num_users))]] = True
    return held if side == "heldout" else ~held


def _held_positions(dataset: RecDataset, share: float, rng: np.random.Generator, by: str) -> np.ndarray:
    """0-based positions of the held-out items: a `share` of all, or (content) of the text items by whole
    clusters and of the others (no text to cluster) uniformly."""
    n = dataset.items.num_items
    if by == "random":
        return rng.permutation(n)[: max(1, round(share * n))]
    texts = [t if m == "text" else None for t, m in zip(dataset.items.text[1:], dataset.items.modality[1:])]
    with_text = np.array([i for i, t in enumerate(texts) if t], dtype=np.int64)
    others = np.setdiff1d(np.arange(n), with_text)
    held = [others[rng.permutation(len(others))[: round(share * len(others))]]]
    if len(with_text):
        labels = content_clusters(tfidf_features([texts[i] for i in with_text], max_features=2048)[1:],
                                  min(N_CLUSTERS, len(with_text)), rng)
        rank = rng.permutation(labels.max() + 1)[labels]  # clusters in a seeded order, whole ones first
        order = np.lexsort((rng.random(len(with_text)), rank))
        held.append(with_text[order[: max(1, round(share * len(with_text)))]])
    return np.concatenate(held)


def content_clusters(features: torch.Tensor, k: int, rng: np.random.Generator) -> np.ndarray:
    """Spherical k-means of unit-norm rows -> a cluster label per row (seeded start, fixed iterations)."""
    centres = features[torch.as_tensor(rng.choice(len(features), size=k, replace=False))].clone()
    labels = torch.zeros(len(features), dtype=torch.long)
    for _ in range(KMEANS_ITERATIONS):
        labels = (features @ centres.T).argmax(1)
        for c in range(k):
            members = features[labels == c]
            if len(members):  # an emptied cluster keeps its old centre
                centres[c] = torch.nn.functional.normalize(members.sum(0), dim=0)
    _, dense = torch.unique(labels, return_inverse=True)
    return dense.numpy()
