"""Image items in-domain as training data shrinks: where does the pretrained CNN beat ID embeddings?

    python benchmarks/image_data_share.py                        # 5%, 10%, 20%, 100% of users; ~90 min on 2 cores
    python benchmarks/image_data_share.py --fractions 0.1 1.0 --seeds 0

Runs `image_in_domain.py` once per share of training users (`data.train_fraction`: only that share of
the users' sequences train, every row and popularity alike; every user is evaluated), reusing its run
folders (runs/image_in_domain[_train<f>]/), and puts the shares side by side: test NDCG@10 of each
trained row, ID SASRec, the best training-free heuristic and popularity. A real photo catalogue
with few interactions per item looks like the small shares, not like the synthetic world's full log.
Writes benchmarks/results/image_data_share.{md,json,png}; each share's own table is in
benchmarks/results/image_in_domain[_train<f>].md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import image_in_domain
from _results import RESULTS, write_results

STEM = "image_data_share"


def rows_of(table: dict) -> dict[str, dict]:
    """The compared rows of one share's table: trained rows, ID, the best heuristic, popularity."""
    heuristics = [k for k in table if k.startswith(("encoder", "tfidf"))]
    best = max(heuristics, key=lambda k: table[k]["mean"])
    keep = [k for k in (*image_in_domain.TRAINED, image_in_domain.ID_ROW) if k in table]
    rows = {k: table[k] for k in keep}
    rows["best heuristic"] = {**table[best], "name": best}
    rows["popularity"] = table["popularity"]
    return rows


def markdown(per_share: dict[float, dict], command: str) -> str:
    shares = sorted(per_share)
    names = list(dict.fromkeys(n for s in shares for n in per_share[s]))
    lines = ["| row | " + " | ".join(f"{s:.0%} of users" for s in shares) + " |",
             "|---|" + "---:|" * len(shares)]
    for name in names:
        cells = []
        for s in shares:
            r = per_share[s].get(name)
            cells.append("-" if r is None else f"{r['mean']:.4f}" + (f" ± {r['std']:.4f}" if r["seeds"] > 1 else "")
                         + (f" ({r['name']})" if "name" in r else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    verdicts = []
    for s in shares:
        rows, id_row = per_share[s], per_share[s].get(image_in_domain.ID_ROW)
        if id_row is None:
            continue
        best = max((n for n in image_in_domain.TRAINED if n in rows), key=lambda n: rows[n]["mean"])
        r = rows[best]
        beyond = r["mean"] - r["std"] > id_row["mean"] + id_row["std"]
        verdicts.append(f"- {s:.0%}: best image row {best} {r['mean']:.4f} vs ID SASRec {id_row['mean']:.4f} "
                        f"({r['mean'] / id_row['mean'] - 1:+.1%}; {'beyond' if beyond else 'not beyond'} one std), "
                        f"best heuristic {rows['best heuristic']['mean']:.4f}.")
    return "\n".join([
        "# Image items in-domain by share of training users\n",
        f"Command: `{command}`. Synthetic domain A, EfficientNet-Lite0 at 128 px (see image_in_domain.md); "
        "test NDCG@10, mean ± std over seeds; the training-free rows use only the training share's counts.\n",
        *lines, "", *verdicts, ""]) + "\n"


def plot(per_share: dict[float, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = sorted(per_share)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    names = list(dict.fromkeys(n for s in shares for n in per_share[s]))
    for name in names:
        xs = [s for s in shares if name in per_share[s]]
        ax.errorbar([100 * s for s in xs], [per_share[s][name]["mean"] for s in xs],
                    yerr=[per_share[s][name]["std"] for s in xs], marker="o", capsize=3, label=name,
                    linestyle="--" if name in ("best heuristic", "popularity") else "-")
    ax.set_xscale("log")
    ax.set_xticks([100 * s for s in shares], [f"{s:.0%}" for s in shares])
    ax.set_xlabel("share of users whose sequences train")
    ax.set_ylabel("test NDCG@10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    command = "python benchmarks/image_data_share.py " + " ".join(argv if argv is not None else sys.argv[1:])
    per_share: dict[float, dict] = {}
    for fraction in args.fractions:
        image_in_domain.main(["--train-fraction", str(fraction), "--seeds", *map(str, args.seeds)])
        table = json.loads((RESULTS / f"{image_in_domain.share_name(fraction)}.json").read_text())["table"]
        per_share[fraction] = rows_of(table)
        write_results(STEM, markdown(per_share, command.strip()), {"shares": per_share, "command": command.strip()},
                      lambda path: plot(per_share, path))
    print((RESULTS / f"{STEM}.md").read_text())


if __name__ == "__main__":
    main()
