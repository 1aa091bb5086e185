"""ID item encoder: one learned vector per item index (row 0 = padding, kept at zero)."""

from __future__ import annotations

import torch
from torch import nn

from transrec.registry import ITEM_ENCODERS


@ITEM_ENCODERS.register("id")
class IdItemEncoder(nn.Module):
    """Embedding lookup; the classic item representation of NextItNet / SASRec / GRU4Rec."""

    def __init__(self, num_items: int, dim: int, init_std: float = 0.02):
        super().__init__()
        self.embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=init_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.embedding(items)

    def all_items(self) -> torch.Tensor:
        """The whole table [n+1, d] (row 0 = padding), as full-softmax and ranking need it."""
        return self.embedding.weight
