"""UAF: per-user switches between frozen blocks and their fine-tuned copies."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import pretrain_backbone, tiny_overrides
from transrec.config import load_config
from transrec.errors import ConfigError
from transrec.models.recommender import SequentialRecommender
from transrec.models.transfer.downstream import ClassifierHead
from transrec.models.transfer.uaf import (UAFDownstreamModel, by_history_length, history_buckets,
                                         share_by_history_length, uaf_report)
from transrec.training.finetune import task_loss

ENCODERS = {
    "nextitnet": {"dilations": [1, 2], "num_repeats": 1, "dropout": 0.0},
    "sasrec": {"num_layers": 2, "num_heads": 2, "dropout": 0.0},
    "bidirectional": {"num_layers": 2, "num_heads": 2, "dropout": 0.0},
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and on busy cores extra threads spin: 10x slower tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _backbone(name: str, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    model = SequentialRecommender(30, user_encoder=name, dim=16, max_len=12, encoder_args=ENCODERS[name])
    with torch.no_grad():  # "pretrained": no parameter at its init value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _items(b: int = 16, length: int = 10, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 31, (b, length), generator=g)
    for i in range(b):  # varied history lengths, left-padded
        items[i, : i % (length - 1)] = 0
    return items


def _uaf(name: str, **kw) -> UAFDownstreamModel:
    return UAFDownstreamModel(_backbone(name), ClassifierHead(16, 3), 16, **kw)


def _perturb(module: torch.nn.Module, scale: float = 0.2) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_eval_decisions_are_hard_and_deterministic(encoder):
    model = _uaf(encoder)
    _perturb(model.uaf)  # trained copies and policy: the choice now matters
    model.eval()
    items = _items()
    first, d1 = model(items), model.decisions(items)
    second, d2 = model(items), model.decisions(items)
    assert torch.equal(first, second) and torch.equal(d1, d2)
    assert d1.shape == (16, model.uaf.num_blocks) and set(d1.unique().tolist()) <= {0.0, 1.0}
    assert 0 < d1.mean() < 1  # users differ
    model.train()  # training decisions are sampled but still hard (straight-through)
    model(items)
    sampled = model.uaf.last_decisions
    assert torch.allclose(sampled, sampled.round(), atol=1e-6) and sampled.requires_grad


@pytest.mark.parametrize("encoder", ["nextitnet", "sasrec"])
def test_only_copies_policy_and_head_receive_gradients(encoder):
    model = _uaf(encoder)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    items, labels = _items(), torch.arange(16) % 3
    loss = task_loss(model(items), {"labels": labels}) + 0.1 * model.fine_tuned_share()
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    for part in (model.uaf.copies, model.uaf.policy, model.head):
        assert all(p.requires_grad and p.grad is not None for p in part.parameters())
    assert sum(p.grad.abs().sum() for p in model.uaf.copies.parameters()) > 0
    assert model.uaf.policy.mlp[-1].bias.grad.abs().sum() > 0
    optimizer.step()
    assert all(torch.equal(backbone_before[k], v) for k, v in model.backbone.state_dict().items())
    state = model.task_state()
    assert not any(k.startswith("backbone.") for k in state)
    assert any(k.startswith("uaf.copies.") for k in state) and any(k.startswith("uaf.policy.") for k in state)


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_all_frozen_and_untrained_copies_compute_the_pretrained_function(encoder):
    pretrained = _backbone(encoder)
    model = _uaf(encoder)
    items = _items()
    with torch.no_grad():
        reference = pretrained.hidden_states(items)
        for value in (0.0, 1.0):
            with model.uaf.forced(value):
                assert torch.equal(model.backbone.hidden_states(items), reference)
        # the policy's own mixed decisions, copies still equal to the originals
        torch.testing.assert_close(model.backbone.hidden_states(items), reference, atol=1e-6, rtol=0)
        _perturb(model.uaf.copies)
        with model.uaf.forced(0.0):
            assert torch.equal(model.backbone.hidden_states(items), reference)
        with model.uaf.forced(1.0):
            assert (model.backbone.hidden_states(items) - reference).abs().max() > 1e-3
        model.uaf.detach()
        assert torch.equal(model.backbone.hidden_states(items), reference)


def test_cost_gradient_pushes_towards_frozen_blocks():
    model = _uaf("nextitnet")
    model.train()
    model(_items())
    model.fine_tuned_share().backward()
    grad = model.uaf.policy.mlp[-1].bias.grad.view(-1, 2)  # (frozen, fine-tuned) logits per block
    assert (grad[:, 1] > 0).all() and (grad[:, 0] < 0).all()


def _train_share(cost: float, steps: int = 20) -> float:
    model = _uaf("sasrec")
    torch.manual_seed(5)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    items, labels = _items(32, seed=2), torch.arange(32) % 3
    model.train()
    for _ in range(steps):
        loss = task_loss(model(items), {"labels": labels}) + cost * model.fine_tuned_share()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return float(model.decisions(items).mean())


def test_cost_lowers_the_share_of_fine_tuned_blocks():
    free, costly = _train_share(0.0), _train_share(2.0)
    assert costly < free and costly < 0.2


def test_share_by_history_length_buckets():
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    decisions = np.array([[0, 0], [0, 0], [0, 1], [0, 1], [1, 1], [1, 1], [1, 1], [1, 1]], dtype=float)
    rows = share_by_history_length(decisions, lengths)
    assert [r["users"] for r in rows] == [2, 2, 2, 2]
    assert [r["fine_tuned_share"] for r in rows] == [0.0, 0.5, 1.0, 1.0]
    assert (rows[0]["min_length"], rows[-1]["max_length"]) == (1, 8)
    tied = share_by_history_length(decisions, np.array([3] * 7 + [9]))  # tied quantiles merge buckets
    assert sum(r["users"] for r in tied) == 8 and len(tied) < 4


def test_by_history_length_means_per_bucket():
    lengths = np.array([5, 1, 8, 2, 7, 3, 6, 4])  # unsorted: buckets follow lengths, not positions
    ndcg = lengths / 10.0
    ndcg[2] = np.nan  # a user without a value is left out of its bucket's mean, still counted as a user
    rows = by_history_length({"NDCG@10": ndcg, "one": np.ones(8)}, lengths)
    assert [(r["min_length"], r["max_length"], r["users"]) for r in rows] == [(1, 2, 2), (3, 4, 2), (5, 6, 2), (7, 8, 2)]
    assert [r["NDCG@10"] for r in rows] == pytest.approx([0.15, 0.35, 0.55, 0.7])
    assert all(r["one"] == 1.0 for r in rows)
    assert list(history_buckets(lengths)) == [2, 0, 3, 0, 3, 1, 2, 1]
    assert by_history_length({"x": np.zeros(0)}, np.zeros(0)) == []
    with pytest.raises(ValueError, match="3 values for 8 users"):
        by_history_length({"x": np.ones(3)}, lengths)
    with pytest.raises(ConfigError, match="num_buckets"):
        history_buckets(lengths, 0)


def test_uaf_report_and_errors():
    model = _uaf("nextitnet")
    _perturb(model.uaf.policy, 1.0)
    seqs = [np.arange(1, n + 2) for n in range(20)]
    report = uaf_report(model, seqs, max_items=11, batch_size=7)
    assert report["users"] == 20 and len(report["per_block_share"]) == model.uaf.num_blocks
    assert report["fine_tuned_share"] == pytest.approx(np.mean(report["per_block_share"]))
    assert sum(r["users"] for r in report["by_history_length"]) == 20
    gru = SequentialRecommender(10, user_encoder="gru4rec", dim=8, max_len=5)
    with pytest.raises(ConfigError, match="blocks"):
        UAFDownstreamModel(gru, ClassifierHead(8, 2), 8)
    with pytest.raises(ConfigError, match="uaf_temperature"):
        _uaf("nextitnet", temperature=0.0)


@pytest.fixture(scope="module")
def pretrained(tiny_world, tmp_path_factory):
    return pretrain_backbone(tiny_world, tmp_path_factory.mktemp("pretrain"), epochs=1)


@pytest.mark.parametrize("task", ["profile", "cold_start"])
def test_cli_uaf_run_writes_the_fine_tuned_share(tiny_world, pretrained, tmp_path, task):
    from transrec.cli import main
    from transrec.training.finetune import load_task

    weights = pretrained / "model.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    extra = {"downstream.label": "taste"} if task == "profile" else {"downstream.target_domain": "B"}
    overrides = tiny_overrides(tiny_world, **{"task": task, "downstream.backbone": str(pretrained),
                                              "downstream.mode": "uaf", "downstream.uaf_policy_hidden": 8,
                                              "downstream.uaf_cost": 0.05, "train.epochs": 2, **extra})
    out = tmp_path / "run"
    assert main(["train", "--output-dir", str(out), *overrides]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    uaf = metrics["uaf"]
    assert 0.0 <= uaf["fine_tuned_share"] <= 1.0 and len(uaf["per_block_share"]) == 2
    assert sum(r["users"] for r in uaf["by_history_length"]) == metrics["test"]["users"] == uaf["users"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    # per-user test metrics by history length: the buckets' user-weighted means are the test metrics
    buckets = metrics["test_by_history_length"]
    assert sum(r["users"] for r in buckets) == metrics["test"]["users"]
    assert [r["min_length"] for r in buckets] == [r["min_length"] for r in uaf["by_history_length"]]
    for key, per_user in ([("accuracy", "correct")] if task == "profile" else [("NDCG@10", "NDCG@10"), ("HR@10", "HR@10")]):
        weighted = sum(r[per_user] * r["users"] for r in buckets) / sum(r["users"] for r in buckets)
        assert weighted == pytest.approx(metrics["test"][key])
    stored = load_file(str(out / "task.safetensors"))
    assert not any(k.startswith("backbone.") for k in stored)
    assert any(k.startswith("uaf.copies.") for k in stored) and any(k.startswith("uaf.policy.") for k in stored)
    task_model = load_task(out)  # rebuilt from the backbone + task file: the same decisions and outputs
    assert isinstance(task_model, UAFDownstreamModel) and task_model.uaf.policy.mlp[0].out_features == 8
    items = _items(b=6, length=8) % task_model.backbone.num_items + 1
    again = load_task(out)
    assert all(torch.equal(v, stored[k]) for k, v in again.task_state().items())
    assert torch.equal(task_model.decisions(items), again.decisions(items))
    torch.testing.assert_close(task_model(items), again(items))
