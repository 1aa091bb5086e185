"""transrec vs RecBole 1.2.1 on MovieLens-100k, same data, split, protocol and wall-clock budget.

    bash scripts/recbole_env.sh                 # once: RecBole's own venv (.venv-recbole/)
    python benchmarks/recbole_compare.py        # protocol check, then SASRec, GRU4Rec, NextItNet (hours on 2 cores)
    python benchmarks/recbole_compare.py --budget-minutes 2 --models sasrec --seeds 1   # a smoke run

1. Protocol check: both libraries' data pipelines and full-ranking evaluators on the same scores: a fixed-score
   model (user/item vectors looked up by raw id in one table both sides read) must give identical metrics and
   RecBole's valid/test cases must equal ours; RecBole's built-in Pop vs our popularity model, with the count
   and tie conventions explained.
2. Per model, ours (`transrec train --config configs/ml100k_<model>.yaml eval.exclude_history=false
   train.max_minutes=BUDGET`, --seeds seeds) and RecBole (benchmarks/recbole_driver.py in the venv, CE loss, its
   default hyper-parameters except the shared sizes; stops after the epoch in which the budget runs out, or by its
   own early stopping, then tests the best-validation checkpoint). Each run is its own process: peak memory is
   its max RSS (os.wait4).
Writes benchmarks/results/recbole_compare.{md,json,png} after every run; run folders go to runs/recbole_compare/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from transrec.evaluation.metrics import metrics_from_ranks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DRIVER = ROOT / "benchmarks" / "recbole_driver.py"
MODELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "nextitnet": "NextItNet"}
# Shared sizes on RecBole's side; everything else stays at RecBole's defaults for the model.
RECBOLE_CONFIG = {
    "sasrec": {"hidden_size": 64},
    "gru4rec": {"embedding_size": 64, "hidden_size": 64},
    "nextitnet": {"embedding_size": 64},
}
KEYS = ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20")
PATIENCE = 10  # ours: train.patience in the configs; RecBole: stopping_step


def run_process(cmd: list[str], log: Path, env: dict | None = None) -> tuple[int, float, float, float]:
    """Run cmd with output to log; return (exit code, wall seconds, peak RSS in GB, CPU seconds) of that process."""
    t = time.time()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    return (os.waitstatus_to_exitcode(status), time.time() - t, usage.ru_maxrss * 1024 / 1e9,
            usage.ru_utime + usage.ru_stime)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def venv_python(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        sys.exit(f"{py} not found: run `bash scripts/recbole_env.sh` first")
    return py


# ---------------------------------------------------------------------------------------------- protocol check
class FixedScores(torch.nn.Module):
    """Our model contract over the fixed raw-id tables (dot products, like RecBole's FixedScores)."""

    def __init__(self, data, tables):
        super().__init__()
        item_ids, user_ids = data.dataset.items.ids.ids, data.dataset.interactions.users.ids
        self.V = torch.from_numpy(np.stack([np.zeros(tables["items"].shape[1], np.float32)] +
                                           [tables["items"][int(i)] for i in item_ids[1:]]))
        self.U = torch.from_numpy(np.stack([np.zeros(tables["users"].shape[1], np.float32)] +
                                           [tables["users"][int(u)] for u in user_ids[1:]]))

    def all_item_vectors(self):
        return self.V

    def encode_users(self, batch):
        return self.U[batch["users"]]


def protocol_check(py: Path, work: Path) -> dict:
    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.evaluator import compute_ranks, eval_loader
    from transrec.models.recommender import PopularityModel

    cfg = load_config(ROOT / "configs" / "ml100k_sasrec.yaml", ["eval.exclude_history=false"])
    data = prepare_data(cfg.data)
    max_len = cfg.data.max_len
    rng = np.random.default_rng(0)
    tables = {"users": rng.standard_normal((10_000, 16)).astype(np.float32),
              "items": rng.standard_normal((10_000, 16)).astype(np.float32)}
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "tables.npz", **tables)
    code, *_ = run_process([str(py), str(DRIVER), "protocol", str(work), json.dumps(
        {"tables": str(work / "tables.npz")})], work / "driver.log")
    if code:
        sys.exit(f"RecBole protocol job failed; see {work / 'driver.log'}")
    rb = json.loads((work / "result.json").read_text())

    def metrics(model, split):
        ranks = compute_ranks(model, eval_loader(split, max_len, 256), "full", exclude_history=False)
        return metrics_from_ranks(ranks, ks=(5, 10, 20)), ranks

    items, users = data.dataset.items.ids.ids, data.dataset.interactions.users.ids
    out = {"dataset": {"ours": {"users": data.split.num_users, "items": data.num_items,
                                "interactions": len(data.dataset.interactions.item)},
                       "recbole": rb["dataset"]}, "cases": {}}
    # 1. the evaluation cases: same user, target and (last max_len) input? RecBole's shipped files and the
    #    exact-time copy of them (see recbole_driver.exact_time_copy)
    for variant, cases in rb["cases"].items():
        for split_name in ("valid", "test"):
            ours = getattr(data.split, split_name)
            mine = {users[u]: (items[t], [items[i] for i in h[-max_len:]])
                    for u, t, h in zip(ours.users, ours.targets, ours.histories)}
            theirs = {c["user"]: (c["target"], c["input"]) for c in cases[split_name]}
            out["cases"][f"{variant} {split_name}"] = {
                "ours": len(mine), "recbole": len(theirs), "same_users": set(mine) == set(theirs),
                "different_target": sum(mine[u][0] != theirs[u][0] for u in mine if u in theirs),
                "different_input": sum(mine[u][1] != theirs[u][1] for u in mine if u in theirs)}
    # 2. identical scores through both evaluators
    fixed = FixedScores(data, tables)
    out["fixed_scores"] = {s: {"transrec": metrics(fixed, getattr(data.split, s))[0],
                               "RecBole": rb["FixedScores"][s]} for s in ("valid", "test")}
    # 3. popularity. RecBole's Pop counts training *targets* (its prefix samples never target a user's first
    #    item) with `item_cnt[item] += 1`, which counts an item once per batch however often it occurs in it:
    #    at the default batch (2048) counts saturate at the number of batches. At batch 1 they are exact.
    #    Ours counts every training item; with RecBole's batch-1 counts in our evaluator only tie handling remains.
    def as_model(raw_counts):
        m = PopularityModel(data.num_items, max_len)
        for raw, c in raw_counts.items():
            m.counts[data.dataset.items.ids.index(raw)] = c
        return m

    target_counts = np.bincount(np.concatenate([s[1:] for s in data.split.train if len(s)]),
                                minlength=data.num_items + 1)
    exact = rb["Pop, batch 1 counts"]
    out["pop_counts"] = {
        "batch 1 equals train-target counts": all(exact[items[i]] == target_counts[i] for i in range(1, len(items))),
        "default batch max count": max(rb["Pop counts"].values()),
        "train-target max count": int(target_counts.max()),
        "ties among the 20 largest batch-1 counts": int(20 - len(set(sorted(exact.values())[-20:])))}
    pop = PopularityModel(data.num_items, max_len).fit(data.split.train)
    out["popularity"] = {s: {"transrec (all training items)": metrics(pop, getattr(data.split, s))[0],
                             "transrec evaluator, RecBole batch-1 counts": metrics(as_model(exact),
                                                                                   getattr(data.split, s))[0],
                             "RecBole Pop, batch 1": rb["Pop, batch 1"][s],
                             "RecBole Pop, default batch 2048": rb["Pop"][s]} for s in ("valid", "test")}
    fs = out["fixed_scores"]
    out["fixed_scores_identical"] = all(abs(fs[s]["transrec"][k] - fs[s]["RecBole"][k]) < 1e-6
                                        for s in fs for k in fs[s]["RecBole"])
    return out


# ---------------------------------------------------------------------------------------------------- runs
def run_ours(model: str, seed: int, budget_min: float | None, work: Path, threads: int | None = None) -> dict:
    """One training run of ours under RecBole's protocol; its best model is then also tested under ours
    (history excluded) with `transrec evaluate`. budget_min None = train to the config's own patience."""
    out = work / f"ours-{model}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    budget = [f"train.max_minutes={budget_min}"] if budget_min is not None else []
    cmd = [sys.executable, "-m", "transrec", "train", "--config", f"configs/ml100k_{model}.yaml", "--output-dir",
           str(out), "eval.exclude_history=false", *budget, f"train.seed={seed}", "train.progress=false"]
    code, wall, peak, cpu = run_process(cmd, out.parent / f"{out.name}.log", env)
    if code:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {out.parent / (out.name + '.log')}")
    masked = out / "test_history_excluded.json"
    cmd = [sys.executable, "-m", "transrec", "evaluate", "--model", str(out / "model"), "--config", f"configs/ml100k_{model}.yaml",
           "--split", "test", "--output", str(masked), "eval.exclude_history=true"]
    if run_process(cmd, out.parent / f"{out.name}.evaluate.log", env)[0]:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {out.parent / (out.name + '.evaluate.log')}")
    m = json.loads((out / "metrics.json").read_text())
    timeline = [{"epoch": int(r["epoch"]), "seconds": float(r["seconds"]), "NDCG@10": float(r["NDCG@10"])}
                for r in csv.DictReader((out / "log.csv").open()) if r["kind"] == "valid"]
    run = m["run"]
    over_budget = budget_min is not None and run["train_seconds"] >= budget_min * 60
    return {"library": "transrec", "model": model, "seed": seed, "test": m["test"], "valid": m["valid"],
            "test_history_excluded": _metrics(json.loads(masked.read_text())),
            "epochs_run": run["epochs_run"], "best_epoch": run["best_epoch"], "train_seconds": run["train_seconds"],
            "seconds_to_best": run["seconds_to_best"], "process_seconds": round(wall, 1),
            "process_cpu_seconds": round(cpu, 1), "peak_rss_gb": peak,
            "stopped_by": "budget" if over_budget else "early stopping (patience)",
            "timeline": timeline, "run_dir": rel(out)}


def _metrics(d: dict) -> dict:
    """The metric dict inside `transrec evaluate --output` JSON (flat, or under "test")."""
    return d.get("test", d.get("metrics", d))


def recbole_run_name(model: str, seed: int, batch_size: int | None) -> str:
    """Run folder / record name of one RecBole run (its batch in the name unless RecBole's default)."""
    return f"recbole-{model}-seed{seed}{f'-b{batch_size}' if batch_size else ''}"


def run_recbole(py: Path, model: str, seed: int, budget_min: float | None, work: Path, threads: int | None = None,
                resume: bool = False, batch_size: int | None = None) -> dict:
    """One RecBole run in its own venv. resume=True keeps the run folder, so an interrupted run continues from
    its last validated epoch (the driver checkpoints every epoch). `batch_size`: RecBole's train_batch_size
    (None = its default, 2048)."""
    out = work / recbole_run_name(model, seed, batch_size)
    config = {**RECBOLE_CONFIG[model], **({"train_batch_size": batch_size} if batch_size else {})}
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    args = {"model": MODELS[model], "seed": seed, "budget_s": budget_min * 60 if budget_min is not None else 1e12,
            "stopping_step": PATIENCE, "config": config, **({"threads": threads} if threads else {})}
    code, wall, peak, cpu = run_process([str(py), str(DRIVER), "train", str(out), json.dumps(args)],
                                        out.parent / f"{out.name}.log")
    if code:
        raise RuntimeError(f"RecBole {model} failed ({code}); see {out.parent / (out.name + '.log')}")
    r = json.loads((out / "result.json").read_text())
    timeline = [{"epoch": t["epoch"], "seconds": t["seconds"], "NDCG@10": t["ndcg@10"]} for t in r["timeline"]]
    return {"library": "RecBole 1.2.1", "model": model, "seed": seed, "test": r["test"],
            "test_history_excluded": metrics_from_ranks(r["test_history_excluded_ranks"]), "epochs_run": r["epochs_run"],
            "best_epoch": r["best_epoch"], "train_seconds": r["train_seconds"], "seconds_to_best": r["seconds_to_best"],
            "process_seconds": round(wall, 1), "process_cpu_seconds": round(cpu, 1),
            "peak_rss_gb": peak, "stopped_by": r["stopped_by"], "resumed_at_epoch": r.get("resumed_at_epoch"),
            "timeline": timeline, "config": r["config"], "run_dir": rel(out)}


# ------------------------------------------------------------------------------------------------- outputs
def summarise(runs: list[dict]) -> dict:
    def stat(values):
        v = np.asarray(values, float)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    return {"seeds": [r["seed"] for r in runs],
            **{k: stat([r["test"][k] for r in runs]) for k in KEYS},
            "epochs_run": stat([r["epochs_run"] for r in runs]), "best_epoch": stat([r["best_epoch"] for r in runs]),
            "seconds_per_epoch": stat([r["train_seconds"] / max(r["epochs_run"], 1) for r in runs]),
            "seconds_to_best": stat([r["seconds_to_best"] for r in runs]),
            "peak_rss_gb": stat([r["peak_rss_gb"] for r in runs]),
            "cpu_seconds_per_wall_second": stat([r["process_cpu_seconds"] / r["process_seconds"] for r in runs]),
            "stopped_by": sorted({r["stopped_by"] for r in runs}),
            **({"history_excluded_NDCG@10": stat([r["test_history_excluded"]["NDCG@10"] for r in runs])}
               if all(r.get("test_history_excluded") for r in runs) else {})}


def fmt(s: dict, digits: int) -> str:
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] else "")


def write_outputs(report: dict, stem: str = "recbole_compare") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    m, p = report["meta"], report.get("protocol")
    lines = ["# transrec vs RecBole on MovieLens-100k\n",
             f"Same data (RecBole's bundled ml-100k), leave-one-out by time (test input includes the validation item), "
             f"full ranking over all {p['dataset']['ours']['items'] if p else 1682} items **without** excluding "
             f"already-seen items (RecBole's sequential protocol), max sequence length 50, embedding size 64, CE / full "
             f"softmax loss, model selected on validation NDCG@10, test read once. "
             + (f"Budget: {m['budget_minutes']:g} wall-clock minutes of training per run; RecBole stops after the "
                f"epoch in which the budget runs out (or by its early stopping, stopping_step {PATIENCE}), ours "
                f"within the budget or by the config's patience. " if m["budget_minutes"] is not None else
                f"No budget: each run trains to its own early stopping (RecBole: stopping_step {PATIENCE}; ours: "
                f"the config's patience). ")
             + f"The last column tests the same best model under our protocol (already-seen items excluded). "
             f"Mean ± std over seeds. Machine: {m['cpu']}, torch {m['torch']}, {m['threads']} threads per run "
             f"(shared with other work, so times are indicative). Command: `{m['command']}`.\n",
             "| model | library | seeds | HR@10 | NDCG@10 | MRR@10 | HR@20 | NDCG@20 | epochs run | best epoch | "
             "s / epoch | s to best | peak RSS (GB) | CPU s per wall s | stopped by | NDCG@10, history excluded |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for model, libs in report["summary"].items():
        for lib, s in libs.items():
            lines.append(f"| {MODELS[model]} | {lib} | {len(s['seeds'])} | " + " | ".join(fmt(s[k], 4) for k in KEYS)
                         + f" | {fmt(s['epochs_run'], 0)} | {fmt(s['best_epoch'], 0)} | {fmt(s['seconds_per_epoch'], 1)}"
                         f" | {fmt(s['seconds_to_best'], 0)} | {fmt(s['peak_rss_gb'], 2)} | "
                         f"{fmt(s['cpu_seconds_per_wall_second'], 2)} | {', '.join(s['stopped_by'])} | "
                         f"{fmt(s['history_excluded_NDCG@10'], 4) if 'history_excluded_NDCG@10' in s else ''} |")
    if p:
        pc = p["pop_counts"]
        lines += ["", "## Protocol check", "",
                  f"Data: transrec {p['dataset']['ours']}; RecBole {p['dataset']['recbole']} (samples: one per "
                  f"interaction except each user's first, RecBole's prefix augmentation). Evaluation cases, per "
                  f"user (raw ids), against ours:", "",
                  "| RecBole data | split | cases (ours / RecBole) | same users | different target | "
                  "different input (last 50) |", "|---|---|---:|---|---:|---:|"]
        for name, c in p["cases"].items():
            variant, split = name.rsplit(" ", 1)
            lines.append(f"| {variant} | {split} | {c['ours']} / {c['recbole']} | {c['same_users']} | "
                         f"{c['different_target']} | {c['different_input']} |")
        lines += ["", "`shipped` = RecBole's bundled files read as RecBole reads them: it min-max normalises the "
                  "timestamp and holds it as float32, so interactions about a second apart tie and its stable "
                  "sort keeps their file order. `exact-time` = the same files with each timestamp replaced by its "
                  "dense rank (order and ties unchanged), which float32 holds exactly: RecBole then builds exactly "
                  "our cases. **The RecBole runs in the table use `exact-time`.**", "",
                  f"Identical scores through both evaluators (fixed random user/item vectors keyed by raw id, "
                  f"`exact-time` data): **{'identical' if p['fixed_scores_identical'] else 'DIFFERENT'}** metrics "
                  f"(to RecBole's 6 printed decimals).", "",
                  "| scores | split | evaluator | HR@10 | NDCG@10 | MRR@10 | HR@20 | NDCG@20 |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for name, key in (("fixed", "fixed_scores"), ("popularity", "popularity")):
            for s, evs in p[key].items():
                for ev, vals in evs.items():
                    lines.append(f"| {name} | {s} | {ev} | " + " | ".join(f"{vals[k]:.6f}" for k in KEYS) + " |")
        lines += ["", "Popularity: RecBole's Pop counts training *targets* (a user's first item is never a target "
                  "of its prefix samples); ours counts every training item. RecBole 1.2.1's "
                  "`item_cnt[item, :] = item_cnt[item, :] + 1` counts an item once per batch however often it "
                  f"occurs in it, so at its default batch of 2048 the counts saturate at the number of batches "
                  f"(max {pc['default batch max count']}, against {pc['train-target max count']} true) and Pop is "
                  f"worse than it should be; at batch 1 the counts equal the training-target counts "
                  f"({pc['batch 1 equals train-target counts']}). With those counts in our evaluator the remaining "
                  f"difference is ties ({pc['ties among the 20 largest batch-1 counts']} among the 20 largest "
                  f"counts): ours count a tied item as ranked above the target (pessimistic), RecBole's `torch.topk` "
                  f"orders tied items by its own rule, so there the target can win a tie."]
    lines += ["", "Notes:", *[f"- {n}" for n in report.get("notes", [])]]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(report, RESULTS / f"{stem}.png")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(report["summary"])
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        for r in (r for r in report["runs"] if r["model"] == model):
            ours = r["library"] == "transrec"
            t = r["timeline"]
            ax.plot([x["seconds"] / 60 for x in t], [x["NDCG@10"] for x in t], "-" if ours else "--",
                    color="C0" if ours else "C1", alpha=0.8, marker="." if ours else "o", ms=3,
                    label=f"{r['library']} seed {r['seed']}")
        if report["meta"]["budget_minutes"] is not None:
            ax.axvline(report["meta"]["budget_minutes"], ls=":", color="gray", label="budget")
        ax.set(title=MODELS[model], xlabel="training wall time (minutes)", ylabel="validation NDCG@10")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()} cores"
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-minutes", type=float, default=25.0, help="wall-clock training budget per run")
    ap.add_argument("--converged", action="store_true",
                    help="no budget: every run trains to its own early stopping; RecBole runs resume when interrupted")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds for ours (42, 43, ...)")
    ap.add_argument("--recbole-seeds", type=int, default=1, help="seeds for RecBole (2020, 2021, ...)")
    ap.add_argument("--recbole-first-seed", type=int, default=2020, help="RecBole's first seed")
    ap.add_argument("--recbole-batch", type=int, default=None, help="RecBole's train_batch_size (default: its 2048)")
    ap.add_argument("--lanes", type=int, default=1,
                    help="run the jobs in this many parallel lanes (with --threads 1, one per core); "
                         "--side-by-side instead gives each library its own lane")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    ap.add_argument("--side-by-side", action="store_true",
                    help="run RecBole's jobs and ours at the same time, one lane each (use with --threads 1 on 2 "
                         "cores: both libraries then train under the same conditions)")
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv-recbole")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "recbole_compare")
    ap.add_argument("--skip-protocol", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs (same budget) found in --work-dir")
    ap.add_argument("--stem", default="recbole_compare", help="output file stem under benchmarks/results/")
    args = ap.parse_args()
    budget = None if args.converged else args.budget_minutes
    py = venv_python(args.venv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report = {"meta": {"budget_minutes": budget, "cpu": _cpu(), "torch": torch.__version__,
                       "threads": args.threads or torch.get_num_threads(), "side_by_side": args.side_by_side,
                       "lanes": args.lanes, "recbole_batch": args.recbole_batch,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "command": "python benchmarks/recbole_compare.py " + " ".join(sys.argv[1:])},
              "runs": [], "summary": {},
              "notes": ["RecBole keeps its model defaults (SASRec: dropout 0.5, inner size 256; GRU4Rec: 1 layer, "
                        "dropout 0.3; NextItNet: 5 blocks of dilations [1, 4]; batch 2048 prefix samples) with "
                        "embedding/hidden size 64; ours are configs/ml100k_<model>.yaml (batch 64 whole sequences).",
                        "Times are wall clock of training including per-epoch validation, from after data loading "
                        "and model construction; peak RSS is the whole process's. `CPU s per wall s` is the "
                        "process's CPU time over its wall time (threads = all of them all the time): well under "
                        "means the run waited for a core, because other work shared the machine, and its times are "
                        "inflated.",
                        "RecBole reads the exact-time copy of its ml-100k (see the protocol check), so both "
                        "libraries train and test on exactly the same cases."]}
    if args.recbole_batch:
        report["notes"].append(f"RecBole's train_batch_size here: {args.recbole_batch} (not its default 2048).")
    if args.lanes > 1:
        report["notes"].append(f"{args.lanes} runs at a time (one lane each, {report['meta']['threads']} thread(s) "
                               "per run).")
    if args.side_by_side:
        report["notes"].append("Side by side: RecBole's runs and ours ran at the same time, one lane each, "
                               f"{report['meta']['threads']} thread(s) per run, so both saw the same machine load.")
    if not args.skip_protocol:
        print("protocol check ...", flush=True)
        report["protocol"] = protocol_check(py, args.work_dir / "protocol")
        print(json.dumps({k: v for k, v in report["protocol"].items() if k in ("cases", "fixed_scores_identical")}),
              flush=True)
        write_outputs(report, args.stem)
    lock = threading.Lock()

    def job(model: str, lib: str, seed: int) -> None:
        print(f"{time.strftime('%H:%M:%S')} {lib} {model} seed {seed} ...", flush=True)
        name = f"ours-{model}-seed{seed}" if lib == "transrec" else recbole_run_name(model, seed, args.recbole_batch)
        record = args.work_dir / f"{name}.json"
        if args.reuse and record.exists() and json.loads(record.read_text())["budget_minutes"] == budget:
            r = json.loads(record.read_text())
        else:
            try:
                r = (run_ours(model, seed, budget, args.work_dir, args.threads) if lib == "transrec"
                     else run_recbole(py, model, seed, budget, args.work_dir, args.threads, resume=args.converged,
                                       batch_size=args.recbole_batch))
            except RuntimeError as e:  # keep going: the other runs still give results
                print(f"  FAILED: {e}", flush=True)
                with lock:
                    report["notes"].append(f"FAILED: {lib} {model} seed {seed}: {e}")
                    write_outputs(report, args.stem)
                return
            record.write_text(json.dumps({**r, "budget_minutes": budget}, indent=1))
        print(f"  {lib} {model} seed {seed}: test NDCG@10 {r['test']['NDCG@10']:.4f}, {r['epochs_run']} epochs, "
              f"best {r['best_epoch']}, {r['seconds_to_best']:.0f}s to best, {r['peak_rss_gb']:.2f} GB", flush=True)
        with lock:
            report["runs"].append(r)
            for m in dict.fromkeys(x["model"] for x in report["runs"]):
                report["summary"][m] = {l: summarise([x for x in report["runs"] if x["model"] == m
                                                      and x["library"] == l])
                                        for l in ("transrec", "RecBole 1.2.1")
                                        if any(x["model"] == m and x["library"] == l for x in report["runs"])}
            write_outputs(report, args.stem)

    lanes = {"transrec": [(m, "transrec", 42 + i) for m in args.models for i in range(args.seeds)],
             "RecBole 1.2.1": [(m, "RecBole 1.2.1", args.recbole_first_seed + i) for m in args.models
                               for i in range(args.recbole_seeds)]}
    run_lane = lambda jobs: [job(*j) for j in jobs]  # noqa: E731
    if args.lanes > 1:
        jobs = [j for lane in lanes.values() for j in lane]
        with ThreadPoolExecutor(args.lanes) as pool:
            list(pool.map(lambda j: job(*j), jobs))
    elif args.side_by_side:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(run_lane, lanes.values()))
    else:
        for model in args.models:
            run_lane([j for lane in lanes.values() for j in lane if j[0] == model])
    print((RESULTS / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
