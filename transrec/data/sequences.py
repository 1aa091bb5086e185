"""Torch datasets over user sequences, and collators that left-pad them.

Left padding puts every user's last item at position -1, so the user state is always
`hidden[:, -1]` and no length bookkeeping leaks into models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from transrec.data.splits import EvalSet


def left_pad(rows: list[np.ndarray], length: int | None = None) -> torch.Tensor:
    """Stack 1-d integer arrays into [b, L], padding with 0 on the left."""
    length = length if length is not None else max((len(r) for r in rows), default=0)
    out = torch.zeros(len(rows), max(length, 1), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            out[i, out.shape[1] - len(row):] = torch.as_tensor(row, dtype=torch.long)
    return out


class NextItemDataset(Dataset):
    """Training windows for causal models: input items[:-1] predict items[1:] at every position.

    A sequence longer than `max_len + 1` is cut into windows from its end, consecutive windows
    sharing one item, so every training transition is used once and none is lost.
    """

    def __init__(self, sequences: list[np.ndarray], max_len: int = 50):
        self.max_len = max_len
        self.windows: list[np.ndarray] = []
        for seq in sequences:
            end = len(seq)
            while end >= 2:
                start = max(0, end - max_len - 1)
                self.windows.append(np.asarray(seq[start:end], dtype=np.int64))
                end = start + 1 if start > 0 else 0

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.windows[index]


def collate_next_item(windows: list[np.ndarray]) -> dict[str, torch.Tensor]:
    return {"items": left_pad([w[:-1] for w in windows]), "targets": left_pad([w[1:] for w in windows])}


class EvalDataset(Dataset):
    """One case per user: the model input (last `max_len` history items), the target, and the
    full history (for excluding already-seen items from the ranking)."""

    def __init__(self, cases: EvalSet, max_len: int = 50):
        self.cases = cases
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]:
        return self.cases.histories[index], int(self.cases.targets[index]), int(self.cases.users[index])


class EvalCollator:
    def __init__(self, max_len: int):
        self.max_len = max_len

    def __call__(self, rows: list[tuple[np.ndarray, int, int]]) -> dict[str, torch.Tensor]:
        histories = [h for h, _, _ in rows]
        return {
            "items": left_pad([h[-self.max_len:] for h in histories]),
            "history": left_pad(histories),
            "targets": torch.tensor([t for _, t, _ in rows], dtype=torch.long),
            "users": torch.tensor([u for _, _, u in rows], dtype=torch.long),
        }
