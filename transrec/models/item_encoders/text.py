"""Text item encoder: a BERT-family `transformers` model over each item's text, pooled and projected.

Why the layers are run by hand instead of `backbone(...)`: with `trainable_blocks=k` only the top
k layers train, and the frozen bottom (embeddings + lower layers) must run under `no_grad` so it
stores no activations; the split also lets `cache_frozen=True` keep the bottom's output per item
so a training step runs only the top. This needs the BERT layout (`embeddings`, `encoder.layer`),
which BERT, RoBERTa, ELECTRA, MiniLM, XLM-R... share; other models support `trainable_blocks=-1`.

The backbone is built from a config only (`backbone_config`, resolved once from the preset / folder /
Hub id and saved with the model), so loading a transrec checkpoint never fetches base weights;
`load_pretrained_weights()` is the one place that reads them.

transformers is imported where used, so importing the registry stays fast.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transrec.data.content import ContentStore
from transrec.errors import ConfigError
from transrec.models.item_encoders.base import CenteredLinear, ContentItemEncoder
from transrec.models.item_encoders.presets import TEXT_PRESETS, hub_offline, offline_error
from transrec.registry import ITEM_ENCODERS

POOLINGS = ("cls", "mean")


def from_pretrained(loader: Any, source: str | Path, model: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained` that fails at once, with a clear message, when nothing is local.

    The local cache is tried first; the network only when HF_HUB_OFFLINE is unset.
    """
    local = Path(source).is_dir()
    try:
        return loader.from_pretrained(str(source), local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        if local:
            raise ConfigError(f"cannot load {model!r} from folder {source}: {err}") from None
        if hub_offline():
            raise offline_error(model, err) from None
    try:
        return loader.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError) as err:
        raise offline_error(model, err) from None


def _clear_after_load(module: "TextItemEncoder", incompatible_keys: Any) -> None:
    """New weights make cached frozen-bottom outputs stale (a named function: modules stay picklable)."""
    module.clear_cache()


@ITEM_ENCODERS.register("text")
class TextItemEncoder(ContentItemEncoder):
    """Item text -> BERT-family encoder -> CLS or mean pooling -> Linear(hidden, dim)."""

    def __init__(
        self,
        num_items: int,
        dim: int,
        model: str = "tiny-bert",
        pooling: str | None = None,
        trainable_blocks: int = 1,
        max_length: int = 32,
        backbone_config: dict[str, Any] | None = None,
        assets_dir: str | Path | None = None,
        gradient_checkpointing: bool = False,
        cache_frozen: bool = False,
        id_embedding: bool = False,
        pretrained: bool | None = None,
    ):
        from transformers import AutoConfig, AutoModel

        super().__init__()
        self._init_common(num_items, dim, id_embedding)
        self.model_name = model
        self.preset = TEXT_PRESETS.get(model)
        self.assets_dir = Path(assets_dir) if assets_dir is not None else None
        pooling = pooling or (self.preset["pooling"] if self.preset else "cls")
        if pooling not in POOLINGS:
            raise ConfigError(f"text encoder pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling, self.max_length = pooling, max_length
        if pretrained is None:  # presets know; a folder / Hub id is assumed to hold weights
            pretrained = self.preset["source"] is not None if self.preset else True
        self.pretrained = bool(pretrained)
        if backbone_config is None:
            backbone_config = self._resolve_config()
        try:
            config = AutoConfig.for_model(**backbone_config)
        except (KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"text encoder {model!r}: invalid backbone_config ({err})") from None
        positions = getattr(config, "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise ConfigError(f"max_length={max_length} exceeds the {positions} positions of {model!r}")
        self.backbone = AutoModel.from_config(config)
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None  # pooling is ours (CLS hidden state or mean), not BERT's NSP pooler
        self.projection = CenteredLinear(config.hidden_size, dim)

        layers = getattr(getattr(self.backbone, "encoder", None), "layer", None)
        self.layers = list(layers) if hasattr(self.backbone, "embeddings") and layers is not None else None
        self._config = {
            "model": model, "pooling": pooling, "trainable_blocks": trainable_blocks, "max_length": max_length,
            "backbone_config": backbone_config, "gradient_checkpointing": gradient_checkpointing,
            "cache_frozen": cache_frozen, "id_embedding": id_embedding, "pretrained": self.pretrained,
        }
        self.cache_frozen = cache_frozen
        self._tokenizer = None
        self.set_trainable_blocks(trainable_blocks)  # also: frozen parts in eval mode from the start
        if gradient_checkpointing:
            enable = getattr(self.backbone, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # caches (base class): trainable_blocks=0 the pooled vector per item ("pooled"); k > 0 the
        # bottom's token states ("bottom", [n+1, T, H])
        self.register_load_state_dict_post_hook(_clear_after_load)

    # ------------------------------------------------------------------------- resolution

    def _source(self) -> str | Path | None:
        """Where config and weights come from: a preset's folder, a local folder or a Hub id."""
        if self.preset is not None:
            return self.preset["source"]() if self.preset["source"] is not None else None
        return self.model_name

    def _resolve_config(self) -> dict[str, Any]:
        from transformers import AutoConfig

        if self.preset is not None and self.preset["config"] is not None:
            config = AutoConfig.for_model(**self.preset["config"])
        else:
            config = from_pretrained(AutoConfig, self._source(), self.model_name)
        return config.to_diff_dict()

    @property
    def tokenizer(self):
        """The saved tokenizer (assets_dir/tokenizer) if any, else the preset's / model's own."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            saved = self.assets_dir / "tokenizer" if self.assets_dir is not None else None
            if saved is not None and saved.is_dir():
                source = saved
            elif self.preset is not None:
                source = self.preset["tokenizer"]()
            else:
                source = self.model_name
            self._tokenizer = from_pretrained(AutoTokenizer, source, self.model_name)
        return self._tokenizer

    def load_pretrained_weights(self) -> bool:
        """Copy the pretrained backbone weights in (False, doing nothing, for random-init presets)."""
        from transformers import AutoModel

        source = self._source()
        if not self.pretrained or source is None:
            return False
        state = from_pretrained(AutoModel, source, self.model_name).state_dict()
        own = self.backbone.state_dict()
        missing = [k for k in own if k not in state]
        wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
        if missing or wrong:
            raise ConfigError(f"pretrained weights of {self.model_name!r} do not fit the backbone config: "
                              f"missing {missing[:5]}, shape mismatch {wrong[:5]}")
        self.backbone.load_state_dict({k: state[k] for k in own}, strict=True)
        self.clear_cache()
        return True

    # ------------------------------------------------------------------------------ assets

    def export_assets(self, folder: str | Path) -> None:
        """Write the tokenizer to folder/tokenizer (what encoding new items needs besides the weights)."""
        self.tokenizer.save_pretrained(str(Path(folder) / "tokenizer"))

    def build_content_store(self, catalog, on_bad: str = "fail", cache_dir: str | Path | None = None) -> ContentStore:
        return ContentStore(catalog, tokenizer=self.tokenizer, text_max_length=self.max_length, on_bad=on_bad,
                            cache_dir=cache_dir)

    def set_content(self, store: ContentStore) -> None:
        if store.input_ids is None:
            raise ConfigError("the text encoder needs a ContentStore with a tokenizer (use build_content_store)")
        vocab = self.backbone.config.vocab_size
        if int(store.input_ids.max()) >= vocab:
            raise ConfigError(f"token ids up to {int(store.input_ids.max())} exceed the backbone vocabulary ({vocab}): "
                              "the store was tokenised with another tokenizer")
        super().set_content(store)
        self.clear_cache()

    # ------------------------------------------------------------------------------ forward

    def set_trainable_blocks(self, trainable_blocks: int) -> None:
        """Train the top `trainable_blocks` layers from now on (-1 = all, 0 = frozen up to the projection).
        Also after training: fine-tune the top block of a model trained frozen, the cheap stage first and the
        expensive one from its result. Caches of the old frozen part are dropped."""
        n = len(self.layers) if self.layers is not None else 0
        if trainable_blocks < -1 or (self.layers is not None and trainable_blocks > n):
            raise ConfigError(f"trainable_blocks={trainable_blocks}: {self.model_name!r} has {n} layers (use -1..{n})")
        if self.layers is None and trainable_blocks != -1:
            raise ConfigError(f"{self.model_name!r} ({self.backbone.config.model_type}) lacks the BERT layout "
                              "(embeddings, encoder.layer) that trainable_blocks needs; use trainable_blocks=-1")
        if self.cache_frozen and trainable_blocks == -1:
            raise ConfigError("cache_frozen needs a frozen bottom (trainable_blocks >= 0)")
        self.trainable_blocks = trainable_blocks
        self.num_frozen = n - trainable_blocks if trainable_blocks >= 0 else 0
        self._config["trainable_blocks"] = trainable_blocks
        self.backbone.requires_grad_(True)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)  # frozen parts in eval mode (no dropout in what a cache would hold)
        self.clear_cache()

    def frozen_modules(self) -> list[nn.Module]:
        """Embeddings + the bottom layers (empty when everything trains)."""
        if self.trainable_blocks < 0:
            return []
        return [self.backbone.embeddings, *self.layers[: self.num_frozen]]

    def train(self, mode: bool = True) -> "TextItemEncoder":
        """Frozen parts stay in eval mode: no dropout there, so cached and uncached bottoms agree."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def clear_cache(self) -> None:
        """Drop the cached frozen outputs (bottom token states, pooled vectors)."""
        self.clear_feature_cache()

    def _content_digest(self) -> str:
        store = self._store()
        h = hashlib.sha256(str(self.max_length).encode())
        h.update(store.input_ids.numpy().tobytes())
        h.update(store.attention_mask.numpy().tobytes())
        return h.hexdigest()

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)

    def run_bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings + frozen layers -> hidden states [k, T, H]; without autograd unless all layers train."""
        if self.layers is None:  # non-BERT layout: whole model, all trainable
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable_blocks < 0):
            hidden = self.backbone.embeddings(input_ids=input_ids)
            if self.num_frozen:
                mask = self._mask(hidden, attention_mask)
                for layer in self.layers[: self.num_frozen]:
                    hidden = layer(hidden, mask)
        return hidden

    def run_top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trainable top layers over the bottom's hidden states."""
        if self.layers is None or self.num_frozen == len(self.layers):
            return hidden
        mask = self._mask(hidden, attention_mask)
        for layer in self.layers[self.num_frozen:]:
            hidden = layer(hidden, mask)
        return hidden

    def _bottom_rows(self, items: torch.Tensor) -> torch.Tensor:
        """The frozen bottom's token states of `items`, [k, T, H] at the store's full length T (positions past
        the batch's longest text are zeros: masked out in the top layers and in pooling)."""
        inputs = self._store().text_inputs(items)
        device = self._device()
        input_ids, attention_mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
        length = max(int(attention_mask.sum(1).max()), 1)
        hidden = self.run_bottom(input_ids[:, :length], attention_mask[:, :length])
        out = hidden.new_zeros(len(items), input_ids.shape[1], hidden.shape[-1])
        out[:, :length] = hidden
        return out

    #: items per length bucket when many are encoded at once (a full softmax, evaluation, a cache fill)
    length_bucket: int = 128

    def pooled_features(self, items: torch.Tensor) -> torch.Tensor:
        """Pooled features [k, H] of `items`. Many items are encoded in buckets of similar text length, each
        cut to its own longest text: padding positions still run through every layer's linear maps, and a
        catalogue's texts are mostly shorter than the longest (ML-100k: 20 tokens on average, 32 at most),
        so this saves a third of the work or more. Same values (padding is masked), other float rounding."""
        if len(items) <= self.length_bucket:
            return self._pooled_bucket(items)
        order = self._by_length(items)
        pooled = torch.cat([self._pooled_bucket(items[order[s:s + self.length_bucket]])
                            for s in range(0, len(items), self.length_bucket)])
        return pooled[torch.argsort(order)]

    def _by_length(self, items: torch.Tensor) -> torch.Tensor:
        """Positions of `items` sorted by text length (stable)."""
        lengths = self._store().text_inputs(items)["attention_mask"].sum(1)
        return torch.argsort(lengths, stable=True).to(items.device)

    def encoding_order(self, items: torch.Tensor) -> torch.Tensor:
        return items[self._by_length(items)]

    def _pooled_bucket(self, items: torch.Tensor) -> torch.Tensor:
        inputs = self._store().text_inputs(items)
        device = self._device()
        input_ids, attention_mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
        length = max(int(attention_mask.sum(1).max()), 1)  # drop all-padding columns: same result, less work
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        if self.cache_frozen and not self.caches_features:  # a trainable top: cache the bottom's token states
            hidden = self.cached_rows("bottom", items, self._bottom_rows)[:, :length]
        else:
            hidden = self.run_bottom(input_ids, attention_mask)
        hidden = self.run_top(hidden, attention_mask)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return pooled
