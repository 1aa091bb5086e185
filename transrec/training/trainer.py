"""One accelerate loop for every model: train, validate, stop early, checkpoint, resume, test once.

Models stay device-agnostic; only this module (and the CLI) talks to accelerate.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transrec.config import Config
from transrec.data.pipeline import PreparedData, prepare_data
from transrec.data.masking import MaskedItemCollator, MaskedItemDataset
from transrec.data.sequences import NextItemDataset, collate_next_item
from transrec.errors import ConfigError
from transrec.evaluation.evaluator import compute_ranks, eval_loader
from transrec.evaluation.metrics import metrics_from_ranks
from transrec.hub import metrics_markdown, protocol_text, save_model
from transrec.models.recommender import PopularityModel, build_model
from transrec.models.item_encoders.base import fit_centres
from transrec.objectives import ContrastiveObjective, contrastive_loss, create_objective
from transrec.training.checkpoint import (TrainerState, drop_frozen_weights, find_checkpoint, load_checkpoint,
                                          load_trainable_state, load_weights, save_checkpoint,
                                          save_weights_atomic, trainable_state)
from transrec.training.guards import check_memory
from transrec.training.optim import build_optimizer, build_scheduler, param_groups

log = logging.getLogger("transrec")
SELECT_METRIC = "NDCG@10"
COLD_ITEM_MAX = 5  # a test item with fewer training interactions than this is "cold"
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class RunResult:
    metrics: dict
    output_dir: Path
    is_main_process: bool = True


def setup_logging(output_dir: Path, is_main: bool) -> None:
    logger = logging.getLogger("transrec")
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if is_main:
        file = logging.FileHandler(output_dir / "train.log")
        file.setFormatter(fmt)
        logger.addHandler(file)
    logger.propagate = False


class CsvTracker:
    """Appends one row per logged event to `log.csv` (loss curves, validation metrics)."""

    FIELDS = ["kind", "epoch", "step", "seconds", "loss", "lr", "HR@10", "NDCG@10", "MRR@10"]

    def __init__(self, path: Path, enabled: bool, fields: list[str] | None = None):
        self.path, self.enabled = path, enabled
        self.FIELDS = fields or self.FIELDS
        self.rows = 0  # data rows in the file (checkpoints record it, see `keep`)
        if enabled and not path.exists():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)
        elif enabled:
            self.rows = max(0, len(path.read_text().splitlines()) - 1)

    def log(self, **row) -> None:
        self.rows += 1
        if self.enabled:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow([row.get(k, "") for k in self.FIELDS])

    def keep(self, rows: int) -> None:
        """Drop the rows logged after a checkpoint: the resumed run logs them again."""
        if self.enabled and self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)
            self.path.write_text("".join(lines[: rows + 1]))
        self.rows = rows


def make_accelerator(cfg: Config, output_dir: Path) -> Accelerator:
    if cfg.train.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"train.mixed_precision must be one of {MIXED_PRECISION}, got {cfg.train.mixed_precision!r}")
    if cfg.train.tracker not in ("csv", "tensorboard", "none"):
        raise ConfigError(f"train.tracker must be csv, tensorboard or none, got {cfg.train.tracker!r}")
    # Several processes but no GPU: accelerate only picks gloo/MULTI_CPU when told `cpu=True`.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(
        cpu=multi_cpu,
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=max(1, cfg.train.grad_accum),
        # train.batch_size is the global batch, split over processes: the optimisation (and so the
        # result) does not depend on how many processes run it.
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True),
        log_with="tensorboard" if cfg.train.tracker == "tensorboard" else None,
        project_dir=str(output_dir),
    )


def split_ranks(accelerator: Accelerator, model, loader, cfg: Config) -> np.ndarray:
    """Per-user ranks in the split's user order, gathered from every process."""
    return compute_ranks(accelerator.unwrap_model(model), loader, cfg.eval.protocol, cfg.eval.exclude_history,
                         cfg.eval.chunk_size, cfg.eval.num_negatives, seed=cfg.train.seed,
                         gather=accelerator.gather_for_metrics)


def evaluate_split(accelerator: Accelerator, model, loader, cfg: Config) -> dict[str, float]:
    return metrics_from_ranks(split_ranks(accelerator, model, loader, cfg), ks=tuple(cfg.eval.ks))


def with_cold_slice(ranks: np.ndarray, data: PreparedData, ks) -> dict:
    """Test metrics, plus the slice of users whose target item is cold (< COLD_ITEM_MAX training
    interactions): where content models should beat ID models."""
    metrics = metrics_from_ranks(ranks, ks=tuple(ks))
    cold = data.item_counts()[data.split.test.targets] < COLD_ITEM_MAX
    cold_metrics = metrics_from_ranks(ranks[cold], ks=tuple(ks)) if cold.any() else {}
    return metrics, {**cold_metrics, "users": int(cold.sum())}


PRETRAIN_OBJECTIVES = ("next_item", "masked_item", "contrastive")
TASKS = ("next_item", "pretrain", "profile", "cold_start")


def pretrain_objective(cfg: Config) -> str:
    """The sequence objective of this run, checked against the user encoder."""
    name = cfg.train.pretrain_objective
    if name not in PRETRAIN_OBJECTIVES:
        raise ConfigError(f"train.pretrain_objective must be one of {PRETRAIN_OBJECTIVES}, got {name!r}")
    if name == "masked_item":
        from transrec.registry import USER_ENCODERS

        if cfg.model.name == "popularity" or getattr(USER_ENCODERS.get(cfg.model.name), "causal", True):
            raise ConfigError(f"masked_item pretraining needs a non-causal user encoder (model.name=bidirectional); "
                              f"{cfg.model.name} is causal, use train.pretrain_objective=next_item with it")
    if name == "contrastive":
        from transrec.data.augment import check_augmentations

        t = cfg.train
        if cfg.model.name == "popularity":
            raise ConfigError("contrastive pretraining needs a user encoder "
                              "(sasrec | nextitnet | gru4rec | bidirectional)")
        check_augmentations(t.augmentations, t.crop_ratio, t.mask_ratio, t.reorder_ratio)
        if set(t.augmentations) == {"dropout"} and cfg.model.dropout <= 0:
            raise ConfigError("train.augmentations=[dropout] needs model.dropout > 0 (else both views are identical)")
    return name


def train(cfg: Config, output_dir: str | Path, resume: bool = False, init_model=None, extra: dict | None = None
          ) -> RunResult:
    """Train `cfg`'s model on its data; write config.yaml, metrics.json, model/, log.csv, train.log.

    `init_model` starts from an existing model (transfer fine-tuning) instead of a fresh one built
    from `cfg.model`; `extra` is merged into metrics.json (e.g. the transfer mode)."""
    if cfg.task not in ("next_item", "pretrain"):
        raise ConfigError(f"task must be one of {TASKS}, got {cfg.task!r}" if cfg.task not in TASKS else
                          f"task {cfg.task} is a downstream task: run it with transrec.training.finetune.finetune")
    pretrain_objective(cfg)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    if cfg.train.transfer_calibration > 0 and init_model is None and not resume:
        from transrec.training.calibration import calibrate_residual

        extra["transfer_calibration"] = calibrate_residual(cfg, output_dir / "calibration")
    accelerator = make_accelerator(cfg, output_dir)
    try:
        return _train(accelerator, cfg, output_dir, resume, init_model, extra)
    finally:
        release(accelerator)


def release(accelerator: Accelerator) -> None:
    """End the run: trackers, the process group, and accelerate's process-wide singletons (so the next
    run in this process — tests, benchmarks, transfer — can choose its own precision and processes)."""
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def progress_disabled(cfg: Config, accelerator: Accelerator) -> bool | None:
    """tqdm's `disable`: True off the main process or with train.progress=false; otherwise None, which
    tqdm reads as "only on a terminal", so logs written to files and CI stay one line per epoch."""
    return True if not (cfg.train.progress and accelerator.is_main_process) else None


def _train(accelerator: Accelerator, cfg: Config, output_dir: Path, resume: bool, init_model, extra: dict
           ) -> RunResult:
    setup_logging(output_dir, accelerator.is_main_process)
    set_seed(cfg.train.seed)
    with accelerator.main_process_first():
        data = prepare_data(cfg.data)
    if accelerator.is_main_process:
        (output_dir / "config.yaml").write_text(cfg.to_yaml())
    log.info("%s", data.dataset.summary())
    log.info("users after filtering: %d; processes: %d; device: %s", data.split.num_users,
             accelerator.num_processes, accelerator.device)
    # before anything big is allocated: impossible memory settings fail now, naming the setting
    check_memory(cfg, data.num_items, train=cfg.model.name != "popularity", device=accelerator.device)
    max_len = cfg.data.max_len
    masked_items = pretrain_objective(cfg) == "masked_item"
    contrastive = None  # the CLUE objective (with its projection head) when pretrain_objective=contrastive
    model = init_model if init_model is not None else build_model(cfg.model, data.num_items, max_len,
                                                                  mask_token=masked_items)
    if getattr(model, "is_content_model", False):
        model.attach_content(model.item_encoder.build_content_store(data.dataset.items, cfg.data.on_bad_content))
        if init_model is None and cfg.model.pretrained and model.item_encoder.load_pretrained_weights():
            log.info("content backbones start from their pretrained weights")
        if init_model is None:
            fit_centres(model.item_encoder)
    valid_loader = eval_loader(data.split.valid, max_len, cfg.eval.batch_size)
    test_loader = eval_loader(data.split.test, max_len, cfg.eval.batch_size)
    tracker = CsvTracker(output_dir / "log.csv", accelerator.is_main_process)
    if cfg.train.tracker == "tensorboard":
        accelerator.init_trackers("transrec")
    start = time.time()

    if isinstance(model, PopularityModel):
        model.fit(data.split.train)
        model = model.to(accelerator.device)
        valid_loader, test_loader = accelerator.prepare(valid_loader, test_loader)
        state = TrainerState(best_epoch=0)
        valid = evaluate_split(accelerator, model, valid_loader, cfg)
        state.best_metric = valid[SELECT_METRIC]
        return _finish(accelerator, cfg, output_dir, data, model, valid, test_loader, state, time.time() - start,
                       extra)

    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %d trainable of %d parameters", cfg.model.name,
             sum(p.numel() for p in model.parameters() if p.requires_grad), n_params)
    objective = create_objective(cfg.train.objective, torch.as_tensor(data.item_counts()), cfg.train.num_negatives)
    objective = objective.to(accelerator.device)
    if masked_items:
        train_set = MaskedItemDataset(data.split.train, max_len)
        collate = MaskedItemCollator(data.num_items, cfg.train.mask_prob)
    elif cfg.train.pretrain_objective == "contrastive":  # CLUE: two augmented views per window
        from transrec.data.augment import ContrastiveCollator

        t = cfg.train
        train_set = NextItemDataset(data.split.train, max_len)
        collate = ContrastiveCollator(max_len, t.augmentations, t.crop_ratio, t.mask_ratio, t.reorder_ratio)
        # the projection head lives in the objective, not the model: it trains here and is never saved
        contrastive = ContrastiveObjective(model.dim, t.contrastive_temperature,
                                           t.contrastive_projection_dim).to(accelerator.device)
    else:
        if not 0 <= cfg.data.train_stride <= max_len:
            raise ConfigError(f"data.train_stride must be between 0 (off) and data.max_len={max_len}, "
                              f"got {cfg.data.train_stride}")
        train_set = NextItemDataset(data.split.train, max_len, cfg.data.train_stride or None)
        collate = collate_next_item
    if len(train_set) == 0:
        raise ConfigError("no training sequences with 2+ items after the split; the data is too short")
    # The loader gets its own generator: each new iterator draws a seed from it, and a draw from the
    # global RNG would shift every later dropout mask after a mid-epoch resume (not exact any more).
    train_loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate,
                              generator=torch.Generator().manual_seed(cfg.train.seed))
    steps_per_epoch = math.ceil(len(train_loader) / max(1, cfg.train.grad_accum))
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay, cfg.train.item_encoder_lr)
    if contrastive is not None:
        for group in param_groups(contrastive, cfg.train.weight_decay):
            optimizer.add_param_group({**group, "lr": cfg.train.lr})
    scheduler = build_scheduler(optimizer, cfg.train.scheduler, cfg.train.warmup_steps,
                                steps_per_epoch * cfg.train.epochs)
    model, optimizer, train_loader, valid_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, valid_loader, test_loader, scheduler)
    if contrastive is not None:  # own DDP wrapper (gradient sync); prepared after the model, so resume restores it
        contrastive = accelerator.prepare(contrastive)
    trained = [model] if contrastive is None else [model, contrastive]
    accelerator.register_save_state_pre_hook(drop_frozen_weights)  # checkpoints: trainable state only

    checkpoint_dir = output_dir / "checkpoints"
    best_path = output_dir / "best_model.safetensors"
    state = TrainerState()
    if resume:
        found = find_checkpoint(checkpoint_dir)
        if found is None:
            log.warning("--resume: no checkpoint in %s; starting from scratch", checkpoint_dir)
        else:
            state = load_checkpoint(accelerator, found, best_path, models=trained)
            tracker.keep(state.log_rows)
            log.info("resumed from %s at epoch %d, batch %d (best %s %.4f)", found, state.epoch,
                     state.step_in_epoch, SELECT_METRIC, state.best_metric)
    start = time.time() - state.elapsed_seconds
    budget = cfg.train.max_minutes * 60 if cfg.train.max_minutes > 0 else math.inf
    if init_model is not None and cfg.train.select_initial and not state.history:
        # the starting model, as it ranks new items zero-shot (a content model's calibrated residual weight), is
        # a candidate: fine-tuning on a few users never ends below its start on validation. Training itself
        # starts from the learned weights (a large calibrated residual weight would make the logits stiff).
        with getattr(accelerator.unwrap_model(model), "zero_shot_scoring", contextlib.nullcontext)():
            valid = evaluate_split(accelerator, model, valid_loader, cfg)
            _keep_best(accelerator, model, best_path, state, valid, epoch=0)
        _record_valid(state, tracker, 0, 0.0, float("nan"), valid)
        log.info("epoch 0 (the starting model): valid NDCG@10 %.4f HR@10 %.4f", valid["NDCG@10"], valid["HR@10"])
    stop = False
    for epoch in range(state.epoch, cfg.train.epochs):
        train_loader.set_epoch(epoch)
        loader = (accelerator.skip_first_batches(train_loader, state.step_in_epoch) if state.step_in_epoch
                  else train_loader)
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=progress_disabled(cfg, accelerator))
        for batch in bar:
            with accelerator.accumulate(*trained):
                if contrastive is not None:
                    loss = contrastive_loss(model, contrastive, batch,
                                            objective if cfg.train.contrastive_with_next_item else None,
                                            cfg.train.contrastive_weight)
                else:
                    loss = model(batch["items"], batch["targets"], objective, masked=batch.get("masked"))
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.clip_grad_norm > 0:
                    accelerator.clip_grad_norm_([p for m in trained for p in m.parameters()],
                                                cfg.train.clip_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}; lower train.lr")
            state.epoch_loss_sum += loss.item()  # in the state, so a resumed epoch's mean loss is exact too
            state.step_in_epoch += 1
            if accelerator.sync_gradients:
                state.global_step += 1
                if cfg.train.checkpoint_every and state.global_step % cfg.train.checkpoint_every == 0:
                    state.elapsed_seconds, state.log_rows = time.time() - start, tracker.rows
                    save_checkpoint(accelerator, checkpoint_dir, state, best_path)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if time.time() - start > budget:
                stop = True
                break
        epoch_loss = state.epoch_loss_sum / state.step_in_epoch if state.step_in_epoch else float("nan")
        state.epoch_loss_sum = 0.0
        tracker.log(kind="train", epoch=epoch + 1, step=state.global_step, seconds=round(time.time() - start, 2),
                    loss=round(epoch_loss, 5), lr=scheduler.get_last_lr()[0])
        state.epoch, state.step_in_epoch = epoch + 1, 0
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs or stop:
            valid = evaluate_split(accelerator, model, valid_loader, cfg)
            seconds = time.time() - start
            improved = valid[SELECT_METRIC] > state.best_metric  # selection: against every candidate, epoch 0 too
            progressed = valid[SELECT_METRIC] > state.best_trained_metric  # patience: against trained epochs only
            if contrastive is not None and not cfg.train.contrastive_with_next_item:
                improved = progressed = True  # contrastive-only pretraining does not rank items: keep the latest
            if improved:
                _keep_best(accelerator, model, best_path, state, valid, epoch=epoch + 1)
            if progressed:
                # a fine-tune's first epochs often dip below its start before they overtake it: counting them
                # against the start would stop training exactly there
                state.best_trained_metric, state.bad_evals = valid[SELECT_METRIC], 0
            else:
                state.bad_evals += 1
            _record_valid(state, tracker, epoch + 1, seconds, epoch_loss, valid)
            if cfg.train.tracker == "tensorboard":
                accelerator.log({"train/loss": epoch_loss, **{f"valid/{k}": v for k, v in valid.items()}},
                                step=state.global_step)
            log.info("epoch %d: loss %.4f, valid NDCG@10 %.4f HR@10 %.4f%s (%.0fs)", epoch + 1, epoch_loss,
                     valid["NDCG@10"], valid["HR@10"], " *" if improved else "", seconds)
            if state.bad_evals >= cfg.train.patience and epoch + 1 >= cfg.train.min_epochs:
                log.info("early stop: no better valid %s for %d evaluations", SELECT_METRIC, state.bad_evals)
                stop = True
        state.elapsed_seconds, state.log_rows = time.time() - start, tracker.rows
        save_checkpoint(accelerator, checkpoint_dir, state, best_path)
        if stop:
            break

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    load_trainable_state(unwrapped, load_weights(best_path), str(best_path))
    if init_model is None and hasattr(unwrapped, "content_prior_coef"):
        # what content says about popularity in this domain, for ranking a new one zero-shot (content_prior.py)
        from transrec.models.content_prior import fit_content_prior

        fit_content_prior(unwrapped, data.item_counts())
    best = next(h for h in state.history if h["epoch"] == state.best_epoch)
    valid = {k: best[k] for k in best if "@" in k}
    # the starting model kept (epoch 0): test it as it was validated, ranking zero-shot (its lexical term too)
    kept_start = init_model is not None and state.best_epoch == 0
    scoring = getattr(unwrapped, "zero_shot_scoring", None) if kept_start else None
    with scoring() if scoring is not None else contextlib.nullcontext():
        return _finish(accelerator, cfg, output_dir, data, unwrapped, valid, test_loader, state,
                       state.elapsed_seconds, extra)


def _keep_best(accelerator, model, best_path: Path, state: TrainerState, valid: dict, epoch: int) -> None:
    """The model as it is now becomes the selected one (weights written atomically by the main process)."""
    state.best_metric, state.best_epoch = valid[SELECT_METRIC], epoch
    if accelerator.is_main_process:
        save_weights_atomic(trainable_state(accelerator.unwrap_model(model)), best_path)


def _record_valid(state: TrainerState, tracker, epoch: int, seconds: float, loss: float, valid: dict) -> None:
    """One validation into the run's history (model selection, curves) and log.csv."""
    state.history.append({"epoch": epoch, "seconds": round(seconds, 2), "loss": loss, **valid})
    tracker.log(kind="valid", epoch=epoch, step=state.global_step, seconds=round(seconds, 2),
                **{k: round(valid[k], 5) for k in ("HR@10", "NDCG@10", "MRR@10")})


def _finish(accelerator, cfg: Config, output_dir: Path, data: PreparedData, model, valid: dict, test_loader,
            state: TrainerState, train_seconds: float, extra: dict) -> RunResult:
    """Read test once with the selected model; write metrics.json, the model folder and curves."""
    test, test_cold = with_cold_slice(split_ranks(accelerator, model, test_loader, cfg), data, cfg.eval.ks)
    best_seconds = next((h["seconds"] for h in state.history if h["epoch"] == state.best_epoch), train_seconds)
    run = {"model": cfg.model.name, "task": cfg.task, "pretrain_objective": cfg.train.pretrain_objective,
           "dataset": data.dataset.name, "users": data.split.num_users,
           "items": data.num_items, "epochs_run": state.epoch, "best_epoch": state.best_epoch,
           "train_seconds": round(train_seconds, 2), "seconds_to_best": round(best_seconds, 2),
           "processes": accelerator.num_processes, "protocol": protocol_text(cfg.eval),
           "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "total_params": sum(p.numel() for p in model.parameters())}
    metrics = {"valid": valid, "test": test, "test_cold_items": test_cold, "run": {**run, **extra}}
    if not isinstance(model, PopularityModel):  # every results table shows the popularity baseline
        popularity = PopularityModel(data.num_items, cfg.data.max_len).fit(data.split.train).to(accelerator.device)
        pop_test, pop_cold = with_cold_slice(split_ranks(accelerator, popularity, test_loader, cfg), data, cfg.eval.ks)
        metrics["popularity"] = {"test": pop_test, "test_cold_items": pop_cold}
    if "transfer_calibration" in extra:
        calibrated = extra["transfer_calibration"]
        accelerator.unwrap_model(model).set_transfer_residual_weight(calibrated["residual_weight"])
        accelerator.unwrap_model(model).set_transfer_lexical_weight(calibrated.get("lexical_weight"))
        accelerator.unwrap_model(model).set_transfer_content_prior_weight(calibrated.get("content_prior_weight"))
    if accelerator.is_main_process:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        card = {"title": f"transrec {cfg.model.name} on {data.dataset.name}", "dataset": data.dataset.name,
                "model_desc": f"{cfg.model.name} ({cfg.model.item_encoder} item encoder)",
                "data_desc": f"{data.dataset.summary()}; {data.split.num_users} users after filtering "
                             f"(min_user_interactions={cfg.data.min_user_interactions}, k_core={cfg.data.k_core}); "
                             f"max sequence length {cfg.data.max_len}.",
                "protocol": protocol_text(cfg.eval),
                "metrics_table": metrics_markdown({"valid": valid, "test": test}),
                "training_desc": f"objective {cfg.train.objective}, lr {cfg.train.lr}, batch {cfg.train.batch_size}, "
                                 f"{state.epoch} epochs run, best validation at epoch {state.best_epoch}, "
                                 f"{train_seconds:.0f}s on {accelerator.num_processes} process(es). "
                                 f"Config: `config.yaml` of the run."}
        save_model(model, output_dir / "model", data.dataset.items.ids.to_list(), card)
        plot_curves(output_dir / "log.csv", output_dir / "curves.png")
        log.info("test: %s", ", ".join(f"{k} {v:.4f}" for k, v in test.items() if k.endswith(("@10", "@20"))))
    accelerator.wait_for_everyone()
    return RunResult(metrics=metrics, output_dir=output_dir, is_main_process=accelerator.is_main_process)


def plot_curves(log_csv: Path, out_png: Path, metric: str = "NDCG@10") -> None:
    """Training loss and the validation metric against wall time, next to the run's metrics."""
    if not log_csv.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log_csv.open()))
    train_rows = [r for r in rows if r["kind"] == "train" and r["loss"] not in ("", "nan")]
    valid_rows = [r for r in rows if r["kind"] == "valid"]
    if not train_rows and not valid_rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot([int(r["epoch"]) for r in train_rows], [float(r["loss"]) for r in train_rows], marker=".")
    axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    axes[1].plot([float(r["seconds"]) for r in valid_rows], [float(r[metric]) for r in valid_rows], marker=".")
    axes[1].set(xlabel="seconds", ylabel=f"valid {metric}", title="validation")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
