"""Masked-item pretraining data (GRec / BERT4Rec style) for non-causal user encoders.

Each training window is a user's item run of up to `max_len` items. A share `mask_prob` of its
real positions is chosen (at least one per window); of those, 80% are replaced by the [MASK]
vector, 10% by a random item and 10% left unchanged, and the model predicts the original item
at every chosen position. Masking draws from torch's global RNG, which accelerate seeds and
checkpoints, so runs are reproducible and resumable.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from transrec.data.sequences import left_pad
from transrec.errors import ConfigError

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen positions; the remaining 10% keep their item


class MaskedItemDataset(Dataset):
    """Windows of at most `max_len` items from each sequence; long sequences are cut from the end
    into non-overlapping windows, so every item is in exactly one window."""

    def __init__(self, sequences: list[np.ndarray], max_len: int = 50):
        self.windows: list[np.ndarray] = []
        for seq in sequences:
            end = len(seq)
            while end >= 2:
                start = max(0, end - max_len)
                self.windows.append(np.asarray(seq[start:end], dtype=np.int64))
                end = start

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.windows[index]


class MaskedItemCollator:
    """Left-padded `items`, `masked` (positions that get the [MASK] vector) and `targets` (the
    original item at chosen positions, 0 elsewhere)."""

    def __init__(self, num_items: int, mask_prob: float = 0.2):
        if not 0 < mask_prob <= 1:
            raise ConfigError(f"train.mask_prob must be in (0, 1], got {mask_prob}")
        self.num_items = num_items
        self.mask_prob = mask_prob

    def __call__(self, windows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        items = left_pad(windows)
        real = items > 0
        chosen = (torch.rand(items.shape) < self.mask_prob) & real
        # every window predicts something: a window with no chosen position gets one at random
        none = ~chosen.any(1)
        if none.any():
            scores = torch.rand(items.shape).masked_fill(~real, -1.0)
            pick = scores.argmax(1)
            chosen[none, pick[none]] = True
        targets = torch.where(chosen, items, torch.zeros_like(items))
        draw = torch.rand(items.shape)
        masked = chosen & (draw < MASK_SHARE)
        randomised = chosen & (draw >= MASK_SHARE) & (draw < MASK_SHARE + RANDOM_SHARE)
        random_items = torch.randint(1, self.num_items + 1, items.shape)
        items = torch.where(randomised, random_items, items)
        return {"items": items, "targets": targets, "masked": masked}
