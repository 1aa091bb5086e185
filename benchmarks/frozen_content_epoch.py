"""Epoch time of a frozen content model against an ID model on a ~10,000-item catalogue, side by side.

    python benchmarks/frozen_content_epoch.py [--items-per-domain 5000] [--users 3000] [--epochs 2]

The content model encodes every item's text with all-MiniLM-L6-v2, frozen (`text_trainable_blocks=0`,
`cache_frozen=true`): the pooled vector of each item is computed once (reported apart, as the
one-off cost), then a training step costs a gather plus the projection. Both models: SASRec user
encoder, d=64, the full softmax over every item, the same batches. The epochs of the two models
alternate (content, ID, content, ID, ...) so machine load hits both alike; the ratio of median epoch
times is the result. Writes benchmarks/results/frozen_content_epoch.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from transrec.config import ModelConfig
from transrec.data.pipeline import load_raw_dataset, prepare_data
from transrec.data.sequences import NextItemDataset, collate_next_item
from transrec.models.item_encoders.base import fit_centres
from transrec.models.recommender import build_model
from transrec.objectives import create_objective

RESULTS = Path(__file__).resolve().parent / "results"


def data_config(folder: Path):
    from transrec.config import DataConfig

    return DataConfig(source="folder", path=str(folder), max_len=50)


def make_world(folder: Path, items_per_domain: int, users: int) -> None:
    from transrec.data.synthetic import WorldConfig, generate_world

    if not (folder / "world.json").is_file():
        generate_world(folder, WorldConfig(seed=0, num_users=users, items_per_domain=items_per_domain,
                                           num_topics=16, min_len=20, max_len=60), overwrite=True)


def one_epoch(model, loader, objective, optimizer) -> float:
    model.train()
    start = time.perf_counter()
    for batch in loader:
        loss = model(batch["items"], batch["targets"], objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-per-domain", type=int, default=5000)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--world", default="/tmp/transrec-bench-world-10k")
    parser.add_argument("--stem", default="frozen_content_epoch")
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = Path(args.world)
    make_world(folder, args.items_per_domain, args.users)
    data = prepare_data(data_config(folder))
    print(load_raw_dataset(data_config(folder)).summary())
    n = data.num_items
    loader = DataLoader(NextItemDataset(data.split.train, 50), batch_size=128, shuffle=True,
                        collate_fn=collate_next_item, generator=torch.Generator().manual_seed(0))
    batches = list(loader)  # the same batches for both models, collated once
    objective = create_objective("softmax", torch.as_tensor(data.item_counts()), 1)
    models = {
        "ID SASRec": build_model(ModelConfig(name="sasrec", dim=64, num_layers=2), n, 50),
        "frozen MiniLM SASRec": build_model(ModelConfig(
            name="sasrec", dim=64, num_layers=2, item_encoder="text", text_encoder="minilm-l6-offline",
            text_trainable_blocks=0, cache_frozen=True, score="cosine", content_residual=True), n, 50),
    }
    content = models["frozen MiniLM SASRec"]
    content.attach_content(content.item_encoder.build_content_store(data.dataset.items))
    content.item_encoder.load_pretrained_weights()
    start = time.perf_counter()
    fit_centres(content.item_encoder)  # one pass over every item: fills the pooled-vector cache
    fill_seconds = time.perf_counter() - start
    optimizers = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
                  for k, m in models.items()}
    times = {k: [] for k in models}
    for epoch in range(args.epochs):
        for name, model in models.items():
            times[name].append(one_epoch(model, batches, objective, optimizers[name]))
            print(f"epoch {epoch + 1} {name}: {times[name][-1]:.1f} s", flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["frozen MiniLM SASRec"] / median["ID SASRec"]
    result = {"items": n, "users": data.split.num_users, "batches_per_epoch": len(batches),
              "epoch_seconds": times, "median_epoch_seconds": median, "content_over_id": ratio,
              "cache_fill_seconds": fill_seconds, "threads": torch.get_num_threads()}
    lines = [f"Frozen content model vs ID model, {n} items, {len(batches)} batches of 128 per epoch, "
             f"full softmax (`python benchmarks/frozen_content_epoch.py`)", "",
             "| model | median s / epoch | × ID |", "|---|---:|---:|"]
    for name, t in median.items():
        lines.append(f"| {name} | {t:.1f} | {t / median['ID SASRec']:.2f} |")
    lines += ["", f"One-off: MiniLM over every item's text, pooled vectors cached: {fill_seconds:.1f} s."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(result, indent=2))
    plot(times, RESULTS / f"{args.stem}.png")
    print("\n".join(lines))


def plot(times: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, t in times.items():
        ax.plot(range(1, len(t) + 1), t, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("epoch time, ~10k items, full softmax")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
