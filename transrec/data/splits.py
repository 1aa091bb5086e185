"""Splits without leakage: leave-one-out by time, and filters applied before it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from transrec.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Evaluation cases: for each user, the items seen before the target, and the target."""

    users: np.ndarray  # int64 [m] internal user indices
    histories: list[np.ndarray]  # items before the target, oldest first
    targets: np.ndarray  # int64 [m]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class LeaveOneOutSplit:
    """Per user: last item = test, the one before = validation, the rest = training."""

    train: list[np.ndarray]  # training sequence per user (index 0 empty); only these train models
    valid: EvalSet  # history = train sequence
    test: EvalSet  # history = train sequence + validation item

    @property
    def num_users(self) -> int:
        return len(self.test)


def leave_one_out(sequences: list[np.ndarray]) -> LeaveOneOutSplit:
    """Split time-ordered sequences (index 0 = padding user). Every user needs >= 3 items."""
    users = [u for u in range(1, len(sequences)) if len(sequences[u])]
    short = [u for u in users if len(sequences[u]) < 3]
    if short:
        raise DataError(f"{len(short)} users have fewer than 3 interactions (leave-one-out needs 3); "
                        f"set data.min_user_interactions=3 to drop them")
    if not users:
        raise DataError("no users with interactions to split")
    train = [np.zeros(0, dtype=np.int64)] + [np.asarray(s[:-2], dtype=np.int64) for s in sequences[1:]]
    u = np.asarray(users, dtype=np.int64)
    valid = EvalSet(u, [sequences[i][:-2] for i in users], np.array([sequences[i][-2] for i in users]))
    test = EvalSet(u, [sequences[i][:-1] for i in users], np.array([sequences[i][-1] for i in users]))
    return LeaveOneOutSplit(train=train, valid=valid, test=test)


def filter_sequences(sequences: list[np.ndarray], num_items: int, min_user_interactions: int = 3,
                     k_core: int = 0) -> list[np.ndarray]:
    """Drop short users (and, with k_core > 0, iteratively users and items with < k interactions).

    Returns sequences with the same user indexing (dropped users become empty), and logs what
    was dropped so nothing disappears silently.
    """
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    before_users = sum(1 for s in seqs[1:] if len(s))
    before_rows = sum(len(s) for s in seqs)
    while True:
        changed = False
        if k_core > 0:
            counts = np.bincount(np.concatenate(seqs) if seqs else np.zeros(0, np.int64), minlength=num_items + 1)
            keep_item = counts >= k_core
            new = [s[keep_item[s]] for s in seqs]
            changed |= sum(map(len, new)) != sum(map(len, seqs))
            seqs = new
        threshold = max(min_user_interactions, k_core)
        new = [s if len(s) >= threshold else s[:0] for s in seqs]
        changed |= sum(map(len, new)) != sum(map(len, seqs))
        seqs = new
        if not changed or k_core <= 0:
            break
    after_users = sum(1 for s in seqs[1:] if len(s))
    dropped_rows = before_rows - sum(len(s) for s in seqs)
    if dropped_rows:
        log.warning("filtering dropped %d of %d users and %d interactions (min_user_interactions=%d, k_core=%d)",
                    before_users - after_users, before_users, dropped_rows, min_user_interactions, k_core)
    if after_users == 0:
        raise DataError(f"no user has at least {max(min_user_interactions, k_core, 1)} interactions after "
                        f"filtering; lower data.min_user_interactions / data.k_core")
    return seqs
