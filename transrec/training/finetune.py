"""Fine-tune a pretrained user encoder on a downstream task (`task: profile | cold_start`).

One pretrained backbone folder serves every task: a task's output folder holds `task.safetensors`
(its head, patches, [CLS] vector and any backbone tensor it trained), `task.json` (the backbone it
belongs to, with the SHA-256 of the backbone's weights file, and how to rebuild the model),
`metrics.json` (valid/test metrics, trainable vs total parameters), `log.csv` and `curves.png`.
PeterRec and fine_head tasks never write to the backbone: its file stays byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from transrec.config import Config
from transrec.data.downstream import DownstreamData, build_task
from transrec.data.pipeline import load_raw_dataset
from transrec.data.sequences import left_pad
from transrec.errors import CheckpointError, ConfigError
from transrec.evaluation.metrics import metrics_from_ranks
from transrec.evaluation.evaluator import PROTOCOLS
from transrec.evaluation.ranking import exact_ranks, sampled_ranks
from transrec.hub import load_item_ids, load_model, resolve_model_dir
from transrec.models.recommender import WEIGHTS_NAME, load_state_strict
from transrec.models.transfer.downstream import ClassifierHead, DownstreamModel, TargetItemHead
from transrec.models.transfer.peterrec import PatchSet, count_parameters, set_trainable
from transrec.models.transfer.uaf import UAFDownstreamModel, by_history_length, uaf_report
from transrec.training.optim import build_optimizer, build_scheduler
from transrec.training.trainer import (CsvTracker, RunResult, make_accelerator, plot_curves, progress_disabled,
                                       release, setup_logging)

log = logging.getLogger("transrec")
TASK_WEIGHTS, TASK_CONFIG = "task.safetensors", "task.json"
# model selection on validation: log-loss for profiles (smoother than accuracy on ~100 users), NDCG@10
SELECT = {"profile": "log_loss", "cold_start": "NDCG@10"}
LOWER_IS_BETTER = {"log_loss"}


class _Cases(Dataset):
    def __init__(self, data: DownstreamData, cases: np.ndarray, max_items: int):
        self.data, self.cases, self.max_items = data, cases, max_items

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        c = int(self.cases[i])
        target = self.data.labels[c] if self.data.task == "profile" else self.data.targets[c]
        return self.data.sources[c][-self.max_items:], target


def _collate(rows) -> dict[str, torch.Tensor]:
    sources, targets = zip(*rows)
    out = {"items": left_pad(list(sources))}
    if np.ndim(targets[0]) == 0:
        out["labels"] = torch.tensor(np.array(targets), dtype=torch.long)
    else:
        out["targets"] = left_pad(list(targets))  # padded with 0 (the never-ranked padding item)
    return out


def task_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Profile: cross-entropy. Cold start: each user's mean negative log-likelihood of its target
    items under a softmax over all target items, averaged over users."""
    if "labels" in batch:
        return F.cross_entropy(logits, batch["labels"])
    targets = batch["targets"]
    real = targets > 0
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets).masked_fill(~real, 0.0)  # pad column is -inf
    return (-logp.sum(1) / real.sum(1).clamp(min=1)).mean()


def profile_metrics(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, and macro-F1 over ALL classes (a class never predicted nor present scores 0)."""
    f1 = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (labels == c))
        denom = np.sum(pred == c) + np.sum(labels == c)
        f1.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float(np.mean(pred == labels)), "macro_f1": float(np.mean(f1)), "users": int(len(labels))}


def cold_start_ranks(users: torch.Tensor, item_vecs: torch.Tensor, targets: list[np.ndarray],
                     protocol: str = "full", num_negatives: int = 99, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rank of every (user, target item) among all target items, the user's other target items
    excluded; returns (ranks, the case's user position). `protocol="sampled_legacy"`: among
    `num_negatives` random non-target items instead (PeterRec's 1+99; labelled, not comparable)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"eval.protocol must be one of {PROTOCOLS}, got {protocol!r}")
    owner = np.repeat(np.arange(len(targets)), [len(t) for t in targets])
    flat = torch.as_tensor(np.concatenate(targets), dtype=torch.long)
    history = left_pad([targets[i] for i in owner])
    case_users = users[torch.as_tensor(owner, device=users.device)]
    if protocol == "full":
        ranks = exact_ranks(case_users, item_vecs, flat, history, exclude_history=True)
    else:
        ranks = sampled_ranks(case_users.cpu(), item_vecs.cpu(), flat, history, num_negatives=num_negatives,
                              generator=torch.Generator().manual_seed(seed), exclude_history=True)
    return ranks.cpu().numpy(), owner


def cold_start_metrics(ranks: np.ndarray, owner: np.ndarray, ks) -> dict[str, float]:
    """Per-user means over their target items, then the mean over users (heavy users do not dominate)."""
    per_user = [metrics_from_ranks(ranks[owner == u], ks=ks) for u in np.unique(owner)]
    out = {k: float(np.mean([m[k] for m in per_user])) for k in per_user[0]}
    return {**out, "users": len(per_user), "cases": int(len(ranks))}


@torch.no_grad()
def evaluate_task(model: DownstreamModel, data: DownstreamData, cases: np.ndarray, max_items: int, ks,
                  batch_size: int = 256, device=None, protocol: str = "full", num_negatives: int = 99
                  ) -> dict[str, float]:
    was_training = model.training
    model.eval()
    states, labels = [], []
    loader = DataLoader(_Cases(data, cases, max_items), batch_size=batch_size, collate_fn=_collate)
    for batch in loader:
        states.append(model.user_states(batch["items"].to(device)).float())
    users = torch.cat(states)
    if data.task == "profile":
        logits = model.head(users).float()
        labels = torch.as_tensor(data.labels[cases], device=logits.device)
        out = {**profile_metrics(logits.argmax(-1).cpu().numpy(), data.labels[cases], len(data.classes)),
               "log_loss": float(F.cross_entropy(logits, labels))}
    else:
        ranks, owner = cold_start_ranks(users, model.head.item_vectors().float(), [data.targets[c] for c in cases],
                                        protocol, num_negatives)
        out = cold_start_metrics(ranks, owner, tuple(ks))
    model.train(was_training)
    return out


@torch.no_grad()
def per_user_task_metrics(model: DownstreamModel, data: DownstreamData, cases: np.ndarray, max_items: int, ks,
                          batch_size: int = 256, device=None, protocol: str = "full", num_negatives: int = 99
                          ) -> dict[str, np.ndarray]:
    """One value per case, in `cases` order: `correct` (0/1, profile) or, for cold start, each ranking
    metric averaged over that user's target items (NaN without targets). Their means over users are
    `evaluate_task`'s accuracy / ranking metrics; grouped by history length they show who gains."""
    was_training = model.training
    model.eval()
    loader = DataLoader(_Cases(data, cases, max_items), batch_size=batch_size, collate_fn=_collate)
    try:
        users = torch.cat([model.user_states(batch["items"].to(device)).float() for batch in loader])
        if data.task == "profile":
            pred = model.head(users).float().argmax(-1).cpu().numpy()
            return {"correct": (pred == data.labels[cases]).astype(np.float64)}
        item_vecs = model.head.item_vectors().float()
    finally:
        model.train(was_training)
    ranks, owner = cold_start_ranks(users, item_vecs, [data.targets[c] for c in cases], protocol, num_negatives)
    rows = [metrics_from_ranks(ranks[owner == u], ks=tuple(ks)) if np.any(owner == u) else None
            for u in range(len(cases))]
    keys = next((r for r in rows if r is not None), {})
    return {k: np.array([r[k] if r is not None else np.nan for r in rows]) for k in keys}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_downstream(cfg: Config, backbone, data: DownstreamData, dim: int) -> DownstreamModel:
    ds = cfg.downstream
    patches = PatchSet(backbone.user_encoder, dim, ds.patch, ds.bottleneck) if ds.mode == "peterrec" else None
    if data.task == "profile":
        head = ClassifierHead(dim, len(data.classes), ds.head_dropout)
    else:
        head = TargetItemHead(dim, len(data.target_items), ds.head_dropout)
    if ds.mode == "uaf":  # the backbone frozen whole; per-user switches between frozen blocks and trained copies
        return UAFDownstreamModel(backbone, head, dim, ds.readout, ds.uaf_temperature, ds.uaf_policy_hidden)
    model = DownstreamModel(backbone, head, dim, ds.readout, patches)
    set_trainable(backbone, ds.mode, ds.last_k, patches)
    return model


def attach_source_content(backbone, dataset, cfg: Config) -> list[str]:
    """A content backbone encodes any item from its content: its input items are all the dataset's
    items outside the cold-start target domain (for a profile task, all items). Returns their ids."""
    from transrec.data.pipeline import catalog_subset

    items = dataset.items
    target = cfg.downstream.target_domain if cfg.task == "cold_start" else None
    keep = np.array([i for i in range(1, items.num_items + 1) if target is None or items.domain[i] != target],
                    dtype=np.int64)
    catalog = catalog_subset(items, keep)
    backbone.attach_content(backbone.item_encoder.build_content_store(catalog, cfg.data.on_bad_content))
    return catalog.ids.ids[1:]


def finetune(cfg: Config, output_dir: str | Path) -> RunResult:
    """Train `cfg.task` on top of `cfg.downstream.backbone` in `cfg.downstream.mode`."""
    if cfg.task not in ("profile", "cold_start"):
        raise ConfigError(f"finetune runs task profile or cold_start, got {cfg.task!r}")
    if not cfg.downstream.backbone:
        raise ConfigError("downstream tasks need downstream.backbone: a pretrained model folder "
                          "(`transrec train` with task: pretrain writes one to <out>/model)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(cfg, output_dir)
    try:
        return _finetune(accelerator, cfg, output_dir)
    finally:
        release(accelerator)


def _finetune(accelerator, cfg: Config, output_dir: Path) -> RunResult:
    setup_logging(output_dir, accelerator.is_main_process)
    ds = cfg.downstream
    set_seed(cfg.train.seed)
    folder = resolve_model_dir(ds.backbone)
    backbone = load_model(folder, fresh=ds.mode == "scratch")
    if not hasattr(backbone, "user_encoder"):
        raise ConfigError(f"{ds.backbone} is not a sequential recommender (model_type {type(backbone).__name__})")
    dataset = load_raw_dataset(cfg.data)
    if backbone.is_content_model:
        backbone_items = attach_source_content(backbone, dataset, cfg)
    else:
        backbone_items = load_item_ids(folder)
    data = build_task(cfg.task, dataset, backbone_items, ds, cfg.train.seed)
    log.info("%s", data.summary())
    dim = backbone.dim
    model = build_downstream(cfg, backbone, data, dim)
    trainable, total = count_parameters(model)
    log.info("mode %s: %d trainable of %d parameters (%.2f%%)", ds.mode, trainable, total, 100 * trainable / total)
    max_items = backbone.max_len - 1 if model.readout == "cls" else backbone.max_len
    loader = DataLoader(_Cases(data, data.train, max_items), batch_size=cfg.train.batch_size, shuffle=True,
                        collate_fn=_collate, generator=torch.Generator().manual_seed(cfg.train.seed))
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.train.scheduler, cfg.train.warmup_steps,
                                len(loader) * cfg.train.epochs)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    select = SELECT[data.task]
    protocol = (cfg.eval.protocol, cfg.eval.num_negatives)
    if cfg.eval.protocol not in PROTOCOLS:
        raise ConfigError(f"eval.protocol must be one of {PROTOCOLS}, got {cfg.eval.protocol!r}")
    if cfg.eval.protocol != "full":
        log.warning("eval.protocol=%s: LEGACY sampled metrics (target vs %d random target items), not comparable "
                    "with full ranking", cfg.eval.protocol, cfg.eval.num_negatives)
    tracker = CsvTracker(output_dir / "log.csv", accelerator.is_main_process,
                         fields=["kind", "epoch", "seconds", "loss", select])
    best, best_state, bad, history = -math.inf, None, 0, []
    start = time.time()
    budget = cfg.train.max_minutes * 60 if cfg.train.max_minutes > 0 else math.inf
    for epoch in range(cfg.train.epochs):
        model.train()
        losses = []
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False,
                          disable=progress_disabled(cfg, accelerator)):
            loss = task_loss(model(batch["items"]), batch)
            if ds.mode == "uaf":  # the cost of fine-tuned blocks
                loss = loss + ds.uaf_cost * unwrapped.fine_tuned_share()
            accelerator.backward(loss)
            if cfg.train.clip_grad_norm > 0:
                accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                            cfg.train.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}; lower train.lr")
            losses.append(loss.item())
        valid = evaluate_task(unwrapped, data, data.valid, max_items, cfg.eval.ks, cfg.eval.batch_size,
                              accelerator.device, *protocol)
        seconds = round(time.time() - start, 2)
        history.append({"epoch": epoch + 1, "seconds": seconds, "loss": float(np.mean(losses)), **valid})
        tracker.log(kind="train", epoch=epoch + 1, seconds=seconds, loss=round(float(np.mean(losses)), 5))
        tracker.log(kind="valid", epoch=epoch + 1, seconds=seconds, **{select: round(valid[select], 5)})
        score = -valid[select] if select in LOWER_IS_BETTER else valid[select]
        improved = score > best
        if improved:
            best, bad, best_state = score, 0, {k: v.clone() for k, v in unwrapped.task_state().items()}
        else:
            bad += 1
        log.info("epoch %d: loss %.4f, valid %s %.4f%s", epoch + 1, np.mean(losses), select, valid[select],
                 " *" if improved else "")
        if bad >= cfg.train.patience or time.time() - start > budget:
            break
    unwrapped.load_state_dict(best_state, strict=False)
    sign = -1 if select in LOWER_IS_BETTER else 1
    best_epoch = max(history, key=lambda h: sign * h[select])["epoch"]
    valid = {k: v for k, v in next(h for h in history if h["epoch"] == best_epoch).items()
             if k not in ("epoch", "seconds", "loss")}
    test = evaluate_task(unwrapped, data, data.test, max_items, cfg.eval.ks, cfg.eval.batch_size, accelerator.device,
                         *protocol)
    metrics = {"valid": valid, "test": test, "baseline": baseline_metrics(data, cfg.eval.ks, *protocol),
               "run": {"task": cfg.task, "mode": ds.mode, "patch": ds.patch if ds.mode == "peterrec" else None,
                       "label": ds.label if cfg.task == "profile" else None, "backbone": str(ds.backbone),
                       "trainable_params": trainable, "total_params": total,
                       "trainable_share": trainable / total, "epochs_run": len(history), "best_epoch": best_epoch,
                       "train_seconds": round(time.time() - start, 2), "seed": cfg.train.seed,
                       "data": data.summary(), "selected_on": f"valid {select}",
                       "protocol": ("full ranking over all target items" if cfg.eval.protocol == "full" else
                                    f"LEGACY sampled: each target vs {cfg.eval.num_negatives} random target items")
                       if cfg.task == "cold_start" else "accuracy / macro-F1 over all classes"}}
    per_user = per_user_task_metrics(unwrapped, data, data.test, max_items, cfg.eval.ks, cfg.eval.batch_size,
                                     accelerator.device, *protocol)
    metrics["test_by_history_length"] = by_history_length(per_user, np.array([len(data.sources[c]) for c in data.test]))
    if ds.mode == "uaf":
        metrics["uaf"] = uaf_report(unwrapped, [data.sources[c] for c in data.test], max_items, cfg.eval.batch_size,
                                    accelerator.device)
        log.info("uaf: test users use fine-tuned copies in %.1f%% of blocks", 100 * metrics["uaf"]["fine_tuned_share"])
    if accelerator.is_main_process:
        save_task(unwrapped, output_dir, cfg, data, folder)
        (output_dir / "config.yaml").write_text(cfg.to_yaml())
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_curves(output_dir / "log.csv", output_dir / "curves.png", metric=select)
        log.info("test: %s", ", ".join(f"{k} {v:.4f}" for k, v in test.items()
                                       if k in ("accuracy", "macro_f1", "HR@10", "NDCG@10")))
    accelerator.wait_for_everyone()
    return RunResult(metrics=metrics, output_dir=output_dir, is_main_process=accelerator.is_main_process)


def baseline_metrics(data: DownstreamData, ks, protocol: str = "full", num_negatives: int = 99) -> dict[str, float]:
    """The no-model reference on the test users: the majority class (profile) or the most popular
    target items among training users (cold start)."""
    if data.task == "profile":
        majority = np.bincount(data.labels[data.train], minlength=len(data.classes)).argmax()
        return {"name": "majority class",
                **profile_metrics(np.full(len(data.test), majority), data.labels[data.test], len(data.classes))}
    counts = np.zeros(len(data.target_items) + 1)
    for c in data.train:
        np.add.at(counts, data.targets[c], 1)
    counts[0] = -1
    item_vecs = torch.as_tensor(np.log1p(counts.clip(min=0)), dtype=torch.float32)[:, None]
    ranks, owner = cold_start_ranks(torch.ones(len(data.test), 1), item_vecs, [data.targets[c] for c in data.test],
                                    protocol, num_negatives)
    return {"name": "popularity", **cold_start_metrics(ranks, owner, tuple(ks))}


def save_task(model: DownstreamModel, output_dir: Path, cfg: Config, data: DownstreamData, backbone_dir: Path) -> None:
    weights = backbone_dir / WEIGHTS_NAME
    save_file(model.task_state(), str(output_dir / TASK_WEIGHTS))
    spec = {"task": cfg.task, "backbone": str(cfg.downstream.backbone),
            "backbone_sha256": file_sha256(weights) if cfg.downstream.mode != "scratch" else None,
            "downstream": {k: getattr(cfg.downstream, k) for k in ("mode", "patch", "bottleneck", "last_k", "readout",
                                                                   "label", "bins", "head_dropout")
                                             + (("uaf_temperature", "uaf_cost", "uaf_policy_hidden")
                                                if cfg.downstream.mode == "uaf" else ())},
            "classes": data.classes, "target_items": data.target_items}
    (output_dir / TASK_CONFIG).write_text(json.dumps(spec, indent=2))


def load_task(task_dir: str | Path, backbone: str | Path | None = None) -> DownstreamModel:
    """Rebuild a fine-tuned task: the backbone (checked against the recorded SHA-256), patches and
    head, then the task's tensors loaded strictly. A content backbone needs its input items' content
    before use: `model.backbone.attach_content(store)` (see `attach_source_content`)."""
    task_dir = Path(task_dir)
    spec_path = task_dir / TASK_CONFIG
    if not spec_path.is_file():
        raise CheckpointError(f"{task_dir}: no {TASK_CONFIG} (not a transrec downstream task folder)")
    spec = json.loads(spec_path.read_text())
    from transrec.config import DownstreamConfig

    ds = DownstreamConfig(**{**spec["downstream"], "backbone": str(backbone or spec["backbone"])})
    folder = resolve_model_dir(ds.backbone)
    if spec["backbone_sha256"] and file_sha256(folder / WEIGHTS_NAME) != spec["backbone_sha256"]:
        raise CheckpointError(f"{folder / WEIGHTS_NAME} is not the backbone {task_dir} was fine-tuned on "
                              "(SHA-256 differs)")
    backbone_model = load_model(folder, fresh=ds.mode == "scratch")
    cfg = Config(task=spec["task"], downstream=ds)
    data = DownstreamData(spec["task"], [], [], classes=spec["classes"], target_items=spec["target_items"])
    model = build_downstream(cfg, backbone_model, data, backbone_model.dim)
    try:
        state = load_file(str(task_dir / TASK_WEIGHTS))
    except Exception as err:  # missing or corrupt file
        raise CheckpointError(f"{task_dir / TASK_WEIGHTS}: cannot read: {err}") from None
    expected = set(model.task_state())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{task_dir / TASK_WEIGHTS} does not match {TASK_CONFIG}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    load_state_strict(model, {**model.state_dict(), **state}, str(task_dir / TASK_WEIGHTS))
    return model.eval()
