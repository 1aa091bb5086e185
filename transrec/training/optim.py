"""Optimizer parameter groups and learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from transrec.errors import ConfigError

SCHEDULES = ("constant", "linear", "cosine")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices of linear/conv layers only: never on biases, norms or embeddings."""
    decay, no_decay = [], []
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm, nn.BatchNorm1d, nn.GroupNorm)):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or id(param) in no_decay_ids or name.endswith("bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, item_encoder_lr: float = 0.0
                    ) -> torch.optim.Optimizer:
    """AdamW; a content item encoder may get its own learning rate (MoRec: a shared 1e-4 can collapse)."""
    if lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {lr}")
    if item_encoder_lr < 0:
        raise ConfigError(f"train.item_encoder_lr must be >= 0, got {item_encoder_lr}")
    item_encoder = getattr(model, "item_encoder", None)
    if item_encoder_lr == 0 or item_encoder is None or not hasattr(item_encoder, "set_content"):
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    # the slow rate protects pretrained content weights; a fresh ID table (id+content) learns at `lr`
    fresh = getattr(item_encoder, "id_embedding", None)
    fresh_ids = {id(p) for p in fresh.parameters()} if fresh is not None else set()
    encoder_ids = {id(p) for p in item_encoder.parameters()} - fresh_ids
    groups = []
    for group in param_groups(model, weight_decay):
        inside = [p for p in group["params"] if id(p) in encoder_ids]
        outside = [p for p in group["params"] if id(p) not in encoder_ids]
        groups += [{**group, "params": outside}] if outside else []
        groups += [{**group, "params": inside, "lr": item_encoder_lr}] if inside else []
    return torch.optim.AdamW(groups, lr=lr)


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int):
    """Linear warm-up, then constant / linear decay / cosine decay to 0 at `total_steps`."""
    if name not in SCHEDULES:
        raise ConfigError(f"train.scheduler must be one of {SCHEDULES}, got {name!r}")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
