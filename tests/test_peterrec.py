"""PeterRec: patches, fine-tuning modes, parameter counts, downstream data, masked-item pretraining."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import pretrain_backbone, tiny_overrides
from transrec.config import Config, DownstreamConfig, load_config
from transrec.data.downstream import bucket, split_users
from transrec.data.masking import MaskedItemCollator, MaskedItemDataset
from transrec.data.sources.profile_labels import load_profile_labels
from transrec.errors import CheckpointError, ConfigError, DataError
from transrec.models.recommender import SequentialRecommender
from transrec.models.transfer.downstream import ClassifierHead, DownstreamModel, TargetItemHead
from transrec.models.transfer.peterrec import PatchSet, count_parameters, set_trainable
from transrec.training.finetune import cold_start_metrics, load_task, profile_metrics, task_loss

ENCODERS = {
    "nextitnet": {"dilations": [1, 2], "num_repeats": 1, "dropout": 0.0},
    "sasrec": {"num_layers": 2, "num_heads": 2, "dropout": 0.0},
    "bidirectional": {"num_layers": 1, "num_heads": 2, "dropout": 0.0},
}


def _backbone(name: str, dim: int = 16, num_items: int = 30, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    model = SequentialRecommender(num_items, user_encoder=name, dim=dim, max_len=12, encoder_args=ENCODERS[name])
    with torch.no_grad():  # a "pretrained" model: no parameter at its init value (layer norms included)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _items(b: int = 5, length: int = 10, num_items: int = 30) -> torch.Tensor:
    items = torch.randint(1, num_items + 1, (b, length))
    items[0, :4] = 0  # left padding
    return items


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("placement", ["serial", "parallel"])
def test_patches_are_identity_at_init_and_change_outputs_once_trained(encoder, placement):
    model, items = _backbone(encoder), _items()
    with torch.no_grad():
        before = model.hidden_states(items)
        patches = PatchSet(model.user_encoder, 16, placement)
        assert len(patches.patches) == len(model.user_encoder.patch_sites()) > 0
        assert torch.allclose(model.hidden_states(items), before, atol=1e-6)
        for p in patches.parameters():  # a trained patch (and task norms) must move the outputs
            p.add_(torch.randn_like(p) * 0.1)
        changed = model.hidden_states(items)
        assert (changed - before).abs().max() > 1e-3
        patches.detach()
        assert torch.allclose(model.hidden_states(items), before, atol=1e-6)


def test_serial_and_parallel_patches_differ():
    items = _items()
    outs = []
    for placement in ("serial", "parallel"):
        model = _backbone("nextitnet")
        patches = PatchSet(model.user_encoder, 16, placement)
        torch.manual_seed(1)
        with torch.no_grad():
            for patch in patches.patches.values():
                patch.up.weight.normal_(std=0.2)
            outs.append(model.hidden_states(items))
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def test_patches_refuse_encoders_without_sites():
    model = SequentialRecommender(10, user_encoder="gru4rec", dim=8, max_len=5)
    with pytest.raises(ConfigError, match="patch sites"):
        PatchSet(model.user_encoder, 8)
    with pytest.raises(ConfigError, match="serial"):
        PatchSet(_backbone("nextitnet").user_encoder, 16, "diagonal")


def _downstream(mode: str, encoder: str = "nextitnet", classes: int = 3, last_k: int = 1, bottleneck: int = 0):
    backbone = _backbone(encoder)
    patches = PatchSet(backbone.user_encoder, 16, "serial", bottleneck) if mode == "peterrec" else None
    model = DownstreamModel(backbone, ClassifierHead(16, classes), 16, "auto", patches)
    set_trainable(backbone, mode, last_k, patches)
    return model


def _n(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("encoder", ["nextitnet", "sasrec"])
def test_parameter_counts_are_exact(encoder):
    d, c, b = 16, 3, 4
    head = d * c + c + 2 * d  # linear + its layer norm
    cls = d
    full = _downstream("fine_all", encoder)
    backbone = _n(full.backbone)
    assert count_parameters(full) == (backbone + head + cls, backbone + head + cls)
    if encoder == "nextitnet":  # 2 blocks x (2 convs of d*d*k + d, 2 norms of 2d), item table (31 x d)
        assert backbone == 31 * d + 2 * 2 * (d * d * 3 + d + 2 * d)
    assert count_parameters(_downstream("fine_head", encoder)) == (head + cls, backbone + head + cls)
    last = _downstream("fine_last_k", encoder)
    top = _n(last.backbone.user_encoder.blocks[-1]) + (2 * d if encoder == "sasrec" else 0)  # + final_ln
    assert count_parameters(last) == (top + head + cls, backbone + head + cls)
    peter = _downstream("peterrec", encoder)
    sites = len(peter.backbone.user_encoder.patch_sites())
    norms = sum(isinstance(m, torch.nn.LayerNorm) for m in peter.backbone.user_encoder.modules())
    patch = (d * b + b) + (b * d + d)
    own = sites * patch + norms * 2 * d
    assert count_parameters(peter) == (own + head + cls, backbone + own + head + cls)


def test_frozen_tensors_do_not_move_and_task_state_holds_only_the_task():
    model = _downstream("peterrec")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    for _ in range(3):
        loss = task_loss(model(_items()), {"labels": torch.tensor([0, 1, 2, 0, 1])})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert not any(k.startswith("backbone.") for k in model.task_state())
    assert any(k.startswith("patches.norms.") for k in model.task_state())
    fine_all = _downstream("fine_all")
    assert set(fine_all.task_state()) == set(fine_all.state_dict())


def test_fine_last_k_bounds():
    with pytest.raises(ConfigError, match="last_k"):
        _downstream("fine_last_k", last_k=5)
    with pytest.raises(ConfigError, match="downstream.mode"):
        _downstream("fine_everything")


def test_cls_readout_appends_a_token_and_mean_pools_non_causal():
    causal = DownstreamModel(_backbone("nextitnet"), ClassifierHead(16, 2), 16)
    assert causal.readout == "cls" and causal.cls is not None
    items = _items(length=12)  # max_len 12: the oldest item makes room for [CLS]
    assert causal.user_states(items).shape == (5, 16)
    bidir = DownstreamModel(_backbone("bidirectional"), ClassifierHead(16, 2), 16)
    assert bidir.readout == "mean" and bidir.cls is None
    # mean pooling ignores padding: more left padding, same state
    padded = torch.cat([torch.zeros(5, 2, dtype=torch.long), items[:, 2:]], 1)
    torch.testing.assert_close(bidir.user_states(padded[:, 2:]), bidir.user_states(padded))


def test_masked_item_collator_statistics():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    windows = [rng.integers(1, 501, size=rng.integers(2, 40)) for _ in range(4000)]
    batch = MaskedItemCollator(num_items=500, mask_prob=0.2)(windows)
    original = [torch.as_tensor(w) for w in windows]
    real = batch["items"] > 0
    chosen = batch["targets"] > 0
    assert not (chosen & ~real).any(), "padding is never chosen"
    assert chosen.any(1).all(), "every window predicts at least one item"
    share = chosen.sum().item() / real.sum().item()
    assert 0.19 < share < 0.22  # 0.2, plus the forced pick in short windows
    masked, kept = batch["masked"], chosen & ~batch["masked"]
    assert not (masked & ~chosen).any()
    assert 0.78 < masked.sum().item() / chosen.sum().item() < 0.82
    # targets are the original items; unmasked chosen positions are ~half random, ~half unchanged
    for row, w in zip(range(len(windows)), original):
        t = batch["targets"][row, -len(w):]
        sel = t > 0
        assert torch.equal(t[sel], w[sel])
    unchanged = (batch["items"] == batch["targets"]) & kept
    assert 0.4 < unchanged.sum().item() / kept.sum().item() < 0.6
    with pytest.raises(ConfigError, match="mask_prob"):
        MaskedItemCollator(10, mask_prob=0.0)


def test_masked_item_windows_cover_every_item_once():
    seqs = [np.arange(1, 26), np.arange(1, 3), np.arange(1, 2)]
    ds = MaskedItemDataset(seqs, max_len=10)
    assert sorted(len(w) for w in ds.windows) == [2, 5, 10, 10]
    assert sum(len(w) for w in ds.windows) == 27


def test_profile_label_loader_reports_lines(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("user_id,taste\nu1,3\nu2,1\n\n")
    assert load_profile_labels(good) == ("taste", {"u1": "3", "u2": "1"})
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,taste\nu1,3\nu2\n,4\nu3,\nu1,2\nu4,1,9\n")
    with pytest.raises(DataError) as err:
        load_profile_labels(bad)
    msg = str(err.value)
    for expected in ("line 3: expected 2 fields", "line 4: empty user_id", "line 5: user 'u3' has an empty taste",
                     "line 6: user 'u1' already labelled at line 2", "line 7: expected 2 fields"):
        assert expected in msg
    header = tmp_path / "header.csv"
    header.write_text("user,taste\nu1,3\n")
    with pytest.raises(DataError, match="line 1 must be the header"):
        load_profile_labels(header)
    with pytest.raises(DataError, match="does not exist"):
        load_profile_labels(tmp_path / "missing.csv")


def test_age_buckets_and_user_split():
    assert bucket([17, 18, 24, 25, 49, 56, 70, None], [18, 25, 35, 45, 50, 56], "age") == \
        ["<18", "18-25", "18-25", "25-35", "45-50", "56+", "56+", None]
    with pytest.raises(DataError, match="numeric"):
        bucket(["old"], [18], "age")
    train, valid, test = split_users(100, 0.1, 0.2, seed=3)
    assert (len(train), len(valid), len(test)) == (70, 10, 20)
    assert len(set(train) | set(valid) | set(test)) == 100
    with pytest.raises(ConfigError):
        split_users(100, 0.5, 0.6, seed=0)


def test_profile_metrics_macro_f1_over_all_classes():
    m = profile_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), num_classes=3)
    assert m["accuracy"] == 0.75
    # class 0: P=1/2 R=1 F1=2/3; class 1: P=1 R=2/3 F1=0.8; class 2 (absent): 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_cold_start_loss_and_metrics():
    logits = TargetItemHead(4, 5)(torch.randn(2, 4))
    loss = task_loss(logits, {"targets": torch.tensor([[0, 1, 2], [0, 0, 3]])})
    assert torch.isfinite(loss)
    expected = -(torch.log_softmax(logits, -1)[0, [1, 2]].mean() + torch.log_softmax(logits, -1)[1, 3]) / 2
    torch.testing.assert_close(loss, expected)
    m = cold_start_metrics(np.array([0, 20, 0]), np.array([0, 0, 1]), ks=(10,))
    assert m["HR@10"] == pytest.approx((0.5 + 1.0) / 2) and m["users"] == 2 and m["cases"] == 3


def _file_hash(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pretrained(tiny_world, tmp_path_factory):
    return pretrain_backbone(tiny_world, tmp_path_factory.mktemp("pretrain"), epochs=2)


def _task_cfg(world, backbone, **extra):
    base = {"downstream.backbone": str(backbone), "train.epochs": 3, "train.patience": 5, "train.lr": 0.01}
    base.update(extra)
    return load_config(None, tiny_overrides(world, **base))


def test_one_backbone_serves_tasks_unchanged(tiny_world, pretrained, tmp_path):
    from transrec.hub import load_model
    from transrec.training.finetune import finetune

    weights = pretrained / "model.safetensors"
    file_before = _file_hash(weights)
    tensors_before = load_file(str(weights))
    labels = tmp_path / "activity.csv"
    users = [line.split(",")[0] for line in (tiny_world / "users.csv").read_text().splitlines()[1:]]
    activity = [line.split(",")[2] for line in (tiny_world / "users.csv").read_text().splitlines()[1:]]
    labels.write_text("user_id,activity\n" + "".join(f"{u},{a}\n" for u, a in zip(users, activity)))
    runs = {
        "taste": _task_cfg(tiny_world, pretrained, task="profile", **{"downstream.label": "taste"}),
        "activity": _task_cfg(tiny_world, pretrained, task="profile", **{"downstream.labels_file": str(labels)}),
        "cold": _task_cfg(tiny_world, pretrained, task="cold_start", **{"downstream.target_domain": "B",
                                                                        "downstream.patch": "parallel"}),
    }
    for name, cfg in runs.items():
        result = finetune(cfg, tmp_path / name)
        run = result.metrics["run"]
        assert 0 < run["trainable_params"] < run["total_params"]
        assert _file_hash(weights) == file_before
        stored = load_file(str(tmp_path / name / "task.safetensors"))
        assert stored and not any(k.startswith("backbone.") for k in stored), "peterrec stores patches + head only"
        # the rebuilt task computes the same test metrics from backbone + task file
        task = load_task(tmp_path / name)
        assert all(torch.equal(v, tensors_before[k]) for k, v in task.backbone.state_dict().items())
    assert set(result.metrics["test"]) >= {"HR@10", "NDCG@10", "MRR@10"}
    assert result.metrics["baseline"]["name"] == "popularity"
    spec = json.loads((tmp_path / "cold" / "task.json").read_text())
    assert spec["backbone_sha256"] == file_before and len(spec["target_items"]) > 0
    assert load_model(pretrained).num_items == len(json.loads((pretrained / "item_ids.json").read_text()))


def test_task_reload_checks_backbone_and_predictions(tiny_world, pretrained, tmp_path):
    import shutil

    from transrec.training.finetune import finetune

    cfg = _task_cfg(tiny_world, pretrained, task="profile", **{"downstream.label": "taste",
                                                               "downstream.mode": "fine_last_k"})
    finetune(cfg, tmp_path / "run")
    task = load_task(tmp_path / "run")
    stored = load_file(str(tmp_path / "run" / "task.safetensors"))
    assert any(k.startswith("backbone.user_encoder.blocks.") for k in stored)  # the trained top block
    assert not any(k.startswith("backbone.item_encoder") for k in stored)
    items = _items(num_items=task.backbone.num_items)
    again = load_task(tmp_path / "run")
    torch.testing.assert_close(task(items), again(items))
    other = tmp_path / "other_backbone"
    shutil.copytree(pretrained, other)
    from safetensors.torch import save_file

    tensors = load_file(str(other / "model.safetensors"))
    save_file({k: v + 1 for k, v in tensors.items()}, str(other / "model.safetensors"))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_task(tmp_path / "run", backbone=other)


def test_downstream_errors(tiny_world, pretrained, tmp_path):
    from transrec.training.finetune import finetune

    with pytest.raises(ConfigError, match="downstream.backbone"):
        finetune(load_config(None, tiny_overrides(tiny_world, task="profile")), tmp_path / "a")
    with pytest.raises(DataError, match="no user attribute"):
        finetune(_task_cfg(tiny_world, pretrained, task="profile", **{"downstream.label": "shoe_size"}), tmp_path / "b")
    with pytest.raises(DataError, match="never saw"):  # domain A items are the backbone's: not cold-start targets
        finetune(_task_cfg(tiny_world, pretrained, task="cold_start", **{"downstream.target_domain": "A"}),
                 tmp_path / "c")
    with pytest.raises(ConfigError, match="target_domain"):
        finetune(_task_cfg(tiny_world, pretrained, task="cold_start", **{"downstream.target_domain": "Z"}),
                 tmp_path / "d")
    with pytest.raises(ConfigError, match="unknown config key 'downstream.mod'"):
        load_config(None, ["downstream.mod=peterrec"])


def test_masked_item_pretraining_runs_and_needs_a_non_causal_encoder(tiny_world, tmp_path):
    from transrec.hub import load_model
    from transrec.training.trainer import train

    with pytest.raises(ConfigError, match="non-causal"):
        train(load_config(None, tiny_overrides(tiny_world, **{"train.pretrain_objective": "masked_item"})),
              tmp_path / "x")
    cfg = load_config(None, tiny_overrides(tiny_world, **{"task": "pretrain", "model.name": "bidirectional",
                                                          "train.pretrain_objective": "masked_item",
                                                          "train.epochs": 2}))
    result = train(cfg, tmp_path / "masked")
    assert result.metrics["run"]["pretrain_objective"] == "masked_item"
    assert result.metrics["test"]["NDCG@10"] > 0
    model = load_model(tmp_path / "masked" / "model")
    assert model.mask_vector is not None and not model.causal
    assert isinstance(Config().downstream, DownstreamConfig)


def test_published_peterrec_files_pretrain_and_transfer(tmp_path):
    """The PeterRec/Conure file pair: pretrain on the pretraining file, then a cold-start task whose
    targets come from the fine-tune file (their own id space) and a profile task (first target = label)."""
    from transrec.training.finetune import finetune
    from transrec.training.trainer import train

    rng = np.random.default_rng(0)
    pre, cold, prof = [], [], []
    for u in range(80):
        group = u % 2
        seq = [str(i) for i in rng.integers(1 + 15 * group, 16 + 15 * group, size=12)]
        pre.append(",".join(["0"] * 3 + seq))
        cold.append(",".join(seq) + ",," + ",".join(f"t{group}{k}" for k in rng.integers(0, 5, size=3)))
        prof.append(",".join(seq) + ",," + ("young" if group else "old"))
    (tmp_path / "pre.csv").write_text("\n".join(pre) + "\n")
    (tmp_path / "cold.csv").write_text("\n".join(cold) + "\n")
    (tmp_path / "prof.csv").write_text("\n".join(prof) + "\n")
    base = {"data.source": "peterrec", "data.pretrain": str(tmp_path / "pre.csv"), "data.max_len": 16,
            "model.name": "nextitnet", "model.dim": 16, "model.dilations": "[1,2]", "model.num_repeats": 1,
            "train.batch_size": 16, "train.lr": 0.01, "train.progress": "false"}
    train(load_config(None, [f"{k}={v}" for k, v in {**base, "task": "pretrain", "train.epochs": 2}.items()]),
          tmp_path / "pt")
    down = {**base, "train.epochs": 15, "downstream.backbone": str(tmp_path / "pt" / "model")}
    cold_cfg = load_config(None, [f"{k}={v}" for k, v in {**down, "task": "cold_start",
                                                          "data.finetune": str(tmp_path / "cold.csv")}.items()])
    metrics = finetune(cold_cfg, tmp_path / "cold").metrics
    assert json.loads((tmp_path / "cold" / "task.json").read_text())["target_items"] == \
        sorted(f"t{g}{k}" for g in range(2) for k in range(5))
    assert metrics["test"]["HR@5"] > metrics["baseline"]["HR@5"]  # the source sequence tells the group apart
    prof_cfg = load_config(None, [f"{k}={v}" for k, v in {**down, "task": "profile", "downstream.label": "targets",
                                                           "data.finetune": str(tmp_path / "prof.csv")}.items()])
    metrics = finetune(prof_cfg, tmp_path / "prof").metrics
    assert metrics["test"]["accuracy"] > 0.9  # groups use disjoint items: separable


def test_peterrec_transfers_a_content_transformer_backbone(tiny_world, tmp_path):
    """The TransRec user encoder (a transformer over content item vectors) takes patches too; its
    cold-start input items are all items outside the target domain, encoded from content."""
    from transrec.training.finetune import finetune
    from transrec.training.trainer import train

    content = {"model.item_encoder": "mixture", "model.text_encoder": "tiny-bert", "model.image_encoder": "tiny-vit",
               "model.text_trainable_blocks": 0, "model.image_trainable_blocks": 0, "model.pretrained": "false"}
    train(load_config(None, tiny_overrides(tiny_world, **{"task": "pretrain", "data.domain": "A", "train.epochs": 1,
                                                          **content})), tmp_path / "pt")
    weights = tmp_path / "pt" / "model" / "model.safetensors"
    before = _file_hash(weights)
    cfg = _task_cfg(tiny_world, tmp_path / "pt" / "model", task="cold_start",
                    **{"downstream.target_domain": "B", "train.epochs": 2})
    result = finetune(cfg, tmp_path / "cold")
    assert _file_hash(weights) == before
    assert result.metrics["run"]["trainable_share"] < 0.5
    stored = load_file(str(tmp_path / "cold" / "task.safetensors"))
    assert any("_attn." in k for k in stored) and not any(k.startswith("backbone.") for k in stored)


def test_cold_start_sampled_legacy_protocol_is_labelled_and_easier():
    from transrec.training.finetune import cold_start_ranks

    torch.manual_seed(0)
    users, items = torch.randn(20, 8), torch.randn(301, 8)
    targets = [np.array([1 + i, 50 + i]) for i in range(20)]
    full, owner = cold_start_ranks(users, items, targets)
    sampled, owner2 = cold_start_ranks(users, items, targets, protocol="sampled_legacy", num_negatives=99, seed=1)
    assert (owner == owner2).all() and sampled.max() <= 99 and (sampled <= full).all() and (sampled < full).any()
    with pytest.raises(ConfigError, match="protocol"):
        cold_start_ranks(users, items, targets, protocol="sampled")
