"""UAF (Chen et al., TKDE'21): user-specific adaptive fine-tuning of a pretrained user encoder.

Every block of the backbone's user encoder (`user_encoder.blocks`: NextItNet residual blocks,
SASRec / bidirectional transformer blocks) stays frozen and gets a trainable copy. A small policy
network reads each user's sequence and decides, block by block, whether that user's forward pass
goes through the frozen block or its fine-tuned copy: users whose behaviour the pretrained model
already represents well keep the pretrained computation, others get adapted blocks.

- Policy input: the mean of the (frozen, detached) input item vectors of the user's real items,
  layer-normalised, plus log(1 + history length) / log(1 + max_len): the mean alone hides how much
  history there is, and how much to adapt plausibly depends on it.
- Training: Gumbel-softmax over (frozen, fine-tuned) per block with straight-through hard decisions,
  so each forward pass is a real choice while the policy still gets gradients; the task loss is
  joined by `cost * mean share of fine-tuned blocks` (`UAFDownstreamModel.fine_tuned_share`).
- Evaluation: the argmax of the policy logits, no noise, so decisions are deterministic and 0/1.

Like PeterRec's patches, the switch attaches with hooks (a pre-hook on the user encoder computes the
decisions, a forward hook on each block swaps in the copy's output), so the backbone's modules, keys
and tensors stay exactly as pretrained; a task stores only the policy, the copies and its head.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transrec.data.sequences import left_pad
from transrec.errors import ConfigError
from transrec.models.transfer.downstream import DownstreamModel


def uaf_blocks(user_encoder: nn.Module) -> list[nn.Module]:
    """The user encoder's stack of blocks, bottom first (what UAF switches per user)."""
    blocks = getattr(user_encoder, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ConfigError(f"mode uaf needs a user encoder with blocks (nextitnet, sasrec, bidirectional); "
                          f"{type(user_encoder).__name__} has none")
    return list(blocks)


class PolicyNet(nn.Module):
    """[b, d] pooled item vectors + [b] history lengths -> [b, num_blocks, 2] logits (frozen, fine-tuned)."""

    def __init__(self, dim: int, num_blocks: int, hidden: int = 32, max_len: int = 50):
        super().__init__()
        if hidden < 1:
            raise ConfigError(f"downstream.uaf_policy_hidden must be >= 1, got {hidden}")
        self.num_blocks = num_blocks
        self.log_max = math.log1p(max_len)
        self.norm = nn.LayerNorm(dim)  # pretrained item vectors can be tiny or large; the MLP sees unit scale
        self.mlp = nn.Sequential(nn.Linear(dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, 2 * num_blocks))
        nn.init.normal_(self.mlp[-1].weight, std=0.02)  # near-even odds at the start
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, pooled: Tensor, lengths: Tensor) -> Tensor:
        length = (torch.log1p(lengths.to(pooled.dtype)) / self.log_max).unsqueeze(-1)
        return self.mlp(torch.cat([self.norm(pooled), length], -1)).view(-1, self.num_blocks, 2)


class UAF(nn.Module):
    """The policy and one trainable copy per block of `user_encoder`, attached by hooks.

    `skip_last`: the encoder's last input position is not an item (the `cls` readout appends a learned
    vector there), so the policy leaves it out. Outside `forced`, decisions come from the policy:
    Gumbel straight-through in training mode, argmax in eval mode."""

    def __init__(self, user_encoder: nn.Module, dim: int, hidden: int = 32, temperature: float = 1.0,
                 skip_last: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"downstream.uaf_temperature must be > 0, got {temperature}")
        blocks = uaf_blocks(user_encoder)
        self.temperature = temperature
        self.skip_last = skip_last
        self.copies = nn.ModuleList(copy.deepcopy(b) for b in blocks)
        self.copies.requires_grad_(True)
        self.policy = PolicyNet(dim, len(blocks), hidden, getattr(user_encoder, "max_len", 50))
        #: decisions of the current / latest forward pass, [b, num_blocks], 1 = fine-tuned copy
        #: (straight-through in training: values are 0/1, gradients reach the policy logits)
        self.last_decisions: Tensor | None = None
        self.last_logits: Tensor | None = None
        self._forced: Tensor | float | None = None
        self._handles = [user_encoder.register_forward_pre_hook(self._decide_hook, with_kwargs=True)]
        self._handles += [b.register_forward_hook(functools.partial(self._block_hook, i), with_kwargs=True)
                          for i, b in enumerate(blocks)]

    @property
    def num_blocks(self) -> int:
        return len(self.copies)

    def decide(self, vectors: Tensor, mask: Tensor) -> Tensor:
        """Per-user, per-block decisions [b, num_blocks] from the encoder's input vectors and mask."""
        b = vectors.shape[0]
        if self._forced is not None:
            self.last_logits = None
            forced = torch.as_tensor(self._forced, dtype=vectors.dtype, device=vectors.device)
            return forced.expand(b, self.num_blocks).clone()
        real = mask.clone()
        if self.skip_last:
            real[:, -1] = False
        weight = real.unsqueeze(-1).to(vectors.dtype)
        lengths = real.sum(1)
        pooled = (vectors.detach() * weight).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(vectors.dtype)
        logits = self.policy(pooled, lengths)
        self.last_logits = logits
        if self.training:
            return F.gumbel_softmax(logits, tau=self.temperature, hard=True)[..., 1]
        return logits.argmax(-1).to(vectors.dtype)

    def _decide_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        vectors = args[0] if args else kwargs["x"]
        mask = args[1] if len(args) > 1 else kwargs["mask"]
        self.last_decisions = self.decide(vectors, mask)

    def _block_hook(self, index: int, module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
        d = self.last_decisions
        if d is None:
            return output
        d = d[:, index].to(output.dtype).view(-1, *([1] * (output.dim() - 1)))
        if not self.training:  # hard 0/1: an exact choice, and no copy work when nobody picks it
            if not bool(d.any()):
                return output
            return torch.where(d.bool(), self.copies[index](*args, **kwargs), output)
        return d * self.copies[index](*args, **kwargs) + (1 - d) * output

    @contextlib.contextmanager
    def forced(self, value: float | Tensor) -> Iterator["UAF"]:
        """Fix the decisions (0 = every block frozen, 1 = every block fine-tuned, or a [num_blocks] /
        [b, num_blocks] tensor) instead of asking the policy: ablations and tests."""
        previous, self._forced = self._forced, value
        try:
            yield self
        finally:
            self._forced = previous

    def detach(self) -> None:
        """Remove the hooks: the backbone computes its pretrained function again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


class UAFDownstreamModel(DownstreamModel):
    """A DownstreamModel whose backbone is frozen whole and whose user encoder's blocks are switched per
    user by a `UAF` (`self.uaf`: its policy and copies are task tensors, saved with the head)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, dim: int, readout: str = "auto",
                 temperature: float = 1.0, policy_hidden: int = 32):
        super().__init__(backbone, head, dim, readout, patches=None)
        self.uaf = UAF(backbone.user_encoder, dim, policy_hidden, temperature, skip_last=self.readout == "cls")
        backbone.requires_grad_(False)

    def fine_tuned_share(self) -> Tensor:
        """Mean share of fine-tuned blocks in the latest forward pass (differentiable in training: the
        cost term `uaf_cost * share` pushes the policy towards the frozen blocks)."""
        if self.uaf.last_decisions is None:
            raise RuntimeError("fine_tuned_share needs a forward pass first")
        return self.uaf.last_decisions.mean()

    @torch.no_grad()
    def decisions(self, items: Tensor) -> Tensor:
        """[b, L] left-padded items -> [b, num_blocks] evaluation decisions (1 = fine-tuned copy)."""
        was_training = self.training
        self.eval()
        try:
            self.user_states(items)
            return self.uaf.last_decisions.clone()
        finally:
            self.train(was_training)


def batch_decisions(model: UAFDownstreamModel, sequences: list[np.ndarray], max_items: int,
                    batch_size: int = 256, device: torch.device | str | None = None) -> np.ndarray:
    """Evaluation decisions [users, num_blocks] for users' item sequences (each cut to its last
    `max_items`, as the task feeds them)."""
    out = []
    for start in range(0, len(sequences), batch_size):
        items = left_pad([np.asarray(s)[-max_items:] for s in sequences[start:start + batch_size]])
        out.append(model.decisions(items.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.uaf.num_blocks), np.float32)


def history_buckets(lengths: np.ndarray, num_buckets: int = 4) -> np.ndarray:
    """Bucket index per user from quantile edges of `lengths` (tied edges merge buckets; 0 = shortest)."""
    if num_buckets < 1:
        raise ConfigError(f"num_buckets must be >= 1, got {num_buckets}")
    lengths = np.asarray(lengths)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:-1])) if len(lengths) else []
    return np.searchsorted(edges, lengths, side="right")


def by_history_length(values: dict[str, np.ndarray], lengths: np.ndarray, num_buckets: int = 4) -> list[dict]:
    """Per history-length bucket (`history_buckets`): its length range, user count and the mean of each
    per-user value array in `values` (NaN entries, e.g. a user with no target, are left out of a mean).
    The same users with the same lengths always get the same buckets, so runs compare bucket by bucket."""
    lengths = np.asarray(lengths)
    for name, v in values.items():
        if len(v) != len(lengths):
            raise ValueError(f"by_history_length: {name} has {len(v)} values for {len(lengths)} users")
    if len(lengths) == 0:
        return []
    which = history_buckets(lengths, num_buckets)
    rows = []
    for b in np.unique(which):
        sel = which == b
        row = {"min_length": int(lengths[sel].min()), "max_length": int(lengths[sel].max()), "users": int(sel.sum())}
        for name, v in values.items():
            chosen = np.asarray(v, dtype=np.float64)[sel]
            chosen = chosen[~np.isnan(chosen)]
            row[name] = float(chosen.mean()) if len(chosen) else float("nan")
        rows.append(row)
    return rows


def share_by_history_length(decisions: np.ndarray, lengths: np.ndarray, num_buckets: int = 4) -> list[dict]:
    """Share of fine-tuned blocks per history-length bucket (quantile edges; tied edges merge buckets)."""
    decisions = np.asarray(decisions, dtype=np.float64)
    share = decisions.reshape(len(decisions), -1).mean(1) if len(decisions) else np.zeros(0)  # per user
    return by_history_length({"fine_tuned_share": share}, lengths, num_buckets)


def uaf_report(model: UAFDownstreamModel, sequences: list[np.ndarray], max_items: int, batch_size: int = 256,
               device: torch.device | str | None = None, num_buckets: int = 4) -> dict:
    """What metrics.json records for a uaf run: the users' mean share of fine-tuned blocks, per block,
    and by history length (the full history, before cutting to `max_items`)."""
    decisions = batch_decisions(model, sequences, max_items, batch_size, device)
    lengths = np.array([len(s) for s in sequences])
    return {"fine_tuned_share": float(decisions.mean()) if len(decisions) else 0.0,
            "per_block_share": [float(x) for x in decisions.mean(0)] if len(decisions) else [],
            "by_history_length": share_by_history_length(decisions, lengths, num_buckets),
            "users": int(len(decisions))}
