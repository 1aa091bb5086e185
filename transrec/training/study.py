"""A zero-shot transfer study in one call: what a user needs to judge a content model on a new domain.

1. train the content model on the source config's data;
2. rank the target's items zero-shot from content (content only, and + the target's popularity);
3. the training-free heuristics and popularity on the same target cases;
4. an ID SASRec trained on the target (the strongest thing to try instead, given the target's data).

Writes `study.json` and `study.md` (one table, NDCG@10 also as a multiple of popularity) and returns
the rows. `transrec transfer-study` prints the table with the wall time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transrec.config import Config
from transrec.evaluation.metrics import format_table

#: what an "ID SASRec on the target" changes in the target config (the rest, e.g. data, stays): the recipe
#: of configs/ml100k_sasrec.yaml, measured against RecBole at convergence (benchmarks/README.md); dropout
#: 0.5, windows every 10 items (only sequences longer than max_len are affected) and patience 20
ID_MODEL_OVERRIDES = {"item_encoder": "id", "name": "sasrec", "id_embedding": False, "score": "dot",
                      "content_residual": False, "num_layers": 2, "dropout": 0.5}
ID_DATA_OVERRIDES = {"train_stride": 10}
ID_TRAIN_OVERRIDES = {"objective": "softmax", "item_encoder_lr": 0.0, "patience": 20}


def id_config(target: Config) -> Config:
    """The target config with an ID SASRec model, the full softmax and the ID recipe above."""
    import copy

    cfg = copy.deepcopy(target)
    for section, overrides in ((cfg.model, ID_MODEL_OVERRIDES), (cfg.data, ID_DATA_OVERRIDES),
                               (cfg.train, ID_TRAIN_OVERRIDES)):
        for key, value in overrides.items():
            setattr(section, key, value)
    if cfg.data.train_stride > cfg.data.max_len:
        cfg.data.train_stride = cfg.data.max_len
    cfg.name = f"{target.name}-id_sasrec"
    return cfg


def run_study(source: Config, target: Config, output_dir: str | Path, id_target: Config | None = None) -> dict:
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.baselines import heuristic_baselines
    from transrec.training.trainer import train
    from transrec.training.transfer import transfer

    start = time.time()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t = time.time()
    src = train(source, out / "source")
    seconds["source training"] = time.time() - t
    t = time.time()
    zs = transfer(out / "source" / "model", target, "zero_shot", out / "zero_shot")
    seconds["zero-shot"] = time.time() - t
    t = time.time()
    heuristics = heuristic_baselines(target, prepare_data(target.data))
    seconds["heuristics"] = time.time() - t
    t = time.time()
    id_run = train(id_target or id_config(target), out / "id_sasrec")
    seconds["ID SASRec on target"] = time.time() - t

    rows = {"zero-shot, content only": zs["test"],
            "zero-shot + target popularity": zs["zero_shot_with_popularity"]["test"]}
    rows.update({name.replace("_", " "): r["test"] for name, r in heuristics.items()})
    rows["popularity"] = zs["popularity"]["test"]
    rows["ID SASRec trained on target"] = id_run.metrics["test"]
    pop = max(rows["popularity"]["NDCG@10"], 1e-12)
    result = {"rows": rows, "x_popularity_NDCG@10": {k: v["NDCG@10"] / pop for k, v in rows.items()},
              "source_test": src.metrics["test"], "prior_weights": {
                  "zero-shot + target popularity": zs["zero_shot_with_popularity"]["prior_weight"],
                  **{k: v["prior_weight"] for k, v in heuristics.items() if "prior_weight" in v}},
              "seconds": {**{k: round(v, 1) for k, v in seconds.items()}, "total": round(time.time() - start, 1)},
              "source": source.name, "target": target.name}
    (out / "study.json").write_text(json.dumps(result, indent=2))
    (out / "study.md").write_text(study_table(result) + "\n")
    return result


def study_table(result: dict) -> str:
    """The rows as a markdown table, with NDCG@10 as a multiple of popularity."""
    table = format_table(result["rows"], keys=("NDCG@10", "HR@10", "MRR@10"))
    lines = table.splitlines()
    ratio = result["x_popularity_NDCG@10"]
    names = list(result["rows"])
    lines[0] += " x popularity |"
    lines[1] += "---:|"
    for i, name in enumerate(names):
        lines[2 + i] += f" {ratio[name]:.2f} |"
    return "\n".join(lines)
