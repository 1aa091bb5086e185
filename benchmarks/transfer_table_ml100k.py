"""One transfer table on MovieLens-100k: next-item vs masked-item vs CLUE-pretrained backbones, PeterRec's
fine-tuning modes and UAF, on the same four downstream tasks and seeds as benchmarks/peterrec_ml100k.py.

    python benchmarks/transfer_table_ml100k.py [--seeds 0 1 2] [--backbones nextitnet clue masked]
        [--max-minutes 18]   # stop starting new runs after this long; rerun the command to continue

Reuses peterrec_ml100k.py's data, tasks and protocol (`configs/peterrec_ml100k.yaml`: backbones see only
the movies released 1994 or later; gender / age / occupation profile prediction and cold-start
recommendation of the older movies; users split 70/10/20 per seed). Backbones, each pretrained once:

- `nextitnet`: causal NextItNet, next-item objective (PeterRec's backbone).
- `masked`: a 2-layer bidirectional transformer, masked-item objective (GRec/BERT4Rec-style).
- `clue`: the same NextItNet, pretrained by CLUE's sequence-level contrastive loss ALONE (no next-item
  term): two views of each training window, each made by one augmentation drawn from crop (keep 60%,
  contiguous), mask (drop 30% of items) and reorder (shuffle a window of 30%) — CL4SRec/CLUE's explicit
  augmentations — plus the encoder's own dropout (0.2); InfoNCE over the batch (128 users -> 254
  negatives per view), temperature 0.2, a projection head used only in pretraining; 60 epochs, the last
  one kept (there is no ranking metric to select on).
- `clue_next` (optional, not in the default list): CLUE's loss (weight 0.1) added to the next-item loss,
  early-stopped on next-item validation NDCG@10 like `nextitnet`.

Rows: scratch (NextItNet architecture, random init; once, not per backbone), then per backbone
fine_all, fine_head, peterrec (serial patches), and uaf (downstream.mode=uaf: per-user policy over
frozen / fine-tuned block copies; temperature 1.0, cost 0.01, policy hidden 32) on `nextitnet` and `clue`,
uaf with cost 0.1 (`uaf_cost0.1`) on `nextitnet`, and `fine_blocks` on `nextitnet` (fine_last_k over all 4
blocks: every block trained for every user with the item embeddings frozen, the control for a UAF policy
that picks every copy).
Every run folder is kept (runs/transfer_table/...), so an interrupted command resumes where it stopped.
Writes benchmarks/results/transfer_table_ml100k.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import peterrec_ml100k as pr  # noqa: E402
from transrec.config import load_config  # noqa: E402
from transrec.training.finetune import finetune  # noqa: E402
from transrec.training.trainer import train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STEM = "transfer_table_ml100k"
TASKS = pr.TASKS
CLUE = ["train.pretrain_objective=contrastive", "train.augmentations=[crop,mask,reorder]", "train.crop_ratio=0.6",
        "train.mask_ratio=0.3", "train.reorder_ratio=0.3", "train.contrastive_temperature=0.2",
        "train.batch_size=128"]
BACKBONES = {  # how each backbone is pretrained (overrides of configs/peterrec_ml100k.yaml, task=pretrain)
    "nextitnet": pr.BACKBONES["nextitnet"],
    "masked": pr.BACKBONES["masked"],
    "clue": CLUE + ["train.epochs=60"],
    "clue_next": CLUE + ["train.contrastive_with_next_item=true", "train.contrastive_weight=0.1"],
}
BACKBONE_TEXT = {"nextitnet": "NextItNet, next-item", "masked": "bidirectional, masked-item",
                 "clue": "NextItNet, CLUE contrastive", "clue_next": "NextItNet, next-item + CLUE (0.1)"}
MODES = {"scratch": pr.MODES["scratch"], "fine_all": pr.MODES["fine_all"], "fine_head": pr.MODES["fine_head"],
         "peterrec": pr.MODES["peterrec"],
         "uaf": ["downstream.mode=uaf", "downstream.uaf_temperature=1.0", "downstream.uaf_cost=0.01",
                 "downstream.uaf_policy_hidden=32"]}
MODES["uaf_cost0.1"] = [o.replace("uaf_cost=0.01", "uaf_cost=0.1") for o in MODES["uaf"]]  # a pricier block
UAF_BACKBONES = ("nextitnet", "clue", "clue_next")
# every block trained for every user, embeddings frozen: what uaf becomes when its policy picks every copy
MODES["fine_blocks"] = ["downstream.mode=fine_last_k", "downstream.last_k=4"]  # NextItNet here has 4 blocks
EXTRA_ROWS = [("nextitnet", "uaf_cost0.1"),  # UAF with 10x the block cost: does a sparser policy pick by history?
              ("nextitnet", "fine_blocks")]
BUCKETS = 4


def rows_for(backbones: list[str]) -> list[tuple[str, str]]:
    """(backbone, mode) rows in run order: scratch once, then each backbone's modes."""
    rows = [("none", "scratch")]
    for b in backbones:
        rows += [(b, m) for m in ("fine_all", "fine_head", "peterrec")]
        if b in UAF_BACKBONES:
            rows.append((b, "uaf"))
        rows += [r for r in EXTRA_ROWS if r[0] == b]
    return rows


def pretrain(out: Path, kind: str) -> Path:
    model = out / kind / "pretrain" / "model"
    if not (model / "model.safetensors").is_file():
        train(load_config(pr.CONFIG, ["task=pretrain", "train.progress=false"] + BACKBONES[kind]),
              out / kind / "pretrain")
    return model


def load_run(path: Path) -> dict:
    m = json.loads(path.read_text())
    keep = ("test", "baseline", "run", "test_by_history_length", "uaf")
    return {k: m[k] for k in keep if k in m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=["nextitnet", "clue", "masked"])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer_table")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop starting new runs after this many minutes (0 = no limit); rerun to resume")
    args = parser.parse_args()
    if "nextitnet" not in args.backbones:
        raise SystemExit("--backbones must include nextitnet (scratch uses its architecture)")
    logging.getLogger("transrec").setLevel(logging.WARNING)
    start = time.time()
    budget = args.max_minutes * 60 if args.max_minutes > 0 else float("inf")
    folders, digests, pre = {}, {}, {}
    for b in args.backbones:
        if time.time() - start > budget:
            raise SystemExit(f"stopped after {args.max_minutes} min (pretraining); rerun the command to continue")
        folders[b] = pretrain(args.out, b)
        digests[b] = pr.sha256(folders[b] / "model.safetensors")
        m = json.loads((folders[b].parent / "metrics.json").read_text())
        pre[b] = {k: m[k] for k in ("valid", "test", "popularity", "run")}
    runs, pending = [], 0
    for backbone, mode in rows_for(args.backbones):
        source = "nextitnet" if backbone == "none" else backbone
        for task in args.tasks:
            for seed in args.seeds:
                folder = args.out / backbone / task / mode / f"seed{seed}"
                if not (folder / "metrics.json").is_file():
                    if time.time() - start > budget:
                        pending += 1
                        continue
                    cfg = load_config(pr.CONFIG, TASKS[task] + MODES[mode] + pr.COMMON + [
                        f"downstream.backbone={folders[source]}", f"train.seed={seed}"])
                    finetune(cfg, folder)
                    if pr.sha256(folders[source] / "model.safetensors") != digests[source]:
                        raise SystemExit(f"{backbone}/{task}/{mode}/seed{seed} changed the backbone file")
                    print(f"{backbone:10s} {task:10s} {mode:9s} seed {seed}: "
                          + pr.summary(task, load_run(folder / "metrics.json")["test"]), flush=True)
                runs.append({"backbone": backbone, "mode": mode, "task": task, "seed": seed,
                             **load_run(folder / "metrics.json")})
    if pending:
        raise SystemExit(f"stopped after {args.max_minutes} min with {pending} runs to go; rerun the command to "
                         "continue (finished runs are kept)")
    for task in args.tasks:  # references: no sequence model
        if task == "cold_start":
            continue
        for seed in args.seeds:
            cached = args.out / "references" / f"{task}_seed{seed}.json"
            if not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(pr.bag_of_items_logreg(task, seed, folders["nextitnet"])))
            runs.append({"backbone": "none", "mode": "bag_of_items_logreg", "task": task, "seed": seed,
                         "test": json.loads(cached.read_text())})
    report = {"command": "python benchmarks/transfer_table_ml100k.py" + (
                  "" if args.backbones == ["nextitnet", "clue", "masked"] else " --backbones " + " ".join(args.backbones)),
              "seeds": args.seeds, "tasks": args.tasks, "backbones": args.backbones,
              "pretrain_overrides": {b: BACKBONES[b] for b in args.backbones}, "mode_overrides": MODES,
              "pretrain": pre, "backbone_sha256": digests,
              "table": table(runs, args.tasks), "buckets": buckets(runs, args.backbones),
              "finetune_seconds": round(sum(r["run"].get("train_seconds", 0) for r in runs if "run" in r), 1),
              "pretrain_seconds": round(sum(p["run"]["train_seconds"] for p in pre.values()), 1),
              "runs": runs}
    report["verdicts"] = verdicts(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{STEM}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{STEM}.md").write_text(markdown(report))
    plot(report, RESULTS / f"{STEM}.png")
    print((RESULTS / f"{STEM}.md").read_text())


def stat(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}


def metric_keys(task: str) -> tuple[str, ...]:
    return ("accuracy", "macro_f1") if task != "cold_start" else ("NDCG@10", "HR@10")


def table(runs: list[dict], tasks: list[str]) -> dict:
    """{row: {task: {metric: mean/std/values}}}; rows `backbone/mode`, plus references."""
    out: dict = {}
    for r in runs:
        out.setdefault(f"{r['backbone']}/{r['mode']}", {}).setdefault(r["task"], []).append(r)
    result = {row: {task: {k: stat([r["test"][k] for r in rs]) for k in metric_keys(task)}
                    | ({"trainable_share": rs[0]["run"]["trainable_share"]} if "run" in rs[0] else {})
                    for task, rs in per_task.items()}
              for row, per_task in out.items()}
    base: dict = {}
    for r in runs:
        if "baseline" in r and r["mode"] == "scratch":
            base.setdefault(r["task"], []).append(r["baseline"])
    result["reference"] = {task: {"name": bs[0]["name"], **{k: stat([b[k] for b in bs]) for k in metric_keys(task)}}
                           for task, bs in base.items()}
    return result


def buckets(runs: list[dict], backbones: list[str]) -> dict:
    """Cold start by history-length bucket (quartiles of the test users' source-sequence lengths, the same
    users in every mode of a seed): NDCG@10 per row, and UAF's share of fine-tuned blocks per task."""
    out: dict = {"cold_start_ndcg": {}, "uaf_share": {}, "lengths": {}}
    for r in runs:
        rows = r.get("test_by_history_length")
        if not rows or len(rows) != BUCKETS:
            continue
        key = f"{r['backbone']}/{r['mode']}"
        if r["task"] == "cold_start":
            out["cold_start_ndcg"].setdefault(key, {})[r["seed"]] = [b["NDCG@10"] for b in rows]
            out["lengths"][r["seed"]] = [[b["min_length"], b["max_length"], b["users"]] for b in rows]
        if "uaf" in r and len(r["uaf"]["by_history_length"]) == BUCKETS:
            out["uaf_share"].setdefault(key, {}).setdefault(r["task"], {})[r["seed"]] = \
                [b["fine_tuned_share"] for b in r["uaf"]["by_history_length"]]
    summary: dict = {"cold_start_ndcg": {}, "uaf_share": {}, "paired": {}, "lengths": out["lengths"]}
    for key, per_seed in out["cold_start_ndcg"].items():
        arr = np.array(list(per_seed.values()))
        summary["cold_start_ndcg"][key] = {"mean": arr.mean(0).tolist(), "std": arr.std(0).tolist(),
                                           "seeds": sorted(per_seed)}
    for key, per_task in out["uaf_share"].items():
        summary["uaf_share"][key] = {t: {"mean": np.array(list(s.values())).mean(0).tolist(),
                                         "std": np.array(list(s.values())).std(0).tolist()}
                                     for t, s in per_task.items()}
    for key, u in out["cold_start_ndcg"].items():  # UAF - fine_all, paired by seed (same split, same users per bucket)
        b, mode = key.split("/")
        for other in ("fine_all", "fine_blocks"):
            f = out["cold_start_ndcg"].get(f"{b}/{other}")
            if mode.startswith("uaf") and f:
                seeds = sorted(set(u) & set(f))
                diff = np.array([np.subtract(u[s], f[s]) for s in seeds])
                summary["paired"][f"{key}-{other}"] = {"mean": diff.mean(0).tolist(), "std": diff.std(0).tolist(),
                                                       "seeds": seeds}
    return summary


def fmt(s: dict) -> str:
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def row_label(row: str) -> str:
    backbone, mode = row.split("/")
    if mode == "bag_of_items_logreg":
        return "bag-of-items logistic regression (no pretraining)"
    if backbone == "none":
        return f"{mode} (NextItNet, random init)"
    return f"{BACKBONE_TEXT[backbone]} / {mode}"


def diff_text(report: dict, a: str, b: str, task: str, key: str) -> tuple[float, float, str]:
    """Mean paired difference a - b over seeds, its std, and a word on whether it is beyond the seed noise."""
    t = report["table"]
    va, vb = np.array(t[a][task][key]["values"]), np.array(t[b][task][key]["values"])
    d = va - vb
    word = ("within seed noise" if abs(d.mean()) <= d.std() or len(d) < 2 else
            f"{'ahead' if d.mean() > 0 else 'behind'} by more than the paired std")
    return float(d.mean()), float(d.std()), word


def verdicts(report: dict) -> list[str]:
    t, lines = report["table"], []
    tasks = report["tasks"]
    if "clue" in report["backbones"]:
        wins, total, parts = 0, 0, []
        for task in tasks:
            key = metric_keys(task)[0]
            for mode in ("fine_all", "fine_head", "peterrec"):
                a, b = f"clue/{mode}", f"nextitnet/{mode}"
                if a in t and b in t and task in t[a] and task in t[b]:
                    d, s, word = diff_text(report, a, b, task, key)
                    total += 1
                    wins += d > 0
                    parts.append(f"{task}/{mode} {d:+.4f} ± {s:.4f} ({word})")
        profile_f1 = [diff_text(report, f"clue/{m}", f"nextitnet/{m}", task, "macro_f1")[0]
                      for task in tasks if task != "cold_start" for m in ("fine_all", "fine_head", "peterrec")
                      if f"clue/{m}" in t and f"nextitnet/{m}" in t]
        lines.append(f"CLUE vs next-item pretraining (same NextItNet, same modes; CLUE minus next-item on the headline "
                     f"metric, paired by seed): CLUE is ahead in {wins} of {total} (task, mode) cells: "
                     + "; ".join(parts) + ". On profile macro-F1 CLUE is ahead in "
                     f"{sum(d > 0 for d in profile_f1)} of {len(profile_f1)} cells "
                     f"(mean difference {np.mean(profile_f1):+.4f}).")
    for key in (k for k in t if k != "reference"):
        b, mode = key.split("/")
        if not mode.startswith("uaf") or "cold_start" not in t[key] or f"{b}/fine_all" not in t:
            continue
        d, s, word = diff_text(report, key, f"{b}/fine_all", "cold_start", "NDCG@10")
        line = f"{row_label(key)}: cold-start NDCG@10 minus fine_all's {d:+.4f} ± {s:.4f} ({word})"
        paired = report["buckets"]["paired"].get(f"{key}-fine_all")
        if paired:
            per = ", ".join(f"Q{i + 1} {m:+.4f} ± {sd:.4f}" for i, (m, sd) in enumerate(zip(paired["mean"], paired["std"])))
            best = int(np.argmax(paired["mean"]))
            line += (f"; by history-length quartile (Q1 = shortest): {per}; the largest gain is in Q{best + 1}"
                     f"{' (the shortest histories)' if best == 0 else ''}")
        share = report["buckets"]["uaf_share"].get(key, {}).get("cold_start")
        if share:
            line += "; share of blocks fine-tuned by quartile " + ", ".join(f"{x:.2f}" for x in share["mean"])
        if f"{b}/fine_blocks" in t and "cold_start" in t[f"{b}/fine_blocks"]:
            d, s, word = diff_text(report, key, f"{b}/fine_blocks", "cold_start", "NDCG@10")
            line += f"; minus fine_blocks' (every block trained for every user, embeddings frozen) {d:+.4f} ± {s:.4f} ({word})"
            pb = report["buckets"]["paired"].get(f"{key}-fine_blocks")
            if pb:
                line += ", by quartile " + ", ".join(f"Q{i + 1} {m:+.4f}" for i, m in enumerate(pb["mean"]))
        lines.append(line + ".")
    return lines


def markdown(report: dict) -> str:
    t, tasks = report["table"], report["tasks"]
    pre = report["pretrain"]
    n_ft = sum(1 for r in report["runs"] if "run" in r)
    lines = [f"# Transfer table on MovieLens-100k ({len(report['seeds'])} seeds: {report['seeds']})", "",
             f"Command: `{report['command']}` (config `configs/peterrec_ml100k.yaml`, tasks and protocol of "
             "`benchmarks/peterrec_ml100k.py`). "
             f"{n_ft} fine-tunes ({report['finetune_seconds']:.0f} s of training) and {len(pre)} pretrainings "
             f"({report['pretrain_seconds']:.0f} s) on a shared 2-core CPU.", "",
             "Backbones (pretrained once on the movies released 1994 or later; next-item test NDCG@10 of each, "
             "full ranking over the source movies):", ""]
    for b, p in pre.items():
        lines.append(f"- `{b}` ({BACKBONE_TEXT[b]}): pretraining overrides `{' '.join(report['pretrain_overrides'][b]) or '(config as is)'}`; "
                     f"{p['run']['epochs_run']} epochs, next-item test NDCG@10 {p['test']['NDCG@10']:.4f} "
                     f"(popularity {p['popularity']['test']['NDCG@10']:.4f}).")
    lines += ["", "Test metrics, mean ± std over seeds (each seed: its own 70/10/20 user split and initialisation). "
              "Profile tasks: accuracy / macro-F1 over all classes; cold start: NDCG@10, full ranking among all 563 "
              "older movies. `scratch` uses the NextItNet architecture with random weights (once, not per backbone); "
              "`uaf` = downstream.mode=uaf (per-user choice, block by block, of the frozen block or its fine-tuned "
              "copy; block cost 0.01, `uaf_cost0.1`: 0.1); `fine_blocks` = fine_last_k over all 4 NextItNet blocks "
              "(every block trained for every user, item embeddings frozen: what uaf is when its policy picks every "
              "copy, the control that separates per-user choice from frozen embeddings).", ""]
    head = "| backbone / mode | " + " | ".join(
        f"{task} acc | {task} F1" if task != "cold_start" else "cold_start NDCG@10" for task in tasks) + " |"
    lines += [head, "|---|" + "|".join("---:|---:" if task != "cold_start" else "---:" for task in tasks) + "|"]
    order = [r for r in t if r not in ("reference",) and not r.endswith("bag_of_items_logreg")]
    order += [r for r in t if r.endswith("bag_of_items_logreg")]
    for row in order:
        cells = []
        for task in tasks:
            c = t[row].get(task)
            if task == "cold_start":
                cells.append(fmt(c["NDCG@10"]) if c else "-")
            else:
                cells += [fmt(c["accuracy"]), fmt(c["macro_f1"])] if c else ["-", "-"]
        lines.append(f"| {row_label(row)} | " + " | ".join(cells) + " |")
    ref = t["reference"]
    cells = []
    for task in tasks:
        if task == "cold_start":
            cells.append(f"{fmt(ref[task]['NDCG@10'])} ({ref[task]['name']})")
        else:
            cells += [f"{fmt(ref[task]['accuracy'])} ({ref[task]['name']})", fmt(ref[task]["macro_f1"])]
    lines += ["| reference (no model) | " + " | ".join(cells) + " |", ""]
    bk = report["buckets"]
    if bk["cold_start_ndcg"]:
        lengths = bk["lengths"]
        ranges = [f"{min(lengths[s][i][0] for s in lengths)}–{max(lengths[s][i][1] for s in lengths)}"
                  for i in range(BUCKETS)]
        lines += ["## Cold start by history length", "",
                  "Test users in quartiles of their source-sequence length (recent movies rated; ranges over the "
                  "seeds' test users: " + ", ".join(f"Q{i + 1} {r}" for i, r in enumerate(ranges)) + "). "
                  "NDCG@10 mean ± std over seeds; each user's score is its mean over its older movies.", "",
                  "| backbone / mode | " + " | ".join(f"Q{i + 1}" for i in range(BUCKETS)) + " |",
                  "|---|" + "---:|" * BUCKETS]
        for key, v in bk["cold_start_ndcg"].items():
            lines.append(f"| {row_label(key)} | " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(v["mean"], v["std"]))
                         + " |")
        for key, v in bk["paired"].items():
            row, other = key.split("-")
            lines.append(f"| **{row.split('/')[1]} − {other}** ({BACKBONE_TEXT[row.split('/')[0]]}, paired by seed) | "
                         + " | ".join(f"{m:+.4f} ± {s:.4f}" for m, s in zip(v["mean"], v["std"])) + " |")
        lines.append("")
    if bk["uaf_share"]:
        lines += ["## UAF: share of blocks each user fine-tunes, by history length", "",
                  "Evaluation decisions (argmax of the policy) of the test users, mean over users in each quartile "
                  "of history length, then mean ± std over seeds.", "",
                  "| backbone / task | " + " | ".join(f"Q{i + 1}" for i in range(BUCKETS)) + " | all users |",
                  "|---|" + "---:|" * (BUCKETS + 1)]
        for key, per_task in bk["uaf_share"].items():
            for task, v in per_task.items():
                overall = stat([r["uaf"]["fine_tuned_share"] for r in report["runs"]
                                if f"{r['backbone']}/{r['mode']}" == key and r["task"] == task])
                lines.append(f"| {row_label(key)} / {task} | "
                             + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(v["mean"], v["std"]))
                             + f" | {overall['mean']:.2f} ± {overall['std']:.2f} |")
        lines.append("")
    lines += ["## Verdicts (computed from the numbers above)", ""] + [f"- {v}" for v in report["verdicts"]] + [""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, tasks = report["table"], report["tasks"]
    colors = {"none": "tab:gray", "nextitnet": "tab:blue", "clue": "tab:orange", "masked": "tab:green",
              "clue_next": "tab:purple"}
    rows = [r for r in t if r != "reference"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    axes = axes.ravel()
    for ax, task in zip(axes, tasks):
        key = metric_keys(task)[0]
        names = [r for r in rows if task in t[r]]
        means = [t[r][task][key]["mean"] for r in names]
        stds = [t[r][task][key]["std"] for r in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=2, color=[colors[r.split("/")[0]] for r in names])
        ax.axhline(t["reference"][task][key]["mean"], color="tab:red", ls="--", label=t["reference"][task]["name"])
        ax.set_xticks(range(len(names)), [r.replace("bag_of_items_logreg", "logreg") for r in names], rotation=60,
                      ha="right", fontsize=7)
        ax.set(title=task, ylabel=f"test {key}")
        ax.legend(fontsize=7)
        lo = min(min(m - s for m, s in zip(means, stds)), t["reference"][task][key]["mean"])
        ax.set_ylim(max(0.0, lo - 0.03), None)
    bk = report["buckets"]
    ax = axes[4]
    x = np.arange(BUCKETS)
    for key, v in bk["cold_start_ndcg"].items():
        if "/uaf" in key or key.endswith("/fine_all") or key == "none/scratch":
            ax.errorbar(x, v["mean"], yerr=v["std"], capsize=2, marker="o" if "/uaf" in key else "s",
                        ls=":" if key.endswith("cost0.1") else "-" if "/uaf" in key else "--",
                        color=colors[key.split("/")[0]], label=key)
    ax.set_xticks(x, [f"Q{i + 1}" for i in x])
    ax.set(title="cold start by history length (Q1 shortest)", ylabel="test NDCG@10")
    ax.legend(fontsize=7)
    ax = axes[5]
    shares = {k: v["cold_start"] for k, v in bk["uaf_share"].items() if "cold_start" in v}
    width = 0.8 / max(1, len(shares))
    for i, (key, v) in enumerate(shares.items()):
        ax.bar(x + i * width, v["mean"], width, yerr=v["std"], capsize=2, label=key)
    ax.set_xticks(x + 0.4 - width / 2, [f"Q{j + 1}" for j in x])
    ax.set(title="UAF, cold start: share of blocks fine-tuned", ylabel="share", ylim=(0, 1.1))
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
