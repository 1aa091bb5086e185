"""How ties in time change leave-one-out: the same MovieLens-100k, its same-second ratings ordered three ways.

    python benchmarks/tie_order.py [--calibration runs/transfer_movielens_ties_item]

44% of ML-100k's users rated their two latest movies in the same second; leave-one-out then takes as the
test item whichever of them comes last in `data.tie_order`: `file` (RecBole's copy, whose file order is
random), `item` (by movie id, the order of GroupLens' CSV releases such as ml-latest-small, whose ratings
files list each user's ratings by movie id) or `random`. Part 1 (training-free, about a minute): the
popularity and content heuristics over all 1,682 movies under each order, test NDCG@10.

Part 2 (`--calibration RUNS`, a `transfer_movielens.py` runs folder with its saved source models): the
transfer calibration's sweeps on held-out source cases ordered `file` (what it does), on the three orders
together (each case group weighed alike), and `item` only; each choice of weights then ranks the target
content-only, ordered `file` and `item`. A diagnostic of whether the calibration depends on the tie order.
Writes benchmarks/results/tie_order.{md,json,png}.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from _results import RESULTS, write_results

ROOT = Path(__file__).resolve().parents[1]
TARGET_CFG = ROOT / "configs" / "ml100k_era_target.yaml"
ORDERS = ("file", "item", "random")
KEY = "NDCG@10"
#: part 2: the held-out source cases' tie orders a calibration sweeps on
CALIBRATIONS = {"file": ["file"], "file+item+random": list(ORDERS), "item": ["item"]}


def heuristics_by_order(runs: Path) -> dict:
    from transrec.config import load_config
    from transrec.training.transfer import transfer

    out = {}
    for order in ORDERS:
        cfg = load_config(str(TARGET_CFG), ["data.era_split=0", "data.domain=null", f"data.tie_order={order}"])
        path = runs / f"heuristics-{order}"
        done = path / "metrics.json"
        metrics = json.loads(done.read_text()) if done.is_file() else transfer(None, cfg, "heuristics", path)
        out[order] = {**{name: r["test"][KEY] for name, r in metrics["heuristics"].items()},
                      "popularity": metrics["popularity"]["test"][KEY]}
    return out


def calibration_by_order(runs: Path, seeds: list[int]) -> dict:
    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.hub import load_model
    from transrec.training.calibration import _cases_by_source, sweep_zero_shot_weights
    from transrec.training.transfer import zero_shot_content_only

    target = {}
    for order in ("file", "item"):
        cfg = load_config(str(TARGET_CFG), ["data.era_split=1994", "data.domain=before1994", f"data.tie_order={order}"])
        target[order] = (cfg, prepare_data(cfg.data))
    rows = {}
    for seed in seeds:
        source = runs / f"source-seed{seed}"
        cfg = load_config(str(source / "config.yaml"), [])
        held = copy.deepcopy(cfg)
        held.data.item_holdout, held.data.item_holdout_side = cfg.train.transfer_calibration, "heldout"
        for name, orders in CALIBRATIONS.items():
            kept = load_model(source / "calibration" / "model")
            kept.clear_content_prior_memory()  # as the calibration does
            groups, data = [], None
            for order in orders:
                held.data.tie_order = order
                prepared = prepare_data(held.data)
                data = data or prepared
                groups += _cases_by_source(prepared, held)
            kept.attach_content(kept.item_encoder.build_content_store(data.dataset.items, "fail"))
            weights = sweep_zero_shot_weights(kept, data, groups, held)
            final = load_model(source / "model")
            final.set_transfer_residual_weight(weights["residual_weight"])
            final.set_transfer_lexical_weight(weights["lexical_weight"])
            final.set_transfer_content_prior_weight(weights["content_prior_weight"])
            row = {"weights": [weights[f"{t}_weight"] for t in ("residual", "lexical", "content_prior")]}
            for order, (tcfg, tdata) in target.items():
                found = zero_shot_content_only(final, tdata.dataset.items, {"test": tdata.split.test}, tcfg)
                row[f"target_{order}"] = found["test"][KEY]
            rows[f"{name}-seed{seed}"] = row
            print(seed, name, row, flush=True)
    return rows


def markdown(heur: dict, calib: dict, seeds: list[int], command: str) -> str:
    names = list(heur["file"])
    lines = [f"MovieLens-100k, all 1,682 movies, test {KEY}, by how a user's ratings of one second are ordered "
             f"(`{command}`)", "", "| method | " + " | ".join(ORDERS) + " |", "|---|" + "---:|" * len(ORDERS)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{heur[o][name]:.4f}" for o in ORDERS) + " |")
    lines.append("| encoder_cosine_last × popularity | "
                 + " | ".join(f"{heur[o]['encoder_cosine_last'] / heur[o]['popularity']:.2f}" for o in ORDERS) + " |")
    if calib:
        lines += ["", f"Content-only zero-shot, movies from 1994 on -> the older ones, test {KEY}: weights (residual / "
                      "lexical / prior) chosen on held-out source cases ordered as the first column says", "",
                  "| calibration cases | seed | weights | target ordered file | target ordered item |",
                  "|---|---:|---|---:|---:|"]
        for name in CALIBRATIONS:
            for seed in seeds:
                r = calib[f"{name}-seed{seed}"]
                lines.append(f"| {name} | {seed} | {' / '.join(f'{w:g}' for w in r['weights'])} | "
                             f"{r['target_file']:.4f} | {r['target_item']:.4f} |")
            mean = {o: sum(calib[f"{name}-seed{s}"][f"target_{o}"] for s in seeds) / len(seeds) for o in ("file", "item")}
            lines.append(f"| {name} | mean | | {mean['file']:.4f} | {mean['item']:.4f} |")
    return "\n".join(lines)


def plot(heur: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(heur["file"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(ORDERS)
    for k, order in enumerate(ORDERS):
        ax.barh([i + k * width for i in range(len(names))], [heur[order][n] for n in names], height=width,
                label=f"tie order {order}")
    ax.set_yticks([i + width for i in range(len(names))], names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel(f"test {KEY} (ML-100k, all movies)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", default=None, metavar="RUNS",
                        help="a transfer_movielens.py runs folder (era split, forward) with saved source models")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "tie_order"))
    args = parser.parse_args()
    command = "python benchmarks/tie_order.py" + (f" --calibration {args.calibration}" if args.calibration else "")
    heur = heuristics_by_order(Path(args.runs))
    calib = calibration_by_order(Path(args.calibration), args.seeds) if args.calibration else {}
    if not calib and (RESULTS / "tie_order.json").is_file():  # keep part 2 of an earlier run
        calib = json.loads((RESULTS / "tie_order.json").read_text()).get("calibration", {})
    text = markdown(heur, calib, args.seeds, command)
    write_results("tie_order", text, {"heuristics": heur, "calibration": calib}, lambda p: plot(heur, p))
    print(text)


if __name__ == "__main__":
    main()
