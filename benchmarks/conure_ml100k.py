"""Conure on MovieLens-100k: five tasks learned one after another by one NextItNet, against four baselines.

    python benchmarks/conure_ml100k.py [--seeds 0 1 2] [--out runs/conure_ml100k] [--stem conure_ml100k]

Tasks (configs/conure_ml100k.yaml; data as benchmarks/peterrec_ml100k.py):
  T1 next item on the movies released 1994 or later (the backbone's own data, leave-one-out by time),
  T2 cold-start / cross-domain recommendation of the 563 older movies (never seen in T1),
  T3 gender, T4 age (buckets at 18,25,35,45,50,56), T5 occupation (21 classes).
Every seed pretrains T1 once (task=pretrain, early stopping on valid NDCG@10); every method starts
from that file:
  Conure    one backbone; T1 = the pretrained weights pruned to 30% and retrained, T2..T5 each train
            the free weights, keep 50% of them and retrain them (the library's defaults), then freeze
  SinMoAll  the same network fine-tuned on T2, T3, T4, T5 in turn, every weight (it forgets)
  SinMo     one model per task from scratch (T1: the pretrained model itself; finetune mode=scratch)
  FineAll   per task the T1 backbone fine-tuned, every weight (mode=fine_all); one copy per task
  PeterRec  per task patches on the frozen T1 backbone (mode=peterrec, serial)
Every training phase selects on the task's validation users (NDCG@10 / log-loss), at most 100
epochs, patience 8; test metrics are read after each task (the task x time matrix). Each seed has
its own user split for T2..T5 (shared by every method). Resumable: finished runs are read back.
Writes benchmarks/results/<stem>.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from transrec.config import load_config  # noqa: E402
from transrec.data.pipeline import load_raw_dataset, prepare_data  # noqa: E402
from transrec.data.sequences import left_pad  # noqa: E402
from transrec.hub import load_item_ids, load_model  # noqa: E402
from transrec.models.transfer.conure import Conure  # noqa: E402
from transrec.training.finetune import finetune  # noqa: E402
from transrec.training.lifelong import learn_task_sequence, tasks_from_config  # noqa: E402
from transrec.training.trainer import train  # noqa: E402

CONFIG = ROOT / "configs" / "conure_ml100k.yaml"
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ["T1 next_item", "T2 cold_start", "T3 gender", "T4 age", "T5 occupation"]
FINETUNE = {  # T2..T5 as finetune.py tasks: the same data as the lifelong entries of the config
    "T2 cold_start": ["task=cold_start", "downstream.target_domain=before1994"],
    "T3 gender": ["task=profile", "downstream.label=gender"],
    "T4 age": ["task=profile", "downstream.label=age", "downstream.bins=[18,25,35,45,50,56]"],
    "T5 occupation": ["task=profile", "downstream.label=occupation"],
}
PER_TASK = {"SinMo": "scratch", "FineAll": "fine_all", "PeterRec": "peterrec"}
LIFELONG = {"Conure": "conure", "SinMoAll": "sinmoall"}
METHODS = list(LIFELONG) + list(PER_TASK)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PRETRAIN = ["task=pretrain", "train.epochs=200", "train.patience=10"]  # as peterrec_ml100k's backbone


def headline(task: str) -> str:
    return "NDCG@10" if task in TASKS[:2] else "accuracy"


def second(task: str) -> str:
    return "HR@10" if task in TASKS[:2] else "macro_f1"


def tensor_bytes(path: Path) -> int:
    """Bytes of the tensors in a safetensors file (what serving needs, without the file's header)."""
    with safe_open(str(path), framework="pt") as f:
        total = 0
        for key in f.keys():
            part = f.get_slice(key)
            total += int(np.prod(part.get_shape())) * torch.empty((), dtype=_dtype(part.get_dtype())).element_size()
    return total


def _dtype(name: str) -> torch.dtype:
    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8,
            "I64": torch.int64, "I32": torch.int32, "BOOL": torch.bool, "F64": torch.float64}[name]


def pretrain(seed_dir: Path, seed: int) -> Path:
    model = seed_dir / "pretrain" / "model"
    if not (model / "model.safetensors").is_file():
        train(load_config(CONFIG, PRETRAIN + [f"train.seed={seed}"]), seed_dir / "pretrain")
    return model


def per_task_run(seed_dir: Path, seed: int, backbone: Path, method: str, task: str) -> dict:
    folder = seed_dir / method / task.replace(" ", "_")
    if not (folder / "metrics.json").is_file():
        cfg = load_config(CONFIG, FINETUNE[task] + [f"downstream.mode={PER_TASK[method]}",
                                                    f"downstream.backbone={backbone}", f"train.seed={seed}"])
        finetune(cfg, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"test": metrics["test"], "baseline": metrics["baseline"],
            "bytes": tensor_bytes(folder / "task.safetensors"),
            "epochs_run": metrics["run"]["epochs_run"], "seconds": metrics["run"]["train_seconds"],
            "trainable_params": metrics["run"]["trainable_params"]}


def probe_inputs(tasks) -> torch.Tensor:
    """A fixed batch of real inputs (test users of T3): their last backbone items, left-padded."""
    data = tasks[2].data
    return left_pad([data.sources[c][-49:] for c in data.test[:64]])


def lifelong_run(seed_dir: Path, seed: int, backbone_dir: Path, method: str) -> dict:
    folder = seed_dir / LIFELONG[method]
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    from accelerate.utils import set_seed

    cfg = load_config(CONFIG, [f"train.seed={seed}", f"lifelong.method={LIFELONG[method]}"])
    set_seed(seed)
    data = prepare_data(cfg.data)
    item_ids = data.dataset.items.ids.to_list()
    if load_item_ids(backbone_dir) != item_ids:
        raise SystemExit(f"{backbone_dir}: its items are not the config's T1 items")
    tasks = [replace(t, name=name) for t, name in zip(tasks_from_config(cfg, data, load_raw_dataset(cfg.data)), TASKS)]
    tasks[0] = replace(tasks[0], epochs=0, retrain_epochs=cfg.train.epochs)  # T1 starts from the pretrained file
    probe, outputs = probe_inputs(tasks), {}

    def record(k: int, conure: Conure) -> None:  # every learned task's outputs on the probe, after task k
        outputs[k] = [conure.predict(j, probe) for j in range(1, k + 1)]

    start = time.time()
    result = learn_task_sequence(load_model(backbone_dir), tasks, cfg, LIFELONG[method], DEVICE, on_task_end=record)
    seconds = time.time() - start
    n = len(tasks)
    drift = [[float((outputs[k][j] - outputs[j + 1][j]).abs().max()) for k in range(j + 1, n + 1)] for j in range(n)]
    out = {"method": method, "matrix": result.matrix, "metrics": result.metrics, "logs": result.logs,
           "capacity": result.capacity, "storage": result.conure.storage(), "seconds": round(seconds, 1),
           # max |output change| of task j's outputs on the probe after each later task (0.0 = bitwise the same)
           "output_drift": drift, "bitwise_unchanged": all(torch.equal(outputs[n][j], outputs[j + 1][j])
                                                            for j in range(n))}
    if method == "Conure":  # issue item 5: one folder serves every task by name, strictly, bitwise
        model_dir = result.conure.save_pretrained(folder / "model", item_ids)
        loaded = Conure.from_pretrained(model_dir)
        out["folder"] = {"files": sorted(p.name for p in model_dir.iterdir()),
                         "bytes": sum(p.stat().st_size for p in model_dir.iterdir()),
                         "served_by_name_bitwise": all(torch.equal(loaded.predict(name, probe), outputs[n][j])
                                                       for j, name in enumerate(TASKS))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(out, indent=1))
    return out


def stats(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}


def aggregate(seeds_out: list[dict]) -> dict:
    n = len(TASKS)
    res: dict = {"final": {}, "matrix": {}, "storage": {}, "reference": {}}
    for method in LIFELONG:
        runs = [s["lifelong"][method] for s in seeds_out]
        res["matrix"][method] = [[stats([r["matrix"][j][k] for r in runs]) if k >= j else None for k in range(n)]
                                 for j in range(n)]
        res["final"][method] = {t: {headline(t): stats([r["metrics"][j][n - 1][headline(t)] for r in runs]),
                                    second(t): stats([r["metrics"][j][n - 1][second(t)] for r in runs])}
                                for j, t in enumerate(TASKS)}
        res["final"][method + " (just learned)"] = {
            t: {key: stats([r["metrics"][j][j][key] for r in runs]) for key in (headline(t), second(t))}
            for j, t in enumerate(TASKS)}
        res["storage"][method] = stats([r["storage"]["total"] for r in runs]) | {
            "parts": {k: float(np.mean([r["storage"][k] for r in runs])) for k in ("backbone", "masks", "heads")}}
    for method in PER_TASK:
        res["final"][method] = {TASKS[0]: {k: stats([s["pretrain"]["test"][k] for s in seeds_out])
                                           for k in (headline(TASKS[0]), second(TASKS[0]))}}
        for t in TASKS[1:]:
            res["final"][method][t] = {k: stats([s["per_task"][method][t]["test"][k] for s in seeds_out])
                                       for k in (headline(t), second(t))}
        shared = method != "SinMo"  # FineAll / PeterRec tasks load the T1 backbone; SinMo's are whole models
        res["storage"][method] = stats([s["backbone_bytes"] + sum(s["per_task"][method][t]["bytes"] for t in TASKS[1:])
                                        for s in seeds_out]) | {"shares_backbone": shared}
    res["reference"][TASKS[0]] = {"name": "popularity", **{k: stats([s["pretrain"]["popularity"]["test"][k]
                                                                       for s in seeds_out])
                                                            for k in (headline(TASKS[0]), second(TASKS[0]))}}
    for t in TASKS[1:]:
        base = [s["per_task"]["SinMo"][t]["baseline"] for s in seeds_out]
        res["reference"][t] = {"name": base[0]["name"],
                               **{k: stats([b[k] for b in base]) for k in (headline(t), second(t))}}
    caps = [s["lifelong"]["Conure"]["capacity"] for s in seeds_out]
    res["capacity"] = {"entries": caps[0]["entries"], "tasks": [stats([c["tasks"][j] for c in caps]) for j in range(n)],
                       "free": stats([c["free"] for c in caps])}
    return res


def fmt(s: dict | None, digits: int = 4) -> str:
    return "-" if s is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def kib(b: float) -> str:
    return f"{b / 1024:,.0f} KiB"


def verdict(res: dict, seeds_out: list[dict]) -> list[str]:
    n, lines = len(TASKS), []
    conure = [s["lifelong"]["Conure"] for s in seeds_out]
    sinmoall = [s["lifelong"]["SinMoAll"] for s in seeds_out]
    drift = max(max((max(d) for d in r["output_drift"] if d), default=0.0) for r in conure)
    lines.append(f"- **Forgetting.** Conure: after learning all five tasks every earlier task's outputs on a probe "
                 f"batch are {'bitwise identical' if all(r['bitwise_unchanged'] for r in conure) else 'NOT identical'} "
                 f"to those right after it was learned (max |change| {drift:g}, every seed), so each row of its "
                 "matrix is constant: no forgetting, by construction.")
    drops = []
    for j, t in enumerate(TASKS[:-1]):
        diag, final = res["matrix"]["SinMoAll"][j][j]["mean"], res["matrix"]["SinMoAll"][j][n - 1]["mean"]
        drops.append(f"{t.split()[1]} {diag:.4f} -> {final:.4f} ({100 * (final - diag) / diag:+.0f}%)")
    lines.append("  SinMoAll forgets: diagonal -> after T5 (" + "; ".join(drops) + ").")
    t1c, t1b = res["final"]["Conure"][TASKS[0]]["NDCG@10"], res["final"]["SinMo"][TASKS[0]]["NDCG@10"]
    lines.append(f"- **T1 after pruning.** Conure keeps 30% of the backbone's weights for T1 (retrained): test NDCG@10 "
                 f"{fmt(t1c)} vs the full pretrained backbone's {fmt(t1b)} "
                 f"({100 * (t1c['mean'] - t1b['mean']) / t1b['mean']:+.1f}%).")
    wins, losses = [], []
    for t in TASKS[1:]:
        key, c = headline(t), res["final"]["Conure"][t][headline(t)]
        parts = []
        for other in ("SinMo", "FineAll", "PeterRec"):
            o = res["final"][other][t][key]
            diff, noise = c["mean"] - o["mean"], max(c["std"], o["std"])
            word = "ties" if abs(diff) <= noise else ("beats" if diff > 0 else "loses to")
            parts.append(f"{word} {other} {o['mean']:.4f} ({diff:+.4f})")
            (wins if word == "beats" else losses if word == "loses to" else []).append(f"{t.split()[1]} vs {other}")
        ref = res["reference"][t]
        lines.append(f"  - {t} ({key}): Conure {c['mean']:.4f} ± {c['std']:.4f} " + ", ".join(parts) +
                     f"; {ref['name']} {ref[key]['mean']:.4f}.")
    lines.insert(len(lines) - 4, "- **Transfer to later tasks** (Conure's value when learned = its final value; "
                                 "'ties' = the difference is within the larger of the two seed stds):")
    lines.append(f"  Conure wins: {', '.join(wins) or 'none'}; loses: {', '.join(losses) or 'none'}.")
    users = seeds_out[0]["lifelong"]["Conure"]["metrics"][2][n - 1]["users"]
    above = {t: [m for m in ("Conure", "SinMo", "FineAll", "PeterRec")
                 if res["final"][m][t]["accuracy"]["mean"] - res["reference"][t]["accuracy"]["mean"]
                 > max(res["final"][m][t]["accuracy"]["std"], 1.0 / users)] for t in TASKS[2:]}
    lines.append(f"  Caveat: the profile tasks have {users} test users per seed (one user = {1 / users:.4f} accuracy), "
                 "and on this data a user's movies say little about their profile: methods clearly above the majority "
                 "class (by more than one test user and the seed std): " +
                 "; ".join(f"{t.split()[1]}: {', '.join(m) or 'none'}" for t, m in above.items()) +
                 ". Highest macro-F1 (a majority-class guess scores low there): " +
                 "; ".join(f"{t.split()[1]}: " + max(("Conure", "SinMoAll", "SinMo", "FineAll", "PeterRec"),
                                                     key=lambda m: res["final"][m][t]["macro_f1"]["mean"])
                           for t in TASKS[2:]) + ".")
    cap = res["capacity"]
    shares = ", ".join(f"T{j + 1} {100 * s['mean']:.1f}%" for j, s in enumerate(cap["tasks"]))
    lines.append(f"- **Capacity.** Share of the {cap['entries']:,} prunable backbone weights (the dilated "
                 f"convolutions) each task owns: {shares}; free after T5: {100 * cap['free']['mean']:.1f}%. "
                 f"A sixth task at the default keep ratio would own {50 * cap['free']['mean']:.1f}%: halving the free "
                 "share per task front-loads capacity (T2 got more weights than T1).")
    st = res["storage"]
    ratio = {m: st[m]["mean"] / st["Conure"]["mean"] for m in ("SinMo", "FineAll", "PeterRec")}
    lines.append(f"- **Storage** to serve all five tasks: Conure {kib(st['Conure']['mean'])} (masks "
                 f"{kib(st['Conure']['parts']['masks'])}), SinMo {ratio['SinMo']:.1f}x, "
                 f"FineAll {ratio['FineAll']:.1f}x, "
                 f"PeterRec {ratio['PeterRec']:.2f}x Conure's.")
    return lines


def markdown(report: dict) -> str:
    res, seeds_out = report["results"], report["per_seed"]
    n = len(TASKS)
    pre = seeds_out[0]["pretrain"]
    lines = [f"# Conure on MovieLens-100k ({len(report['seeds'])} seeds: {report['seeds']})", "",
             f"Command: `{report['command']}` (config `configs/conure_ml100k.yaml`); "
             f"{report['compute_seconds'] / 60:.1f} min of training and evaluation on a shared 2-core CPU. "
             "Backbone: NextItNet (dim 64, dilations [1,4] x 2), pretrained per seed on T1 "
             f"({pre['run']['items']} movies from 1994 on, {pre['run']['users']} users). T2 ranks all 563 older "
             "movies (never seen in T1) for each test user, their other older movies excluded; T3-T5 predict the "
             "user's profile from their T1-movie sequence ([CLS] readout). Test metrics, mean ± std over seeds; "
             "every training phase selects on validation users (≤100 epochs, patience 8).", "",
             "Methods: **Conure** (one backbone; T1 = the pretrained weights pruned to 30% and retrained; each later "
             "task trains the free weights, keeps 50% of them, retrains and freezes them; embeddings, norms and biases "
             "fixed after T1); **SinMoAll** (one network, every weight fine-tuned on each task in turn); **SinMo** (a "
             "model per task from scratch); **FineAll** (per task, the T1 backbone fine-tuned, all weights); "
             "**PeterRec** (per task, serial patches + norms + head on the frozen T1 backbone).", "",
             "## Task x time (performance on task j after learning task k)", ""]
    header = "| task (metric) | " + " | ".join(f"after T{k + 1}" for k in range(n)) + " |"
    for method in LIFELONG:
        lines += [f"**{method}**", "", header, "|---|" + "---:|" * n]
        for j, t in enumerate(TASKS):
            cells = " | ".join(fmt(res["matrix"][method][j][k]) for k in range(n))
            lines.append(f"| {t} ({headline(t)}) | {cells} |")
        lines.append("")
    lines += ["SinMo, FineAll and PeterRec keep one model (or patch set) per task: training a later task never "
              "touches an earlier one, so their rows are constant and equal to the final values below.", "",
              "## Final per-task values (after T5)", "",
              "| method | " + " | ".join(f"{t} {headline(t)}" for t in TASKS) + " |", "|---|" + "---:|" * n]
    rows = ["Conure", "SinMoAll", "SinMoAll (just learned)", "SinMo", "FineAll", "PeterRec"]
    for m in rows:
        lines.append(f"| {m} | " + " | ".join(fmt(res["final"][m][t][headline(t)]) for t in TASKS) + " |")
    lines.append("| reference (" + " / ".join(sorted({res['reference'][t]['name'] for t in TASKS})) + ") | " +
                 " | ".join(fmt(res["reference"][t][headline(t)]) for t in TASKS) + " |")
    lines += ["", "Second metric (HR@10 for T1/T2, macro-F1 over all classes for T3-T5):", "",
              "| method | " + " | ".join(f"{t} {second(t)}" for t in TASKS) + " |", "|---|" + "---:|" * n]
    for m in rows:
        lines.append(f"| {m} | " + " | ".join(fmt(res["final"][m][t][second(t)]) for t in TASKS) + " |")
    lines.append("| reference | " + " | ".join(fmt(res["reference"][t][second(t)]) for t in TASKS) + " |")
    st, cap = res["storage"], res["capacity"]
    lines += ["", "## Storage to serve all five tasks", "",
              "Bytes of the tensors a method must keep (float32 weights; Conure's masks bit-packed, 3 bits per "
              "prunable weight for 5 tasks).", "", "| method | what is stored | bytes | x Conure |",
              "|---|---|---:|---:|"]
    what = {"Conure": "one backbone + bit-packed owner masks + 4 heads ([CLS], head)",
            "SinMoAll": "one backbone + 4 heads (but only T5 is served as learned)",
            "SinMo": "T1 model + 4 whole models trained from scratch",
            "FineAll": "T1 backbone + 4 fine-tuned copies (+ heads)",
            "PeterRec": "T1 backbone + 4 × (patches, norms, [CLS], head)"}
    for m in METHODS:
        lines.append(f"| {m} | {what[m]} | {st[m]['mean']:,.0f} | {st[m]['mean'] / st['Conure']['mean']:.2f} |")
    parts, folder = st["Conure"]["parts"], seeds_out[0]["lifelong"]["Conure"]["folder"]
    served = all(s["lifelong"]["Conure"]["folder"]["served_by_name_bitwise"] for s in seeds_out)
    lines += ["", f"Conure's parts: backbone {parts['backbone']:,.0f} B, masks {parts['masks']:,.0f} B, heads "
              f"{parts['heads']:,.0f} B. Its save_pretrained folder: {folder['files']}"
              f" ({folder['bytes']:,} B on disk); loaded back, every task served by "
              f"name is bitwise identical to the live model: "
              f"{served} (every seed).", "",
              "## Conure's capacity", "",
              f"Share of the backbone's {cap['entries']:,} prunable weights (its convolution kernels) each task "
              "owns:", "",
              "| " + " | ".join(f"T{j + 1}" for j in range(n)) + " | free after T5 |", "|" + "---:|" * (n + 1),
              "| " + " | ".join(f"{100 * s['mean']:.1f}%" for s in cap["tasks"])
              + f" | {100 * cap['free']['mean']:.1f}% |",
              "", "## Verdict", ""] + verdict(res, seeds_out) + [""]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(TASKS)
    short = [t.split()[0] + "\n" + t.split()[1] for t in TASKS]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, method in zip(axes, LIFELONG):
        grid = np.full((n, n), np.nan)
        for j in range(n):
            for k in range(j, n):
                grid[j, k] = res["matrix"][method][j][k]["mean"] / res["matrix"][method][j][j]["mean"]
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0.5, vmax=1.1)
        for j in range(n):
            for k in range(j, n):
                ax.text(k, j, f"{res['matrix'][method][j][k]['mean']:.3f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(n), [f"after T{k + 1}" for k in range(n)], fontsize=8)
        ax.set_yticks(range(n), [f"{t} ({headline(t)})" for t in TASKS], fontsize=8)
        ax.set_title(f"{method}: task j after learning task k\n(colour = value / value when learned)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[2]
    methods = ["Conure", "SinMoAll", "SinMo", "FineAll", "PeterRec"]
    grid = np.array([[res["final"][m][t][headline(t)]["mean"] / res["final"]["SinMo"][t][headline(t)]["mean"]
                      for t in TASKS] for m in methods])
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0.5, vmax=1.5)
    for i, m in enumerate(methods):
        for j, t in enumerate(TASKS):
            ax.text(j, i, f"{res['final'][m][t][headline(t)]['mean']:.3f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(n), short, fontsize=8)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.set_title("after T5: every method (colour = value / SinMo's)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "conure_ml100k")
    parser.add_argument("--stem", default="conure_ml100k")
    args = parser.parse_args()
    logging.getLogger("transrec").setLevel(logging.WARNING)
    start = time.time()
    per_seed = []
    for seed in args.seeds:
        seed_dir = args.out / f"seed{seed}"
        backbone = pretrain(seed_dir, seed)
        pre = json.loads((backbone.parent / "metrics.json").read_text())
        out = {"seed": seed, "pretrain": {k: pre[k] for k in ("valid", "test", "popularity", "run")},
               "backbone_bytes": tensor_bytes(backbone / "model.safetensors"), "per_task": {}, "lifelong": {}}
        for method in PER_TASK:
            out["per_task"][method] = {t: per_task_run(seed_dir, seed, backbone, method, t) for t in TASKS[1:]}
            print(f"seed {seed} {method:9s}: " + ", ".join(f"{t.split()[1]} {r['test'][headline(t)]:.4f}"
                                                          for t, r in out["per_task"][method].items()), flush=True)
        for method in LIFELONG:
            r = out["lifelong"][method] = lifelong_run(seed_dir, seed, backbone, method)
            print(f"seed {seed} {method:9s}: diagonal "
                  + ", ".join(f"{r['matrix'][j][j]:.4f}" for j in range(len(TASKS)))
                  + " | after T5 " + ", ".join(f"{r['matrix'][j][-1]:.4f}" for j in range(len(TASKS)))
                  + f" ({r['seconds']:.0f} s)", flush=True)
        per_seed.append(out)
    results = aggregate(per_seed)
    seeds = "" if args.seeds == [0, 1, 2] else " --seeds " + " ".join(map(str, args.seeds))
    report = {"command": f"python benchmarks/conure_ml100k.py{seeds}", "seeds": args.seeds, "tasks": TASKS,
              "headline": {t: headline(t) for t in TASKS}, "results": results, "per_seed": per_seed,
              "seconds": round(time.time() - start, 1), "compute_seconds": round(sum(
                  s["pretrain"]["run"]["train_seconds"] + sum(r["seconds"] for r in s["lifelong"].values())
                  + sum(r["seconds"] for m in s["per_task"].values() for r in m.values()) for s in per_seed), 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{args.stem}.md").write_text(markdown(report))
    plot(results, RESULTS / f"{args.stem}.png")
    print((RESULTS / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
