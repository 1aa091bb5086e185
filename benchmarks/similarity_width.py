"""Which form of the pretrained encoder's similarity ranks a new catalogue best: training-free, on five targets.

    python benchmarks/similarity_width.py      # ~4 min on 2 CPU cores

The content residual scores each candidate by the encoder's cosine to the user's last item. Forms
compared, all nearest-to-the-last-item rankings with no training and no interaction counts: the plain
cosine of the pooled features (the `encoder_cosine_last` heuristic), the cosine after centring them
on the catalogue's mean, and after centring and keeping only the top k principal directions (k = 32,
64, 128, 256; training's residual uses 64, for speed). Targets: the four MovieLens-100k domains of
`transfer_movielens.py` (movies before / from 1994, dramas / the others) and the synthetic world's domain
B, each through MiniLM (frozen). Valid and test NDCG@10 of every form on each target; they are the
target's own cases, so this measures a design choice of the library, not a zero-shot result. Writes
benchmarks/results/similarity_width.{md,json,png}.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
STEM = "similarity_width"
ML = str(ROOT / "configs" / "ml100k_era_target.yaml")
TARGETS = {  # name -> (config, overrides)
    "ML before 1994": (ML, ["data.domain=before1994"]),
    "ML from 1994": (ML, ["data.domain=from1994"]),
    "ML dramas": (ML, ["data.era_split=0", "data.genre_split=Drama", "data.domain=drama"]),
    "ML not dramas": (ML, ["data.era_split=0", "data.genre_split=Drama", "data.domain=nondrama"]),
    "synthetic B (text)": (str(ROOT / "configs" / "transrec_minilm_B.yaml"), []),
}
WIDTHS = (32, 64, 128, 256)


def forms(raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Feature rows [n, h] whose cosine is each form's similarity."""
    from transrec.models.item_encoders.base import principal_basis

    out = {"plain": raw, "centred (all directions)": raw - raw.mean(0)}
    for k in WIDTHS:
        mean, basis = principal_basis(raw, k)
        out[f"centred, top {k}"] = (raw - mean) @ basis
    return out


def measure(config: str, overrides: list[str]) -> dict[str, dict[str, float]]:
    from transrec.config import load_config
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.baselines import pretrained_encoder
    from transrec.evaluation.evaluator import evaluate
    from transrec.models.heuristics import ContentKNN

    cfg = load_config(config, overrides)
    data = prepare_data(cfg.data)
    encoder = pretrained_encoder(cfg.model, data.dataset.items, cfg.data.on_bad_content)
    n = data.num_items
    with torch.no_grad():
        raw = torch.cat([encoder.content_features(torch.arange(s, min(s + 256, n + 1))).float()
                         for s in range(1, n + 1, 256)])
    results = {}
    for name, rows in forms(raw).items():
        features = torch.zeros(n + 1, rows.shape[1])
        features[1:] = F.normalize(rows, dim=-1)
        knn = ContentKNN(features, "last", cfg.data.max_len)
        results[name] = {split: evaluate(knn, cases, cfg.eval, cfg.data.max_len)["NDCG@10"]
                         for split, cases in (("valid", data.split.valid), ("test", data.split.test))}
    return results


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(next(iter(table.values())))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ratios = [r[name]["test"] / r["plain"]["test"] for r in table.values()]
        ax.bar([i + j * width for i in range(len(table))], ratios, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(table))], list(table), fontsize=7)
    ax.set_ylabel("test NDCG@10 / plain cosine")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    table = {}
    for target, (config, overrides) in TARGETS.items():
        table[target] = measure(config, overrides)
        print(target, {k: round(v["test"], 4) for k, v in table[target].items()}, flush=True)
    names = list(next(iter(table.values())))
    lines = ["Nearest to the last item by MiniLM's similarity, no training; NDCG@10 valid / test on each target "
             "(`python benchmarks/similarity_width.py`)", "",
             "| similarity | " + " | ".join(table) + " |", "|---|" + "---:|" * len(table)]
    for name in names:
        cells = [f"{r[name]['valid']:.4f} / {r[name]['test']:.4f}" for r in table.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    write_results(STEM, text, table, lambda path: plot(table, path))
    print(text)


if __name__ == "__main__":
    main()
