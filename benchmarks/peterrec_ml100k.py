"""PeterRec on MovieLens-100k: one pretrained NextItNet, four downstream tasks, five fine-tuning modes.

    python benchmarks/peterrec_ml100k.py [--seeds 0 1 2] [--tasks ...] [--modes ...]
    python benchmarks/peterrec_ml100k.py --backbone masked   # a bidirectional, masked-item backbone instead

1. Pretrain NextItNet once (next-item objective) on the users' sequences over the "recent" movies
   (released 1994 or later; `configs/peterrec_ml100k.yaml`). No labels are used.
2. Downstream, each on the same backbone file: gender (2 classes), age (7 MovieLens-1M-style
   buckets: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), occupation (21 classes), and cold-start
   recommendation of the older movies (released before 1994, never seen in pretraining): the
   user's recent-movie sequence -> their older movies, ranked among all 563 older movies.
   Users are split 70/10/20 train/valid/test by a permutation seeded with the run's seed; test
   users' labels and older-movie interactions are used only to evaluate.
3. Modes: scratch, fine_all, fine_head, fine_last_k (top block), peterrec (serial patches + layer
   norms + head), and peterrec with parallel patches. Mean ± std over the seeds; the backbone
   file's SHA-256 is checked unchanged after every run.
Writes benchmarks/results/<stem>.md, .json and .png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transrec.config import load_config  # noqa: E402
from transrec.training.finetune import finetune  # noqa: E402
from transrec.training.trainer import train  # noqa: E402

CONFIG = ROOT / "configs" / "peterrec_ml100k.yaml"
RESULTS = ROOT / "benchmarks" / "results"
TASKS = {
    "gender": ["task=profile", "downstream.label=gender"],
    "age": ["task=profile", "downstream.label=age", "downstream.bins=[18,25,35,45,50,56]"],
    "occupation": ["task=profile", "downstream.label=occupation"],
    "cold_start": ["task=cold_start", "downstream.target_domain=before1994"],
}
MODES = {
    "scratch": ["downstream.mode=scratch"],
    "fine_all": ["downstream.mode=fine_all"],
    "fine_head": ["downstream.mode=fine_head"],
    "fine_last_k": ["downstream.mode=fine_last_k", "downstream.last_k=1"],
    "peterrec": ["downstream.mode=peterrec", "downstream.patch=serial"],
    "peterrec_parallel": ["downstream.mode=peterrec", "downstream.patch=parallel"],
}
COMMON = ["train.epochs=100", "train.patience=8", "train.progress=false", "train.tracker=csv"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BACKBONES = {  # --backbone: how the one backbone is pretrained
    "nextitnet": [],  # PeterRec's: causal NextItNet, next-item objective; [CLS] readout
    "masked": ["model.name=bidirectional", "model.num_layers=2", "train.pretrain_objective=masked_item"],  # GRec-style
}


def pretrain(out: Path, kind: str) -> Path:
    model = out / "pretrain" / "model"
    if not (model / "model.safetensors").is_file():
        train(load_config(CONFIG, ["task=pretrain", "train.progress=false"] + BACKBONES[kind]), out / "pretrain")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbone", choices=list(BACKBONES), default="nextitnet")
    parser.add_argument("--readout", choices=["auto", "cls", "mean", "last"], default="auto",
                        help="user state: auto = the paper's ([CLS] for causal backbones, mean for bidirectional)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default runs/peterrec[_<backbone>])")
    parser.add_argument("--stem", default=None, help="results file stem (default peterrec_ml100k[_<backbone>])")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    args = parser.parse_args()
    suffix = ("" if args.backbone == "nextitnet" else f"_{args.backbone}") + \
        ("" if args.readout == "auto" else f"_{args.readout}")
    args.out = args.out or ROOT / "runs" / f"peterrec{suffix}"
    args.stem = args.stem or f"peterrec_ml100k{suffix}"
    logging.getLogger("transrec").setLevel(logging.WARNING)
    start = time.time()
    backbone = pretrain(args.out, args.backbone)
    pre_metrics = json.loads((backbone.parent / "metrics.json").read_text())
    digest = sha256(backbone / "model.safetensors")
    runs = []
    for task in args.tasks:
        for mode in args.modes:
            for seed in args.seeds:
                folder = args.out / task / mode / f"seed{seed}"
                if (folder / "metrics.json").is_file():
                    metrics = json.loads((folder / "metrics.json").read_text())
                else:
                    cfg = load_config(CONFIG, TASKS[task] + MODES[mode] + COMMON + BACKBONES[args.backbone] + [
                        f"downstream.readout={args.readout}",
                        f"downstream.backbone={backbone}", f"train.seed={seed}"])
                    metrics = finetune(cfg, folder).metrics
                if sha256(backbone / "model.safetensors") != digest:
                    raise SystemExit(f"{task}/{mode}/seed{seed} changed the backbone file")
                runs.append({"task": task, "mode": mode, "seed": seed, "test": metrics["test"],
                             "baseline": metrics["baseline"], "run": metrics["run"]})
                if task != "cold_start" and mode == args.modes[0]:
                    runs.append({"task": task, "mode": "bag_of_items_logreg", "seed": seed,
                                 "test": bag_of_items_logreg(task, seed, backbone), "baseline": metrics["baseline"],
                                 "run": {"trainable_params": 0, "total_params": 0, "epochs_run": 0}})
                print(f"{task:10s} {mode:18s} seed {seed}: " + summary(task, metrics["test"]), flush=True)
    results = aggregate(runs, args.tasks, args.modes + ["bag_of_items_logreg"])
    flags = ("" if args.backbone == "nextitnet" else f" --backbone {args.backbone}") + \
        ("" if args.readout == "auto" else f" --readout {args.readout}")
    report = {"command": f"python benchmarks/peterrec_ml100k.py{flags}", "backbone": args.backbone,
              "readout": args.readout, "pretrain": {k: pre_metrics[k] for k in ("valid", "test", "popularity", "run")},
              "backbone_sha256": digest, "seeds": args.seeds, "results": results, "runs": runs,
              "seconds": round(time.time() - start, 1),
              "finetune_seconds": round(sum(r["run"].get("train_seconds", 0) for r in runs), 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{args.stem}.md").write_text(markdown(report, args))
    plot(results, args.tasks, args.modes + ["bag_of_items_logreg"], RESULTS / f"{args.stem}.png")
    print((RESULTS / f"{args.stem}.md").read_text())


def bag_of_items_logreg(task: str, seed: int, backbone: Path) -> dict[str, float]:
    """Reference for profile tasks without any sequence model: L2-regularised logistic regression on
    the user's (normalised) bag of backbone items, L2 strength picked on the validation users."""
    import torch
    import torch.nn.functional as F

    from transrec.data.downstream import build_task
    from transrec.data.pipeline import load_raw_dataset
    from transrec.hub import load_item_ids
    from transrec.training.finetune import profile_metrics

    cfg = load_config(CONFIG, TASKS[task])
    items = load_item_ids(backbone)
    data = build_task("profile", load_raw_dataset(cfg.data), items, cfg.downstream, seed)
    x = torch.zeros(len(data.users), len(items) + 1)
    for i, s in enumerate(data.sources):
        x[i, torch.as_tensor(s)] = 1.0
    x = 10 * x / x.sum(1, keepdim=True).clamp(min=1)
    y = torch.as_tensor(data.labels)
    train_idx = torch.as_tensor(data.train)
    best = None
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x.shape[1], len(data.classes))
        opt = torch.optim.LBFGS(linear.parameters(), max_iter=200)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(linear(x[train_idx]), y[train_idx]) + l2 * linear.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            valid_loss = F.cross_entropy(linear(x[data.valid]), y[data.valid]).item()
            pred = linear(x[data.test]).argmax(1).numpy()
        if best is None or valid_loss < best[0]:
            best = (valid_loss, profile_metrics(pred, data.labels[data.test], len(data.classes)))
    return best[1]


BACKBONE_TEXT = {"nextitnet": "NextItNet (causal, next-item objective, [CLS] readout)",
                 "masked": "a 2-layer bidirectional transformer (masked-item objective, mean-pooled readout)"}


def primary(task: str) -> tuple[str, str]:
    return ("accuracy", "macro_f1") if task != "cold_start" else ("NDCG@10", "HR@10")


def summary(task: str, test: dict) -> str:
    return ", ".join(f"{k} {test[k]:.4f}" for k in primary(task))


def aggregate(runs: list[dict], tasks: list[str], modes: list[str]) -> dict:
    out: dict = {}
    for task in tasks:
        out[task] = {}
        for mode in modes:
            rows = [r for r in runs if r["task"] == task and r["mode"] == mode]
            if not rows:
                continue
            entry = {k: [r["test"][k] for r in rows] for k in primary(task)}
            out[task][mode] = {
                **{k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for k, v in entry.items()},
                "trainable_params": rows[0]["run"]["trainable_params"], "total_params": rows[0]["run"]["total_params"],
                "epochs_run": [r["run"]["epochs_run"] for r in rows],
            }
        base = [r["baseline"] for r in runs if r["task"] == task]
        out[task]["baseline"] = {"name": base[0]["name"], **{k: {"mean": float(np.mean([b[k] for b in base])),
                                                                 "std": float(np.std([b[k] for b in base]))}
                                                             for k in primary(task)}}
    return out


def claims(results: dict, tasks: list[str]) -> list[str]:
    lines = []
    for task in tasks:
        r, (key, _) = results[task], primary(task)
        if not {"scratch", "fine_all", "peterrec"} <= set(r):
            continue
        fa, sc, pr = r["fine_all"][key]["mean"], r["scratch"][key]["mean"], r["peterrec"][key]["mean"]
        share = r["peterrec"]["trainable_params"] / r["fine_all"]["trainable_params"]
        lines.append(f"- **{task}** ({key}): pretrained fine_all {fa:.4f} vs scratch {sc:.4f} -> pretraining "
                     f"{'helps' if fa > sc else 'does not help'} ({fa - sc:+.4f}); peterrec {pr:.4f} is "
                     f"{pr - fa:+.4f} from fine_all with {100 * share:.1f}% of its trainable parameters "
                     f"({'under' if share < 0.10 else 'over'} 10%).")
    return lines


def markdown(report: dict, args) -> str:
    results = report["results"]
    pre = report["pretrain"]
    lines = [f"# PeterRec on MovieLens-100k ({len(report['seeds'])} seeds: {report['seeds']})", "",
             f"Command: `{report['command']}` (config `configs/peterrec_ml100k.yaml`). "
             f"The {sum(r['mode'] != 'bag_of_items_logreg' for r in report['runs'])} fine-tunes trained for {report['finetune_seconds']:.0f} s in total on a "
             "shared 2-core CPU.", "",
             f"Backbone: {BACKBONE_TEXT[report['backbone']]}"
             f"{'' if report['readout'] == 'auto' else ', read out by ' + report['readout'] + ' pooling'} pretrained once (source domain = movies released 1994 or later, "
             f"{pre['run']['items']} items, {pre['run']['users']} users); its own next-item test NDCG@10 "
             f"{pre['test']['NDCG@10']:.4f} (popularity {pre['popularity']['test']['NDCG@10']:.4f}). "
             f"Backbone file SHA-256 `{report['backbone_sha256'][:16]}…`, identical after every fine-tune.", "",
             "Test metrics, mean ± std over seeds (each seed: its own 70/10/20 user split and initialisation). "
             "Profile tasks: accuracy and macro-F1 over all classes; cold start: full ranking among all 563 "
             "older movies, each test user's other older movies excluded, averaged per user. "
             "`trainable` = trainable parameters of the run, `% of fine_all` = trainable share relative to "
             "fine_all on the same task.", ""]
    for task in args.tasks:
        k1, k2 = primary(task)
        r = results[task]
        lines += [f"## {task}", "", f"| mode | {k1} | {k2} | trainable | % of total | % of fine_all |",
                  "|---|---:|---:|---:|---:|---:|"]
        ref = r.get("fine_all", {}).get("trainable_params")
        for mode in args.modes + ["bag_of_items_logreg"]:
            if mode not in r:
                continue
            m = r[mode]
            if mode == "bag_of_items_logreg":
                lines.append(f"| bag-of-items logistic regression (no pretraining) | {m[k1]['mean']:.4f} ± "
                             f"{m[k1]['std']:.4f} | {m[k2]['mean']:.4f} ± {m[k2]['std']:.4f} | - | - | - |")
                continue
            rel = f"{100 * m['trainable_params'] / ref:.1f}%" if ref else "-"
            lines.append(f"| {mode} | {m[k1]['mean']:.4f} ± {m[k1]['std']:.4f} | {m[k2]['mean']:.4f} ± "
                         f"{m[k2]['std']:.4f} | {m['trainable_params']:,} | "
                         f"{100 * m['trainable_params'] / m['total_params']:.1f}% | {rel} |")
        b = r["baseline"]
        lines += [f"| {b['name']} (no model) | {b[k1]['mean']:.4f} ± {b[k1]['std']:.4f} | "
                  f"{b[k2]['mean']:.4f} ± {b[k2]['std']:.4f} | 0 | - | - |", ""]
    lines += ["## The paper's claims, here", ""] + claims(results, args.tasks) + [""]
    return "\n".join(lines)


def plot(results: dict, tasks: list[str], modes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6))
    axes = np.atleast_1d(axes)
    for ax, task in zip(axes, tasks):
        key = primary(task)[0]
        names = [m for m in modes if m in results[task]]
        means = [results[task][m][key]["mean"] for m in names]
        stds = [results[task][m][key]["std"] for m in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.axhline(results[task]["baseline"][key]["mean"], color="tab:red", ls="--",
                   label=results[task]["baseline"]["name"])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set(title=task, ylabel=f"test {key}")
        ax.legend(fontsize=7)
        lo = min(min(means) - max(stds), results[task]["baseline"][key]["mean"])
        ax.set_ylim(max(0.0, lo - 0.05), None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
