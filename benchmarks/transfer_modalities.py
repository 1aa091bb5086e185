"""Transfer across modalities (TransRec's claim): does training on mixed text + image feedback
transfer better than training on one modality?

    python benchmarks/transfer_modalities.py [--seeds 0 1 2] [--fractions 0.05 0.2]

The synthetic world's domain A is the source, domain B (300 items A never saw) the target. Each side
is taken text-only, image-only or both (`data.modality`); items go through the flagship's
pretrained encoders (MiniLM for text, EfficientNet-Lite0 over the pixels for images, frozen, pooled
features cached; `configs/flagship_A.yaml` / `flagship_B.yaml`). For every source x target pair:

- zero-shot, content only, and zero-shot + target popularity (training-free, labelled);
- fine-tune from the source model with 5% / 20% of the target's users (pairs where the source
  holds the target's modality: same modality, or the mixed source);
- references on the same target cases: popularity, the training-free encoder heuristics, and an
  ID SASRec trained on the target with the same user shares.

Also the cosine gap between modalities: the mean cosine of text-item vs image-item vectors, minus
the mean within each modality, for the mixed source model at initialisation and after training.
Resumable (a finished run is not rerun). Writes benchmarks/results/transfer_modalities.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import write_results  # noqa: E402
from transfer_movielens import done  # noqa: E402  (a run folder's metrics.json, or None: resumable runs)

SOURCE_CFG = ROOT / "configs" / "flagship_A.yaml"
TARGET_CFG = ROOT / "configs" / "flagship_B.yaml"
SIDES = {"text": ["data.modality=text"], "image": ["data.modality=image"], "both": []}
KEY = "NDCG@10"


def fine_tuned_pairs(source: str, target: str) -> bool:
    """Fine-tune where the source model was trained on the target's modality."""
    return source == "both" or source == target


def modality_gap(model, catalog) -> dict[str, float]:
    """Mean cosine of item-encoder vectors within each modality, between text and image, and the gap."""
    import torch
    import torch.nn.functional as F

    model.attach_content(model.item_encoder.build_content_store(catalog))
    model.eval()
    with torch.no_grad():
        vectors = F.normalize(model.input_vectors(torch.arange(1, catalog.num_items + 1)).float(), dim=-1)
    mods = list(catalog.modality)[1:]
    text = vectors[[i for i, m in enumerate(mods) if m == "text"]]
    image = vectors[[i for i, m in enumerate(mods) if m == "image"]]

    def mean_cos(a, b, same: bool) -> float:
        sims = a @ b.T
        if same:  # leave out each item's cosine with itself
            n = len(a)
            return float((sims.sum() - sims.diagonal().sum()) / max(1, n * (n - 1)))
        return float(sims.mean())

    within = (mean_cos(text, text, True) + mean_cos(image, image, True)) / 2
    across = mean_cos(text, image, False)
    return {"within": within, "across": across, "gap": within - across}


def initial_model(trained: Path):
    """The trained model's architecture at initialisation: pretrained encoders, fresh projections."""
    from transrec.hub import load_model

    model = load_model(trained, fresh=True)
    model.item_encoder.load_pretrained_weights()
    return model


def run_seed(seed: int, fractions: list[float], runs: Path) -> dict:
    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.hub import load_model
    from transrec.training.study import id_config
    from transrec.training.trainer import train
    from transrec.training.transfer import transfer

    row: dict = {"seed": seed}
    for source, extra in SIDES.items():
        out = runs / f"source-{source}-seed{seed}"
        if done(out) is None:
            train(load_config(str(SOURCE_CFG), extra + [f"train.seed={seed}"]), out)
        row[f"source:{source}"] = done(out)["test"]
        for target, t_extra in SIDES.items():
            cfg = load_config(str(TARGET_CFG), t_extra)
            zs_out = runs / f"zero_shot-{source}-to-{target}-seed{seed}"
            zs = done(zs_out) or transfer(out / "model", cfg, "zero_shot", zs_out)
            row[f"{source}->{target}:zero_shot"] = zs["test"]
            row[f"{source}->{target}:zero_shot_with_popularity"] = zs["zero_shot_with_popularity"]["test"]
            row[f"target:{target}:popularity"] = zs["popularity"]["test"]
            if not fine_tuned_pairs(source, target):
                continue
            for f in fractions:
                ft_out = runs / f"fine_tune-{source}-to-{target}-{f}-seed{seed}"
                ft = done(ft_out) or transfer(out / "model", load_config(
                    str(TARGET_CFG), t_extra + [f"data.train_fraction={f}", f"train.seed={seed}"]), "fine_tune", ft_out)
                row[f"{source}->{target}:fine_tune@{f}"] = ft["test"]
    for target, t_extra in SIDES.items():
        for f in fractions:
            out = runs / f"id_sasrec-{target}-{f}-seed{seed}"
            metrics = done(out) or train(id_config(load_config(
                str(TARGET_CFG), t_extra + [f"data.train_fraction={f}", f"train.seed={seed}"])), out).metrics
            row[f"target:{target}:id_sasrec@{f}"] = metrics["test"]
    gap_file = runs / f"modality_gap-seed{seed}.json"
    if not gap_file.is_file():
        catalog = prepare_data(load_config(str(SOURCE_CFG), []).data).dataset.items
        trained = runs / f"source-both-seed{seed}" / "model"
        gap = {"before": modality_gap(initial_model(trained), catalog),
               "after": modality_gap(load_model(trained), catalog)}
        gap_file.write_text(json.dumps(gap, indent=2))
    row["modality_gap"] = json.loads(gap_file.read_text())
    return row


def heuristics(runs: Path) -> dict:
    from transrec.config import load_config
    from transrec.training.transfer import transfer

    out: dict = {}
    for target, t_extra in SIDES.items():
        folder = runs / f"heuristics-{target}"
        metrics = done(folder) or transfer(None, load_config(str(TARGET_CFG), t_extra), "heuristics", folder)
        out[target] = {name: r["test"][KEY] for name, r in metrics["heuristics"].items()}
    return out


def stats(rows: list[dict], key: str) -> tuple[float, float] | None:
    values = [r[key][KEY] for r in rows if key in r]
    if not values:
        return None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict], heur: dict, fractions: list[float]) -> tuple[str, dict]:
    summary: dict = {}
    lines = [f"Source: synthetic domain A, target: domain B (300 unseen items); each side text-only, image-only "
             f"or both. Test {KEY} on the target, mean ± std over {len(rows)} seed(s), and × the target's "
             f"popularity (`python benchmarks/transfer_modalities.py`).", ""]
    header = "| source → target | " + " | ".join(
        ["zero-shot", "zero-shot + pop."] + [f"fine-tune {100 * f:g}%" for f in fractions]) + " |"
    lines += ["## Transfer", "", header, "|---|" + "---:|" * (2 + len(fractions))]
    for source in SIDES:
        for target in SIDES:
            pop = stats(rows, f"target:{target}:popularity")[0]
            cells = []
            for col in ["zero_shot", "zero_shot_with_popularity"] + [f"fine_tune@{f}" for f in fractions]:
                s = stats(rows, f"{source}->{target}:{col}")
                summary[f"{source}->{target}:{col}"] = s and {"mean": s[0], "std": s[1], "x_popularity": s[0] / pop}
                cells.append("-" if s is None else f"{s[0]:.4f} ± {s[1]:.4f} ({s[0] / pop:.2f}×)")
            lines.append(f"| {source} → {target} | " + " | ".join(cells) + " |")
    lines += ["", "## References on each target", "",
              "| target | popularity | best training-free heuristic | " +
              " | ".join(f"ID SASRec {100 * f:g}%" for f in fractions) + " |",
              "|---|---:|---|" + "---:|" * len(fractions)]
    for target in SIDES:
        pop = stats(rows, f"target:{target}:popularity")[0]
        best = max(heur[target], key=heur[target].get)
        summary[f"target:{target}:popularity"] = {"mean": pop}
        summary[f"target:{target}:best_heuristic"] = {"name": best, "mean": heur[target][best]}
        cells = []
        for f in fractions:
            s = stats(rows, f"target:{target}:id_sasrec@{f}")
            summary[f"target:{target}:id_sasrec@{f}"] = {"mean": s[0], "std": s[1], "x_popularity": s[0] / pop}
            cells.append(f"{s[0]:.4f} ± {s[1]:.4f} ({s[0] / pop:.2f}×)")
        lines.append(f"| {target} | {pop:.4f} | {best}: {heur[target][best]:.4f} ({heur[target][best] / pop:.2f}×) | "
                     + " | ".join(cells) + " |")
    gaps = [r["modality_gap"] for r in rows]
    lines += ["", "## Modality gap of the mixed source model (item vectors, cosine)", "",
              "| | mean cosine within a modality | text vs image | gap |", "|---|---:|---:|---:|"]
    for when in ("before", "after"):
        m = {k: statistics.mean(g[when][k] for g in gaps) for k in ("within", "across", "gap")}
        summary[f"modality_gap:{when}"] = m
        lines.append(f"| {'at initialisation' if when == 'before' else 'after training on A'} | "
                     f"{m['within']:.3f} | {m['across']:.3f} | {m['gap']:.3f} |")
    return "\n".join(lines), summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, col, title in ((axes[0], "zero_shot", "zero-shot, content only"),
                           (axes[1], "zero_shot_with_popularity", "zero-shot + target popularity")):
        grid = np.array([[summary[f"{s}->{t}:{col}"]["x_popularity"] for t in SIDES] for s in SIDES])
        image = ax.imshow(grid, cmap="viridis")
        for i in range(len(SIDES)):
            for j in range(len(SIDES)):
                ax.text(j, i, f"{grid[i, j]:.2f}×", ha="center", va="center", color="white", fontsize=8)
        ax.set_xticks(range(len(SIDES)), [f"B {t}" for t in SIDES])
        ax.set_yticks(range(len(SIDES)), [f"A {s}" for s in SIDES])
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8, label="× popularity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "transfer_modalities"))
    parser.add_argument("--stem", default="transfer_modalities")
    args = parser.parse_args()
    logging.getLogger("transrec").setLevel(logging.WARNING)
    runs = Path(args.runs)
    heur = heuristics(runs)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(seed, args.fractions, runs))
        text, summary = summarise(rows, heur, args.fractions)
        write_results(args.stem, f"# Transfer across modalities\n\n{text}",
                      {"command": "python benchmarks/transfer_modalities.py", "summary": summary, "rows": rows,
                       "heuristics": heur}, lambda path: plot(summary, path))
        print(text, flush=True)


if __name__ == "__main__":
    main()
