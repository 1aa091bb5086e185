"""Evaluate any model of the contract on an `EvalSet`: item table once, users in batches,
exact ranks per user, metrics computed once over all users (gathered across processes)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from transrec.data.sequences import EvalCollator, EvalDataset
from transrec.data.splits import EvalSet
from transrec.errors import ConfigError
from transrec.evaluation.metrics import metrics_from_ranks
from transrec.evaluation.ranking import exact_ranks, sampled_ranks

PROTOCOLS = ("full", "sampled_legacy")


def eval_loader(cases: EvalSet, max_len: int, batch_size: int) -> DataLoader:
    return DataLoader(EvalDataset(cases, max_len), batch_size=batch_size, shuffle=False,
                      collate_fn=EvalCollator(max_len))


@torch.no_grad()
def compute_ranks(model: nn.Module, loader, protocol: str = "full", exclude_history: bool = True,
                  chunk_size: int = 65536, num_negatives: int = 99, seed: int = 0,
                  gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """0-based rank of each user's target. `gather` (e.g. accelerate's `gather_for_metrics`)
    collects per-user ranks from every process, so metrics are computed over all users once."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"eval.protocol must be one of {PROTOCOLS}, got {protocol!r}")
    was_training = model.training
    model.eval()
    item_vecs = model.all_item_vectors().float()
    generator = torch.Generator().manual_seed(seed)
    all_ranks = []
    for batch in loader:
        users = model.encode_users(batch).float()
        targets, history = batch["targets"], batch["history"]
        if protocol == "full":
            ranks = exact_ranks(users, item_vecs, targets, history, exclude_history=exclude_history,
                                chunk_size=chunk_size)
        else:
            ranks = sampled_ranks(users.cpu(), item_vecs.cpu(), targets.cpu(), history.cpu(),
                                  num_negatives=num_negatives, generator=generator,
                                  exclude_history=exclude_history).to(targets.device)
        all_ranks.append(gather(ranks) if gather is not None else ranks)
    model.train(was_training)
    return torch.cat(all_ranks).cpu().numpy()


def evaluate(model: nn.Module, cases: EvalSet, eval_cfg, max_len: int, device: str | torch.device = "cpu",
             ) -> dict[str, float]:
    """Single-process evaluation (the CLI's `evaluate`, tests, benchmarks)."""
    loader = eval_loader(cases, max_len, eval_cfg.batch_size)
    model = model.to(device)

    def to_device(batches):
        for b in batches:
            yield {k: v.to(device) for k, v in b.items()}

    ranks = compute_ranks(model, to_device(loader), eval_cfg.protocol, eval_cfg.exclude_history,
                          eval_cfg.chunk_size, eval_cfg.num_negatives)
    return metrics_from_ranks(ranks, ks=tuple(eval_cfg.ks))
