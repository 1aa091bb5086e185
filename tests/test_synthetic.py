"""Tests for the generated world: format, determinism and that it carries sequential signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transrec.data.synthetic import WorldConfig, generate_world, main
from transrec.errors import ConfigError, DataError

SMALL = WorldConfig(seed=3, num_users=300, items_per_domain=120, image_size=16)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("world"), SMALL)


@pytest.fixture(scope="module")
def default_world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("default"))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _markov_vs_popularity(root: Path, k: int = 10) -> tuple[float, float]:
    """NDCG@k of a previous-item -> next-item count model and of popularity.

    Both are fitted on every user's sequence without its last item and evaluated on that last
    item with full ranking, the user's history excluded, ties counted pessimistically.
    """
    items = pd.read_csv(root / "items.csv")
    inter = pd.read_csv(root / "interactions.csv").sort_values(["user_id", "timestamp"], kind="stable")
    index = {iid: i for i, iid in enumerate(items.item_id)}
    seqs = [np.array([index[i] for i in g.item_id]) for _, g in inter.groupby("user_id", sort=True)]
    n = len(items)
    pop = np.zeros(n)
    trans = np.zeros((n, n))
    for s in seqs:
        np.add.at(pop, s[:-1], 1)
        np.add.at(trans, (s[:-2], s[1:-1]), 1)

    def ndcg(scores: np.ndarray, history: np.ndarray, target: int) -> float:
        scores = scores.astype(float).copy()
        scores[history] = -np.inf
        rank = int((scores > scores[target]).sum() + (scores == scores[target]).sum() - 1)
        return 1.0 / np.log2(rank + 2) if rank < k else 0.0

    markov, popular = [], []
    for s in seqs:
        history, target = s[:-1], int(s[-1])
        markov.append(ndcg(trans[s[-2]] + 1e-3 * pop / pop.max(), history, target))
        popular.append(ndcg(pop, history, target))
    return float(np.mean(markov)), float(np.mean(popular))


def test_deterministic(world, tmp_path):
    again = generate_world(tmp_path / "again", SMALL)
    assert _hashes(world) == _hashes(again)
    other = generate_world(tmp_path / "other", WorldConfig(**{**SMALL.__dict__, "seed": 4}))
    assert _hashes(world)["interactions.csv"] != _hashes(other)["interactions.csv"]


def test_columns_and_ids(world):
    items = pd.read_csv(world / "items.csv", dtype=str, keep_default_na=False)
    inter = pd.read_csv(world / "interactions.csv", dtype={"user_id": str, "item_id": str})
    users = pd.read_csv(world / "users.csv", dtype={"user_id": str})
    assert list(items.columns) == ["item_id", "modality", "text", "image", "domain"]
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "domain"]
    assert {"user_id", "taste", "activity"} <= set(users.columns)
    assert len(items) == 2 * SMALL.items_per_domain and items.item_id.is_unique
    assert items.item_id.str.fullmatch(r"i\d{5}").all()
    assert users.user_id.str.fullmatch(r"u\d{4}").all() and len(users) == SMALL.num_users
    assert (items.text.str.len() > 0).all()
    assert set(inter.item_id) <= set(items.item_id) and set(inter.user_id) == set(users.user_id)
    assert pd.api.types.is_integer_dtype(inter.timestamp)
    domain_of = dict(zip(items.item_id, items.domain))
    assert (inter.item_id.map(domain_of) == inter.domain).all()
    assert set(users.taste) <= set(range(SMALL.num_topics)) and users.taste.nunique() == SMALL.num_topics
    assert set(users.activity) == {"low", "high"}
    meta = json.loads((world / "world.json").read_text())
    assert meta["config"]["seed"] == SMALL.seed and (world / "DESCRIPTION.md").exists()


def test_domains_and_modalities(world):
    items = pd.read_csv(world / "items.csv", keep_default_na=False)
    assert set(items.domain) == set(SMALL.domains)
    assert not set(items[items.domain == "A"].item_id) & set(items[items.domain == "B"].item_id)
    for _, group in items.groupby("domain"):
        assert len(group) == SMALL.items_per_domain
        assert abs((group.modality == "text").mean() - SMALL.text_share) < 0.02
    assert set(items.modality) == {"text", "image"}
    lengths = items.text.str.split().str.len()
    text_items = items.modality == "text"
    assert lengths[text_items].between(*SMALL.text_words).all()
    assert lengths[~text_items].between(*SMALL.caption_words).all()


def test_images(world):
    items = pd.read_csv(world / "items.csv")
    assert len(list((world / "images").glob("*.png"))) == len(items)
    for rel in items.image:
        assert rel.startswith("images/")
        with Image.open(world / rel) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.size == (SMALL.image_size, SMALL.image_size)


def test_sequences(world):
    inter = pd.read_csv(world / "interactions.csv")
    users = pd.read_csv(world / "users.csv").set_index("user_id")
    cross = 0
    for uid, g in inter.groupby("user_id", sort=False):
        assert (np.diff(g.timestamp.to_numpy()) > 0).all()
        assert g.item_id.is_unique
        assert SMALL.min_len <= len(g) <= SMALL.max_len
        domains = list(dict.fromkeys(g.domain))  # in time order
        assert domains[0] == users.loc[uid, "primary_domain"]
        cross += len(domains) > 1
    share = cross / SMALL.num_users
    assert abs(share - SMALL.cross_domain_share) < 0.1


def test_sequential_signal(default_world):
    markov, popular = _markov_vs_popularity(default_world)
    assert markov >= 3 * popular, (markov, popular)


def test_overwrite_and_config_errors(tmp_path):
    cfg = WorldConfig(num_users=20, items_per_domain=40, image_size=8, min_len=4, max_len=8)
    generate_world(tmp_path, cfg)
    with pytest.raises(DataError):
        generate_world(tmp_path, cfg)
    generate_world(tmp_path, WorldConfig(**{**cfg.__dict__, "items_per_domain": 32}), overwrite=True)
    assert len(list((tmp_path / "images").glob("*.png"))) == 64
    with pytest.raises(ConfigError):
        generate_world(tmp_path / "bad", WorldConfig(items_per_domain=10))


def test_cli(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--seed", "1", "--users", "15", "--items-per-domain", "64"])
    assert "num_interactions" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "cli" / "users.csv").shape[0] == 15
