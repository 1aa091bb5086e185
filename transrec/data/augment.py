"""Sequence augmentations for contrastive pretraining (CLUE, CL4SRec), and the collator that makes views.

Each augmentation maps one user's unpadded item sequence (oldest first) to a new, non-empty one:

- `crop` (ratio eta): keep a random contiguous run of max(1, floor(eta * n)) items.
- `mask` (ratio gamma): *drop* floor(gamma * n) items at random positions (at most n - 1), keeping the
  order of the rest. Dropping rather than writing a [MASK] token keeps every id a real item, so the
  backbone needs no pretraining-only mask parameter and its checkpoint is the same shape as a
  next-item backbone's (every encoder, causal or not, reads the view as an ordinary sequence).
- `reorder` (ratio beta): shuffle a random contiguous window of max(1, floor(beta * n)) items.
- `dropout`: the sequence unchanged; the two views then differ only by the encoder's dropout
  (SimCSE's implicit augmentation). Listed with others, it is one more choice in the pool.

Every draw comes from a `torch.Generator` (or torch's global RNG when none is given, which accelerate
seeds and checkpoints), so views are reproducible from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from transrec.data.sequences import left_pad
from transrec.errors import ConfigError

AUGMENTATIONS = ("crop", "mask", "reorder", "dropout")


def _as_tensor(seq: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(seq) if not isinstance(seq, torch.Tensor) else seq, dtype=torch.long)


def crop(seq: np.ndarray | torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A contiguous sub-sequence of max(1, floor(ratio * n)) items at a random start."""
    seq = _as_tensor(seq)
    n = len(seq)
    keep = min(n, max(1, math.floor(ratio * n)))
    start = int(torch.randint(0, n - keep + 1, (1,), generator=generator))
    return seq[start:start + keep].clone()


def mask(seq: np.ndarray | torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The sequence without floor(ratio * n) items at random positions (at least one item stays)."""
    seq = _as_tensor(seq)
    n = len(seq)
    drop = min(n - 1, math.floor(ratio * n))
    if drop <= 0:
        return seq.clone()
    keep = torch.randperm(n, generator=generator)[: n - drop].sort().values
    return seq[keep]


def reorder(seq: np.ndarray | torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The sequence with a random contiguous window of max(1, floor(ratio * n)) items shuffled."""
    seq = _as_tensor(seq).clone()
    n = len(seq)
    width = min(n, max(1, math.floor(ratio * n)))
    start = int(torch.randint(0, n - width + 1, (1,), generator=generator))
    seq[start:start + width] = seq[start:start + width][torch.randperm(width, generator=generator)]
    return seq


def check_augmentations(names: Sequence[str], crop_ratio: float, mask_ratio: float, reorder_ratio: float) -> None:
    """ConfigError for unknown names or ratios outside their range (a typo must not train silently)."""
    if not names:
        raise ConfigError(f"train.augmentations must name at least one of {AUGMENTATIONS}")
    for name in names:
        if name not in AUGMENTATIONS:
            raise ConfigError(f"train.augmentations: unknown augmentation {name!r} (valid: {', '.join(AUGMENTATIONS)})")
    if not 0 < crop_ratio <= 1:
        raise ConfigError(f"train.crop_ratio must be in (0, 1], got {crop_ratio}")
    if not 0 <= mask_ratio < 1:
        raise ConfigError(f"train.mask_ratio must be in [0, 1), got {mask_ratio}")
    if not 0 <= reorder_ratio <= 1:
        raise ConfigError(f"train.reorder_ratio must be in [0, 1], got {reorder_ratio}")


class Augmenter:
    """Applies one augmentation, drawn uniformly from `names`, to a sequence."""

    def __init__(self, names: Sequence[str] = ("crop", "mask", "reorder"), crop_ratio: float = 0.6,
                 mask_ratio: float = 0.3, reorder_ratio: float = 0.3):
        check_augmentations(names, crop_ratio, mask_ratio, reorder_ratio)
        self.names = list(names)
        self.ratios = {"crop": crop_ratio, "mask": mask_ratio, "reorder": reorder_ratio}

    def __call__(self, seq: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        name = self.names[int(torch.randint(0, len(self.names), (1,), generator=generator))] \
            if len(self.names) > 1 else self.names[0]
        if name == "dropout":
            return _as_tensor(seq).clone()
        return {"crop": crop, "mask": mask, "reorder": reorder}[name](seq, self.ratios[name], generator)


class ContrastiveCollator:
    """Batches training windows into two augmented views per user, plus next-item inputs/targets.

    Returns left-padded `view1`, `view2` (both [b, L'], one common width, so one forward encodes
    them together), and `items` / `targets` as `collate_next_item` makes them (inputs w[:-1] predict
    w[1:]), used when the contrastive loss is combined with next-item training. Views are made from
    the window's last `max_len` items. `seed` gives the collator its own generator (tests, offline
    use); without it, draws come from torch's global RNG, which the trainer seeds and checkpoints.
    """

    def __init__(self, max_len: int, augmentations: Sequence[str] = ("crop", "mask", "reorder"),
                 crop_ratio: float = 0.6, mask_ratio: float = 0.3, reorder_ratio: float = 0.3,
                 seed: int | None = None):
        self.max_len = max_len
        self.augment = Augmenter(augmentations, crop_ratio, mask_ratio, reorder_ratio)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, windows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        sources = [_as_tensor(w)[-self.max_len:] for w in windows]
        views = [self.augment(s, self.generator) for s in sources]
        views += [self.augment(s, self.generator) for s in sources]
        padded = left_pad(views)
        b = len(windows)
        return {"items": left_pad([w[:-1] for w in windows]), "targets": left_pad([w[1:] for w in windows]),
                "view1": padded[:b], "view2": padded[b:]}
