"""Train -> save -> load -> evaluate round trips, resume, and the CLI's handling of user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file, save_file

from transrec.cli import main
from transrec.config import load_config
from transrec.errors import CheckpointError
from transrec.hub import load_item_ids, load_model
from transrec.training.trainer import train


@pytest.fixture(scope="module")
def sasrec_run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, tiny_overrides(tiny_world, **{"train.epochs": 8}))
    result = train(cfg, out)
    return out, result


def test_run_folder_has_everything(sasrec_run):
    out, result = sasrec_run
    for name in ("config.yaml", "metrics.json", "log.csv", "train.log", "curves.png", "model/config.json",
                 "model/model.safetensors", "model/README.md", "model/item_ids.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    expected = [f"{m}@{k}" for k in (5, 10, 20) for m in ("HR", "NDCG", "MRR")]
    assert list(metrics["valid"]) == expected and list(metrics["test"]) == expected
    assert metrics == json.loads(json.dumps(result.metrics))
    card = (out / "model" / "README.md").read_text()
    assert f"{metrics['test']['NDCG@10']:.4f}" in card and "Leave-one-out" in card
    # the written config reloads to the same run configuration
    assert load_config(out / "config.yaml").to_dict() == load_config(None, tiny_overrides(
        out.parent, **{"train.epochs": 8})).to_dict() | {"data": load_config(out / "config.yaml").to_dict()["data"]}


def test_sasrec_beats_popularity(sasrec_run):
    _, result = sasrec_run
    assert result.metrics["test"]["NDCG@10"] >= 2 * result.metrics["popularity"]["test"]["NDCG@10"]


def test_save_load_round_trip_is_exact(sasrec_run, tiny_world, capsys):
    out, result = sasrec_run
    model = load_model(out / "model")
    assert len(load_item_ids(out / "model")) == model.num_items
    reloaded = load_model(out / "model")
    model.eval(), reloaded.eval()
    items = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    assert torch.equal(model.encode_users({"items": items}), reloaded.encode_users({"items": items}))
    assert torch.equal(model.all_item_vectors(), reloaded.all_item_vectors())
    # evaluating the saved model reproduces the run's test metrics
    report = out / "eval.json"
    assert main(["evaluate", "--model", str(out / "model"), "--config", str(out / "config.yaml"),
                 "--output", str(report)]) == 0
    got = json.loads(report.read_text())["test"]
    assert got == pytest.approx(result.metrics["test"], abs=1e-9)


def test_loading_is_strict(sasrec_run, tmp_path):
    out, _ = sasrec_run
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (out / "model").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(broken / "model.safetensors"))
    victim = sorted(state)[0]
    del state[victim]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.")):
        load_model(broken)
    config = json.loads((out / "model" / "config.json").read_text())
    config["num_items"] += 1
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").write_bytes((out / "model" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(broken)
    config["model_type"] = "nonsense"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown model_type"):
        load_model(broken)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["nextitnet", "gru4rec", "popularity"])
def test_every_model_trains_and_reloads(name, tiny_world, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_world, **{"model.name": name, "train.epochs": 2}))
    result = train(cfg, tmp_path)
    assert 0 <= result.metrics["test"]["NDCG@10"] <= 1
    model = load_model(tmp_path / "model")
    assert type(model).__name__ == ("PopularityModel" if name == "popularity" else "SequentialRecommender")


@pytest.mark.parametrize("objective", ["sampled_softmax", "bce", "inbatch"])
def test_other_objectives_learn(objective, tiny_world, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_world, **{"train.objective": objective, "train.epochs": 6,
                                                          "train.num_negatives": 32}))
    result = train(cfg, tmp_path)
    assert result.metrics["test"]["NDCG@10"] > result.metrics["popularity"]["test"]["NDCG@10"]


def test_resume_continues_and_matches_uninterrupted(tiny_world, tmp_path):
    straight = train(load_config(None, tiny_overrides(tiny_world, **{"train.epochs": 4})), tmp_path / "a")
    train(load_config(None, tiny_overrides(tiny_world, **{"train.epochs": 2})), tmp_path / "b")
    resumed = train(load_config(None, tiny_overrides(tiny_world, **{"train.epochs": 4})), tmp_path / "b",
                    resume=True)
    assert resumed.metrics["run"]["epochs_run"] == 4
    assert "resumed from" in (tmp_path / "b" / "train.log").read_text()
    assert resumed.metrics["test"] == pytest.approx(straight.metrics["test"], abs=1e-6)


def test_killed_run_resumes_from_last_checkpoint(tiny_world, tmp_path):
    """SIGKILL a training process after its first checkpoint; --resume picks it up and finishes."""
    import signal
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "transrec", "train", "--output-dir", str(out)]
    args = [*command, *tiny_overrides(tiny_world, **{"train.epochs": 200, "train.checkpoint_every": 2,
                                           "train.patience": 1000})]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    state = out / "checkpoints" / "latest" / "trainer_state.json"
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists()
    done = json.loads(state.read_text())
    assert done["global_step"] > 0 and not (out / "metrics.json").exists()
    finish = subprocess.run([*command, "--resume",
                             *tiny_overrides(tiny_world, **{"train.epochs": done["epoch"] + 1,
                                                            "train.checkpoint_every": 2, "train.patience": 1000})],
                            capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert f"resumed from {out / 'checkpoints' / 'latest'} at epoch {done['epoch']}" in log
    assert json.loads((out / "metrics.json").read_text())["run"]["epochs_run"] == done["epoch"] + 1


def _cli_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("transrec: error:") == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("transrec: error:")
    return last


def test_cli_user_errors_are_one_line(tiny_world, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert "config file not found" in _cli_error(capsys, ["train", "--config", str(tmp_path / "x.yaml")])
    err = _cli_error(capsys, ["train", "--output-dir", out, "train.lrr=1"])
    assert "train.lrr" in err and "train.lr'" in err
    err = _cli_error(capsys, ["train", "--output-dir", out, "data.source=folder", f"data.path={tmp_path / 'none'}"])
    assert "none" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,i1,1\nu1,i2,yesterday\nu1,i3,3\n")
    err = _cli_error(capsys, ["train", "--output-dir", out, "data.source=folder", f"data.path={bad}"])
    assert "interactions.csv" in err and "line 3" in err and "yesterday" in err
    (bad / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    err = _cli_error(capsys, ["train", "--output-dir", out, "data.source=folder", f"data.path={bad}"])
    assert "timestamp" in err
    # a user with a single interaction is dropped with a warning; when nobody is left that is an error
    (bad / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,i1,1\n")
    err = _cli_error(capsys, ["train", "--output-dir", out, "data.source=folder", f"data.path={bad}"])
    assert "at least 3 interactions" in err


def test_training_options_accumulation_bf16_tensorboard_sampled(tiny_world, tmp_path):
    """Gradient accumulation, bf16 autocast (CPU), a warm-up + cosine schedule, the tensorboard
    tracker and the labelled legacy sampled protocol all run through the same loop."""
    cfg = load_config(None, tiny_overrides(tiny_world, **{
        "train.epochs": 2, "train.grad_accum": 2, "train.mixed_precision": "bf16", "train.tracker": "tensorboard",
        "train.scheduler": "cosine", "train.warmup_steps": 3, "eval.protocol": "sampled_legacy"}))
    result = train(cfg, tmp_path)
    assert "LEGACY sampled" in result.metrics["run"]["protocol"]
    assert "LEGACY sampled" in (tmp_path / "model" / "README.md").read_text()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.rglob("*"))
    assert 0 < result.metrics["test"]["HR@20"] <= 1


def test_min_epochs_holds_off_early_stopping(tiny_world, tmp_path):
    """lr 1e-30 (no weight moves): validation never improves after epoch 1, so patience 1 stops at epoch 2 unless
    train.min_epochs says to wait."""
    def epochs_run(out, **extra):
        cfg = load_config(None, tiny_overrides(tiny_world, **{"train.epochs": 8, "train.lr": 1e-30,
                                                              "train.patience": 1, **extra}))
        return train(cfg, out).metrics["run"]["epochs_run"]

    assert epochs_run(tmp_path / "plain") == 2
    assert epochs_run(tmp_path / "waits", **{"train.min_epochs": 5}) == 5
