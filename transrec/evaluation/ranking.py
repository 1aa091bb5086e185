"""Ranks of held-out target items: exact full ranking (the default) and the legacy
sampled protocol.

A rank is 0-based: the number of candidates placed above the target. Ties are counted
pessimistically (an item scoring equal to the target counts as above it), so a model that
gives every item the same score gets the worst rank rather than a lucky one.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Relative tie tolerance. The target's score is a row-wise dot product, the candidates'
# scores come from a GEMM; in float32 the two can differ in the last bits for the same
# item. An item counts as "above" the target when score >= s_t - TIE_RTOL * (|s_t| + 1),
# so exact ties stay pessimistic whichever kernel rounded which way. 1e-6 is a few float32
# ulps at |s| ~ 1, far below any score gap a model meaningfully expresses.
TIE_RTOL = 1e-6


def _prepare(user_vecs: Tensor, item_vecs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
    """Check shapes/ranges; upcast half precision (the tolerance assumes >= float32)."""
    if user_vecs.ndim != 2 or item_vecs.ndim != 2 or user_vecs.shape[1] != item_vecs.shape[1]:
        raise ValueError(
            f"need user_vecs [b,d] and item_vecs [n+1,d], got {tuple(user_vecs.shape)} "
            f"and {tuple(item_vecs.shape)}"
        )
    if targets.shape != (user_vecs.shape[0],):
        raise ValueError(f"targets must have shape ({user_vecs.shape[0]},), got {tuple(targets.shape)}")
    n = item_vecs.shape[0] - 1
    if n < 1:
        raise ValueError("item_vecs must hold the padding row and at least one item")
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) > n):
        raise ValueError(f"targets must lie in 1..{n} (0 is padding)")
    if user_vecs.dtype in (torch.float16, torch.bfloat16):
        user_vecs = user_vecs.float()
    if item_vecs.dtype in (torch.float16, torch.bfloat16):
        item_vecs = item_vecs.float()
    return user_vecs, item_vecs, n


def _threshold(user_vecs: Tensor, item_vecs: Tensor, targets: Tensor) -> Tensor:
    """s_t - tol per user: any candidate scoring at least this counts as above the target."""
    s_t = (user_vecs * item_vecs[targets]).sum(-1)
    return s_t - TIE_RTOL * (s_t.abs() + 1)


def _excluded(targets: Tensor, history: Tensor | None, exclude_history: bool) -> tuple[Tensor, Tensor]:
    """Per-row items to drop from the candidates: the target itself plus, optionally, the
    history. Returns (items [b,e], valid [b,e]); history entries are sorted and marked
    invalid when padding, equal to the target, or a repeat, so each item is dropped once."""
    items, valid = targets[:, None], torch.ones_like(targets[:, None], dtype=torch.bool)
    if exclude_history and history is not None and history.numel():
        if history.ndim != 2 or history.shape[0] != targets.shape[0]:
            raise ValueError(f"history must have shape [b,h], got {tuple(history.shape)}")
        hs = history.to(targets.device, torch.long).sort(dim=1).values
        ok = (hs != 0) & (hs != targets[:, None])
        ok[:, 1:] &= hs[:, 1:] != hs[:, :-1]
        items, valid = torch.cat([items, hs], 1), torch.cat([valid, ok], 1)
    return items, valid


def exact_ranks(
    user_vecs: Tensor,
    item_vecs: Tensor,
    targets: Tensor,
    history: Tensor | None,
    exclude_history: bool = True,
    chunk_size: int = 65536,
) -> Tensor:
    """Exact full-ranking rank of each target among items 1..n (row 0 is padding).

    Scores are dot products. Per chunk of `chunk_size` items: one GEMM into a buffer that is
    allocated once and reused, the comparison with the tie threshold written in place as
    1.0 / 0.0, a float row sum (exact: a chunk holds at most 2**24 items), and a gather at
    the excluded columns (target + deduplicated history) that lie in the chunk. Correcting
    from the same comparison keeps the count and its correction consistent bit for bit, and
    memory stays O(b * chunk_size). A target that also occurs in the history stays rankable.
    (Summing floats is several times faster on CPU than reducing a bool matrix, which torch
    widens to int64 first.)
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    with torch.no_grad():
        user_vecs, item_vecs, n = _prepare(user_vecs, item_vecs, targets)
        targets = targets.to(user_vecs.device, torch.long)
        thr = _threshold(user_vecs, item_vecs, targets)[:, None]
        excl, valid = _excluded(targets, history, exclude_history)
        if history is not None and exclude_history and history.numel():
            if int(history.min()) < 0 or int(history.max()) > n:
                raise ValueError(f"history items must lie in 0..{n}")
        b, w = user_vecs.shape[0], min(chunk_size, n, 2**24)
        buffer = user_vecs.new_empty(b * w)
        counts = torch.zeros(b, dtype=torch.long, device=user_vecs.device)
        for start in range(1, n + 1, w):
            end = min(start + w, n + 1)
            above = buffer[: b * (end - start)].view(b, end - start)
            torch.mm(user_vecs, item_vecs[start:end].T, out=above)
            torch.ge(above, thr, out=above)  # 1.0 where the item counts as above the target
            in_chunk = valid & (excl >= start) & (excl < end)
            idx = (excl - start).clamp(0, end - start - 1)
            counts += (above.sum(1) - (above.gather(1, idx) * in_chunk).sum(1)).long()
        return counts


def ranks_from_scores(scores: Tensor, targets: Tensor, history: Tensor | None, exclude_history: bool = True,
                      buffer: Tensor | None = None) -> Tensor:
    """`exact_ranks` for scores already computed, [b, n+1] (column 0 padding): the same tie rule and
    exclusions. For scoring many weightings of the same parts (a fusion's grid search) without a GEMM each.
    `buffer` (float, the shape of `scores`) is reused for the comparison if given."""
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"need scores [b,n+1] and targets [b], got {tuple(scores.shape)} and {tuple(targets.shape)}")
    targets = targets.to(scores.device, torch.long)
    s_t = scores.gather(1, targets[:, None])
    above = torch.ge(scores, s_t - TIE_RTOL * (s_t.abs() + 1), out=buffer)
    if above.dtype == torch.bool:
        above = above.to(scores.dtype)
    excl, valid = _excluded(targets, history, exclude_history)
    # float sums (exact below 2**24 items) are several times faster than reducing a bool matrix
    counts = above.sum(1) - above[:, 0] - (above.gather(1, excl.to(scores.device)) * valid.to(scores.device)).sum(1)
    return counts.long()


def sampled_ranks(
    user_vecs: Tensor,
    item_vecs: Tensor,
    targets: Tensor,
    history: Tensor | None,
    num_negatives: int = 99,
    generator: torch.Generator | None = None,
    exclude_history: bool = True,
    max_rounds: int = 10_000,
) -> Tensor:
    """LEGACY sampled protocol (target vs `num_negatives` random negatives, as in the 2020
    papers). Kept only to reproduce old numbers: it is NOT comparable to full ranking and
    inflates metrics. Every result that uses it must be labelled as sampled.

    Per user, `num_negatives` distinct items are drawn uniformly from 1..n, excluding the
    target and (when `exclude_history`) the history, by vectorised rejection sampling on
    the generator's device. Rank is in [0, num_negatives], ties pessimistic with the same
    tolerance as `exact_ranks`. Deterministic given a seeded generator.
    """
    with torch.no_grad():
        user_vecs, item_vecs, n = _prepare(user_vecs, item_vecs, targets)
        b, k = targets.shape[0], num_negatives
        dev = generator.device if generator is not None else user_vecs.device
        excl, valid = _excluded(targets.to(dev, torch.long), history, exclude_history)
        available = n - valid.sum(1)
        if b and int(available.min()) < k:
            raise ValueError(f"a user has fewer than {k} candidate negatives among {n} items")
        earlier = torch.ones(k, k, dtype=torch.bool, device=dev).tril(-1)  # j' < j

        def rejected(negs: Tensor) -> Tensor:
            hit_excl = ((negs[:, :, None] == excl[:, None, :]) & valid[:, None, :]).any(-1)
            repeat = ((negs[:, :, None] == negs[:, None, :]) & earlier).any(-1)
            return hit_excl | repeat

        negs = torch.randint(1, n + 1, (b, k), generator=generator, device=dev)
        bad = rejected(negs)
        for _ in range(max_rounds):
            m = int(bad.sum())
            if m == 0:
                break
            negs[bad] = torch.randint(1, n + 1, (m,), generator=generator, device=dev)
            bad = rejected(negs)
        else:
            raise RuntimeError("negative sampling did not converge")
        negs = negs.to(user_vecs.device)
        targets = targets.to(user_vecs.device, torch.long)
        thr = _threshold(user_vecs, item_vecs, targets)[:, None]
        neg_scores = (user_vecs[:, None, :] * item_vecs[negs]).sum(-1)  # [b, k]
        return (neg_scores >= thr).sum(1)
