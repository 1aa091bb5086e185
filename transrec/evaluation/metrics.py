"""Top-K metrics computed from per-user ranks.

Metrics take ranks, not scores, so that ranks can be gathered across processes and
reduced once (per-process averages of unequal shards would be biased).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

KS: tuple[int, ...] = (5, 10, 20)


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """Names in the order `metrics_from_ranks` returns them: HR, NDCG, MRR per K."""
    return [f"{m}@{k}" for k in ks for m in ("HR", "NDCG", "MRR")]


def metrics_from_ranks(
    ranks: torch.Tensor | np.ndarray | Sequence[int], ks: Sequence[int] = KS
) -> dict[str, float]:
    """HR@K, NDCG@K and MRR@K (means over users) from 0-based ranks (0 = top).

    With a single relevant item per user, NDCG@K is 1/log2(rank+2) inside the cut-off
    (the ideal DCG is 1) and MRR@K is 1/(rank+1); both are 0 outside it.
    """
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {r.shape}")
    if r.size == 0:
        raise ValueError("cannot compute metrics from an empty rank list")
    if not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranks must be integers, got dtype {r.dtype}")
    if (r < 0).any():
        raise ValueError("ranks must be >= 0")
    r = r.astype(np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0).mean())
        out[f"MRR@{k}"] = float(np.where(hit, 1.0 / (r + 1.0), 0.0).mean())
    return out


def format_table(
    rows: Mapping[str, Mapping[str, float]],
    keys: Sequence[str] = ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20"),
) -> str:
    """A markdown table, one row per model, 4 decimals; a missing metric prints as '-'."""
    lines = [
        "| model | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, values in rows.items():
        cells = [f"{values[k]:.4f}" if k in values else "-" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
