"""RecBole side of benchmarks/recbole_compare.py. Runs in RecBole's own venv (scripts/recbole_env.sh), never
imports transrec, never edits RecBole's files. Two jobs:

  train     one sequential model (SASRec / GRU4Rec / NextItNet) to RecBole's own early stopping or a wall-clock
            budget (checked after each epoch's validation); the best-validation checkpoint is then tested once,
            under RecBole's protocol and with the history excluded (ours). Every validation checkpoints the
            whole run, so running the same job again resumes it. Writes result.json with the timeline.
  protocol  the protocol check: RecBole's built-in Pop (declared sequential, so it runs RecBole's sequential
            data pipeline and full-ranking evaluator) and a fixed-score model whose user/item vectors are looked
            up by raw id in a table the caller wrote; dumps RecBole's valid/test cases (user, target, input).

Usage (from benchmarks/recbole_compare.py): python recbole_driver.py JOB OUT_DIR JSON_ARGS
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole pickles its Config in checkpoints

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.general_recommender import Pop
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.trainer import Trainer
from recbole.utils import InputType, ModelType, get_model, init_logger, init_seed

METRICS = {"metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
           "metric_decimal_place": 6}
PROTOCOL = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "MAX_ITEM_LIST_LENGTH": 50, "repeatable": True}


def exact_time_copy(root: Path) -> Path:
    """RecBole's ml-100k .inter with each timestamp replaced by its dense rank (same order, same rows, same ties).

    RecBole min-max normalises float fields and holds them as float32, which merges timestamps about a second
    apart (so its stable sort falls back to file order for them); ranks survive that exactly, so RecBole then
    orders every user's interactions exactly by time, ties in file order, as transrec does."""
    import recbole

    src = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"
    folder = root / "ml-100k-exact"
    folder.mkdir(parents=True, exist_ok=True)
    header, *rows = src.read_text().splitlines()
    cols = header.split("\t")
    ti = [c.split(":")[0] for c in cols].index("timestamp")
    parts = [r.split("\t") for r in rows if r]
    ts = np.array([float(p[ti]) for p in parts])
    rank = np.searchsorted(np.unique(ts), ts) + 1
    for p, r in zip(parts, rank):
        p[ti] = str(int(r))
    (folder / "ml-100k-exact.inter").write_text("\n".join([header] + ["\t".join(p) for p in parts]) + "\n")
    return folder


def base_config(out: Path, seed: int, data: str = "exact-time") -> dict:
    """data: "shipped" reads RecBole's bundled ml-100k as is; "exact-time" the rank-timestamp copy of it."""
    if data == "exact-time":
        folder = exact_time_copy(out / "recbole_data")
        where = {"dataset": folder.name, "data_path": str(folder.parent),
                 "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]}}
    else:
        where = {"dataset": "ml-100k"}
    return {**where, "use_gpu": False, "device": "cpu", "seed": seed, "reproducibility": True,
            "show_progress": False, "checkpoint_dir": str(out / "saved"), "eval_batch_size": 4096,
            **PROTOCOL, **METRICS}


class SeqPop(Pop):
    """RecBole's built-in Pop, declared sequential so that it runs RecBole's sequential protocol (prefix
    samples, leave-one-out by time, full ranking without history masking). Counts training *targets*."""

    type = ModelType.SEQUENTIAL


class FixedScores(SequentialRecommender):
    """Scores = table_user[raw user id] . table_item[raw item id]: the same numbers our evaluator gets."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        tables = np.load(config["fixed_tables"])
        users = dataset.field2id_token["user_id"]
        items = dataset.field2id_token["item_id"]
        lookup = lambda table, tokens: torch.from_numpy(np.stack(  # noqa: E731
            [table[int(t)] if t != "[PAD]" else np.zeros(table.shape[1], table.dtype) for t in tokens]))
        self.register_buffer("U", lookup(tables["users"], users))
        self.register_buffer("V", lookup(tables["items"], items))
        self.fake = torch.nn.Parameter(torch.zeros(1))

    def calculate_loss(self, interaction):
        return self.fake.sum() * 0

    def full_sort_predict(self, interaction):
        return self.U[interaction[self.USER_ID]] @ self.V.T


class ResumableTrainer(Trainer):
    """RecBole's Trainer, recording each validation with its wall time, stopping once the budget is spent, and
    saving its whole state after every validation (model, optimiser, early-stopping counters, timeline, random
    states) to OUT/last.pth, so an interrupted run resumes from its last epoch and loses nothing. The best
    model goes to a fixed OUT/saved/best.pth (RecBole's default name carries a timestamp, which a resume
    would change)."""

    class OutOfBudget(Exception):
        pass

    def __init__(self, config, model, budget_s: float, out: Path):
        super().__init__(config, model)
        self.budget_s, self.timeline, self.t0, self.elapsed_before = budget_s, [], None, 0.0
        self.saved_model_file = str(out / "saved" / "best.pth")
        self.last_file = out / "last.pth"

    def seconds(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        epoch = len(self.timeline) + 1
        loss = self.train_loss_dict.get(epoch - 1)  # keyed by 0-based epoch; the timeline survives a resume
        self.timeline.append({"epoch": epoch, "seconds": round(self.seconds(), 2),
                              "loss": float(loss) if loss is not None else None, **result})
        return score, result

    def after_validation(self, epoch_idx, valid_score):
        """fit's callback: checkpoint everything (atomically), then enforce the budget."""
        state = {"epoch": epoch_idx, "cur_step": self.cur_step, "best_valid_score": self.best_valid_score,
                 "best_valid_result": self.best_valid_result, "state_dict": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "timeline": self.timeline, "elapsed": self.seconds(),
                 "stopped": self.cur_step > self.stopping_step, "torch_rng": torch.get_rng_state(),
                 "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}
        tmp = self.last_file.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.last_file)
        if self.seconds() >= self.budget_s:
            raise self.OutOfBudget

    def resume(self) -> dict | None:
        """Load OUT/last.pth if an earlier run of this job left one; returns it (None when starting afresh)."""
        if not self.last_file.exists():
            return None
        state = torch.load(self.last_file, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch, self.cur_step = state["epoch"] + 1, state["cur_step"]
        self.best_valid_score, self.best_valid_result = state["best_valid_score"], state["best_valid_result"]
        self.timeline, self.elapsed_before = state["timeline"], state["elapsed"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        return state


def case_dump(loader) -> list[dict]:
    """RecBole's evaluation cases in raw ids: user, target item, input sequence (oldest first)."""
    ds = loader._dataset
    utok, itok = ds.field2id_token["user_id"], ds.field2id_token["item_id"]
    feat = ds.inter_feat
    out = []
    for u, t, seq, n in zip(feat["user_id"].tolist(), feat["item_id"].tolist(), feat["item_id_list"].tolist(),
                            feat["item_length"].tolist()):
        out.append({"user": utok[u], "target": itok[t], "input": [itok[i] for i in seq[:n]]})
    return out


def evaluate(trainer, loader, load_best: bool) -> dict:
    return {k.replace("hit@", "HR@").replace("ndcg@", "NDCG@").replace("mrr@", "MRR@"): float(v)
            for k, v in trainer.evaluate(loader, load_best_model=load_best, show_progress=False).items()}


def prepare(config):
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    return dataset, *data_preparation(config, dataset)


def job_protocol(out: Path, args: dict) -> dict:
    """Pop (RecBole's default batch, and batch 1) and FixedScores on the exact-time copy; the evaluation cases of
    both the exact-time copy and the shipped files."""
    result = {}
    runs = (("Pop", SeqPop, {}), ("Pop, batch 1", SeqPop, {"train_batch_size": 1}), ("FixedScores", FixedScores, {}))
    for name, model, extra in runs:
        cfg = {**base_config(out, 2020, "exact-time"), "epochs": 1, "eval_step": 1, "stopping_step": 1,
               "train_neg_sample_args": None, "loss_type": "CE", "fixed_tables": args["tables"], **extra}
        config = Config(model=model, dataset=cfg["dataset"], config_dict=cfg)
        dataset, train, valid, test = prepare(config)
        net = model(config, train._dataset).to(config["device"])
        trainer = Trainer(config, net)
        trainer.fit(train, valid, saved=False, show_progress=False)
        result[name] = {"valid": evaluate(trainer, valid, False), "test": evaluate(trainer, test, False)}
        if model is SeqPop:
            result[f"{name} counts"] = {dataset.field2id_token["item_id"][i]: int(c)
                                        for i, c in enumerate(net.item_cnt.view(-1).tolist()) if i}
        if name == "FixedScores":
            result["cases"] = {"exact-time": {"valid": case_dump(valid), "test": case_dump(test)}}
            result["dataset"] = {"users": dataset.user_num - 1, "items": dataset.item_num - 1,
                                 "samples": len(dataset.inter_feat), "train_samples": len(train._dataset)}
    config = Config(model=FixedScores, dataset="ml-100k", config_dict={**base_config(out, 2020, "shipped"),
                    "train_neg_sample_args": None, "loss_type": "CE", "fixed_tables": args["tables"]})
    _, _, valid, test = prepare(config)
    result["cases"]["shipped"] = {"valid": case_dump(valid), "test": case_dump(test)}
    return result


def masked_test_ranks(trainer, loader, dataset) -> list[int]:
    """0-based test ranks under transrec's protocol: every item the user interacted with before the target is
    dropped from the candidates (RecBole's sequential full ranking keeps them). Scores come from the best
    model's full_sort_predict; ties count against the target, as in transrec.evaluation.ranking. The caller
    (in transrec's venv) turns them into metrics with transrec.evaluation.metrics.metrics_from_ranks."""
    state = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
    model = trainer.model
    model.load_state_dict(state["state_dict"])
    model.eval()
    uid, iid = dataset.uid_field, dataset.iid_field
    seen: dict[int, set] = {}
    for u, i in zip(dataset.inter_feat[uid].tolist(), dataset.inter_feat[iid].tolist()):
        seen.setdefault(u, set()).add(i)
    feat, ranks = loader._dataset.inter_feat, []
    with torch.no_grad():
        for start in range(0, len(feat), 512):
            batch = feat[start:start + 512].to(trainer.device)
            scores = model.full_sort_predict(batch).view(len(batch[uid]), -1).float()
            for row, (u, t) in enumerate(zip(batch[uid].tolist(), batch[iid].tolist())):
                s = scores[row]
                s_t = float(s[t])
                s[[0, *seen[u]]] = -float("inf")  # padding, the history, and the target itself
                ranks.append(int((s >= s_t - 1e-6 * (abs(s_t) + 1)).sum()))
    return ranks


def job_train(out: Path, args: dict) -> dict:
    """Train to early stopping (or the budget); resumes from OUT/last.pth when an earlier run was interrupted."""
    cfg = {**base_config(out, args["seed"], args.get("data", "exact-time")), "epochs": args.get("max_epochs", 10_000),
           "eval_step": 1, "stopping_step": args.get("stopping_step", 10), "loss_type": "CE",
           "train_neg_sample_args": None, **args.get("config", {})}
    config = Config(model=args["model"], dataset=cfg["dataset"], config_dict=cfg)
    dataset, train, valid, test = prepare(config)
    init_seed(config["seed"], config["reproducibility"])
    net = get_model(config["model"])(config, train._dataset).to(config["device"])
    trainer = ResumableTrainer(config, net, args["budget_s"], out)
    resumed = trainer.resume()
    trainer.t0 = time.time()
    stopped_by = "early stopping (stopping_step)"
    if resumed is not None and (resumed["stopped"] or resumed["elapsed"] >= args["budget_s"]):
        stopped_by = "early stopping (stopping_step)" if resumed["stopped"] else "budget"
    else:
        try:
            trainer.fit(train, valid, saved=True, show_progress=False, callback_fn=trainer.after_validation)
            if len(trainer.timeline) >= cfg["epochs"]:
                stopped_by = "max epochs"
        except ResumableTrainer.OutOfBudget:
            stopped_by = "budget"
    best = max(trainer.timeline, key=lambda r: (r["ndcg@10"], -r["epoch"]))  # RecBole keeps the first best
    test_result = evaluate(trainer, test, True)
    return {"model": args["model"], "seed": args["seed"], "test": test_result,
            "test_history_excluded_ranks": masked_test_ranks(trainer, test, dataset), "epochs_run": len(trainer.timeline),
            "best_epoch": best["epoch"], "seconds_to_best": best["seconds"], "train_seconds": round(trainer.seconds(), 2),
            "resumed_at_epoch": None if resumed is None else resumed["epoch"] + 1, "stopped_by": stopped_by,
            "parameters": sum(p.numel() for p in net.parameters()),
            "train_samples": len(train._dataset), "timeline": trainer.timeline,
            "config": {k: config[k] for k in ("embedding_size", "hidden_size", "n_layers", "num_layers", "n_heads",
                                              "block_num", "dilations", "dropout_prob", "hidden_dropout_prob",
                                              "attn_dropout_prob", "train_batch_size", "learning_rate",
                                              "MAX_ITEM_LIST_LENGTH", "loss_type", "stopping_step")
                       if config[k] is not None}}


def main() -> None:
    job, out, args = sys.argv[1], Path(sys.argv[2]).resolve(), json.loads(sys.argv[3])  # before the chdir
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # RecBole writes log/ and log_tensorboard/ under the working directory
    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    result = {"protocol": job_protocol, "train": job_train}[job](out, args)
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
