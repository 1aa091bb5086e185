"""Run configuration: dataclasses loaded from YAML plus dotted command-line overrides.

Unknown keys are errors (naming the nearest valid key) and values are coerced to the
field's declared type, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transrec.errors import ConfigError


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | folder | movielens | peterrec
    path: str | None = None  # dataset folder (folder), GroupLens folder (movielens), output folder (synthetic)
    variant: str = "ml-100k"  # movielens variant when `path` is a GroupLens folder
    pretrain: str | None = None  # peterrec pretraining file
    finetune: str | None = None  # peterrec fine-tune file
    domain: str | None = None  # keep only interactions with items of this domain
    modality: str | None = None  # keep only items of this modality (text | image) and interactions with them
    max_len: int = 50  # most recent items kept per input sequence
    train_stride: int = 0  # next-item training windows end every `train_stride` items and supervise only their last ones (more context per target, ~max_len/stride x the epoch cost); 0 = non-overlapping windows
    min_user_interactions: int = 3  # leave-one-out needs train + valid + test items
    k_core: int = 0  # iterative k-core filter on users and items (0 = off)
    synthetic_seed: int = 0
    synthetic_users: int = 1000
    train_fraction: float = 1.0  # share of users whose training sequences train the model (all are evaluated)
    on_bad_content: str = "fail"  # fail | placeholder: a corrupt image or empty text stops, or is replaced and counted
    era_split: int = 0  # movielens: items released before this year get domain "before<Y>", the rest "from<Y>" (0 = off)
    genre_split: str = ""  # movielens: items with this genre get domain "<genre>" (lower case), the rest "non<genre>" ("" = off)
    item_holdout: float = 0.0  # hold out this share of the items (seeded) as a pseudo new domain (0 = off)
    item_holdout_side: str = "train"  # train: keep the other items | heldout: keep the held-out ones
    item_holdout_seed: int = 0
    item_holdout_by: str = "random"  # random: items drawn uniformly | content: whole clusters of similar texts
    item_holdout_users: bool = False  # also split the users: each side keeps its own (a new domain's are new)
    user_holdout: float = 0.0  # keep one side of this share of the users (seeded; 0 = off): disjoint user bases
    user_holdout_side: str = "train"  # train: the other users | heldout: the held-out ones
    user_holdout_seed: int = 0
    tie_order: str = "file"  # interactions of a user with one timestamp: file (the file's order) | item (by item id, as GroupLens CSV releases list them) | random (shuffled, fixed seed); decides the test item where the last ones tie
    extra_sources: list[dict] = field(default_factory=list)  # more datasets trained on with this one ([{source: synthetic, domain: A}]); ids prefixed <name>: (transrec.data.multisource)


@dataclass
class ModelConfig:
    name: str = "sasrec"  # a user encoder (sasrec | nextitnet | gru4rec) or "popularity"
    item_encoder: str = "id"
    dim: int = 64
    num_layers: int = 2  # sasrec, gru4rec
    num_heads: int = 2  # sasrec
    dropout: float = 0.2
    dilations: list[int] = field(default_factory=lambda: [1, 4])  # nextitnet
    num_repeats: int = 2  # nextitnet: how often the dilation list is stacked
    kernel_size: int = 3  # nextitnet
    # content item encoders (item_encoder: text | image | mixture); presets: tiny-bert, minilm-l6-offline,
    # tiny-vit, efficientnet-lite0-offline; any other name is a Hub id / local folder / timm model name
    text_encoder: str = "tiny-bert"
    image_encoder: str = "tiny-vit"
    text_trainable_blocks: int = 1  # top transformer layers that train (-1 = all, 0 = frozen)
    image_trainable_blocks: int = 1
    image_size: int = 0  # image input resolution in pixels (0 = the encoder's native one, e.g. 224)
    text_pooling: str = "auto"  # cls | mean | auto (the preset's choice: mean for MiniLM, else cls)
    text_max_length: int = 32
    modality_embedding: bool = True  # mixture: learned vector per modality
    id_embedding: bool = False  # add an item-ID embedding to the content vector (id+content)
    cache_frozen: bool = False  # compute frozen parts once per item: trainable_blocks=0 keeps the pooled vector; k>0 the frozen bottom's output (text token states, image feature map)
    gradient_checkpointing: bool = False  # text: recompute the trainable blocks in backward
    score: str = "dot"  # dot | cosine (unit vectors times a learned scale: item norms carry no catalogue-specific signal)
    content_residual: bool = False  # content models: + learned weight x the encoder's own cosine to the last item
    residual_weight: float = 1.0  # content_residual: the weight's initial value (it is learned)
    lexical_numbers: bool = True  # zero-shot lexical term: match digit runs (years) too; false drops them
    pretrained: bool = True  # start content backbones from their pretrained weights (where they have any)


@dataclass
class TrainConfig:
    objective: str = "softmax"  # softmax | sampled_softmax | bce | inbatch
    pretrain_objective: str = "next_item"  # next_item | masked_item (GRec/BERT4Rec-style; needs a non-causal encoder) | contrastive (CLUE)
    mask_prob: float = 0.2  # masked_item: share of positions masked (of those, 80% [MASK], 10% kept, 10% random)
    num_negatives: int = 256  # sampled_softmax / bce
    epochs: int = 100
    batch_size: int = 128  # global batch, split over processes
    lr: float = 1e-3
    item_encoder_lr: float = 0.0  # learning rate of content item encoders (0 = train.lr); MoRec: ~1e-4
    weight_decay: float = 0.0
    scheduler: str = "constant"  # constant | linear | cosine (after warm-up)
    warmup_steps: int = 0
    grad_accum: int = 1
    clip_grad_norm: float = 1.0  # 0 = off
    mixed_precision: str = "no"  # no | bf16 | fp16 (bf16/fp16 only where the device supports it)
    patience: int = 10  # evaluations without a better valid NDCG@10 before stopping
    min_epochs: int = 0  # early stopping waits at least this many epochs (tiny training sets: a few steps per epoch)
    eval_every: int = 1  # epochs between validations
    select_initial: bool = True  # transfer (a given starting model): its zero-shot scoring is validated as epoch 0 and kept if no trained epoch beats it (patience counts trained epochs only)
    checkpoint_every: int = 0  # optimizer steps between save_state checkpoints (0 = each epoch)
    max_minutes: float = 0.0  # wall-clock budget for training (0 = none)
    seed: int = 42
    tracker: str = "csv"  # csv | tensorboard | none
    progress: bool = True  # tqdm bars on the main process
    # pretrain_objective=contrastive (CLUE): InfoNCE between two augmented views of each user's sequence
    contrastive_temperature: float = 0.2
    contrastive_with_next_item: bool = False  # add the next-item loss (weight 1) of the original sequences
    contrastive_weight: float = 0.1  # InfoNCE weight when combined with next-item (alone it is the whole loss)
    contrastive_projection_dim: int = 0  # projection head output (0 = model.dim); the head is not saved
    augmentations: list[str] = field(default_factory=lambda: ["crop", "mask", "reorder"])  # one drawn per view; dropout = unchanged view (SimCSE)
    crop_ratio: float = 0.6  # crop: share of the sequence kept (contiguous)
    mask_ratio: float = 0.3  # mask: share of items dropped
    reorder_ratio: float = 0.3  # reorder: share of the sequence (a contiguous window) shuffled
    # content models with model.content_residual: before training, train once on the items that remain
    # after holding out this share, and choose the zero-shot residual weight on the held-out items (0 = off)
    transfer_calibration: float = 0.0
    transfer_calibration_cases: int = 0  # 0: each held-out user's validation case; n > 0: its last n next-item cases (test, validation, earlier)


@dataclass
class EvalConfig:
    protocol: str = "full"  # full | sampled_legacy (target vs 99 random negatives, 2020-era papers)
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    exclude_history: bool = True  # RecBole's sequential full ranking does not exclude them
    num_negatives: int = 99  # sampled_legacy only
    batch_size: int = 256
    chunk_size: int = 65536  # items scored at once


@dataclass
class DownstreamConfig:
    """Transfer of a pretrained user encoder to a downstream task (task: profile | cold_start)."""

    backbone: str | None = None  # the pretrained model folder / Hub id (`transrec train` with task: pretrain)
    mode: str = "peterrec"  # scratch | fine_all | fine_head | fine_last_k | peterrec | uaf
    patch: str = "serial"  # peterrec: serial | parallel
    bottleneck: int = 0  # patch width (0 = dim // 4)
    last_k: int = 1  # fine_last_k: top blocks that train
    readout: str = "auto"  # cls (appended token, causal models) | mean (pooled) | last | auto (cls if causal)
    label: str = "gender"  # profile: a user attribute of the dataset, or the column of labels_file
    labels_file: str | None = None  # profile: CSV `user_id,<label>` (overrides the dataset's attribute)
    bins: list[float] = field(default_factory=list)  # profile: numeric labels bucketed at these edges
    target_domain: str | None = None  # cold_start: the domain whose items are the targets
    valid_fraction: float = 0.1  # users
    test_fraction: float = 0.2  # users
    split_seed: int = -1  # user split (-1 = train.seed)
    head_dropout: float = 0.1
    uaf_temperature: float = 1.0  # uaf: Gumbel-softmax temperature of the per-block policy
    uaf_cost: float = 0.01  # uaf: loss weight on the mean share of fine-tuned blocks
    uaf_policy_hidden: int = 32  # uaf: hidden width of the policy MLP


@dataclass
class LifelongConfig:
    """Conure (task: lifelong): one backbone learns a sequence of tasks; each is pruned, retrained, frozen."""

    tasks: list[str] = field(default_factory=lambda: ["next_item", "profile"])  # in order: next_item (the backbone's data) first, then profile[:label] | cold_start[:domain]
    method: str = "conure"  # conure | sinmoall (every weight fine-tuned for each task: the forgetting baseline)
    keep_ratios: list[float] = field(default_factory=list)  # per task, share of its trained weights kept (the last repeats); empty = 0.3 for T1, 0.5 after
    retrain_epochs: int = -1  # epochs retraining the kept weights after pruning (-1 = train.epochs)
    patience: int = 0  # > 0: each phase selects on the task's valid split and stops after this many epochs without improvement (0 = fixed epochs)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    task: str = "next_item"  # next_item | pretrain (next_item, masked_item or contrastive objective) | profile | cold_start | lifelong
    name: str = "run"
    lifelong: LifelongConfig = field(default_factory=LifelongConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _unknown_key(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{where}{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{where}{key}'{hint} (valid in this section: {', '.join(valid)})")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the declared field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else yaml.safe_load(f"[{value.strip('[]')}]")
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown_key(str(key), list(fields), where)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}{key}")
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-4", "model.dilations=[1,2]"]` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or start from defaults) and apply dotted overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    values = _merge(values, parse_overrides(overrides or []))
    return _build(Config, values, "")


def config_from_dict(values: dict[str, Any]) -> Config:
    return _build(Config, values, "")
