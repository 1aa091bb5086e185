"""Downstream task data for a pretrained user encoder (PeterRec's transfer tasks).

Input of every task: the user's behaviour over the **backbone's items** (the items in the
pretrained model's vocabulary, in time order); items the backbone never saw are left out.
- `profile`: one class label per user (gender, age bucket, occupation, ...).
- `cold_start`: the user's items of a target domain the backbone never saw; they are ranked
  among all target-domain items.
Users are split into train / valid / test by a seeded permutation; labels and target items of
valid and test users are used only to evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transrec.data.schema import RecDataset
from transrec.errors import ConfigError, DataError

TASKS = ("profile", "cold_start")


@dataclass
class DownstreamData:
    task: str
    users: list[str]  # external user ids, one per case
    sources: list[np.ndarray]  # backbone item indices, time order
    labels: np.ndarray | None = None  # profile: class index per user
    targets: list[np.ndarray] | None = None  # cold_start: target item indices (1..num_targets) per user
    classes: list[str] = field(default_factory=list)  # profile: class names
    target_items: list[str] = field(default_factory=list)  # cold_start: item ids of target index 1..n
    train: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # case indices
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dropped: dict[str, int] = field(default_factory=dict)  # users left out, by reason

    @property
    def num_outputs(self) -> int:
        return len(self.classes) if self.task == "profile" else len(self.target_items)

    def summary(self) -> str:
        what = (f"{len(self.classes)} classes" if self.task == "profile"
                else f"{len(self.target_items)} target items")
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        return (f"{self.task}: {len(self.users)} users ({len(self.train)} train, {len(self.valid)} valid, "
                f"{len(self.test)} test), {what}; users left out: {dropped}")


def source_sequences(dataset: RecDataset, backbone_items: list[str]) -> list[np.ndarray]:
    """Per dataset user (index 0 unused): their items that the backbone knows, as backbone indices."""
    vocab = {item: i + 1 for i, item in enumerate(backbone_items)}
    remap = np.array([0] + [vocab.get(item, 0) for item in dataset.items.ids.ids[1:]], dtype=np.int64)
    known = int((remap[1:] > 0).sum())
    if known == 0:
        raise DataError(f"{dataset.name}: none of its items is in the backbone's vocabulary "
                        f"({len(backbone_items)} items); is this the data the backbone was pretrained on?")
    out = []
    for seq in dataset.interactions.sequences():
        mapped = remap[seq]
        out.append(mapped[mapped > 0])
    return out


def bucket(values: list, edges: list[float], name: str) -> list[str | None]:
    """Numeric labels -> bucket names ('<18', '18-25', ..., '56+') at the given edges."""
    edges = sorted(edges)
    names = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]:g}+"]
    out = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise DataError(f"downstream.bins needs numeric {name} labels, got {v!r}") from None
        out.append(names[int(np.searchsorted(edges, x, side="right"))])
    return out


def split_users(n: int, valid_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    if not (0 < test_fraction < 1 and 0 <= valid_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ConfigError(f"downstream.valid_fraction ({valid_fraction}) and test_fraction ({test_fraction}) must be "
                          "in [0, 1) with test > 0 and a sum below 1")
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_valid = max(1, round(test_fraction * n)), round(valid_fraction * n)
    if n - n_test - n_valid < 1:
        raise DataError(f"only {n} usable users: too few to split into train/valid/test")
    return np.sort(order[n_test + n_valid:]), np.sort(order[n_test:n_test + n_valid]), np.sort(order[:n_test])


def profile_task(dataset: RecDataset, backbone_items: list[str], label: str, bins: list[float] | None = None,
                 labels_file: str | None = None) -> DownstreamData:
    """Users with a label and at least one backbone item; labels as class indices (sorted names)."""
    sources = source_sequences(dataset, backbone_items)
    users = dataset.interactions.users
    if labels_file:
        from transrec.data.sources.profile_labels import load_profile_labels

        label, by_user = load_profile_labels(labels_file)
        unknown = [u for u in by_user if u not in users]
        if unknown:
            raise DataError(f"{labels_file}: {len(unknown)} user id(s) not in {dataset.name}, e.g. {unknown[:5]}")
        raw = [None] + [by_user.get(u) for u in users.ids[1:]]
    else:
        if dataset.profiles is None:
            raise DataError(f"{dataset.name} has no user profiles; pass downstream.labels_file")
        raw = list(dataset.profiles.labels(label))
        if label == "targets":  # the PeterRec fine-tune format: the first target is the class label
            raw = [t[0] if t else None for t in raw]
    if bins:
        raw = bucket(raw, bins, label)
    keep = [u for u in range(1, len(users) + 1) if raw[u] is not None and len(sources[u])]
    dropped = {"without a label": sum(raw[u] is None for u in range(1, len(users) + 1)),
               "without backbone items": sum(raw[u] is not None and not len(sources[u])
                                             for u in range(1, len(users) + 1))}
    classes = sorted({str(raw[u]) for u in keep})
    if len(classes) < 2:
        raise DataError(f"profile label {label!r} has {len(classes)} class(es) among usable users; need 2+")
    index = {c: i for i, c in enumerate(classes)}
    return DownstreamData("profile", [users.ids[u] for u in keep], [sources[u] for u in keep],
                          labels=np.array([index[str(raw[u])] for u in keep], dtype=np.int64), classes=classes,
                          dropped=dropped)


def cold_start_task(dataset: RecDataset, backbone_items: list[str], target_domain: str | None) -> DownstreamData:
    """Targets: each user's distinct items of `target_domain` (or the PeterRec file's targets)."""
    sources = source_sequences(dataset, backbone_items)
    users = dataset.interactions.users
    backbone = set(backbone_items)
    if target_domain is None:
        if dataset.profiles is None or "targets" not in dataset.profiles.attributes:
            raise ConfigError("task cold_start needs downstream.target_domain (a domain of the dataset's items) "
                              "or a PeterRec fine-tune file (data.finetune)")
        raw_targets = dataset.profiles.labels("targets")
        target_items = sorted({t for ts in raw_targets[1:] if ts for t in ts})
    else:
        if target_domain not in dataset.items.domains():
            raise ConfigError(f"downstream.target_domain={target_domain!r} not in the dataset's domains "
                              f"{dataset.items.domains()}")
        in_domain = dataset.items.indices_in_domain(target_domain)
        target_items = [dataset.items.ids.ids[i] for i in in_domain]
        seqs = dataset.interactions.sequences()
        ids = dataset.items.ids.ids
        raw_targets = [None] + [[ids[i] for i in seq if dataset.items.domain[i] == target_domain] for seq in seqs[1:]]
    # a PeterRec fine-tune file's targets are their own id space; a domain's items must be new to the backbone
    overlap = backbone.intersection(target_items) if target_domain is not None else set()
    if overlap:
        raise DataError(f"{len(overlap)} target item(s) are in the backbone's vocabulary (e.g. {sorted(overlap)[:3]}): "
                        "cold-start targets must be items the backbone never saw; pretrain on the source domain only")
    index = {item: i + 1 for i, item in enumerate(target_items)}
    keep, targets = [], []
    dropped = {"without target items": 0, "without backbone items": 0}
    for u in range(1, len(users) + 1):
        ts = list(dict.fromkeys(raw_targets[u] or []))
        if not ts:
            dropped["without target items"] += 1
        elif not len(sources[u]):
            dropped["without backbone items"] += 1
        else:
            keep.append(u)
            targets.append(np.array([index[t] for t in ts], dtype=np.int64))
    if not keep:
        raise DataError(f"{dataset.name}: no user has both backbone items and target items")
    return DownstreamData("cold_start", [users.ids[u] for u in keep], [sources[u] for u in keep], targets=targets,
                          target_items=target_items, dropped=dropped)


def build_task(task: str, dataset: RecDataset, backbone_items: list[str], cfg, seed: int) -> DownstreamData:
    """The task's cases and its user split (`cfg` is a DownstreamConfig)."""
    if task == "profile":
        data = profile_task(dataset, backbone_items, cfg.label, cfg.bins, cfg.labels_file)
    elif task == "cold_start":
        data = cold_start_task(dataset, backbone_items, cfg.target_domain)
    else:
        raise ConfigError(f"downstream task must be one of {TASKS}, got {task!r}")
    split_seed = cfg.split_seed if cfg.split_seed >= 0 else seed
    data.train, data.valid, data.test = split_users(len(data.users), cfg.valid_fraction, cfg.test_fraction,
                                                    split_seed)
    return data
