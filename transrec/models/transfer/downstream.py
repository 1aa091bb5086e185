"""A pretrained recommender serving a downstream task: backbone (+ patches) + readout + task head.

Readout of the user state (PeterRec): a causal backbone gets a learned `[CLS]`-like vector appended
after the user's last item and its hidden state there is the user; a non-causal backbone's states are
mean-pooled over the real positions; `last` takes the last item's state.
Heads: `ClassifierHead` (profile prediction, logits over classes) and `TargetItemHead` (cold-start
recommendation: a new item table for the target domain, scored by dot product like the backbone).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transrec.errors import ConfigError
from transrec.models.transfer.peterrec import PatchSet

READOUTS = ("cls", "mean", "last")


class ClassifierHead(nn.Module):
    """LayerNorm -> dropout -> linear. The norm matters: a NextItNet state is an unnormalised residual
    sum whose scale grows with depth, and a linear head on it trains erratically on a few hundred users."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, users: Tensor) -> Tensor:
        return self.linear(self.drop(self.norm(users)))


class TargetItemHead(nn.Module):
    """Target-domain item vectors; row 0 is padding and never ranked."""

    def __init__(self, dim: int, num_items: int, dropout: float = 0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.items = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.items.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def item_vectors(self) -> Tensor:
        return self.items.weight

    def forward(self, users: Tensor) -> Tensor:
        logits = self.drop(users) @ self.items.weight.T
        return logits.masked_fill(torch.arange(logits.shape[1], device=logits.device) == 0, float("-inf"))


class DownstreamModel(nn.Module):
    """`backbone` is a SequentialRecommender; its tensors keep their names under `backbone.`."""

    def __init__(self, backbone: nn.Module, head: nn.Module, dim: int, readout: str = "auto",
                 patches: PatchSet | None = None):
        super().__init__()
        if readout == "auto":
            readout = "cls" if backbone.causal else "mean"
        if readout not in READOUTS:
            raise ConfigError(f"downstream.readout must be one of {READOUTS} or auto, got {readout!r}")
        self.readout = readout
        self.backbone = backbone
        self.patches = patches
        self.head = head
        self.cls = nn.Parameter(torch.randn(dim) * 0.02) if readout == "cls" else None

    def user_states(self, items: Tensor) -> Tensor:
        """[b, L] left-padded backbone item indices -> [b, d] user states."""
        backbone = self.backbone
        if self.readout == "cls":
            b = items.shape[0]
            keep = torch.cat([items > 0, items.new_ones(b, 1, dtype=torch.bool)], 1)[:, -backbone.max_len:]
            vectors = backbone.input_vectors(items)
            vectors = torch.cat([vectors, self.cls.to(vectors.dtype).expand(b, 1, -1)], 1)[:, -backbone.max_len:]
            return backbone.user_encoder(vectors, keep)[:, -1]
        hidden = backbone.hidden_states(items)
        if self.readout == "last":
            return hidden[:, -1]
        real = (items > 0).unsqueeze(-1).to(hidden.dtype)
        return (hidden * real).sum(1) / real.sum(1).clamp(min=1)

    def forward(self, items: Tensor) -> Tensor:
        return self.head(self.user_states(items))

    def task_state(self) -> dict[str, Tensor]:
        """What a task stores: the head, the patches, the [CLS] vector, and every backbone tensor the
        task trained (none for peterrec and fine_head: those share the pretrained backbone file)."""
        trained = {name for name, p in self.named_parameters() if p.requires_grad}
        return {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()
                if not name.startswith("backbone.") or name in trained}
