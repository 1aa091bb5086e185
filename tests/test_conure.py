"""Conure: task masks, frozen entries under AdamW, pruning shares, no forgetting, one-file round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import tiny_overrides
from transrec.config import load_config
from transrec.errors import CheckpointError, ConfigError
from transrec.models.recommender import SequentialRecommender
from transrec.models.transfer.conure import Conure, TaskMasks, kept_count, pack_owners, unpack_owners

ENCODERS = {
    "nextitnet": {"dilations": [1, 2], "num_repeats": 1, "dropout": 0.0},
    "sasrec": {"num_layers": 1, "num_heads": 2, "dropout": 0.0},
    "bidirectional": {"num_layers": 1, "num_heads": 2, "dropout": 0.0},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine their spin-waits cost ~5x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _backbone(name: str = "nextitnet", num_items: int = 30, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    return SequentialRecommender(num_items, user_encoder=name, dim=16, max_len=12, encoder_args=ENCODERS[name])


def _items(b: int = 6, length: int = 10, num_items: int = 30, seed: int = 1) -> torch.Tensor:
    items = torch.randint(1, num_items + 1, (b, length), generator=torch.Generator().manual_seed(seed))
    items[0, :4] = 0  # left padding
    return items


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns: equal here means bitwise equal (0.0 and -0.0 differ)."""
    return t.detach().contiguous().view(torch.int32)


@pytest.mark.parametrize("encoder, expected", [
    ("nextitnet", {"blocks.0.convs.0", "blocks.0.convs.1", "blocks.1.convs.0", "blocks.1.convs.1"}),
    ("sasrec", {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.ffn.0", "blocks.0.ffn.3"}),
    ("bidirectional", {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.ffn.0", "blocks.0.ffn.3"}),
])
def test_masks_cover_the_encoders_weight_matrices(encoder, expected):
    masks = TaskMasks(_backbone(encoder).user_encoder)
    assert set(masks.layers) == expected
    assert all(o.dtype == torch.uint8 and not o.any() for o in masks.owners.values())
    with pytest.raises(ConfigError, match="no nn.Linear"):
        TaskMasks(SequentialRecommender(10, user_encoder="gru4rec", dim=8, max_len=5).user_encoder)


def test_task_view_zeroes_later_and_free_entries_without_copying():
    model, items = _backbone("sasrec"), _items()
    masks = TaskMasks(model.user_encoder)
    g = torch.Generator().manual_seed(0)
    owners = {f"{n}.weight": torch.randint(0, 4, o.shape, generator=g).to(torch.uint8) for n, o in masks.owners.items()}
    masks.load_state(owners, num_tasks=3)
    weights = {n: m.weight for n, m in masks.layers.items()}
    raw = {n: w.detach().clone() for n, w in weights.items()}
    pointers = {n: w.data_ptr() for n, w in weights.items()}
    for j in (1, 2, 3):
        with torch.no_grad(), masks.task(j):
            masked = model.hidden_states(items)
        saved_view, masks.view = masks.view, None  # reference: the same model with its weights zeroed by hand
        with torch.no_grad():
            for n, w in weights.items():
                keep = (masks.owners[n] >= 1) & (masks.owners[n] <= j)
                w.copy_(torch.where(keep, raw[n], torch.zeros(())))
            reference = model.hidden_states(items)
            for n, w in weights.items():
                w.copy_(raw[n])
        masks.view = saved_view
        assert torch.equal(masked, reference)
    for n, module in masks.layers.items():  # the Parameter is back, same storage, values untouched
        assert isinstance(module.weight, torch.nn.Parameter) and module.weight is weights[n]
        assert module.weight.data_ptr() == pointers[n] and torch.equal(_bits(module.weight), _bits(raw[n]))
    with pytest.raises(RuntimeError):  # a failing call still puts the Parameter back
        masks.layers["blocks.0.attn.proj"](torch.zeros(2, 3))
    assert isinstance(masks.layers["blocks.0.attn.proj"].weight, torch.nn.Parameter)
    with pytest.raises(ConfigError, match="not learned"):
        with masks.task(4):
            pass


def test_frozen_entries_cannot_move_under_adamw_decay_momentum_and_clipping():
    model, items = _backbone("nextitnet"), _items()
    masks = TaskMasks(model.user_encoder)
    params = list(model.parameters())
    prunable = {id(m.weight) for m in masks.layers.values()}
    shared = [p for p in params if id(p) not in prunable]  # embeddings, norms, biases: frozen after task 1
    optimizer = torch.optim.AdamW(params, lr=0.05, weight_decay=0.5)

    def step():
        loss = model.hidden_states(items).pow(2).mean() + model.all_item_vectors().pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1e-3)  # tiny: clipping rescales every step
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # stale zero gradients: AdamW still decays and applies momentum

    masks.begin(1)
    for _ in range(3):  # momentum and second moments for every entry
        step()
    masks.prune(0.3)
    masks.finish()
    masks.begin(2)
    weights = {n: m.weight for n, m in masks.layers.items()}
    before = {n: w.detach().clone() for n, w in weights.items()}
    shared_before = [p.detach().clone() for p in shared]
    guard = masks.protect(optimizer, shared)
    for _ in range(4):
        step()
    for n, w in weights.items():
        task1 = masks.owners[n] == 1
        assert torch.equal(_bits(w[task1]), _bits(before[n][task1])), f"{n}: a task-1 entry moved"
        assert not torch.equal(w[~task1], before[n][~task1]), f"{n}: task 2's free entries did not train"
    assert all(torch.equal(_bits(p), _bits(s)) for p, s in zip(shared, shared_before))
    guard.remove()
    step()  # the control: without the guard, decay and stale momentum do move task 1's entries
    assert any(not torch.equal(w[masks.owners[n] == 1], before[n][masks.owners[n] == 1]) for n, w in weights.items())
    assert any(not torch.equal(p, s) for p, s in zip(shared, shared_before))


def test_pruning_keeps_exactly_the_configured_share_and_capacity_adds_up():
    model = _backbone("sasrec")
    masks = TaskMasks(model.user_encoder)
    before = {n: m.weight.detach().clone() for n, m in masks.layers.items()}
    with pytest.raises(ConfigError, match="prune"):
        masks.prune(0.3)
    masks.begin(1)
    with pytest.raises(ConfigError, match="keep_ratio"):
        masks.prune(0.0)
    kept1 = masks.prune(0.3)
    for n, m in masks.layers.items():
        owner, n_entries = masks.owners[n], before[n].numel()
        assert int((owner == 1).sum()) == kept1[n] == kept_count(n_entries, 0.3) == int(0.3 * n_entries + 0.5)
        magnitude = before[n].abs()
        assert magnitude[owner == 1].min() >= magnitude[owner == 0].max()  # the largest |w| are kept
        assert torch.equal(m.weight[owner == 1], before[n][owner == 1])
        assert not m.weight[owner == 0].any()  # released entries are reset to zero
    masks.finish()
    with pytest.raises(ConfigError, match="in order"):
        masks.begin(3)
    masks.begin(2)
    free = {n: int((o == 0).sum()) for n, o in masks.owners.items()}
    kept2 = masks.prune(0.5)
    for n, owner in masks.owners.items():
        assert int((owner == 2).sum()) == kept2[n] == kept_count(free[n], 0.5)
        assert int((owner == 1).sum()) == kept1[n]
    masks.finish()
    total = sum(o.numel() for o in masks.owners.values())
    report = masks.capacity()
    assert report["entries"] == total
    assert report["tasks"] == [sum(kept1.values()) / total, sum(kept2.values()) / total]
    assert report["free"] == (total - sum(kept1.values()) - sum(kept2.values())) / total
    assert sum(report["tasks"]) + report["free"] == pytest.approx(1.0)
    masks.begin(3)  # finished without pruning: the task owns every free entry
    masks.finish()
    assert masks.capacity()["free"] == 0.0 and len(masks.capacity()["tasks"]) == 3


# ------------------------------------------------------------------- a task sequence on the tiny world

def _lifelong_cfg(world, **extra):
    base = {"data.domain": "A", "model.name": "nextitnet", "model.dilations": "[1,2]", "model.num_repeats": 1,
            "model.dropout": 0.1, "train.epochs": 2, "train.weight_decay": 0.01,
            "lifelong.tasks": "[next_item,profile:taste,cold_start:B]"}
    base.update(extra)
    return load_config(None, tiny_overrides(world, **base))


def _run(world, method: str):
    from transrec.data.pipeline import load_raw_dataset, prepare_data
    from transrec.models.recommender import build_model
    from transrec.training.lifelong import learn_task_sequence, tasks_from_config

    cfg = _lifelong_cfg(world)
    data = prepare_data(cfg.data)
    tasks = tasks_from_config(cfg, data, load_raw_dataset(cfg.data))
    torch.manual_seed(0)
    backbone = build_model(cfg.model, data.num_items, cfg.data.max_len)
    items = _items(b=8, length=15, num_items=data.num_items)
    predictions = {}  # after task k: the predictions of tasks 1..k

    def record(k, conure):
        predictions[k] = [conure.predict(j, items) for j in range(1, k + 1)]

    result = learn_task_sequence(backbone, tasks, cfg, method=method, on_task_end=record)
    return result, predictions, items


@pytest.fixture(scope="module")
def conure_run(tiny_world):
    return _run(tiny_world, "conure")


def test_old_tasks_stay_bitwise_identical_and_sinmoall_drifts(conure_run, tiny_world):
    result, predictions, _ = conure_run
    assert [t["kind"] for t in result.conure.specs] == ["next_item", "profile", "cold_start"]
    for k in (2, 3):
        assert torch.equal(predictions[k][0], predictions[1][0]), f"task 1 changed after learning task {k}"
    assert torch.equal(predictions[3][1], predictions[2][1]), "task 2 changed after learning task 3"
    matrix = result.matrix
    assert matrix[0][0] == matrix[0][1] == matrix[0][2] and matrix[1][1] == matrix[1][2]
    assert matrix[1][0] is None and matrix[2][0] is None and matrix[2][1] is None and matrix[2][2] is not None
    assert result.headline == ["NDCG@10", "accuracy", "NDCG@10"] and "after T3" in result.table()
    assert [log["keep_ratio"] for log in result.logs] == [0.3, 0.5, 0.5]
    report = result.capacity
    assert len(report["tasks"]) == 3 and sum(report["tasks"]) + report["free"] == pytest.approx(1.0)
    assert report["tasks"][0] == pytest.approx(0.3, abs=0.01) and report["free"] > 0
    drift, drift_predictions, _ = _run(tiny_world, "sinmoall")  # the same sequence, every weight fine-tuned
    assert not torch.equal(drift_predictions[3][0], drift_predictions[1][0]), "SinMoAll should forget task 1"
    assert not torch.equal(drift_predictions[3][1], drift_predictions[2][1])
    assert drift.capacity["tasks"] == []


def test_save_load_round_trip_is_bitwise_and_strict(conure_run, tmp_path):
    result, predictions, items = conure_run
    path = result.conure.save(tmp_path / "conure.safetensors")
    with safe_open(str(path), framework="pt") as f:
        metadata, keys = f.metadata(), list(f.keys())
        state = {k: f.get_tensor(k) for k in keys}
    assert {k.split(".")[0] for k in keys} == {"backbone", "owner", "task2", "task3"}
    assert all(state[k].dtype == torch.uint8 for k in keys if k.startswith("owner."))
    dense = result.conure.masks.owners
    for name, owner in dense.items():  # compact: 2 bit planes (owners 0..3), 8 entries per byte
        assert tuple(state[f"owner.{name}.weight"].shape) == (2, (owner.numel() + 7) // 8)
    assert result.conure.storage()["masks"] == sum(2 * ((o.numel() + 7) // 8) for o in dense.values())
    assert result.conure.storage()["masks"] < sum(o.numel() for o in dense.values()) / 3
    loaded = Conure.load(path)
    assert loaded.num_tasks == 3 and loaded.masks.num_tasks == 3
    for j in (1, 2, 3):
        assert torch.equal(loaded.predict(j, items), predictions[3][j - 1]), f"task {j} differs after loading"
    assert loaded.capacity() == result.capacity

    def broken(name, tensors):
        out = tmp_path / name
        save_file(tensors, str(out), metadata=metadata)
        return out

    extra = broken("extra.safetensors", {**state, "task2.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected"):
        Conure.load(extra)
    head = next(k for k in keys if k.startswith("task3."))
    with pytest.raises(CheckpointError, match="missing"):
        Conure.load(broken("missing.safetensors", {k: v for k, v in state.items() if k != head}))
    owner = next(k for k in keys if k.startswith("owner."))
    with pytest.raises(CheckpointError, match="mismatched"):
        Conure.load(broken("wide.safetensors", {**state, owner: state[owner].long()}))
    late = state[owner].clone()
    late[:, 0] = 255  # entries 0..7 owned by task 3 (both planes set) in a file of 2 tasks (2 bits too)
    two_tasks = {**metadata, "tasks": json.dumps(json.loads(metadata["tasks"])[:2])}
    trimmed = {k: v for k, v in state.items() if not k.startswith("task3.")}
    save_file({**trimmed, owner: late}, str(tmp_path / "late.safetensors"), metadata=two_tasks)
    with pytest.raises(CheckpointError, match="names task 3, but the file has 2 tasks"):
        Conure.load(tmp_path / "late.safetensors")
    save_file(state, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a Conure file"):
        Conure.load(tmp_path / "plain.safetensors")
    assert json.loads(metadata["tasks"])[1]["classes"] == result.conure.specs[1]["classes"]


def test_task_order_and_unfinished_tasks_are_errors(tmp_path):
    conure = Conure(_backbone())
    with pytest.raises(ConfigError, match="task 1 must be next_item"):
        conure.add_task("profile")
    conure.add_task("next_item")
    with pytest.raises(CheckpointError, match="still being learned"):
        conure.save(tmp_path / "x.safetensors")
    conure.finish_task()
    with pytest.raises(ConfigError, match="only task 1"):
        conure.add_task("next_item")


def test_cli_runs_a_lifelong_sequence(tiny_world, tmp_path, capsys):
    from transrec.cli import main

    out = tmp_path / "run"
    overrides = tiny_overrides(tiny_world, **{"task": "lifelong", "data.domain": "A", "model.name": "sasrec",
                                              "train.epochs": 1, "lifelong.tasks": "[next_item,profile:activity]",
                                              "lifelong.keep_ratios": "[0.4]", "lifelong.retrain_epochs": 1})
    assert main(["train", "--output-dir", str(out), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "after T2" in printed and "capacity: T1 40.0%" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["matrix"][0][0] == metrics["matrix"][0][1] and metrics["matrix"][1][0] is None
    assert [log["keep_ratio"] for log in metrics["logs"]] == [0.4, 0.4]
    assert Conure.load(out / "conure.safetensors").num_tasks == 2


def test_owner_bit_planes_round_trip():
    g = torch.Generator().manual_seed(0)
    for shape, tasks in (((3, 5, 7), 5), ((64, 64), 1), ((1,), 7), ((9,), 255)):
        owner = torch.randint(0, tasks + 1, shape, generator=g).to(torch.uint8)
        bits = max(1, tasks.bit_length())
        packed = pack_owners(owner, bits)
        assert packed.dtype == torch.uint8 and tuple(packed.shape) == (bits, (owner.numel() + 7) // 8)
        assert torch.equal(unpack_owners(packed, shape), owner)
    with pytest.raises(ValueError, match="does not fit"):
        pack_owners(torch.tensor([4], dtype=torch.uint8), 2)


def test_save_pretrained_folder_serves_every_task_by_name_offline(conure_run, tmp_path, monkeypatch):
    result, predictions, items = conure_run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ids = [f"i{k}" for k in range(result.conure.backbone.num_items)]
    folder = result.conure.save_pretrained(tmp_path / "conure", item_ids=ids)
    assert sorted(p.name for p in folder.iterdir()) == ["conure.safetensors", "item_ids.json"]
    loaded = Conure.from_pretrained(folder)
    assert loaded.names == result.conure.names == result.names
    for j, name in enumerate(loaded.names, 1):
        assert torch.equal(loaded.predict(name, items), predictions[3][j - 1]), f"{name} differs after loading"
        assert torch.equal(loaded.predict(str(j), items), loaded.predict(j, items))
    with pytest.raises(ConfigError, match="no task named"):
        loaded.predict("T9 nothing", items)
    with pytest.raises(ConfigError, match="not learned"):
        loaded.predict(4, items)
    with pytest.raises(CheckpointError, match="not found|no conure.safetensors"):
        Conure.from_pretrained(tmp_path / "missing")
    with pytest.raises(ConfigError, match="item ids"):
        result.conure.save_pretrained(tmp_path / "bad", item_ids=["a"])
    conure = Conure(_backbone())
    conure.add_task("next_item", name="same")
    conure.finish_task()
    with pytest.raises(ConfigError, match="is taken"):
        conure.add_task("profile", name="same")
    with pytest.raises(ConfigError, match="bare number"):
        conure.add_task("profile", name="2")


def test_packed_owners_with_stray_padding_bits_are_refused(tmp_path):
    torch.manual_seed(0)
    backbone = SequentialRecommender(20, user_encoder="nextitnet", dim=5, max_len=8, encoder_args=ENCODERS["nextitnet"])
    conure = Conure(backbone)
    conure.add_task("next_item")
    conure.prune(0.3)
    conure.finish_task()
    path = conure.save(tmp_path / "one.safetensors")
    with safe_open(str(path), framework="pt") as f:
        metadata, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in state if k.startswith("owner."))
    assert state[key].shape[0] == 1 and conure.masks.owners[key[6:-7]].numel() % 8  # 1 plane, a partial last byte
    assert torch.equal(Conure.load(path).predict(1, _items(num_items=20)), conure.predict(1, _items(num_items=20)))
    stray = state[key].clone()
    stray[0, -1] = 255
    save_file({**state, key: stray}, str(tmp_path / "stray.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="past its"):
        Conure.load(tmp_path / "stray.safetensors")


def test_patience_selects_each_phase_on_validation_and_t1_can_start_pretrained(tiny_world):
    """With lifelong.patience, a phase keeps its best-on-valid epoch; epochs=0 for T1 prunes a
    pretrained backbone and retrains it (Conure) or leaves it as it is (SinMoAll)."""
    from dataclasses import replace

    from transrec.data.pipeline import load_raw_dataset, prepare_data
    from transrec.evaluation.evaluator import evaluate
    from transrec.models.recommender import build_model
    from transrec.training.lifelong import learn_task_sequence, tasks_from_config

    cfg = _lifelong_cfg(tiny_world, **{"train.epochs": 4, "lifelong.patience": 1,
                                       "lifelong.tasks": "[next_item,profile:taste]"})
    data = prepare_data(cfg.data)
    tasks = tasks_from_config(cfg, data, load_raw_dataset(cfg.data))
    tasks[0] = replace(tasks[0], epochs=0, retrain_epochs=3)
    torch.manual_seed(0)
    pretrained = build_model(cfg.model, data.num_items, cfg.data.max_len)
    state = {k: v.clone() for k, v in pretrained.state_dict().items()}
    result = learn_task_sequence(pretrained, tasks, cfg, method="conure")
    t1, t2 = result.logs
    assert t1["train_loss"] == [] and t1["train"] == {} and 1 <= t1["retrain"]["epochs_run"] <= 3
    assert 1 <= t1["retrain"]["best_epoch"] <= t1["retrain"]["epochs_run"]
    assert 1 <= t2["train"]["best_epoch"] <= t2["train"]["epochs_run"] <= 4
    assert t2["train"]["best_valid"] <= 0  # negated valid log-loss
    # the selected T1 network scores its recorded best valid NDCG@10
    with result.conure.task(1) as model:
        assert evaluate(model, data.split.valid, cfg.eval, model.max_len)["NDCG@10"] == \
            pytest.approx(t1["retrain"]["best_valid"], abs=1e-5)
    assert result.matrix[0][0] == result.matrix[0][1]
    torch.manual_seed(0)
    fresh = build_model(cfg.model, data.num_items, cfg.data.max_len)
    fresh.load_state_dict(state)
    drift = learn_task_sequence(fresh, tasks[:1], cfg, method="sinmoall")  # T1 kept as pretrained
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())
    assert drift.logs[0]["train_loss"] == []


def test_profile_entries_take_their_own_bins(tiny_world):
    from transrec.data.pipeline import load_raw_dataset, prepare_data
    from transrec.errors import DataError
    from transrec.training.lifelong import tasks_from_config

    cfg = _lifelong_cfg(tiny_world)
    data, dataset = prepare_data(cfg.data), load_raw_dataset(cfg.data)

    def tasks(*entries):
        cfg.lifelong.tasks = ["next_item", *entries]
        return tasks_from_config(cfg, data, dataset)

    plain = tasks("profile:taste", "profile:activity")
    assert plain[1].data.classes == ["0", "1", "2", "3"] and plain[2].data.classes == ["high", "low"]
    binned = tasks("profile:taste@2", "profile:activity")  # the edges reach their own task only
    assert binned[1].data.classes == ["2+", "<2"] and binned[2].data.classes == ["high", "low"]
    assert (binned[1].data.labels == (plain[1].data.labels < 2)).all()  # class 1 = "<2"
    assert binned[1].name == "T2 profile:taste@2"
    with pytest.raises(DataError, match="numeric activity"):
        tasks("profile:taste", "profile:activity@1")
    with pytest.raises(ConfigError, match="must be numbers"):
        tasks("profile:taste@young")
    with pytest.raises(ConfigError, match="no bin edges"):
        tasks("profile:taste@")
