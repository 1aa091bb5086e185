"""Transfer to a real new domain: MovieLens-100k movies from 1994 on (source) -> the older ones (target).

    python benchmarks/transfer_movielens.py [--seeds 0 1 2] [--fractions 0.05 0.2 1.0] [--direction reverse]
        [--split genre]

Source and target are disjoint item sets of real data (`data.era_split=1994`); each user's target
sequence is their older-movie ratings in time order. All rows are scored on the same target test
cases (leave-one-out, exact full ranking over the 563 target movies, history excluded):

- zero-shot, content only (the source model; nothing of the target is read but each evaluated
  user's own history), the same with the content prior's memory of source items dropped (an ablation)
  and with its zero-shot weights chosen on the target's validation cases (an upper bound, not a method),
  and zero-shot + target popularity (training-free; reads the target's training counts, prior weight
  chosen on the target's validation cases);
- the training-free heuristics (MiniLM cosine to the last item / history mean, TF-IDF cosine to the
  last item, each alone and with the popularity prior) and popularity;
- fine-tune and id+content fine-tune from the source model, and an ID SASRec trained on the target,
  each with 5% / 20% / 100% of the target's users training (all users evaluated).

`--direction reverse` swaps the sides (source: the older movies, target: those from 1994 on), which is
how a model trained on ML-100k meets a newer catalogue; `--split genre` splits the movies by genre
instead (dramas vs the rest, `data.genre_split=Drama`); `--disjoint-users` trains the source on half
of the users and evaluates the target on the other half (`data.user_holdout`; a real new domain has
other users); `--shared-items` (with `--disjoint-users`) makes the target every movie, the source's
own and the split's others, as a real new catalogue lists many of the movies a source knew;
`--target-tie-order item` orders each target user's ratings of one second by movie id (as GroupLens'
CSV releases list them; ML-100k's file order is random), which picks other test items: popularity is
weaker there; `--fractions` with no value skips the trained rows. Seeds vary the source model and the
target-side runs. Resumable: a finished run is not rerun.
Writes benchmarks/results/transfer_movielens[_genre][_reverse][_disjoint_users][_shared_items][_ties_item].{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
SOURCE_CFG = ROOT / "configs" / "ml100k_era_source.yaml"
TARGET_CFG = ROOT / "configs" / "ml100k_era_target.yaml"
TRAINED = ("fine_tune", "fine_tune_id", "id_sasrec")
KEY = "NDCG@10"
#: split -> (its data overrides, {direction: (source domain, target domain, the table's caption)})
SPLITS = {
    "era": (["data.era_split=1994"],
            {"forward": ("from1994", "before1994", "Target: MovieLens-100k movies before 1994 (563 items), "
                                                   "source: movies from 1994 on"),
             "reverse": ("before1994", "from1994", "Target: MovieLens-100k movies from 1994 on (1,119 items), "
                                                   "source: movies before 1994")}),
    # a content shift rather than a time shift; Drama is ML-100k's largest genre (725 of 1,682 movies)
    "genre": (["data.era_split=0", "data.genre_split=Drama"],
              {"forward": ("nondrama", "drama", "Target: MovieLens-100k dramas (725 items), source: the other "
                                                "movies (957)"),
               "reverse": ("drama", "nondrama", "Target: MovieLens-100k movies that are not dramas (957 items), "
                                                "source: the dramas (725)")}),
}


def done(out: Path) -> dict | None:
    path = out / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


#: --disjoint-users: the source config keeps one half of the users, the target config the other
USER_HALVES = {"source": ["data.user_holdout=0.5", "data.user_holdout_side=train"],
               "target": ["data.user_holdout=0.5", "data.user_holdout_side=heldout"]}


def target_overrides(split: str, direction: str, disjoint_users: bool = False, shared_items: bool = False,
                     tie_order: str = "file") -> list[str]:
    domain = "null" if shared_items else SPLITS[split][1][direction][1]
    return (SPLITS[split][0] + [f"data.domain={domain}", f"data.tie_order={tie_order}"]
            + (USER_HALVES["target"] if disjoint_users else []))


#: --target-tie-order: how the target's ratings of one user in one second are ordered (the source keeps its file's)
TIE_CAPTIONS = {"file": "", "item": "; the target's ratings of one second ordered by movie id, as GroupLens' CSV "
                                    "releases list them", "random": "; the target's ratings of one second shuffled"}


def caption(split: str, direction: str, shared_items: bool) -> str:
    if not shared_items:
        return SPLITS[split][1][direction][2]
    source, target = SPLITS[split][1][direction][:2]
    return (f"Target: every MovieLens-100k movie (1,682: the source's ({source}) and the {target} ones it never "
            "saw), rated by the half of the users that the source never saw")


def run_seed(seed: int, fractions: list[float], runs: Path, split: str, direction: str,
             source_set: list[str] = (), disjoint_users: bool = False, shared_items: bool = False,
             tie_order: str = "file") -> dict:
    from transrec.config import load_config
    from transrec.training.study import id_config
    from transrec.training.trainer import train
    from transrec.training.transfer import transfer

    source_domain = SPLITS[split][1][direction][0]
    source = runs / f"source-seed{seed}"
    if done(source) is None:
        overrides = SPLITS[split][0] + [f"train.seed={seed}", f"data.domain={source_domain}", *source_set]
        train(load_config(str(SOURCE_CFG), overrides + USER_HALVES["source"] * disjoint_users), source)
    target = target_overrides(split, direction, disjoint_users, shared_items, tie_order)
    zs_out = runs / f"zero_shot-seed{seed}"
    zs = done(zs_out) or transfer(source / "model", load_config(str(TARGET_CFG), target), "zero_shot", zs_out)
    row = {"source_test": done(source)["test"], "zero_shot": zs["test"],
           **{f"zero_shot_{v}": zero_shot_variant(source / "model", target, runs / f"zero_shot_{v}-seed{seed}", v)
              for v in ("without_memory", "target_tuned")},
           "zero_shot_with_popularity": zs["zero_shot_with_popularity"]["test"],
           "prior_weight": zs["zero_shot_with_popularity"]["prior_weight"], "popularity": zs["popularity"]["test"]}
    for fraction in fractions:
        common = target + [f"data.train_fraction={fraction}", f"train.seed={seed}"]
        for method in TRAINED:
            out = runs / f"{method}-{fraction}-seed{seed}"
            metrics = done(out)
            if metrics is None:
                extra = ["model.id_embedding=true"] if method == "fine_tune_id" else []
                cfg = load_config(str(TARGET_CFG), common + extra)
                if method == "id_sasrec":
                    metrics = train(id_config(cfg), out).metrics
                else:
                    metrics = transfer(source / "model", cfg, "fine_tune", out)
            row[f"{method}@{fraction}"] = metrics["test"]
    return row


#: the upper bound's content prior weights: the calibration's grid (capped at 5) and larger ones
UPPER_BOUND_PRIOR_GRID = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def zero_shot_variant(model_dir: Path, target: list[str], out: Path, variant: str) -> dict:
    """Content-only zero-shot test metrics of the same source model, changed as `variant` says:
    `without_memory` drops the content prior's memory of source items (an ablation: the regression alone
    predicts popularity from content); `target_tuned` picks its three zero-shot weights on the target's
    own validation cases instead of held-out source items (an upper bound on what any calibration could
    choose; it reads the target's validation cases, so it is not a zero-shot method)."""
    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.hub import load_model
    from transrec.training.calibration import sweep_zero_shot_weights
    from transrec.training.transfer import zero_shot_content_only

    metrics = done(out)
    if metrics is None:
        cfg = load_config(str(TARGET_CFG), target)
        model, data = load_model(model_dir), prepare_data(cfg.data)
        weights = {}
        if variant == "without_memory":
            model.clear_content_prior_memory()
        else:
            model.attach_content(model.item_encoder.build_content_store(data.dataset.items, cfg.data.on_bad_content))
            weights = sweep_zero_shot_weights(model, data, [data.split.valid], cfg, UPPER_BOUND_PRIOR_GRID)
        metrics = {**zero_shot_content_only(model, data.dataset.items, {"test": data.split.test}, cfg),
                   "weights": {k: v for k, v in weights.items() if not k.startswith("by_")}}
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics["test"]


def heuristics(runs: Path, split: str, direction: str, disjoint_users: bool = False,
               shared_items: bool = False, tie_order: str = "file") -> dict:
    from transrec.config import load_config
    from transrec.training.transfer import transfer

    out = runs / "heuristics"
    cfg = load_config(str(TARGET_CFG), target_overrides(split, direction, disjoint_users, shared_items, tie_order))
    metrics = done(out) or transfer(None, cfg, "heuristics", out)
    return {name: r["test"] for name, r in metrics["heuristics"].items()}


def summarise(rows: list[dict], heur: dict, fractions: list[float], caption_text: str,
              command: str) -> tuple[str, dict]:
    def stats(name: str) -> tuple[float, float]:
        values = [r[name][KEY] for r in rows if name in r]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    pop = stats("popularity")[0]
    table = {}
    for name in ("zero_shot", "zero_shot_without_memory", "zero_shot_target_tuned", "zero_shot_with_popularity"):
        table[name] = stats(name)
    for name, m in heur.items():
        table[name] = (m[KEY], 0.0)
    table["popularity"] = (pop, 0.0)
    for method in TRAINED:
        for f in fractions:
            table[f"{method}@{f}"] = stats(f"{method}@{f}")
    lines = [f"{caption_text}; test {KEY}, mean ± std over {len(rows)} seed(s) "
             f"(`{command}`)", "",
             f"| method | {KEY} | × popularity |", "|---|---:|---:|"]
    for name, (mean, std) in table.items():
        lines.append(f"| {name} | {mean:.4f} ± {std:.4f} | {mean / pop:.2f} |")
    return "\n".join(lines), {k: {"mean": m, "std": s, "x_popularity": m / pop} for k, (m, s) in table.items()}


def plot(summary: dict, fractions: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if not fractions:  # zero-shot and the training-free rows only: one bar each
        names = list(summary)
        ax.barh(names, [summary[n]["mean"] for n in names], xerr=[summary[n]["std"] for n in names], capsize=2)
        ax.invert_yaxis()
        ax.set_xlabel(f"test {KEY}")
        ax.tick_params(labelsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return
    xs = [100 * f for f in fractions]
    for method in TRAINED:
        ys = [summary[f"{method}@{f}"]["mean"] for f in fractions]
        es = [summary[f"{method}@{f}"]["std"] for f in fractions]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    for name, style in (("zero_shot", "--"), ("zero_shot_with_popularity", "-."), ("popularity", ":")):
        ax.axhline(summary[name]["mean"], linestyle=style, color="grey", label=name)
    best = max((k for k in summary if k.startswith(("encoder", "tfidf"))), key=lambda k: summary[k]["mean"])
    ax.axhline(summary[best]["mean"], linestyle="-", color="black", linewidth=0.8, label=f"best heuristic ({best})")
    ax.set_xscale("log")
    ax.set_xlabel("% of target users training")
    ax.set_ylabel(f"test {KEY}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="*", default=[0.05, 0.2, 1.0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="era")
    parser.add_argument("--direction", choices=("forward", "reverse"), default="forward")
    parser.add_argument("--disjoint-users", action="store_true",
                        help="source and target on two disjoint halves of the users")
    parser.add_argument("--shared-items", action="store_true",
                        help="with --disjoint-users: the target is every movie, the source's too")
    parser.add_argument("--target-tie-order", choices=sorted(TIE_CAPTIONS), default="file",
                        help="how the target orders a user's ratings of one second (data.tie_order); the source "
                             "keeps its file's order")
    parser.add_argument("--source-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra overrides of the source config (an ablation; give it its own --stem)")
    parser.add_argument("--runs", default=None, help="default: runs/<stem>")
    parser.add_argument("--stem", default=None, help="default: transfer_movielens[_genre][_reverse]")
    args = parser.parse_args()
    if args.shared_items and not args.disjoint_users:
        parser.error("--shared-items needs --disjoint-users (else the target's users are the source's, on its items)")
    stem = args.stem or "_".join(["transfer_movielens"] + [args.split] * (args.split != "era")
                                 + [args.direction] * (args.direction != "forward")
                                 + ["disjoint_users"] * args.disjoint_users + ["shared_items"] * args.shared_items
                                 + [f"ties_{args.target_tie_order}"] * (args.target_tie_order != "file"))
    runs = Path(args.runs or ROOT / "runs" / stem)
    flags = [f"--split {args.split}"] * (args.split != "era") + [f"--direction {args.direction}"] * (
        args.direction != "forward") + ["--disjoint-users"] * args.disjoint_users + [
        "--shared-items"] * args.shared_items + [f"--target-tie-order {args.target_tie_order}"] * (
        args.target_tie_order != "file") + [
        "--fractions"] * (not args.fractions) + (
        [f"--source-set {' '.join(args.source_set)}"] if args.source_set else []) + (
        [f"--stem {args.stem}"] if args.stem else [])
    command = " ".join(["python benchmarks/transfer_movielens.py"] + flags)
    heur = heuristics(runs, args.split, args.direction, args.disjoint_users, args.shared_items, args.target_tie_order)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(seed, args.fractions, runs, args.split, args.direction, args.source_set,
                             args.disjoint_users, args.shared_items, args.target_tie_order))
        text, summary = summarise(rows, heur, args.fractions, caption(args.split, args.direction, args.shared_items)
                                  + TIE_CAPTIONS[args.target_tie_order], command)
        write_results(stem, text, {"summary": summary, "rows": rows, "heuristics": heur},
                      lambda path: plot(summary, args.fractions, path))
        print(text, flush=True)


if __name__ == "__main__":
    main()
