"""The fusion weight search (zero-shot + target popularity, the heuristics' prior): scored once per part
vs one GEMM per weighting, side by side in one run.

    python benchmarks/fusion_search.py [--items-per-domain 5000] [--users 3000] [--grid-size 112]

The popularity mode of `transrec transfer --mode zero_shot` picks its weights by an exhaustive grid
on the target's validation cases (about 500 weightings with the model's variants). Each weighting
used to be one evaluation of the fused model: a GEMM of the users' concatenated part vectors (model,
encoder features, TF-IDF's thousands of columns, log count) against every item. `grid_metrics` scores
each part once per batch of cases and ranks every weighting from a weighted sum of those score
matrices. Here, on the synthetic world generated with ~10,000 items: parts = a 384-wide dense
encoder-like part, TF-IDF cosine to the last text item, log popularity; the same weightings, the same
validation cases, both ways. Reports seconds per weighting, the ratio, and the largest difference in
the metric between the two (must be ~0: the same exact ranks, up to float rounding at ties).
With `--zero-shot-model M --zero-shot-set KEY=VALUE..`, also times a whole `transrec transfer --mode
zero_shot` of model M to `configs/ml100k_era_target.yaml` with those overrides, both ways (the old search
patched in), and checks that both give the same metrics and weights.
Writes benchmarks/results/fusion_search.{md,json,png}.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_results  # noqa: E402
from frozen_content_epoch import data_config, make_world  # noqa: E402

from transrec.config import EvalConfig  # noqa: E402
from transrec.data.pipeline import prepare_data  # noqa: E402
from transrec.evaluation.evaluator import evaluate  # noqa: E402
from transrec.models.heuristics import PRIOR_GRID, ContentKNN, FusedScores, MemoUsers, grid_metrics  # noqa: E402
from transrec.models.heuristics import tfidf_features  # noqa: E402
from transrec.models.recommender import PopularityModel, lexical_texts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEM = "fusion_search"


def evaluator_grid_metrics(parts, combos, cases, eval_cfg, max_len: int, metric: str = "NDCG@10") -> dict:
    """The search as it was: one evaluation of the fused model (a GEMM over the concatenated vectors) per weighting."""
    fused, found = FusedScores(parts, [1.0] * len(parts)), {}
    for combo in combos:
        fused.weights = list(combo)
        found[combo] = evaluate(fused, cases, eval_cfg, max_len)[metric]
    return found


def time_zero_shot(model: str, overrides: list[str]) -> dict:
    """Seconds of one zero-shot transfer with the search as it is and as it was, and whether both agree."""
    import tempfile

    import transrec.models.heuristics as heuristics
    from transrec.config import load_config
    from transrec.training.transfer import transfer

    cfg = load_config(str(ROOT / "configs" / "ml100k_era_target.yaml"), overrides)
    out = {}
    for name, search in (("grid_metrics", heuristics.grid_metrics), ("one GEMM per weighting", evaluator_grid_metrics)):
        original, heuristics.grid_metrics = heuristics.grid_metrics, search
        try:
            start = time.perf_counter()
            metrics = transfer(model, cfg, "zero_shot", tempfile.mkdtemp())
            out[name] = {"seconds": time.perf_counter() - start, "zero_shot": metrics["test"],
                         "with_popularity": metrics["zero_shot_with_popularity"]}
        finally:
            heuristics.grid_metrics = original
    new, old = out["grid_metrics"], out["one GEMM per weighting"]
    out["same_results"] = new["zero_shot"] == old["zero_shot"] and new["with_popularity"] == old["with_popularity"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-per-domain", type=int, default=5000)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--grid-size", type=int, default=112, help="weightings (the mode's first pass: 7 x 16)")
    parser.add_argument("--slow-sample", type=int, default=12, help="weightings timed the old way (it is slow)")
    parser.add_argument("--zero-shot-model", default=None, help="also time a whole zero-shot transfer of this model")
    parser.add_argument("--zero-shot-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of configs/ml100k_era_target.yaml for that transfer")
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = ROOT / "runs" / f"world_{args.items_per_domain}x{args.users}"
    make_world(folder, args.items_per_domain, args.users)
    data = prepare_data(data_config(folder))
    n, max_len, eval_cfg = data.num_items, 50, EvalConfig()
    features = torch.randn(n + 1, 384, generator=torch.Generator().manual_seed(0))
    tfidf = tfidf_features(lexical_texts(data.dataset.items))
    parts = [MemoUsers(p) for p in (ContentKNN(features, "last", max_len), ContentKNN(tfidf, "last", max_len),
                                    PopularityModel(n, max_len).fit(data.split.train))]
    encoder_grid = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
    combos = [(1.0, a, w) for a, w in itertools.product(encoder_grid, PRIOR_GRID)][:args.grid_size]
    cases = data.split.valid

    start = time.perf_counter()
    fast = grid_metrics(parts, combos, cases, eval_cfg, max_len)
    fast_s = time.perf_counter() - start
    sample = combos[:: max(1, len(combos) // args.slow_sample)][:args.slow_sample]
    start = time.perf_counter()
    slow = evaluator_grid_metrics(parts, sample, cases, eval_cfg, max_len)
    slow_s = time.perf_counter() - start
    per_fast, per_slow = fast_s / len(combos), slow_s / len(sample)
    diff = max(abs(fast[c] - slow[c]) for c in sample)
    lines = [
        f"Fusion weight search on {n:,} items, {len(cases):,} validation cases, parts: 384-d dense, TF-IDF "
        f"({tfidf.shape[1]:,} columns), log popularity (`python benchmarks/fusion_search.py`)", "",
        "| search | weightings | s | s per weighting |", "|---|---:|---:|---:|",
        f"| one GEMM per weighting (before) | {len(sample)} | {slow_s:.1f} | {per_slow:.3f} |",
        f"| each part scored once (`grid_metrics`) | {len(combos)} | {fast_s:.1f} | {per_fast:.3f} |", "",
        f"Per weighting: **{per_slow / per_fast:.1f}x** faster; largest NDCG@10 difference on the "
        f"{len(sample)} shared weightings: {diff:.2e}."]
    payload = {"items": n, "cases": len(cases), "tfidf_columns": tfidf.shape[1], "fast_seconds": fast_s,
               "fast_weightings": len(combos), "slow_seconds": slow_s, "slow_weightings": len(sample),
               "speedup_per_weighting": per_slow / per_fast, "max_metric_difference": diff}
    if args.zero_shot_model:
        timed = payload["zero_shot"] = time_zero_shot(args.zero_shot_model, args.zero_shot_set)
        new, old = timed["grid_metrics"]["seconds"], timed["one GEMM per weighting"]["seconds"]
        lines += ["", f"A whole zero-shot transfer of `{args.zero_shot_model}` ({' '.join(args.zero_shot_set)}): "
                  f"{new:.1f} s with `grid_metrics` vs {old:.1f} s before (**{old / new:.1f}x**); same metrics "
                  f"and weights: {timed['same_results']}."]
    text = "\n".join(lines)

    def plot(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 2.2))
        ax.barh(["one GEMM per weighting", "each part scored once"], [per_slow, per_fast])
        ax.set_xlabel("seconds per weighting")
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    write_results(STEM, text, payload, plot)
    print(text)


if __name__ == "__main__":
    main()
