"""In-memory data model: items, interactions and user profiles with integer id maps.

Internal indices start at 1; index 0 is reserved for padding everywhere (sequences,
embedding tables, score matrices), so models never need a special case for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from transrec.errors import DataError, UnknownIdError

PAD = "[PAD]"
MODALITIES = ("id", "text", "image")
#: how interactions of one user with the same timestamp are ordered: file (the file's order, as
#: RecBole does), item (by catalogue index: GroupLens' CSV releases list each user's ratings by
#: movie id, so their files give that order), random (shuffled, seeded)
TIE_ORDERS = ("file", "item", "random")


class IdMap:
    """Bijection between external string ids and internal indices 1..n (0 = padding)."""

    def __init__(self, ids: Iterable[str], kind: str = "item"):
        self.kind = kind
        self.ids: list[str] = [PAD]
        self._index: dict[str, int] = {}
        for raw in ids:
            key = str(raw)
            if key in self._index:
                raise DataError(f"duplicate {kind} id {key!r}")
            self._index[key] = len(self.ids)
            self.ids.append(key)

    def __len__(self) -> int:
        """Number of real ids (padding excluded)."""
        return len(self.ids) - 1

    def __contains__(self, key: object) -> bool:
        return str(key) in self._index

    def index(self, key: str) -> int:
        try:
            return self._index[str(key)]
        except KeyError:
            raise UnknownIdError(f"unknown {self.kind} id {key!r}") from None

    def encode(self, keys: Iterable[str]) -> np.ndarray:
        """External ids -> int64 indices; the first unknown id raises `UnknownIdError`."""
        return np.fromiter((self.index(k) for k in keys), dtype=np.int64)

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.ids[int(i)] for i in indices]

    def to_list(self) -> list[str]:
        """External ids in index order, padding excluded (what a checkpoint stores)."""
        return self.ids[1:]


@dataclass
class ItemCatalog:
    """All items, aligned with internal indices (position 0 = padding placeholder).

    `text` and `image` may be None for items without that content; `image` paths are
    absolute or relative to `root`.
    """

    ids: IdMap
    modality: list[str]
    text: list[str | None]
    image: list[str | None]
    domain: list[str]
    root: Path | None = None

    def __post_init__(self) -> None:
        n = len(self.ids) + 1
        for name in ("modality", "text", "image", "domain"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ItemCatalog.{name} must have {n} entries (padding included)")

    @classmethod
    def from_records(
        cls,
        item_ids: Sequence[str],
        modality: Sequence[str] | None = None,
        text: Sequence[str | None] | None = None,
        image: Sequence[str | None] | None = None,
        domain: Sequence[str] | None = None,
        root: Path | None = None,
    ) -> "ItemCatalog":
        """Build from per-item columns (without the padding entry)."""
        n = len(item_ids)

        def column(values, default):
            values = [default] * n if values is None else list(values)
            if len(values) != n:
                raise DataError(f"item column has {len(values)} values for {n} items")
            return [None] + values

        mods = column(modality, "id")
        for item, mod in zip(item_ids, mods[1:]):
            if mod not in MODALITIES:
                raise DataError(f"item {item!r}: modality {mod!r} is not one of {MODALITIES}")
        return cls(
            ids=IdMap(item_ids, kind="item"),
            modality=["pad"] + mods[1:],
            text=column(text, None),
            image=column(image, None),
            domain=["pad"] + column(domain, "default")[1:],
            root=root,
        )

    @property
    def num_items(self) -> int:
        return len(self.ids)

    def domains(self) -> list[str]:
        return sorted(set(self.domain[1:]))

    def indices_in_domain(self, domain: str) -> np.ndarray:
        return np.array([i for i, d in enumerate(self.domain) if i and d == domain], dtype=np.int64)


@dataclass
class Interactions:
    """Interaction log as parallel arrays of internal indices (users and items start at 1)."""

    users: IdMap
    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    timestamp: np.ndarray  # float64 [n]

    def __post_init__(self) -> None:
        if not (len(self.user) == len(self.item) == len(self.timestamp)):
            raise ValueError("Interactions arrays must have equal length")

    def __len__(self) -> int:
        return len(self.user)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def order(self, tie_order: str = "file", seed: int = 0) -> np.ndarray:
        """Row order by user, then time; rows of one user with the same timestamp follow `tie_order`
        (`TIE_ORDERS`). Leave-one-out's test item is the last of this order, so where a log stamps many
        interactions with one time (bulk ratings), the tie order decides which is the test item."""
        rows = np.arange(len(self.user))
        if tie_order == "file":
            ties = (rows,)
        elif tie_order == "item":
            ties = (rows, self.item)  # by catalogue index, then file order
        elif tie_order == "random":
            ties = (np.random.default_rng(seed).permutation(len(rows)),)
        else:
            raise ValueError(f"tie_order must be one of {TIE_ORDERS}, got {tie_order!r}")
        return np.lexsort((*ties, self.timestamp, self.user))

    def sequences(self, tie_order: str = "file", seed: int = 0) -> list[np.ndarray]:
        """Per-user item sequences ordered by time (ties as `tie_order` says: by default the file's
        order); index 0 is empty."""
        return self.sequences_in(self.order(tie_order, seed))

    def sequences_in(self, order: np.ndarray) -> list[np.ndarray]:
        """Per-user item sequences from a row order of `order()`; index 0 is empty."""
        user_sorted = self.user[order]
        items_sorted = self.item[order]
        bounds = np.searchsorted(user_sorted, np.arange(self.num_users + 2))
        return [items_sorted[bounds[u] : bounds[u + 1]] for u in range(self.num_users + 1)]

    def last_two_tied(self, order: np.ndarray | None = None) -> tuple[int, int]:
        """(users whose two latest interactions share a timestamp, users with at least two): for those,
        which one is the test item comes from the tie order, not from time. `order`: a row order of
        `order()` already computed (any tie order gives the same counts)."""
        order = self.order() if order is None else order
        user, time = self.user[order], self.timestamp[order]
        last = np.flatnonzero(np.r_[user[1:] != user[:-1], True])  # each user's last row
        has_two = last[last > 0]
        has_two = has_two[user[has_two - 1] == user[has_two]]
        return int((time[has_two - 1] == time[has_two]).sum()), len(has_two)


@dataclass
class UserProfiles:
    """User attributes (e.g. gender, age) keyed by internal user index; column 0 unused."""

    users: IdMap
    attributes: dict[str, list] = field(default_factory=dict)

    def labels(self, name: str) -> list:
        if name not in self.attributes:
            raise DataError(f"no user attribute {name!r}; have {sorted(self.attributes)}")
        return self.attributes[name]


@dataclass
class RecDataset:
    """A loaded dataset: catalog + interactions (+ optional user profiles)."""

    name: str
    items: ItemCatalog
    interactions: Interactions
    profiles: UserProfiles | None = None

    def summary(self) -> str:
        lengths = [len(s) for s in self.interactions.sequences()[1:]]
        return (
            f"{self.name}: {self.interactions.num_users} users, {self.items.num_items} items, "
            f"{len(self.interactions)} interactions, "
            f"{np.mean(lengths) if lengths else 0:.1f} per user"
        )
