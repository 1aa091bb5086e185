"""Lifelong learning of a task sequence on one backbone (Conure, SIGIR'21), and its task x time matrix.

Task 1 is next-item recommendation on the backbone's own data; later tasks are the downstream tasks
of `transrec.data.downstream` (profile prediction, cold-start recommendation), with finetune.py's
heads, losses, loaders and evaluation. Each task trains (`train.epochs`), is pruned to its keep
ratio, retrains its kept weights with a fresh optimizer, and is frozen. After every task, every task
learned so far is evaluated: `matrix[j][k]` is task j+1's headline metric after learning task k+1
(None before task j+1 is learned). Conure's rows are constant: old tasks do not change at all.
`method="sinmoall"` runs the same sequence fine-tuning every weight (the forgetting baseline).

Each phase (train, then retrain after pruning) runs `epochs` epochs. With `lifelong.patience` > 0
it selects on the task's **validation** split instead, as finetune.py does (valid NDCG@10 for next
item and cold start, valid log-loss for profiles): after every epoch the trainable tensors of the
best epoch so far are kept, the phase stops after `patience` epochs without improvement, and the
best ones are put back (frozen entries are bitwise the same in every epoch, so this cannot touch an
earlier task). The matrix reads the split it is given, `test` by default, after each task; nothing
is chosen on it. A task with `epochs=0` skips its training phase: with a pretrained backbone as
task 1, Conure then prunes the pretrained weights and retrains the kept ones (SinMoAll keeps the
backbone as it is). One process, one device: no accelerate here; the sequences are short.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from transrec.config import Config
from transrec.data.downstream import DownstreamData, build_task
from transrec.data.pipeline import PreparedData
from transrec.data.schema import RecDataset
from transrec.data.sequences import NextItemDataset, collate_next_item
from transrec.errors import ConfigError
from transrec.evaluation.evaluator import evaluate
from transrec.models.transfer.conure import Conure, default_keep_ratio
from transrec.objectives import create_objective
from transrec.training.finetune import LOWER_IS_BETTER, SELECT, _Cases, _collate, evaluate_task, task_loss
from transrec.training.optim import build_optimizer

log = logging.getLogger("transrec")
METHODS = ("conure", "sinmoall")


@dataclass
class LifelongTask:
    """One task of the sequence. `data`: the backbone's PreparedData for `next_item` (task 1 only), a
    DownstreamData (`build_task` over the backbone's items) for `profile` / `cold_start`.
    `keep_ratio` (None: 0.3 for task 1, 0.5 later), `epochs` (None: train.epochs) and
    `retrain_epochs` (None: the same as epochs) are per task."""

    data: PreparedData | DownstreamData
    name: str = ""
    keep_ratio: float | None = None
    epochs: int | None = None
    retrain_epochs: int | None = None

    @property
    def kind(self) -> str:
        return self.data.task if isinstance(self.data, DownstreamData) else "next_item"


@dataclass
class LifelongResult:
    conure: Conure
    names: list[str]
    headline: list[str]  # the metric in the matrix, per task
    matrix: list[list[float | None]]  # [task j][after task k]
    metrics: list[list[dict[str, float] | None]]  # every metric, same layout
    capacity: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)  # per task: losses, kept entries
    method: str = "conure"

    def table(self) -> str:
        """The task x time matrix as text."""
        n = len(self.names)
        width = max(len(f"{a} ({b})") for a, b in zip(self.names, self.headline))
        lines = [" " * width + "".join(f"  {'after T' + str(k + 1):>10}" for k in range(n))]
        for j in range(n):
            cells = "".join(f"  {v:10.4f}" if v is not None else f"  {'-':>10}" for v in self.matrix[j])
            lines.append(f"{self.names[j]} ({self.headline[j]})".ljust(width) + cells)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "tasks": self.names, "headline": self.headline, "matrix": self.matrix,
                "metrics": self.metrics, "capacity": self.capacity, "logs": self.logs}


def headline_metric(kind: str, ks: list[int] | tuple[int, ...]) -> str:
    """The matrix's metric: accuracy for profiles, NDCG@10 (or the first K) for rankings."""
    if kind == "profile":
        return "accuracy"
    return f"NDCG@{10 if 10 in ks else list(ks)[0]}"


def _max_items(model: nn.Module) -> int:
    return model.backbone.max_len - 1 if model.readout == "cls" else model.backbone.max_len


def _task_batches(task: LifelongTask, model: nn.Module, cfg: Config, device) -> tuple[DataLoader, Callable]:
    """The training loader and loss of a task (next item: the backbone's objective; downstream: finetune's)."""
    generator = torch.Generator().manual_seed(cfg.train.seed)
    if task.kind == "next_item":
        data = task.data
        objective = create_objective(cfg.train.objective, torch.as_tensor(data.item_counts()),
                                     cfg.train.num_negatives).to(device)
        loader = DataLoader(NextItemDataset(data.split.train, model.max_len), batch_size=cfg.train.batch_size,
                            shuffle=True, collate_fn=collate_next_item, generator=generator)
        return loader, lambda m, b: m(b["items"], b["targets"], objective)
    loader = DataLoader(_Cases(task.data, task.data.train, _max_items(model)), batch_size=cfg.train.batch_size,
                        shuffle=True, collate_fn=_collate, generator=generator)
    return loader, lambda m, b: task_loss(m(b["items"]), b)


def _validation(task: LifelongTask, model: nn.Module, cfg: Config, device) -> Callable[[], float]:
    """The phase's model-selection score on the task's validation split (higher is better)."""
    if task.kind == "next_item":
        key = headline_metric("next_item", cfg.eval.ks)
        return lambda: evaluate(model, task.data.split.valid, cfg.eval, model.max_len, device)[key]
    key = SELECT[task.kind]
    sign = -1.0 if key in LOWER_IS_BETTER else 1.0

    def score() -> float:
        return sign * evaluate_task(model, task.data, task.data.valid, _max_items(model), cfg.eval.ks,
                                    cfg.eval.batch_size, device, cfg.eval.protocol, cfg.eval.num_negatives)[key]

    return score


def _train_phase(conure: Conure, model: nn.Module, loader: DataLoader, loss_fn: Callable, epochs: int,
                 cfg: Config, device, validate: Callable[[], float] | None = None, patience: int = 0,
                 record: dict[str, Any] | None = None) -> list[float]:
    """Epochs of AdamW with a fresh optimizer; the masks' guard keeps frozen entries bitwise fixed.
    With `validate` and `patience` > 0: keep the best-scoring epoch's trainable tensors, stop after
    `patience` epochs without a better score, put the best back (`record` gets the epochs run, the
    best epoch and its score)."""
    if epochs <= 0:
        return []
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    guard = conure.protect(optimizer)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    select = validate is not None and patience > 0
    best, best_state, best_epoch, bad = -float("inf"), None, 0, 0
    losses = []
    model.train()
    try:
        for epoch in range(epochs):
            total = 0.0
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()}; lower train.lr")
                loss.backward()
                if cfg.train.clip_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                total += loss.item()
            losses.append(round(total / max(1, len(loader)), 5))
            if select:
                score = validate()
                model.train()
                if score > best:
                    best, best_epoch, bad = score, epoch + 1, 0
                    best_state = [p.detach().clone() for p in params]
                else:
                    bad += 1
                    if bad >= patience:
                        break
    finally:
        guard.remove()
        model.eval()
    if best_state is not None:
        with torch.no_grad():
            for p, value in zip(params, best_state):
                p.copy_(value)
        if record is not None:
            record.update(epochs_run=len(losses), best_epoch=best_epoch, best_valid=round(best, 5))
    return losses


def learn_task(conure: Conure, task: LifelongTask, cfg: Config, device: str | torch.device = "cpu"
               ) -> dict[str, Any]:
    """Learn the next task: train, prune to its keep ratio and retrain (Conure), then freeze it.
    `cfg.lifelong.patience` > 0: each phase selects on the task's validation split (module docstring)."""
    k = conure.num_tasks + 1
    ds = cfg.downstream
    torch.manual_seed(cfg.train.seed + k)  # the head's initialisation and the dropout masks
    model = conure.add_task(task.kind, task.data if task.kind != "next_item" else None, task.name or f"T{k}",
                            ds.readout, ds.head_dropout).to(device)
    loader, loss_fn = _task_batches(task, model, cfg, device)
    epochs = cfg.train.epochs if task.epochs is None else task.epochs
    patience = cfg.lifelong.patience
    validate = _validation(task, model, cfg, device) if patience > 0 else None
    start = time.time()
    out: dict[str, Any] = {"task": k, "train": {}, "retrain": {}}
    out["train_loss"] = _train_phase(conure, model, loader, loss_fn, epochs, cfg, device, validate, patience,
                                     out["train"])
    if conure.masks is not None:
        out["keep_ratio"] = default_keep_ratio(k) if task.keep_ratio is None else task.keep_ratio
        out["kept_entries"] = sum(conure.prune(out["keep_ratio"]).values())
        retrain = epochs if task.retrain_epochs is None else task.retrain_epochs
        out["retrain_loss"] = _train_phase(conure, model, loader, loss_fn, retrain, cfg, device, validate, patience,
                                           out["retrain"])
    out["seconds"] = round(time.time() - start, 2)
    conure.finish_task()
    log.info("learned T%d (%s): %s", k, task.kind, out)
    return out


def evaluate_tasks(conure: Conure, tasks: list[LifelongTask], cfg: Config, device: str | torch.device = "cpu",
                   split: str = "test") -> list[dict[str, float]]:
    """Every learned task's metrics, each through its own network (`conure.task(j)`)."""
    if split not in ("valid", "test"):
        raise ConfigError(f"split must be valid or test, got {split!r}")
    out = []
    for j, task in enumerate(tasks[:conure.num_tasks], 1):
        with conure.task(j) as model:
            if task.kind == "next_item":
                out.append(evaluate(model, getattr(task.data.split, split), cfg.eval, model.max_len, device))
            else:
                cases = getattr(task.data, split)
                out.append(evaluate_task(model, task.data, cases, _max_items(model), cfg.eval.ks,
                                         cfg.eval.batch_size, device, cfg.eval.protocol, cfg.eval.num_negatives))
    return out


def learn_task_sequence(backbone: nn.Module, tasks: list[LifelongTask], cfg: Config | None = None,
                        method: str = "conure", device: str | torch.device = "cpu", split: str = "test",
                        on_task_end: Callable[[int, Conure], None] | None = None) -> LifelongResult:
    """Learn `tasks` in order on `backbone` (a SequentialRecommender; task 1 trains it on its own data).
    `cfg` supplies train (lr, weight_decay, clip_grad_norm, batch_size, epochs, seed, objective), eval
    and downstream (readout, head_dropout) settings; `on_task_end(k, conure)` runs after each task."""
    cfg = cfg or Config()
    if method not in METHODS:
        raise ConfigError(f"lifelong method must be one of {METHODS}, got {method!r}")
    if not tasks:
        raise ConfigError("a lifelong run needs at least one task")
    conure = Conure(backbone.to(device), masked=method == "conure")
    n = len(tasks)
    names = [t.name or f"T{k} {t.kind}" for k, t in enumerate(tasks, 1)]
    headline = [headline_metric(t.kind, cfg.eval.ks) for t in tasks]
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
    metrics: list[list[dict | None]] = [[None] * n for _ in range(n)]
    logs = []
    for k, task in enumerate(tasks):
        logs.append(learn_task(conure, replace(task, name=names[k]), cfg, device))
        for j, m in enumerate(evaluate_tasks(conure, tasks, cfg, device, split)):
            matrix[j][k], metrics[j][k] = float(m[headline[j]]), m
        if on_task_end is not None:
            on_task_end(k + 1, conure)
    return LifelongResult(conure, names, headline, matrix, metrics, conure.capacity(), logs, method)


def tasks_from_config(cfg: Config, data: PreparedData, dataset: RecDataset) -> list[LifelongTask]:
    """`lifelong.tasks` entries -> tasks: `next_item` (first), `profile[:label[@e1,e2,...]]`,
    `cold_start[:domain]` (defaults: downstream.label / downstream.target_domain), over `dataset` (the
    unfiltered data). `@e1,e2,...`: this profile task's numeric label is bucketed at those edges (e.g.
    `profile:age@18,25,35,45,50,56`); without it, `downstream.bins` apply."""
    spec = cfg.lifelong
    backbone_items = data.dataset.items.ids.to_list()
    tasks = []
    for k, entry in enumerate(spec.tasks, 1):
        kind, _, arg = entry.partition(":")
        ratio = spec.keep_ratios[min(k, len(spec.keep_ratios)) - 1] if spec.keep_ratios else None
        retrain = None if spec.retrain_epochs < 0 else spec.retrain_epochs
        if kind == "next_item":
            task_data = data
        elif kind in ("profile", "cold_start"):
            if kind == "profile":
                label, at, edges = arg.partition("@")
                option = {"label": label or cfg.downstream.label}
                if at:
                    try:
                        option["bins"] = [float(e) for e in edges.split(",") if e.strip()]
                    except ValueError:
                        raise ConfigError(f"lifelong.tasks: {entry!r}: bins after '@' must be numbers, "
                                          "e.g. profile:age@18,25,35") from None
                    if not option["bins"]:
                        raise ConfigError(f"lifelong.tasks: {entry!r}: no bin edges after '@'")
            else:
                option = {"target_domain": arg or cfg.downstream.target_domain}
            task_data = build_task(kind, dataset, backbone_items, replace(cfg.downstream, **option), cfg.train.seed)
        else:
            raise ConfigError(f"lifelong.tasks: {entry!r} is not next_item, profile[:label] or cold_start[:domain]")
        tasks.append(LifelongTask(task_data, name=f"T{k} {entry}", keep_ratio=ratio, retrain_epochs=retrain))
    return tasks


def run_lifelong(cfg: Config, output_dir: str | Path) -> LifelongResult:
    """`transrec train task=lifelong`: an ID backbone built from `cfg.model`, trained on `cfg.data` as task 1,
    then `lifelong.tasks[1:]`. Writes conure.safetensors, metrics.json (the matrix), config.yaml, item_ids.json."""
    from accelerate.utils import set_seed

    from transrec.data.pipeline import load_raw_dataset, prepare_data
    from transrec.models.recommender import build_model
    from transrec.training.trainer import setup_logging

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(output_dir, True)
    set_seed(cfg.train.seed)
    if cfg.model.item_encoder != "id" or cfg.model.name in ("popularity", "gru4rec"):
        raise ConfigError("task lifelong runs ID backbones with nextitnet, sasrec or bidirectional user encoders")
    if not cfg.lifelong.tasks or cfg.lifelong.tasks[0] != "next_item":
        raise ConfigError(f"lifelong.tasks must start with next_item (the backbone's data), got {cfg.lifelong.tasks}")
    data = prepare_data(cfg.data)
    tasks = tasks_from_config(cfg, data, load_raw_dataset(cfg.data))
    for task in tasks:
        log.info("%s: %s", task.name, task.data.summary() if task.kind != "next_item" else data.dataset.summary())
    backbone = build_model(cfg.model, data.num_items, cfg.data.max_len)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = learn_task_sequence(backbone, tasks, cfg, cfg.lifelong.method, device)
    result.conure.save_pretrained(output_dir, data.dataset.items.ids.to_list())  # conure.safetensors, item_ids.json
    (output_dir / "config.yaml").write_text(cfg.to_yaml())
    (output_dir / "metrics.json").write_text(json.dumps(result.to_json(), indent=2, default=_json_default))
    log.info("task x time (%s):\n%s", result.method, result.table())
    return result


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
