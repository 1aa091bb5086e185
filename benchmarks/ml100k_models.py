"""ID models on MovieLens-100k under our default protocol: one table, one picture.

    python benchmarks/ml100k_models.py [--seeds 0 1 2] [--models sasrec nextitnet gru4rec]

Trains each `configs/ml100k_<model>.yaml` (plus the popularity baseline) with `transrec train`,
selects on validation NDCG@10, reads test once, and writes benchmarks/results/ml100k_models.{md,json,png}.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20")


def run(model: str, seed: int, runs: Path) -> dict:
    out = runs / f"{model}-seed{seed}"
    if not (out / "metrics.json").exists():
        config = "ml100k_sasrec" if model == "popularity" else f"ml100k_{model}"
        cmd = [sys.executable, "-m", "transrec", "train", "--config", str(ROOT / "configs" / f"{config}.yaml"),
               "--output-dir", str(out), f"train.seed={seed}", "train.progress=false"]
        if model == "popularity":
            cmd.append("model.name=popularity")
        subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text()) | {"dir": str(out)}


def mean_std(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["popularity", "sasrec", "nextitnet", "gru4rec"])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "ml100k_models"))
    args = parser.parse_args()
    runs = Path(args.runs)
    results = {m: [run(m, s, runs) for s in args.seeds] for m in args.models}
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [f"| model | {' | '.join('test ' + k for k in KEYS)} | epochs (best) | s to best | s total |",
             "|---|" + "---:|" * (len(KEYS) + 3)]
    for model, rs in results.items():
        cells = [mean_std([r["test"][k] for r in rs]) for k in KEYS]
        epochs = ", ".join(f"{r['run']['epochs_run']} ({r['run']['best_epoch']})" for r in rs)
        best = mean_std([r["run"]["seconds_to_best"] for r in rs], 0)
        total = mean_std([r["run"]["train_seconds"] for r in rs], 0)
        lines.append(f"| {model} | {' | '.join(cells)} | {epochs} | {best} | {total} |")
    table = "\n".join(lines)
    header = (f"MovieLens-100k (943 users, 1682 items), leave-one-out by time, exact full ranking excluding "
              f"seen items, seeds {args.seeds} (mean ± std). Command: `python benchmarks/ml100k_models.py`.\n\n")
    (RESULTS / "ml100k_models.md").write_text(header + table + "\n")
    (RESULTS / "ml100k_models.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / "ml100k_models.png")
    print(table)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(results)
    means = [statistics.mean(r["test"]["NDCG@10"] for r in results[m]) for m in names]
    axes[0].bar(names, means, color="tab:blue")
    axes[0].set(ylabel="test NDCG@10", title="ML-100k, full ranking")
    for model, rs in results.items():
        log = Path(rs[0]["dir"]) / "log.csv"
        if model == "popularity" or not log.exists():
            continue
        rows = [r for r in csv.DictReader(log.open()) if r["kind"] == "valid"]
        axes[1].plot([float(r["seconds"]) for r in rows], [float(r["NDCG@10"]) for r in rows], label=model)
    axes[1].set(xlabel="seconds", ylabel="valid NDCG@10", title="validation curves (first seed)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
