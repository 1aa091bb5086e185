"""Zero-shot when the new catalogue writes its items differently: the ML era transfer with the target's
item texts reformatted.

    python benchmarks/transfer_movielens.py        # first: trains the three source models
    python benchmarks/transfer_text_format.py      # ~5 min on 2 CPU cores

A new domain's catalogue rarely uses the source's text template. The source models of
`transfer_movielens.py` (ML-100k movies from 1994 on, texts "Title (year). Genres: ... Year: ...")
rank the older movies zero-shot with the target texts rewritten: as trained, title only, title +
genres, genres first in lower case. Rows per format: zero-shot with the content prior's calibrated
weight, the same with the prior off, and the best training-free content heuristic on the same texts
(encoder cosine / TF-IDF to the last item or the history mean); NDCG@10 as a multiple of
popularity (which does not depend on the texts). Nothing of the target's interactions is read
by the zero-shot rows. Writes benchmarks/results/transfer_text_format.{md,json,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

from _results import RESULTS, write_results

ROOT = Path(__file__).resolve().parents[1]
STEM = "transfer_text_format"
KEY = "NDCG@10"
TARGET = ROOT / "configs" / "ml100k_era_target.yaml"


def _genres(text: str) -> str:
    found = re.search(r"Genres: ([^.]*)\.", text)
    return found.group(1) if found else ""


def _title(text: str) -> str:
    return re.split(r"\. Genres:|\. Year:", text)[0]


FORMATS: dict[str, Callable[[str], str]] = {
    "as trained (title, genres, year)": lambda t: t,
    "title only": _title,
    "title + genres": lambda t: re.split(r" Year:", t)[0],
    "genres first, lower case": lambda t: f"{_genres(t).lower()}: {_title(t)}" if _genres(t) else t,
}


def reformatted(data, fmt: Callable[[str], str]):
    """`data` with every item text rewritten by `fmt` (interactions and split untouched)."""
    texts = [None if t is None else fmt(t) for t in data.dataset.items.text]
    items = dataclasses.replace(data.dataset.items, text=texts)
    return dataclasses.replace(data, dataset=dataclasses.replace(data.dataset, items=items))


def measure(args) -> dict:
    import torch

    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.baselines import heuristic_baselines
    from transrec.evaluation.evaluator import evaluate
    from transrec.hub import load_model
    from transrec.models.recommender import PopularityModel

    cfg = load_config(TARGET, [])
    data = prepare_data(cfg.data)
    pop = PopularityModel(data.num_items, cfg.data.max_len).fit(data.split.train)
    out = {"popularity": evaluate(pop, data.split.test, cfg.eval, cfg.data.max_len)[KEY], "formats": {}}
    models = []
    for seed in args.seeds:
        folder = Path(args.runs) / f"source-seed{seed}" / "model"
        if not (folder / "config.json").is_file():
            raise SystemExit(f"no source model at {folder}: run `python benchmarks/transfer_movielens.py` first")
        models.append(load_model(folder).eval())
    for name, fmt in FORMATS.items():
        target = reformatted(data, fmt)
        row = {"example": target.dataset.items.text[1], "zero_shot": [], "zero_shot_no_prior": [], "prior_weight": []}
        for model in models:
            weight = model.transfer_content_prior_weight or 0.0
            model.attach_content(model.item_encoder.build_content_store(target.dataset.items, cfg.data.on_bad_content))
            for key, w in (("zero_shot", weight), ("zero_shot_no_prior", 0.0)):
                model.set_transfer_content_prior_weight(w)
                with torch.no_grad(), model.zero_shot_scoring():
                    row[key].append(evaluate(model, target.split.test, cfg.eval, cfg.data.max_len)[KEY])
            model.set_transfer_content_prior_weight(weight)
            row["prior_weight"].append(weight)
        heuristics = {k: v["test"][KEY] for k, v in heuristic_baselines(cfg, target).items() if "+" not in k}
        row["best_heuristic"] = max(heuristics, key=heuristics.get)
        row["heuristics"] = heuristics
        out["formats"][name] = row
        print(f"{name}: zero-shot {statistics.mean(row['zero_shot']):.4f}, without the prior "
              f"{statistics.mean(row['zero_shot_no_prior']):.4f}, best heuristic {row['best_heuristic']} "
              f"{heuristics[row['best_heuristic']]:.4f}", flush=True)
    return out


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def markdown(result: dict, command: str, seeds: int) -> str:
    pop = result["popularity"]
    lines = ["| target item text | example | zero-shot | × pop. | zero-shot, prior off | × pop. "
             "| best content heuristic | × pop. |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    for name, r in result["formats"].items():
        best = r["heuristics"][r["best_heuristic"]]
        lines.append(f"| {name} | `{r['example']}` | {_mean_std(r['zero_shot'])} | "
                     f"{statistics.mean(r['zero_shot']) / pop:.2f} | {_mean_std(r['zero_shot_no_prior'])} | "
                     f"{statistics.mean(r['zero_shot_no_prior']) / pop:.2f} | {r['best_heuristic']} {best:.4f} | "
                     f"{best / pop:.2f} |")
    return "\n".join([
        "# Zero-shot with the target's item texts in another format\n",
        f"Command: `{command}`. Source models of transfer_movielens.py ({seeds} seed(s)); target: ML-100k movies "
        f"before 1994, test NDCG@{KEY.split('@')[1]}, mean ± std over the source seeds; popularity {pop:.4f}.\n",
        *lines, ""]) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, pop = result["formats"], result["popularity"]
    names = list(rows)
    series = {"zero-shot": [statistics.mean(rows[n]["zero_shot"]) / pop for n in names],
              "zero-shot, prior off": [statistics.mean(rows[n]["zero_shot_no_prior"]) / pop for n in names],
              "best content heuristic": [rows[n]["heuristics"][rows[n]["best_heuristic"]] / pop for n in names]}
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.27
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=label)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="popularity")
    ax.set_xticks(range(len(names)), names, rotation=12, fontsize=8)
    ax.set_ylabel(f"test {KEY} / popularity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "transfer_movielens"),
                        help="transfer_movielens.py's run folders (its --runs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    command = "python benchmarks/transfer_text_format.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = measure(args)
    write_results(STEM, markdown(result, command.strip(), len(args.seeds)), {**result, "command": command.strip()},
                  lambda path: plot(result, path))
    print((RESULTS / f"{STEM}.md").read_text())


if __name__ == "__main__":
    main()
