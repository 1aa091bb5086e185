"""SASRec (Kang & McAuley, ICDM'18): causal self-attention over the item sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transrec.registry import USER_ENCODERS


class SelfAttention(nn.Module):
    """Multi-head self-attention sublayer: [b, L, d] -> [b, L, d] (a model-patch site)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        b, length, d = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [b, heads, L, d_head]
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.proj(a.transpose(1, 2).reshape(b, length, d))


class _Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), attn_mask))
        return x + self.drop(self.ffn(self.ln2(x)))


@USER_ENCODERS.register("sasrec")
class SASRec(nn.Module):
    """Causal transformer user encoder for left-padded sequences.

    Positions count from the first REAL item (so extra leading padding does not change the
    user state, and training positions mean the same as at inference). `ffn_dim=None` means 4 * dim (the original used dim);
    `num_heads` falls back to 1 when it does not divide dim.
    """

    causal = True

    def __init__(
        self,
        dim: int,
        max_len: int = 50,
        dropout: float = 0.2,
        num_layers: int = 2,
        num_heads: int = 2,
        ffn_dim: int | None = None,
    ):
        super().__init__()
        if dim % num_heads != 0:
            num_heads = 1
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)  # same scale as item vectors, or positions drown them
        self.emb_drop = nn.Dropout(dropout)
        self.emb_ln = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(_Block(dim, num_heads, ffn_dim or 4 * dim, dropout) for _ in range(num_layers))
        self.final_ln = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        length = x.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.max_len}")
        keep = mask.unsqueeze(-1).to(x.dtype)
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        h = self.emb_drop(self.emb_ln(x + self.pos(pos))) * keep
        # query t may see real keys <= t; every query also sees itself, so a padding row is never all-masked.
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device)
        if self.causal:
            causal = causal.tril()
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        attn_mask = ((causal & mask[:, None, :]) | eye).unsqueeze(1)  # [b, 1, L, L]
        for block in self.blocks:
            h = block(h, attn_mask)
        return self.final_ln(h) * keep

    def patch_sites(self) -> dict[str, nn.Module]:
        """Sublayers [b, L, d] -> [b, L, d] where model patches go: each attention and feed-forward."""
        return {f"blocks.{i}.{part}": getattr(b, part) for i, b in enumerate(self.blocks) for part in ("attn", "ffn")}


@USER_ENCODERS.register("bidirectional")
class BidirectionalTransformer(SASRec):
    """TransRec-style bidirectional transformer: each position attends to the whole real sequence;
    the user state is read at the last real position. Not causal, so the trainer supervises only
    the last position of each training window (loss at every position would see the answer)."""

    causal = False
