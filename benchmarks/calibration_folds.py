"""Diagnostic (tried, not adopted): 2-fold transfer calibration on saved transfer_movielens source models.
    python benchmarks/calibration_folds.py RUNS "TARGET OVERRIDES" 0,1,2
Fold 1 = the saved calibration model; fold 2 (sides swapped) is trained into calibration/fold2; each pick of
weights (fold 1, fold 2, both) ranks the target content-only with the final source model."""
import sys, json
from pathlib import Path
from transrec.config import load_config
from transrec.data.pipeline import prepare_data
from transrec.hub import load_model
from transrec.training.calibration import FOLD_SIDES, load_fold, sweep_folds, train_fold
from transrec.training.transfer import zero_shot_content_only

runs = Path(sys.argv[1]); target_over = sys.argv[2].split()
seeds = [int(x) for x in sys.argv[3].split(",")]
tcfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "ml100k_era_target.yaml"), target_over)
td = prepare_data(tcfg.data)
for seed in seeds:
    src = runs / f"source-seed{seed}"
    cfg = load_config(str(src / "config.yaml"), [])
    f1 = load_fold(cfg, src / "calibration" / "model", "heldout")
    f2dir = src / "calibration" / "fold2"
    f2 = load_fold(cfg, f2dir / "model", "train") if (f2dir / "model").is_dir() else train_fold(cfg, *FOLD_SIDES[1], f2dir)
    res = {}
    for name, folds in (("1fold", [f1]), ("fold2only", [f2]), ("2fold", [f1, f2])):
        w = sweep_folds(folds, cfg)
        final = load_model(src / "model")
        final.set_transfer_residual_weight(w["residual_weight"]); final.set_transfer_lexical_weight(w["lexical_weight"])
        final.set_transfer_content_prior_weight(w["content_prior_weight"])
        ndcg = zero_shot_content_only(final, td.dataset.items, {"test": td.split.test}, tcfg)["test"]["NDCG@10"]
        res[name] = ((w["residual_weight"], w["lexical_weight"], w["content_prior_weight"]), round(ndcg, 4))
    print("RESULT", seed, json.dumps(res), flush=True)
