"""Diagnostic: how the zero-shot weights chosen on held-out *source* items compare with other weights on
the target, for the source models of a `transfer_movielens.py` run.

    python benchmarks/transfer_movielens.py --disjoint-users --fractions     # first: the source models
    python benchmarks/zero_shot_weights.py --runs runs/transfer_movielens_disjoint_users --disjoint-users

For each seed's source model, content-only zero-shot valid and test NDCG@10 on the target for a grid of
(residual, lexical, content prior) weights, next to the calibrated ones. Reading the target to choose
weights would be tuning to it: this only shows what the calibration leaves on the table, so nothing
here feeds back into the library. Writes benchmarks/results/zero_shot_weights[_disjoint_users].{md,json,png}.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "configs" / "ml100k_era_target.yaml"
RESIDUAL, LEXICAL, PRIOR = (2.0, 5.0, 20.0, 1000.0), (0.0, 10.0), (0.0, 5.0)


def sweep(model_dir: Path, overrides: list[str]) -> tuple[tuple, dict]:
    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.hub import load_model
    from transrec.training.transfer import zero_shot_content_only

    cfg = load_config(str(TARGET), overrides)
    data = prepare_data(cfg.data)
    model = load_model(model_dir)
    calibrated = (model.transfer_residual_weight, model.transfer_lexical_weight,
                  model.transfer_content_prior_weight)
    found = {}
    for weights in [calibrated, *itertools.product(RESIDUAL, LEXICAL, PRIOR)]:
        model.set_transfer_residual_weight(weights[0])
        model.set_transfer_lexical_weight(weights[1])
        model.set_transfer_content_prior_weight(weights[2])
        out = zero_shot_content_only(model, data.dataset.items, {"valid": data.split.valid,
                                                                 "test": data.split.test}, cfg)
        found[weights] = (out["valid"]["NDCG@10"], out["test"]["NDCG@10"])
    return calibrated, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "transfer_movielens_disjoint_users"))
    parser.add_argument("--disjoint-users", action="store_true", help="the run used --disjoint-users")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    overrides = ["data.domain=before1994"] + (
        ["data.user_holdout=0.5", "data.user_holdout_side=heldout"] if args.disjoint_users else [])
    per_seed = {s: sweep(Path(args.runs) / f"source-seed{s}" / "model", overrides) for s in args.seeds}
    grid = list(itertools.product(RESIDUAL, LEXICAL, PRIOR))
    users = ", the other half of the users" * args.disjoint_users
    flag = " --disjoint-users" * args.disjoint_users
    lines = [f"Content-only zero-shot on the target (ML-100k movies before 1994{users}) by (residual, lexical, "
             f"prior) weight; valid / test NDCG@10, mean over seeds (`python benchmarks/zero_shot_weights.py{flag}`; "
             "diagnostic only)", "", "| weights | valid | test |", "|---|---:|---:|"]
    cal = [found[c] for c, found in per_seed.values()]
    chosen = "; ".join(f"{c[0]:g}/{c[1]:g}/{c[2]:g}" for c, _ in per_seed.values())
    lines.append(f"| calibrated on source items ({chosen}) | {statistics.mean(v for v, _ in cal):.4f} | "
                 f"{statistics.mean(t for _, t in cal):.4f} |")
    summary = {}
    for weights in grid:
        values = [found[weights] for _, found in per_seed.values()]
        name = " / ".join(f"{w:g}" for w in weights)
        summary[name] = (statistics.mean(v for v, _ in values), statistics.mean(t for _, t in values))
        lines.append(f"| {name} | {summary[name][0]:.4f} | {summary[name][1]:.4f} |")
    text = "\n".join(lines)

    def plot(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(summary)
        ax.barh(names, [summary[n][1] for n in names])
        ax.axvline(statistics.mean(t for _, t in cal), color="black", linestyle="--", label="calibrated")
        ax.set_xlabel("target test NDCG@10")
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    stem = "zero_shot_weights" + "_disjoint_users" * args.disjoint_users
    calibrated = {str(seed): [list(c), found[c]] for seed, (c, found) in per_seed.items()}
    write_results(stem, text, {"calibrated": calibrated, "grid": summary}, plot)
    print(text)


if __name__ == "__main__":
    main()
