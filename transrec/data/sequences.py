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

    A sequence longer than `max_len + 1` is cut into windows from its end. With `stride=None`
    consecutive windows share one item, so every transition is used once and none is lost, but a
    window's first targets see little context. With `stride=s < max_len` a window ends every `s`
    items and supervises only its last `s` targets (the sequence's first window: all of its
    targets), so each transition is still used exactly once, now with at least `max_len - s`
    items of context, as at inference (RecBole's prefix samples are `s = 1`). An epoch then costs
    about `max_len / s` times as much. Items are windows, or `(window, supervised)` with a stride.
    """

    def __init__(self, sequences: list[np.ndarray], max_len: int = 50, stride: int | None = None):
        if stride is not None and not 1 <= stride <= max_len:
            raise ValueError(f"stride must be in [1, max_len={max_len}], got {stride}")
        self.max_len = max_len
        self.stride = stride
        self.windows: list[np.ndarray] = []
        self.supervised: list[int] = []
        step = max_len if stride is None else stride
        for seq in sequences:
            end = len(seq)
            while end >= 2:
                start = max(0, end - max_len - 1)
                self.windows.append(np.asarray(seq[start:end], dtype=np.int64))
                first_target = max(1, end - step) if start > 0 else 1
                self.supervised.append(end - first_target)
                if start == 0:
                    break
                end = end - step if stride is not None else start + 1

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> np.ndarray | tuple[np.ndarray, int]:
        if self.stride is None:
            return self.windows[index]
        return self.windows[index], self.supervised[index]


def collate_next_item(windows: list[np.ndarray] | list[tuple[np.ndarray, int]]) -> dict[str, torch.Tensor]:
    """Inputs and next-item targets; a `(window, supervised)` row keeps only its last targets (0 = no loss)."""
    rows = [w if isinstance(w, tuple) else (w, len(w) - 1) for w in windows]
    targets = []
    for w, supervised in rows:
        t = w[1:].copy()
        t[: len(t) - supervised] = 0
        targets.append(t)
    return {"items": left_pad([w[:-1] for w, _ in rows]), "targets": left_pad(targets)}


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
