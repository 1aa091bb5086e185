"""Several source datasets trained on as one (`data.extra_sources`): so that what a content model learns
is not specific to one catalogue. Each extra source keeps its own items and users (their ids get the
source's prefix, `<name>:<id>`), so no item or user is shared across sources; its items' domains get the
prefix too, and its image paths are made absolute (the merged catalogue has one root, the main source's).
Transfer calibration then weighs every source alike (`cases_by_source`): a weight is chosen by the mean
of the sources' held-out metrics, not by the pooled cases, where the source with more users would decide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transrec.data.schema import IdMap, Interactions, ItemCatalog, RecDataset, UserProfiles
from transrec.data.splits import EvalSet
from transrec.errors import ConfigError

#: what an extra source may set: where its data is and which part of it to keep (the split, hold-out and
#: sequence settings are the main data section's, applied to the merged dataset)
EXTRA_SOURCE_KEYS = ("name", "source", "path", "variant", "pretrain", "finetune", "domain", "modality",
                     "synthetic_seed", "synthetic_users", "era_split", "genre_split")


def source_prefix(spec: Any, index: int) -> str:
    """The id prefix of entry `index` of `data.extra_sources`: its `name`, else extra<index + 1>."""
    return str((spec.get("name") if isinstance(spec, dict) else None) or f"extra{index + 1}")


def load_extra_source(spec: Any, index: int) -> tuple[str, RecDataset]:
    """(prefix, dataset) for one entry of `data.extra_sources`, its domain / modality filter applied."""
    from transrec.config import DataConfig, _build, _unknown_key
    from transrec.data.pipeline import load_raw_dataset, restrict_to_domain, restrict_to_modality

    where = f"data.extra_sources[{index}]"
    if not isinstance(spec, dict) or "source" not in spec:
        raise ConfigError(f"{where}: expected a mapping with a 'source' key (and its data keys), got {spec!r}")
    for key in spec:
        if key not in EXTRA_SOURCE_KEYS:
            raise _unknown_key(str(key), list(EXTRA_SOURCE_KEYS), f"{where}.")
    name = source_prefix(spec, index)
    if ":" in name:
        raise ConfigError(f"{where}.name={name!r}: a prefix cannot contain ':'")
    cfg = _build(DataConfig, {k: v for k, v in spec.items() if k != "name"}, f"{where}.")
    dataset = load_raw_dataset(cfg)
    if cfg.domain:
        dataset = restrict_to_domain(dataset, cfg.domain)
    if cfg.modality:
        dataset = restrict_to_modality(dataset, cfg.modality)
    return name, dataset


def _absolute(path: str | None, root: Path | None) -> str | None:
    if path is None or root is None or Path(path).is_absolute():
        return path
    return str(Path(root) / path)


def merge_datasets(main: RecDataset, extras: list[tuple[str, RecDataset]]) -> RecDataset:
    """One dataset of `main` (ids unchanged) and each (prefix, dataset) of `extras` (ids prefixed)."""
    prefixes = [p for p, _ in extras]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError(f"data.extra_sources: names must differ, got {prefixes}")
    items, inter = main.items, main.interactions
    item_ids, modality, text, domain = items.ids.to_list(), items.modality[1:], items.text[1:], items.domain[1:]
    image = items.image[1:]
    user_ids = inter.users.to_list()
    users, item_col, times = [inter.user], [inter.item], [inter.timestamp]
    for prefix, ds in extras:
        n_items, n_users = len(item_ids), len(user_ids)
        item_ids += [f"{prefix}:{i}" for i in ds.items.ids.to_list()]
        modality += ds.items.modality[1:]
        text += ds.items.text[1:]
        image += [_absolute(p, ds.items.root) for p in ds.items.image[1:]]
        domain += [f"{prefix}:{d}" for d in ds.items.domain[1:]]
        user_ids += [f"{prefix}:{u}" for u in ds.interactions.users.to_list()]
        users.append(ds.interactions.user + n_users)
        item_col.append(ds.interactions.item + n_items)
        times.append(ds.interactions.timestamp)
    catalog = ItemCatalog.from_records(item_ids, modality, text, image, domain, root=items.root)
    user_map = IdMap(user_ids, kind="user")
    interactions = Interactions(user_map, np.concatenate(users), np.concatenate(item_col), np.concatenate(times))
    profiles = None
    if main.profiles is not None:  # the extra sources' users have none of the main source's attributes
        pad = [None] * (len(user_ids) - inter.num_users)
        profiles = UserProfiles(user_map, {k: list(v) + pad for k, v in main.profiles.attributes.items()})
    name = "+".join([main.name, *(f"{p}={ds.name}" for p, ds in extras)])
    return RecDataset(name, catalog, interactions, profiles)


def cases_by_source(cases: EvalSet, users: IdMap, prefixes: list[str]) -> list[EvalSet]:
    """The evaluation cases of each source (the main one first): a user's source is its id's prefix.
    Sources without a case are left out."""
    ids = np.asarray(users.ids, dtype=object)[cases.users]
    owner = np.zeros(len(cases), dtype=np.int64)
    for k, prefix in enumerate(prefixes, start=1):
        owner[np.char.startswith(ids.astype(str), f"{prefix}:")] = k
    groups = []
    for k in range(len(prefixes) + 1):
        keep = np.flatnonzero(owner == k)
        if len(keep):
            groups.append(EvalSet(cases.users[keep], [cases.histories[i] for i in keep], cases.targets[keep]))
    return groups
