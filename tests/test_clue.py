"""CLUE: sequence augmentations, the NT-Xent loss against a brute force, 2 processes = 1, and a pretraining run."""

from __future__ import annotations

import csv
import json
import math
import os
import socket

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import transrec.models.recommender  # noqa: F401  (registers encoders)
from transrec.config import load_config
from transrec.data.augment import ContrastiveCollator, crop, mask, reorder
from transrec.errors import ConfigError
from transrec.models.recommender import SequentialRecommender
from transrec.objectives import ContrastiveObjective, contrastive_loss, create_objective, nt_xent

NUM_ITEMS, MAX_LEN = 30, 8


def windows(seed: int = 0, n: int = 40) -> list[np.ndarray]:
    """NextItemDataset-like windows: 2..max_len+1 items, ids 1..NUM_ITEMS, repeats allowed."""
    rng = np.random.default_rng(seed)
    return [rng.integers(1, NUM_ITEMS + 1, size=int(rng.integers(2, MAX_LEN + 2))) for _ in range(n)]


def rows(padded: torch.Tensor) -> list[list[int]]:
    """Left-padded rows -> item lists, asserting the padding is a prefix (none inside the sequence)."""
    out = []
    for row in padded.tolist():
        real = [i for i, x in enumerate(row) if x != 0]
        assert real and real == list(range(len(row) - len(real), len(row))), row
        out.append(row[len(row) - len(real):])
    return out


def is_subsequence(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(x in it for x in small)


# ---------------------------------------------------------------- augmentations


def test_each_augmentation_keeps_a_valid_sequence():
    g = torch.Generator().manual_seed(0)
    for seq in windows(1, 60):
        seq_l, n = seq.tolist(), len(seq)
        c = crop(seq, 0.6, g).tolist()
        assert len(c) == max(1, math.floor(0.6 * n))
        assert any(seq_l[s:s + len(c)] == c for s in range(n - len(c) + 1))  # contiguous
        m = mask(seq, 0.3, g).tolist()
        assert len(m) == n - min(n - 1, math.floor(0.3 * n)) and is_subsequence(m, seq_l)  # dropped, order kept
        r = reorder(seq, 0.5, g).tolist()
        assert sorted(r) == sorted(seq_l)
        changed = [i for i in range(n) if r[i] != seq_l[i]]
        assert not changed or changed[-1] - changed[0] < max(1, math.floor(0.5 * n))  # within one window
    one = np.array([7])
    assert crop(one, 0.1, g).tolist() == mask(one, 0.9, g).tolist() == reorder(one, 1.0, g).tolist() == [7]


@pytest.mark.parametrize("augmentations", [["crop", "mask", "reorder"], ["dropout"], ["crop", "dropout"]])
def test_collator_views_are_valid_left_padded_sequences(augmentations):
    batch_windows = windows(2)
    batch = ContrastiveCollator(MAX_LEN, augmentations, seed=0)(batch_windows)
    b = len(batch_windows)
    assert batch["view1"].shape == batch["view2"].shape and batch["view1"].shape[0] == b
    assert batch["view1"].shape[1] <= MAX_LEN
    for view in ("view1", "view2"):
        for w, v in zip(batch_windows, rows(batch[view])):
            source = w[-MAX_LEN:].tolist()
            assert 1 <= len(v) <= MAX_LEN
            assert set(v) <= set(source)  # only the user's own items: no mask token, no padding id
            if augmentations == ["dropout"]:
                assert v == source
    # the next-item inputs/targets of the original windows ride along
    for w, x, t in zip(batch_windows, rows(batch["items"]), rows(batch["targets"])):
        assert x == w[:-1].tolist() and t == w[1:].tolist()


def test_views_are_deterministic_under_a_seed():
    batch_windows = windows(3)
    a = ContrastiveCollator(MAX_LEN, seed=5)(batch_windows)
    b = ContrastiveCollator(MAX_LEN, seed=5)(batch_windows)
    c = ContrastiveCollator(MAX_LEN, seed=6)(batch_windows)
    assert torch.equal(a["view1"], b["view1"]) and torch.equal(a["view2"], b["view2"])
    assert not (a["view1"].shape == c["view1"].shape and torch.equal(a["view1"], c["view1"])
                and torch.equal(a["view2"], c["view2"]))
    assert not torch.equal(a["view1"], a["view2"])  # the two views of a batch differ


def test_bad_augmentation_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown augmentation 'shuffle'"):
        ContrastiveCollator(MAX_LEN, ["crop", "shuffle"])
    with pytest.raises(ConfigError, match="crop_ratio"):
        ContrastiveCollator(MAX_LEN, ["crop"], crop_ratio=0)
    with pytest.raises(ConfigError, match="temperature"):
        ContrastiveObjective(8, temperature=0)


# ---------------------------------------------------------------- loss


def brute_force_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    views = [v.double() for v in torch.cat([z1, z2]).detach()]
    b, total = len(z1), 0.0

    def sim(u, v):
        return float(u @ v / (u.norm() * v.norm())) / temperature

    for i in range(2 * b):
        positive = (i + b) % (2 * b)
        others = [sim(views[i], views[j]) for j in range(2 * b) if j != i]
        total += -(sim(views[i], views[positive]) - math.log(sum(math.exp(s) for s in others)))
    return total / (2 * b)


def test_nt_xent_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    z2[0] = z1[0] * 3  # a perfect positive pair (cosine 1)
    for temperature in (0.1, 0.5, 1.0):
        assert nt_xent(z1, z2, temperature).item() == pytest.approx(brute_force_nt_xent(z1, z2, temperature),
                                                                   rel=1e-5)
    # through the projection head: the same loss on the head's outputs
    torch.manual_seed(0)
    objective = ContrastiveObjective(4, temperature=0.3, projection_dim=3)
    head = objective.head
    assert objective(z1, z2).item() == pytest.approx(brute_force_nt_xent(head(z1), head(z2), 0.3), rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One of `world` gloo processes: its shard of the global batch's users, loss and gradients."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        users1, users2, state = torch.load(os.path.join(out, "inputs.pt"))
        b = len(users1) // world
        u1 = users1[rank * b:(rank + 1) * b].clone().requires_grad_()
        u2 = users2[rank * b:(rank + 1) * b].clone().requires_grad_()
        objective = ContrastiveObjective(users1.shape[1], temperature=0.2)
        objective.load_state_dict(state)
        loss = objective(u1, u2)  # gathers the other process's views as negatives
        loss.backward()
        torch.save({"loss": loss.item(), "g1": u1.grad, "g2": u2.grad,
                    "head": [p.grad for p in objective.parameters()]}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_global_batch_loss_and_gradients(tmp_path):
    g = torch.Generator().manual_seed(1)
    users1, users2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    torch.manual_seed(0)
    objective = ContrastiveObjective(6, temperature=0.2)
    torch.save((users1, users2, objective.state_dict()), tmp_path / "inputs.pt")
    # one process, the whole global batch
    u1, u2 = users1.clone().requires_grad_(), users2.clone().requires_grad_()
    loss = objective(u1, u2)
    loss.backward()
    # two gloo processes, four users each
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # the mean of the per-process losses (what DDP optimises) is the global loss
    assert np.mean([p["loss"] for p in parts]) == pytest.approx(loss.item(), rel=1e-5)
    # per-process input gradients (the loss of every process flows back), averaged as DDP does: the global ones
    for key, full in (("g1", u1.grad), ("g2", u2.grad)):
        assert torch.allclose(torch.cat([p[key] for p in parts]) / 2, full, atol=1e-6), key
    for i, param in enumerate(objective.parameters()):  # DDP's averaged head gradient = the global one
        assert torch.allclose((parts[0]["head"][i] + parts[1]["head"][i]) / 2, param.grad, atol=1e-6)


# ---------------------------------------------------------------- every encoder, and the trainer


@pytest.mark.parametrize("encoder", ["sasrec", "nextitnet", "gru4rec", "bidirectional"])
def test_contrastive_loss_trains_every_user_encoder(encoder):
    torch.manual_seed(0)
    model = SequentialRecommender(num_items=NUM_ITEMS, user_encoder=encoder, dim=8, max_len=MAX_LEN,
                                  encoder_args={"dropout": 0.1} if encoder != "nextitnet" else {}).train()
    objective = ContrastiveObjective(8, temperature=0.2)
    batch = ContrastiveCollator(MAX_LEN, ["crop", "mask", "reorder", "dropout"], seed=0)(windows(4, 16))
    next_item = create_objective("softmax", torch.ones(NUM_ITEMS + 1), 1)
    for combined in (None, next_item):
        model.zero_grad()
        objective.zero_grad()
        loss = contrastive_loss(model, objective, batch, combined, weight=0.1)
        assert torch.isfinite(loss)
        loss.backward()
        assert model.item_encoder.embedding.weight.grad.abs().sum() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.user_encoder.parameters())
        assert all(p.grad is not None for p in objective.parameters())
    # the user state is the encoder's state after the last real item, as encode_users reads it
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(batch["view1"])[:, -1], model.encode_users({"items": batch["view1"]}))


def _losses(run_dir) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader((run_dir / "log.csv").open()) if r["kind"] == "train"]


def test_contrastive_pretraining_run(tiny_world, tmp_path):
    from transrec.hub import load_model
    from transrec.training.trainer import train

    cfg = load_config(None, tiny_overrides(tiny_world, **{
        "task": "pretrain", "train.pretrain_objective": "contrastive", "train.epochs": 4, "train.patience": 1,
        "train.augmentations": "[crop, mask, reorder]", "train.contrastive_temperature": 0.5}))
    result = train(cfg, tmp_path / "clue")
    out = tmp_path / "clue"
    for name in ("model/config.json", "model/model.safetensors", "model/README.md", "metrics.json"):
        assert (out / name).is_file(), name
    losses = _losses(out)
    assert len(losses) == 4 and losses[-1] < losses[0], losses  # no early stop: the latest epoch is kept
    assert result.metrics["run"]["pretrain_objective"] == "contrastive" and result.metrics["run"]["best_epoch"] == 4
    # the saved backbone is the model alone: it loads strictly, without projection-head tensors
    model = load_model(out / "model")
    assert not any("head" in k for k in model.state_dict())
    assert json.loads((out / "model" / "config.json").read_text())["mask_token"] is False


def test_contrastive_with_next_item_and_dropout_views(tiny_world, tmp_path):
    from transrec.training.trainer import train

    cfg = load_config(None, tiny_overrides(tiny_world, **{
        "task": "pretrain", "model.name": "gru4rec", "train.pretrain_objective": "contrastive", "train.epochs": 3,
        "train.augmentations": "[dropout]", "train.contrastive_with_next_item": "true",
        "train.contrastive_weight": 0.5}))
    train(cfg, tmp_path / "both")
    losses = _losses(tmp_path / "both")
    assert losses[-1] < losses[0], losses
    with pytest.raises(ConfigError, match="model.dropout > 0"):
        train(load_config(None, tiny_overrides(tiny_world, **{
            "train.pretrain_objective": "contrastive", "train.augmentations": "[dropout]", "model.dropout": 0})),
            tmp_path / "bad")
