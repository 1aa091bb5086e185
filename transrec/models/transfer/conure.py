"""Conure (Yuan et al., SIGIR'21): one backbone learns a sequence of tasks and never forgets one.

Every prunable weight entry of the user encoder (the weight matrices / kernels of its nn.Linear,
nn.Conv1d and nn.Conv2d layers: NextItNet's dilated convolutions, the attention and feed-forward
linears of SASRec and the bidirectional transformer) has an **owner**: 0 = free, k = task k.

- Training task k: the free entries train; entries owned by tasks 1..k-1 are used as they are but
  never move (no gradient reaches them, and `TaskMasks.protect` restores them bitwise after every
  optimizer step, so AdamW's decoupled weight decay and momentum from earlier steps cannot move
  them either; gradient clipping only rescales gradients, which are zero there).
- After training: magnitude pruning. Of the entries task k trained, the largest `keep_ratio` share
  (by |w|, per weight tensor, rounded to the nearest entry) become task k's; the rest are released:
  owner 0 and value **zero** (not re-drawn at random: a released entry is invisible to every learned
  task, and at zero the next task starts from exactly the function the earlier tasks compute). Then
  the caller retrains task k's kept entries with a fresh optimizer, the free ones held at zero.
- Inference for task j uses the entries owned by tasks 1..j; entries of later tasks and free ones
  are zeroed. A forward pre-hook swaps the masked weight in for the module's call (and a forward
  hook puts the parameter back), so the model is never copied and its state-dict keys stay as built.
- Everything in the backbone that is not a prunable weight (item embeddings, positions, layer
  norms, biases, the [MASK] vector, score scale) trains in task 1 only and is frozen afterwards:
  those tensors are shared by every task and have no per-entry owners.

Pruning rates: the paper prunes a fixed share of each task's weights by magnitude, about 70% of
T1's (T1 is the large next-item task, and the over-parameterised backbone loses little), and sets
the share of later tasks per task. Defaults here (`DEFAULT_KEEP_RATIOS`): T1 keeps 30% (prunes 70%,
as the paper does); every later task keeps 50% of what it trained (our choice: the free capacity
halves task by task, so it lasts for tasks still to come). Every ratio is configurable per task.

`Conure` bundles backbone, masks and the task heads (a task 1 next-item on the backbone's own
item table; later tasks PeterRec's `DownstreamModel` heads) and saves them in one safetensors file;
`save_pretrained(folder)` writes that file (plus the backbone's item vocabulary) as a folder, and
`Conure.from_pretrained(folder)` serves any learned task by its name or number. The owner masks are
stored compactly as **bit planes**: an owner id needs ceil(log2(n_tasks + 1)) bits (3 for 5 tasks),
and plane b of a weight is the little-endian bit-packed bit b of every entry's owner (uint8
[bits, ceil(entries / 8)]); that is 3/32 of the float32 weights' bytes for 5 tasks.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
import numpy as np
from torch import Tensor, nn

from transrec.errors import CheckpointError, ConfigError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
DEFAULT_KEEP_RATIOS = (0.3, 0.5)  # task 1, then every later task
TASK_KINDS = ("next_item", "profile", "cold_start")
FORMAT = "transrec-conure/2"  # /2: owners as bit planes (/1 stored one uint8 per entry)
WEIGHTS_FILE = "conure.safetensors"
ITEM_IDS_FILE = "item_ids.json"


def owner_bits(num_tasks: int) -> int:
    """Bits per entry that hold an owner id in 0..num_tasks."""
    return max(1, int(num_tasks).bit_length())


def pack_owners(owner: Tensor, bits: int) -> Tensor:
    """uint8 owners (any shape) -> uint8 [bits, ceil(numel / 8)]: plane b = bit b of every entry, packed
    little-endian 8 entries per byte."""
    flat = owner.detach().cpu().flatten().numpy()
    if flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"an owner id {int(flat.max())} does not fit in {bits} bits")
    planes = [np.packbits((flat >> b) & 1, bitorder="little") for b in range(bits)]
    return torch.from_numpy(np.stack(planes) if planes else np.zeros((0, 0), np.uint8)).contiguous()


def unpack_owners(packed: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """Inverse of `pack_owners`."""
    numel = math.prod(shape)
    planes = packed.cpu().numpy()
    owner = np.zeros(numel, dtype=np.uint8)
    for b in range(planes.shape[0]):
        owner |= np.unpackbits(planes[b], count=numel, bitorder="little") << b
    return torch.from_numpy(owner).reshape(tuple(shape))


def packed_shape(shape: tuple[int, ...] | torch.Size, num_tasks: int) -> tuple[int, int]:
    return owner_bits(num_tasks), (math.prod(shape) + 7) // 8


def default_keep_ratio(task: int) -> float:
    return DEFAULT_KEEP_RATIOS[0] if task == 1 else DEFAULT_KEEP_RATIOS[1]


def kept_count(candidates: int, keep_ratio: float) -> int:
    """Entries a task keeps out of the `candidates` it trained: the nearest integer (halves round up)."""
    return min(candidates, int(keep_ratio * candidates + 0.5))


class _Guard:
    def __init__(self, handles: list):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class TaskMasks:
    """Per-entry owners of a user encoder's prunable weights, and the masked views they define.

    State: `num_tasks` finished tasks, and a view: `("eval", j)` (task j's network, nothing trains),
    `("train", k)` (free entries train on top of tasks 1..k-1) or `("retrain", k)` (after pruning:
    task k's kept entries train, free ones stay zero). Before any task the view is None: the raw
    weights, unmasked."""

    def __init__(self, user_encoder: nn.Module):
        self.layers: dict[str, nn.Module] = {name: m for name, m in user_encoder.named_modules()
                                             if isinstance(m, PRUNABLE)}
        if not self.layers:
            raise ConfigError(f"{type(user_encoder).__name__} has no nn.Linear / nn.Conv weights to share out "
                              "between tasks; Conure runs on nextitnet, sasrec and bidirectional user encoders")
        self.owners: dict[str, Tensor] = {name: torch.zeros(m.weight.shape, dtype=torch.uint8, device=m.weight.device)
                                          for name, m in self.layers.items()}
        self.num_tasks = 0
        self.view: tuple[str, int] | None = None
        self._cache: dict[str, tuple[Tensor, Tensor | None]] = {}
        self._swapped: dict[str, nn.Parameter] = {}
        self._handles = []
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_pre_hook(self._swap_in(name)))
            self._handles.append(module.register_forward_hook(self._swap_out(name), always_call=True))

    # -- masks ---------------------------------------------------------------------------------
    def _set_view(self, view: tuple[str, int] | None) -> None:
        self.view = view
        self._cache.clear()

    def masks(self, name: str) -> tuple[Tensor, Tensor | None]:
        """(visible, trainable) boolean masks of one weight under the current view (trainable None: none)."""
        if name not in self._cache:
            owner = self.owners[name]
            phase, k = self.view
            if phase == "eval":
                self._cache[name] = ((owner >= 1) & (owner <= k), None)
            elif phase == "train":
                self._cache[name] = (owner <= k - 1, owner == 0)  # earlier tasks + the free entries
            else:
                self._cache[name] = ((owner >= 1) & (owner <= k), owner == k)
        return self._cache[name]

    def _sync_device(self, name: str, device: torch.device) -> None:
        if self.owners[name].device != device:  # the model moved after the masks were built
            self.owners[name] = self.owners[name].to(device)
            self._cache.pop(name, None)

    def _swap_in(self, name: str):
        def hook(module, args):
            if self.view is None:
                return
            weight = module._parameters["weight"]
            self._sync_device(name, weight.device)
            visible, trainable = self.masks(name)
            zero = weight.new_zeros(())
            if trainable is None:
                masked = torch.where(visible, weight.detach(), zero)
            else:  # gradient reaches the trainable entries only
                masked = torch.where(trainable, weight, torch.where(visible, weight.detach(), zero))
            self._swapped[name] = weight
            module._parameters["weight"] = masked  # a plain tensor for this call; the Parameter comes back after

        return hook

    def _swap_out(self, name: str):
        def hook(module, args, output):
            if name in self._swapped:
                module._parameters["weight"] = self._swapped.pop(name)

        return hook

    def detach(self) -> None:
        """Remove the hooks: the module computes with its raw weights again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- the task cycle ------------------------------------------------------------------------
    @property
    def current(self) -> int | None:
        """The task being learned (train or retrain view), else None."""
        return self.view[1] if self.view is not None and self.view[0] != "eval" else None

    def begin(self, task: int) -> None:
        """Start learning `task` (= num_tasks + 1): its free entries train."""
        if self.current is not None:
            raise ConfigError(f"task {self.current} is still being learned; finish it first")
        if task != self.num_tasks + 1:
            raise ConfigError(f"tasks are learned in order: next is task {self.num_tasks + 1}, got {task}")
        if task > 255:
            raise ConfigError("at most 255 tasks (owners are uint8)")
        self._set_view(("train", task))

    @torch.no_grad()
    def prune(self, keep_ratio: float) -> dict[str, int]:
        """Keep the largest-|w| `keep_ratio` share of the entries the current task trained (per tensor);
        release the rest (owner 0, value 0). Switches to the retrain view. Returns kept entries per weight."""
        if self.view is None or self.view[0] != "train":
            raise ConfigError("prune() follows the training phase of a task (after begin())")
        if not 0 < keep_ratio <= 1:
            raise ConfigError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        task, kept = self.view[1], {}
        for name, module in self.layers.items():
            self._sync_device(name, module.weight.device)
            owner, weight = self.owners[name], module.weight
            candidates = owner == 0
            n_keep = kept_count(int(candidates.sum()), keep_ratio)
            score = weight.detach().abs().float().masked_fill(~candidates, -1.0)  # |w| >= 0 > -1: candidates first
            top = score.flatten().topk(n_keep).indices
            owner.view(-1)[top] = task
            weight.masked_fill_(candidates & (owner != task), 0.0)
            kept[name] = n_keep
        self._set_view(("retrain", task))
        return kept

    def finish(self) -> None:
        """The current task is learned: its entries are frozen for good; the view becomes its network."""
        task = self.current
        if task is None:
            raise ConfigError("no task is being learned")
        if self.view[0] == "train":  # not pruned: it keeps every entry it trained
            for owner in self.owners.values():
                owner.masked_fill_(owner == 0, task)
        self.num_tasks = task
        self._set_view(("eval", task))

    @contextmanager
    def task(self, j: int) -> Iterator[None]:
        """Compute as task j's network (entries of tasks 1..j) inside the block."""
        if not 1 <= j <= self.num_tasks:
            raise ConfigError(f"task {j} is not learned (learned: 1..{self.num_tasks})")
        before = self.view
        self._set_view(("eval", j))
        try:
            yield
        finally:
            self._set_view(before)

    # -- keeping frozen entries fixed ------------------------------------------------------------
    def protect(self, optimizer: torch.optim.Optimizer, frozen: list[nn.Parameter] | tuple = ()) -> _Guard:
        """Make `optimizer.step()` unable to move a frozen entry: a step pre-hook saves every prunable
        weight the optimizer holds (and each `frozen` parameter), a post-hook writes the frozen entries
        back bitwise. Covers AdamW's decoupled weight decay and stale momentum, which move entries even
        when their gradient is zero. Entries frozen = not trainable under the view at step time."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        weights = {name: m.weight for name, m in self.layers.items() if id(m.weight) in held}
        extra = [p for p in frozen if id(p) in held]
        saved: list[tuple[Tensor, Tensor | None, Tensor]] = []

        def save(opt, args, kwargs):
            saved.clear()
            for name, p in weights.items() if self.view is not None else ():  # no view: nothing is frozen
                self._sync_device(name, p.device)
                trainable = self.masks(name)[1]  # None in an eval view: the whole tensor is frozen
                saved.append((p, None if trainable is None else ~trainable, p.detach().clone()))
            saved.extend((p, None, p.detach().clone()) for p in extra)

        @torch.no_grad()
        def restore(opt, args, kwargs):
            for p, keep, value in saved:
                p.copy_(value if keep is None else torch.where(keep, value, p))
            saved.clear()

        return _Guard([optimizer.register_step_pre_hook(save), optimizer.register_step_post_hook(restore)])

    # -- reports and state ---------------------------------------------------------------------
    def capacity(self) -> dict[str, Any]:
        """Share of all prunable entries each task owns, and the free share (they sum to 1)."""
        counts = torch.zeros(256, dtype=torch.long)
        for owner in self.owners.values():
            counts += torch.bincount(owner.flatten().long().cpu(), minlength=256)
        total = int(counts.sum())
        last = max([self.num_tasks, self.current or 0])
        return {"entries": total, "tasks": [int(counts[k]) / total for k in range(1, last + 1)],
                "free": int(counts[0]) / total}

    def state(self) -> dict[str, Tensor]:
        return {f"{name}.weight": owner.detach().cpu().contiguous() for name, owner in self.owners.items()}

    def load_state(self, owners: dict[str, Tensor], num_tasks: int) -> None:
        for name in self.owners:
            self.owners[name] = owners[f"{name}.weight"].to(self.owners[name].device).clone()
        self.num_tasks = num_tasks
        self._set_view(("eval", num_tasks) if num_tasks else None)


class Conure:
    """One backbone, its TaskMasks and every task's head: the whole lifelong model.

    Task 1 is next-item recommendation on the backbone's own items (its head is the backbone's item
    table); later tasks are profile or cold-start tasks with a PeterRec head (`DownstreamModel`,
    sharing the backbone). `masked=False` gives SinMoAll: the same sequence, every weight fine-tuned
    for every task, no masks (old tasks drift; the forgetting baseline)."""

    def __init__(self, backbone: nn.Module, masked: bool = True):
        if not hasattr(backbone, "user_encoder"):
            raise ConfigError(f"Conure needs a sequential recommender backbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.masks = TaskMasks(backbone.user_encoder) if masked else None
        self.specs: list[dict[str, Any]] = []
        self.models: list[nn.Module] = []  # task j -> self.models[j - 1]

    @property
    def num_tasks(self) -> int:
        return len(self.models)

    @property
    def names(self) -> list[str]:
        return [spec["name"] for spec in self.specs]

    def task_index(self, task: int | str) -> int:
        """A task's number 1..n, from its number or its name."""
        if isinstance(task, str) and not task.isdigit():
            if task not in self.names:
                raise ConfigError(f"no task named {task!r}; learned tasks: {self.names}")
            return self.names.index(task) + 1
        j = int(task)
        if not 1 <= j <= self.num_tasks:
            raise ConfigError(f"task {j} is not learned (learned: 1..{self.num_tasks}: {self.names})")
        return j

    def _build(self, spec: dict[str, Any]) -> nn.Module:
        if spec["kind"] == "next_item":
            return self.backbone
        from transrec.config import Config, DownstreamConfig
        from transrec.data.downstream import DownstreamData
        from transrec.training.finetune import build_downstream

        cfg = Config(task=spec["kind"], downstream=DownstreamConfig(mode="fine_all", readout=spec["readout"],
                                                                    head_dropout=spec["head_dropout"]))
        data = DownstreamData(spec["kind"], [], [], classes=spec["classes"], target_items=spec["target_items"])
        model = build_downstream(cfg, self.backbone, data, self.backbone.dim)
        return model.to(next(self.backbone.parameters()).device)

    def add_task(self, kind: str, data=None, name: str = "", readout: str = "auto",
                 head_dropout: float = 0.1) -> nn.Module:
        """Start learning the next task; returns its model with exactly what may train set trainable.
        `data` (a DownstreamData) sizes the head of a profile / cold_start task."""
        k = self.num_tasks + 1
        if kind not in TASK_KINDS:
            raise ConfigError(f"a lifelong task is one of {TASK_KINDS}, got {kind!r}")
        if (kind == "next_item") != (k == 1):
            raise ConfigError("task 1 must be next_item on the backbone's data (it trains the shared item table), "
                              f"and only task 1; got {kind} as task {k}")
        name = name or f"task{k}"
        if name in self.names:
            raise ConfigError(f"task name {name!r} is taken (tasks: {self.names}); names select tasks, so they "
                              "are unique")
        if name.isdigit():
            raise ConfigError(f"task name {name!r}: a name must not be a bare number (numbers select tasks by "
                              "position)")
        spec = {"name": name, "kind": kind, "readout": readout, "head_dropout": head_dropout,
                "classes": list(getattr(data, "classes", []) or []),
                "target_items": list(getattr(data, "target_items", []) or [])}
        model = self._build(spec)
        self.specs.append(spec)
        self.models.append(model)
        for p in self.backbone.parameters():
            p.requires_grad_(self.masks is None or k == 1)
        if self.masks is not None:
            self.masks.begin(k)
            for module in self.masks.layers.values():
                module.weight.requires_grad_(True)
        for other in self.models[:-1]:
            if other is not self.backbone:
                for n, p in other.named_parameters():
                    if not n.startswith("backbone."):
                        p.requires_grad_(False)
        return model

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Backbone tensors that are not prunable and no longer train (after task 1)."""
        if self.masks is None or self.num_tasks <= 1:
            return []
        prunable = {id(m.weight) for m in self.masks.layers.values()}
        return [p for p in self.backbone.parameters() if id(p) not in prunable]

    def protect(self, optimizer: torch.optim.Optimizer) -> _Guard:
        if self.masks is None:
            return _Guard([])
        return self.masks.protect(optimizer, self.frozen_parameters())

    def prune(self, keep_ratio: float) -> dict[str, int]:
        return self.masks.prune(keep_ratio) if self.masks is not None else {}

    def finish_task(self) -> None:
        if self.masks is not None:
            self.masks.finish()
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    @contextmanager
    def task(self, j: int | str) -> Iterator[nn.Module]:
        """Task j's model (by number or name), computing with task j's network (SinMoAll: the current
        shared weights)."""
        j = self.task_index(j)
        if self.masks is None:
            yield self.models[j - 1]
            return
        with self.masks.task(j):
            yield self.models[j - 1]

    @torch.no_grad()
    def predict(self, j: int | str, items: Tensor) -> Tensor:
        """[b, L] left-padded backbone item indices -> task j's outputs (j: number or name): scores over
        all items (next item), class logits (profile) or target-item logits (cold start)."""
        j = self.task_index(j)
        with self.task(j) as model:
            was_training = model.training
            model.eval()
            try:
                if self.specs[j - 1]["kind"] == "next_item":
                    return self.backbone.encode_users({"items": items}) @ self.backbone.all_item_vectors().T
                return model(items)
            finally:
                model.train(was_training)

    def capacity(self) -> dict[str, Any]:
        return self.masks.capacity() if self.masks is not None else {"entries": 0, "tasks": [], "free": 0.0}

    # -- one file ------------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        """Everything saved: `backbone.*`, `owner.*` (bit planes, uint8 [bits, ceil(entries / 8)]) and
        `task<j>.*` (each task's head, [CLS])."""
        out = {f"backbone.{k}": v.detach().cpu().contiguous() for k, v in self.backbone.state_dict().items()}
        if self.masks is not None:
            bits = owner_bits(self.num_tasks)
            out.update({f"owner.{k}": pack_owners(v, bits) for k, v in self.masks.state().items()})
        for j, model in enumerate(self.models, 1):
            if model is not self.backbone:
                out.update({f"task{j}.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                            if not k.startswith("backbone.")})
        return out

    def storage(self) -> dict[str, int]:
        """Bytes of what serving every learned task needs: the backbone, the owner masks and the heads."""
        parts = {"backbone": 0, "masks": 0, "heads": 0}
        for key, t in self.tensors().items():
            part = {"backbone": "backbone", "owner": "masks"}.get(key.split(".")[0], "heads")
            parts[part] += t.numel() * t.element_size()
        return {**parts, "total": sum(parts.values())}

    def save_pretrained(self, folder: str | Path, item_ids: list[str] | None = None) -> Path:
        """One folder serving every task: `conure.safetensors` (backbone, bit-packed masks, all heads, the
        task list) and, given the backbone's external item ids, `item_ids.json`."""
        folder = Path(folder)
        self.save(folder / WEIGHTS_FILE)
        if item_ids is not None:
            if len(item_ids) != self.backbone.num_items:
                raise ConfigError(f"{len(item_ids)} item ids for a backbone of {self.backbone.num_items} items")
            (folder / ITEM_IDS_FILE).write_text(json.dumps(list(item_ids)))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, backbone: nn.Module | None = None) -> "Conure":
        """Load a `save_pretrained` folder (local; a Hub id only from the offline cache when
        HF_HUB_OFFLINE=1), strictly. Serve a task with `predict(name_or_number, items)`."""
        from transrec.hub import resolve_model_dir

        path = resolve_model_dir(folder) / WEIGHTS_FILE
        if not path.is_file():
            raise CheckpointError(f"{folder}: no {WEIGHTS_FILE} (not a Conure folder)")
        return cls.load(path, backbone)

    def save(self, path: str | Path) -> Path:
        """One safetensors file: backbone, owners, heads; task specs and the backbone's config in its metadata."""
        if self.masks is not None and self.masks.current is not None:
            raise CheckpointError(f"task {self.masks.current} is still being learned; finish it before saving")
        config = getattr(self.backbone, "_hub_mixin_config", None)
        metadata = {"format": FORMAT, "masked": json.dumps(self.masks is not None), "tasks": json.dumps(self.specs),
                    "owner_encoding": "bit planes, little-endian packbits, uint8 [bits, ceil(entries / 8)]",
                    "backbone_config": json.dumps(config if isinstance(config, dict) else None)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors(), str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path, backbone: nn.Module | None = None) -> "Conure":
        """Rebuild from `save` output, strictly: a missing or unexpected tensor, a wrong shape or a
        non-uint8 owner is an error. `backbone`: an architecture-matching model (needed for content
        backbones, whose content must be attached); by default an ID backbone is rebuilt from the
        config in the file's metadata."""
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:
            raise CheckpointError(f"{path}: cannot read safetensors file: {err}") from None
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a Conure file (format {metadata.get('format')!r}, expected {FORMAT})")
        if backbone is None:
            from transrec.models.recommender import MODEL_TYPES

            config = json.loads(metadata["backbone_config"]) or {}
            if config.get("model_type") not in MODEL_TYPES or config.get("item_encoder_args"):
                raise CheckpointError(f"{path}: pass backbone= (the file's backbone cannot be rebuilt from its config)")
            backbone = MODEL_TYPES[config["model_type"]](**config)
        conure = cls(backbone, masked=json.loads(metadata["masked"]))
        for spec in json.loads(metadata["tasks"]):
            conure.specs.append(spec)
            conure.models.append(conure._build(spec))
        expected = conure.tensors()  # packed owners sized for the file's task count
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = [f"{k} {tuple(state[k].shape)} {state[k].dtype} != {tuple(v.shape)} {v.dtype}"
                 for k, v in expected.items()
                 if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)]
        if missing or unexpected or wrong:
            raise CheckpointError(f"{path}: does not match its task list: missing {missing[:5]}, unexpected "
                                  f"{unexpected[:5]}, mismatched {wrong[:5]}")
        device = next(backbone.parameters()).device

        def take(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix):]: v.to(device) for k, v in state.items() if k.startswith(prefix)}

        backbone.load_state_dict(take("backbone."), strict=True)
        for j, model in enumerate(conure.models, 1):
            if model is not backbone:
                model.load_state_dict({**model.state_dict(), **take(f"task{j}.")}, strict=True)
        if conure.masks is not None:
            owners = {}
            for name, packed in take("owner.").items():
                layer = conure.masks.owners[name[:-len(".weight")]]
                owner = owners[name] = unpack_owners(packed, layer.shape)
                top = int(owner.max()) if owner.numel() else 0
                if top > conure.num_tasks:
                    raise CheckpointError(f"{path}: owner.{name} names task {top}, but the file has "
                                          f"{conure.num_tasks} tasks")
                if not torch.equal(pack_owners(owner, packed.shape[0]), packed.cpu()):
                    raise CheckpointError(f"{path}: owner.{name} has bits set past its {owner.numel()} entries")
            conure.masks.load_state(owners, conure.num_tasks)
        for p in backbone.parameters():
            p.requires_grad_(False)
        for model in conure.models:
            model.requires_grad_(False)
            model.eval()
        return conure
