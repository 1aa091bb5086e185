"""GRU4Rec (Hidasi et al., ICLR'16): a GRU over the item sequence."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from transrec.registry import USER_ENCODERS


@USER_ENCODERS.register("gru4rec")
class GRU4Rec(nn.Module):
    """GRU user encoder for left-padded sequences.

    The recurrence starts at each row's first real item (rows are rolled to right padding and
    packed), so the state does not depend on the pad count. `hidden_dim=None` means dim;
    otherwise a linear layer projects the hidden states back to dim.
    """

    causal = True

    def __init__(
        self,
        dim: int,
        max_len: int = 50,
        dropout: float = 0.2,
        num_layers: int = 1,
        hidden_dim: int | None = None,
    ):
        super().__init__()
        hidden = hidden_dim or dim
        self.max_len = max_len
        self.emb_drop = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, hidden, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, dim) if hidden != dim else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, d = x.shape
        lengths = mask.sum(1)
        ar = torch.arange(length, device=x.device)
        # roll each row left by its pad count: left padding -> right padding, and back again.
        to_right = (ar[None, :] + length - lengths[:, None]) % length
        to_left = (ar[None, :] + lengths[:, None]) % length
        h = torch.gather(self.emb_drop(x), 1, to_right[..., None].expand(b, length, d))
        packed = pack_padded_sequence(h, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=length)
        out = self.proj(out)
        out = torch.gather(out, 1, to_left[..., None].expand(b, length, out.shape[-1]))
        return out * mask.unsqueeze(-1).to(out.dtype)
