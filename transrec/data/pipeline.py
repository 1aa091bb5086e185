"""From a `DataConfig` to what training needs: the dataset, filtered sequences, the split."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transrec.data.holdout import hold_out_items, hold_out_users
from transrec.data.schema import TIE_ORDERS, Interactions, ItemCatalog, RecDataset
from transrec.data.splits import LeaveOneOutSplit, filter_sequences, leave_one_out
from transrec.errors import ConfigError, DataError

SOURCES = ("synthetic", "folder", "movielens", "peterrec")
log = logging.getLogger(__name__)
#: warn when at least this share of users' two latest interactions share a timestamp
TIED_WARNING_SHARE = 0.05


@dataclass
class PreparedData:
    dataset: RecDataset
    split: LeaveOneOutSplit

    @property
    def num_items(self) -> int:
        return self.dataset.items.num_items

    def item_counts(self) -> np.ndarray:
        """Training-split popularity per item index (test and valid items not counted)."""
        seqs = [s for s in self.split.train if len(s)]
        flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        return np.bincount(flat, minlength=self.num_items + 1).astype(np.float64)


def synthetic_folder(seed: int, users: int) -> Path:
    """Where the generated default world is cached (deterministic, so safe to reuse)."""
    root = Path(os.environ.get("TRANSREC_CACHE", Path.home() / ".cache" / "transrec"))
    return root / f"synthetic-seed{seed}-users{users}"


def load_raw_dataset(cfg) -> RecDataset:
    """Load the dataset named by `cfg` (a DataConfig) without filtering or splitting."""
    if cfg.source == "synthetic":
        from transrec.data.io import load_dataset_folder
        from transrec.data.synthetic import WorldConfig, generate_world

        folder = Path(cfg.path) if cfg.path else synthetic_folder(cfg.synthetic_seed, cfg.synthetic_users)
        if not (folder / "world.json").is_file():
            generate_world(folder, WorldConfig(seed=cfg.synthetic_seed, num_users=cfg.synthetic_users), overwrite=True)
        return load_dataset_folder(folder, name=f"synthetic(seed={cfg.synthetic_seed})")
    if cfg.source not in SOURCES:
        from transrec.config import _unknown_key

        raise _unknown_key(cfg.source, list(SOURCES), "data.source=")
    from transrec.data.sources import load_source

    if cfg.source == "folder":
        if not cfg.path:
            raise ConfigError("data.source=folder needs data.path (the dataset folder)")
        from transrec.data.validate import validate_folder

        # every problem at once (file + line), not just the loader's first; warnings go to the log
        validate_folder(cfg.path, load=False, on_bad_content=getattr(cfg, "on_bad_content", "fail")).raise_or_log()
        return load_source({"source": "folder", "path": cfg.path})
    if cfg.source == "movielens":
        return load_source({"source": "movielens", "path": cfg.path, "variant": cfg.variant,
                            "era_split": getattr(cfg, "era_split", 0),
                            "genre_split": getattr(cfg, "genre_split", "")})
    if not cfg.pretrain:
        raise ConfigError("data.source=peterrec needs data.pretrain (the pretraining file)")
    return load_source({"source": "peterrec", "pretrain": cfg.pretrain, "finetune": cfg.finetune})


def catalog_subset(items: ItemCatalog, keep: np.ndarray) -> ItemCatalog:
    """The items at indices `keep` (in that order) as their own catalog, indexed 1..len(keep)."""
    return ItemCatalog.from_records(
        [items.ids.ids[i] for i in keep], [items.modality[i] for i in keep], [items.text[i] for i in keep],
        [items.image[i] for i in keep], [items.domain[i] for i in keep], root=items.root)


def restrict_to_domain(dataset: RecDataset, domain: str) -> RecDataset:
    """Keep only the items of one domain (and interactions with them), re-indexed densely."""
    items = dataset.items
    if domain not in items.domains():
        raise ConfigError(f"data.domain={domain!r} not in the dataset's domains {items.domains()}")
    return restrict_dataset(dataset, items.indices_in_domain(domain), f"{dataset.name}[{domain}]")


def restrict_to_modality(dataset: RecDataset, modality: str) -> RecDataset:
    """Keep only the items of one modality (and interactions with them), re-indexed densely: a
    text-only or image-only view of a mixed-modality dataset (cross-modality transfer)."""
    mods = np.asarray(dataset.items.modality, dtype=object)
    present = sorted(set(mods[1:]))
    if modality not in present:
        raise ConfigError(f"data.modality={modality!r} not among the dataset's item modalities {present}")
    return restrict_dataset(dataset, np.flatnonzero(mods == modality), f"{dataset.name}[{modality}]")


def restrict_dataset(dataset: RecDataset, keep: np.ndarray, name: str,
                     user_mask: np.ndarray | None = None) -> RecDataset:
    """Keep the items `keep` (indices, re-indexed densely) and their interactions, only those of the users
    where `user_mask` is true if given (user ids stay, so an emptied user is dropped by the filters)."""
    items = dataset.items
    remap = np.zeros(items.num_items + 1, dtype=np.int64)
    remap[keep] = np.arange(1, len(keep) + 1)
    inter = dataset.interactions
    mask = remap[inter.item] > 0
    if user_mask is not None:
        mask &= user_mask[inter.user]
    interactions = Interactions(inter.users, inter.user[mask], remap[inter.item[mask]], inter.timestamp[mask])
    return RecDataset(name, catalog_subset(items, keep), interactions, dataset.profiles)


def ordered_sequences(dataset: RecDataset, tie_order: str) -> list[np.ndarray]:
    """Per-user sequences in time order, ties as `tie_order` says; warns when many users' test item
    ties with the item before it, since then the tie order, not time, picks the test item."""
    if tie_order not in TIE_ORDERS:
        raise ConfigError(f"data.tie_order must be one of {', '.join(TIE_ORDERS)}, got {tie_order!r}")
    order = dataset.interactions.order(tie_order)  # sorted once, for the count and the sequences
    tied, users = dataset.interactions.last_two_tied(order)
    if users and tied / users >= TIED_WARNING_SHARE:
        log.warning("%s: %d of %d users' two latest interactions share a timestamp (%.0f%%); which one is the test "
                    "item follows data.tie_order=%s", dataset.name, tied, users, 100 * tied / users, tie_order)
    return dataset.interactions.sequences_in(order)


def prepare_data(cfg) -> PreparedData:
    dataset = load_raw_dataset(cfg)
    if getattr(cfg, "user_holdout", 0.0):
        dataset = hold_out_users(dataset, cfg.user_holdout, cfg.user_holdout_side, cfg.user_holdout_seed)
    if cfg.domain:
        dataset = restrict_to_domain(dataset, cfg.domain)
    if getattr(cfg, "modality", None):
        dataset = restrict_to_modality(dataset, cfg.modality)
    if getattr(cfg, "extra_sources", None):
        from transrec.data.multisource import load_extra_source, merge_datasets

        dataset = merge_datasets(dataset, [load_extra_source(s, i) for i, s in enumerate(cfg.extra_sources)])
    if getattr(cfg, "item_holdout", 0.0):
        dataset = hold_out_items(dataset, cfg.item_holdout, cfg.item_holdout_side, cfg.item_holdout_seed,
                                 cfg.item_holdout_by, cfg.item_holdout_users)
    if cfg.max_len < 1:
        raise ConfigError(f"data.max_len must be >= 1, got {cfg.max_len}")
    sequences = filter_sequences(ordered_sequences(dataset, getattr(cfg, "tie_order", "file")),
                                 dataset.items.num_items, cfg.min_user_interactions, cfg.k_core)
    if len(dataset.interactions) == 0:
        raise DataError(f"{dataset.name}: no interactions")
    split = leave_one_out(sequences)
    if not 0 < cfg.train_fraction <= 1:
        raise ConfigError(f"data.train_fraction must be in (0, 1], got {cfg.train_fraction}")
    if cfg.train_fraction < 1:
        split = subsample_training_users(split, cfg.train_fraction)
    return PreparedData(dataset, split)


def subsample_training_users(split: LeaveOneOutSplit, fraction: float, seed: int = 0) -> LeaveOneOutSplit:
    """Keep the training sequences of a seeded random `fraction` of users (learning curves over
    data size); every user is still evaluated, with their full history as input."""
    users = np.array([u for u, s in enumerate(split.train) if len(s)])
    keep = set(np.random.default_rng(seed).choice(users, size=max(1, round(fraction * len(users))), replace=False))
    train = [s if u in keep else s[:0] for u, s in enumerate(split.train)]
    return LeaveOneOutSplit(train=train, valid=split.valid, test=split.test)
