"""NextItNet (Yuan et al., WSDM'19): stacked residual blocks of dilated causal convolutions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transrec.registry import USER_ENCODERS


class CausalConv(nn.Conv1d):
    """Dilated causal convolution on channels-last sequences: [b, L, d] -> [b, L, d].

    Channels-last in and out makes each conv a sublayer that model patches (PeterRec) can wrap;
    the weights are those of a plain `nn.Conv1d` (same state-dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        pad = (self.kernel_size[0] - 1) * self.dilation[0]
        h = F.pad(x.transpose(1, 2), (pad, 0))  # causal: zeros on the left only
        return super().forward(h).transpose(1, 2)


class _ResidualBlock(nn.Module):
    """x + ReLU(LN(conv_2r(ReLU(LN(conv_r(x)))))), both convs causal and dilated."""

    def __init__(self, dim: int, kernel_size: int, dilation: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.dilations = (dilation, 2 * dilation)
        self.convs = nn.ModuleList(CausalConv(dim, dim, kernel_size, dilation=d) for d in self.dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.dilations)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h))) * keep
        return x + h


@USER_ENCODERS.register("nextitnet")
class NextItNet(nn.Module):
    """Dilated causal CNN user encoder.

    One residual block per entry of `dilations * num_repeats`; a block with dilation r holds
    convs with dilations r and 2r (default [1, 4] x 2 -> 1,2,4,8,1,2,4,8, as in the original code).
    Padding positions are zeroed before every conv, so they act exactly like the conv's own
    left zero padding: the user state does not depend on how much padding there is.
    Dropout is applied to the input embeddings only.
    """

    causal = True

    def __init__(
        self,
        dim: int,
        max_len: int = 50,
        dropout: float = 0.2,
        dilations: list[int] | None = None,
        num_repeats: int = 2,
        kernel_size: int = 3,
    ):
        super().__init__()
        dilations = list(dilations) if dilations is not None else [1, 4]
        self.max_len = max_len
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_ResidualBlock(dim, kernel_size, r) for r in dilations * num_repeats)

    @property
    def receptive_field(self) -> int:
        """Number of positions (incl. itself) that one output can see."""
        return 1 + sum((b.kernel_size - 1) * d for b in self.blocks for d in b.dilations)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = self.emb_drop(x) * keep
        for block in self.blocks:
            h = block(h, keep)
        return h

    def patch_sites(self) -> dict[str, nn.Module]:
        """Sublayers [b, L, d] -> [b, L, d] where model patches go: every dilated convolution."""
        return {f"blocks.{i}.convs.{j}": conv for i, b in enumerate(self.blocks) for j, conv in enumerate(b.convs)}
