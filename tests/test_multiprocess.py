"""Two CPU processes (gloo) train the same model as one, and evaluate every user exactly once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import tiny_overrides

from transrec.cli import main

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate launcher not installed")


def _train(out, world, launcher: list[str]) -> dict:
    overrides = tiny_overrides(world, **{"train.epochs": 5, "model.dropout": 0})
    proc = subprocess.run([*launcher, "-m", "transrec", "train", "--output-dir", str(out), *overrides],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_match_one(tiny_world, tmp_path):
    two = _train(tmp_path / "two", tiny_world,
                 ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"])
    one = _train(tmp_path / "one", tiny_world, [sys.executable])
    assert two["run"]["processes"] == 2 and one["run"]["processes"] == 1
    # same global batch, same data order: only float reduction order and per-shard loss weighting differ
    for key in ("HR@10", "NDCG@10", "MRR@10"):
        assert two["test"][key] == pytest.approx(one["test"][key], abs=0.03), key
    # gathered ranks cover every user exactly once: a 1-process evaluation of the 2-process model agrees exactly
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(tmp_path / "two" / "model"), "--config",
                 str(tmp_path / "two" / "config.yaml"), "--output", str(report)]) == 0
    assert json.loads(report.read_text())["test"] == pytest.approx(two["test"], abs=1e-9)
