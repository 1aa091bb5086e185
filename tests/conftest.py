"""Shared fixtures: offline Hub, a private cache, and a small synthetic world built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["TRANSREC_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small generated world (2 domains, ~150 users) in the canonical folder format."""
    from transrec.data.synthetic import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(out, WorldConfig(seed=3, num_users=150, items_per_domain=80, num_topics=4, max_len=20),
                   overwrite=True)
    return out


def tiny_overrides(world: Path, **extra) -> list[str]:
    """Config overrides for a seconds-long training run on `tiny_world`."""
    base = {"data.source": "folder", "data.path": str(world), "data.max_len": 20, "model.dim": 16,
            "model.num_layers": 1, "train.epochs": 3, "train.batch_size": 32, "train.lr": 0.005,
            "train.progress": "false", "train.patience": 10}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def pretrain_backbone(world: Path, out: Path, epochs: int) -> Path:
    """A small NextItNet pretrained (next item) on `world`'s domain A; returns its model folder."""
    from transrec.config import load_config
    from transrec.training.trainer import train

    cfg = load_config(None, tiny_overrides(world, **{"task": "pretrain", "data.domain": "A",
                                                     "model.name": "nextitnet", "model.dilations": "[1,2]",
                                                     "model.num_repeats": 1, "train.epochs": epochs}))
    train(cfg, out)
    return out / "model"
