"""Recommenders: the Hub-shareable units every trainer, evaluator and CLI command works with.

Contract (DESIGN.md): `encode_items(items) -> [..., d]`, `encode_users(batch) -> [b, d]` (the
user state after the last real item), `score(users, items) -> [b, n]`, plus
`all_item_vectors() -> [n+1, d]` (row 0 = padding) for full softmax and full ranking.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import contextlib
import math

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_file
from torch import nn

import transrec.models.item_encoders  # noqa: F401  (registers item encoders)
import transrec.models.user_encoders  # noqa: F401  (registers user encoders)
from transrec.errors import CheckpointError, ConfigError
from transrec.registry import ITEM_ENCODERS, USER_ENCODERS

WEIGHTS_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth")  # refused unless allow_pickle
HUB_TAGS = ["transrec", "recommendation", "sequential-recommendation"]


class StrictSafetensorsMixin(PyTorchModelHubMixin):
    """Loads weights from `model.safetensors` only, strictly: no pickle, no silent key mismatch."""

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision=None, cache_dir=None, force_download=False,
                         local_files_only=False, token=None, map_location: str = "cpu", allow_pickle: bool = False,
                         **model_kwargs):
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.is_file():
                state = load_pickled_weights(Path(model_id), allow_pickle, map_location)
                load_state_strict(model, upgrade_state_dict(state, model), model_id)
                return model
        else:
            from huggingface_hub import hf_hub_download

            weights = Path(hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, revision=revision,
                                           cache_dir=cache_dir, force_download=force_download, token=token,
                                           local_files_only=local_files_only))
        if not weights.is_file():
            raise CheckpointError(f"{model_id}: no {WEIGHTS_NAME} (transrec loads safetensors weights only)")
        try:
            state = load_file(str(weights), device=map_location)
        except Exception as err:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{weights}: cannot read safetensors file: {err}") from None
        load_state_strict(model, upgrade_state_dict(state, model), str(weights))
        return model


# Tensor names that earlier transrec versions wrote, and what they are called now. SASRec's attention
# became its own sublayer (`attn`), so that model patches can hook it.
LEGACY_NAMES = [(re.compile(r"^(user_encoder\.blocks\.\d+\.)(qkv|proj)\."), r"\1attn.\2.")]
#: tensors added after checkpoints were shared; a checkpoint without them loads with their zero default
CONTENT_PRIOR_NAMES = ("content_prior_coef", "content_prior_bias")
#: the content prior's memory of source items (present only when the config's content_prior_memory > 0)
MEMORY_NAMES = ("content_prior_keys", "content_prior_residuals", "content_prior_temperature")


def upgrade_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename tensors saved under an earlier version's names, where the model expects the new name
    (checkpoints from before a refactoring keep loading; anything else is left for the strict check)."""
    expected = set(model.state_dict())
    out = {}
    for name, tensor in state.items():
        new = name
        if name not in expected:
            for pattern, replacement in LEGACY_NAMES:
                candidate = pattern.sub(replacement, name)
                if candidate in expected and candidate not in state:
                    new = candidate
                    break
        out[new] = tensor
    for name in CONTENT_PRIOR_NAMES:  # saved before the content prior existed: no prior (zeros)
        if name in expected and name not in out:
            out[name] = model.state_dict()[name].clone()
    return out


def load_pickled_weights(folder: Path, allow_pickle: bool, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """A folder's pickled state dict, only when the caller said so: unpickling a stranger's file can run
    any code. Even then `torch.load(weights_only=True)`, which unpickles tensors and containers only."""
    found = [folder / name for name in PICKLE_NAMES if (folder / name).is_file()]
    if not found:
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} (transrec loads safetensors weights only)")
    if not allow_pickle:
        raise CheckpointError(
            f"{found[0]}: pickled weights and no {WEIGHTS_NAME}; transrec does not unpickle files (unpickling can "
            f"run code hidden in them). If you trust the file, pass allow_pickle=True to load_model "
            f"(torch.load with weights_only=True) and save the model again as safetensors")
    try:
        state = torch.load(found[0], map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError for forbidden globals, RuntimeError/EOFError for bad files
        raise CheckpointError(f"{found[0]}: cannot load with torch.load(weights_only=True): {err}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{found[0]}: not a state dict (a mapping of tensor names to tensors)")
    return state


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`load_state_dict(strict=True)` with errors that name the offending tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:5])}")
    if wrong:
        problems.append(f"shape mismatch: {'; '.join(wrong[:5])}")
    if problems:
        raise CheckpointError(f"{where}: checkpoint does not match the model config ({'; '.join(problems)})")
    model.load_state_dict(state, strict=True)


SCORES = ("dot", "cosine")


_DIGITS = re.compile(r"\d+")


def lexical_texts(catalog, numbers: bool = True) -> list[str | None]:
    """The texts the zero-shot lexical term compares, items 1..n: text items' own; image items' none
    (they are ranked from their pixels, never from a caption). `numbers=False` drops digit runs (years,
    counts), whose matches may mean something in one catalogue only (same-year movies rated together)."""
    texts = [t if m == "text" else None for t, m in zip(catalog.text[1:], catalog.modality[1:])]
    return texts if numbers else [None if t is None else _DIGITS.sub(" ", t) for t in texts]


class SequentialRecommender(nn.Module, StrictSafetensorsMixin, library_name="transrec", tags=HUB_TAGS):
    """Item encoder + user encoder + scoring, with tied input/output item vectors.

    Scoring (`score`): `dot` (user state . item vector) or `cosine` (both unit-normalised, times a
    learned scale). `content_residual` (content models) adds the item encoder's own similarity to
    the score: learned weight x cos(pooled features of the last item, pooled features of the
    candidate). A new domain's items then keep the pretrained encoder's neighbourhoods, which a
    projection trained on one catalogue only partly preserves. Both are built into the vectors
    (users [.., d (+h)], candidates [.., d (+h)]), so every objective and the exact evaluator still
    score by one dot product. Zero-shot ranking (`zero_shot_scoring`) may add a lexical term too:
    `transfer_lexical_weight` x TF-IDF cosine between the last item's text and each text candidate's
    (vocabulary from the catalogue being ranked), the weight chosen on held-out source items: words
    shared by titles/descriptions are a signal a sentence encoder blurs, and it needs no training.
    And a content prior (`transrec.models.content_prior`): `transfer_content_prior_weight` x how
    popular items with this content were in the training domain, a regression stored with the model.
    """

    def __init__(self, num_items: int, user_encoder: str = "sasrec", item_encoder: str = "id", dim: int = 64,
                 max_len: int = 50, encoder_args: dict[str, Any] | None = None,
                 item_encoder_args: dict[str, Any] | None = None, model_type: str = "sequential",
                 mask_token: bool = False, score: str = "dot", content_residual: bool = False,
                 score_scale: float = 10.0, residual_weight: float = 1.0,
                 transfer_residual_weight: float | None = None, transfer_lexical_weight: float | None = None,
                 transfer_content_prior_weight: float | None = None, lexical_numbers: bool = True,
                 content_prior_memory: int = 0):
        super().__init__()
        if score not in SCORES:
            raise ConfigError(f"model.score must be one of {', '.join(SCORES)}, got {score!r}")
        self.num_items = num_items
        self.max_len = max_len
        self.dim = dim
        self.score_mode = score
        # cosine scoring: a learned logit scale (CLIP's temperature), kept as a log
        self.log_scale = nn.Parameter(torch.tensor(math.log(score_scale))) if score == "cosine" else None
        # masked-item pretraining: the learned [MASK] input vector (only then, so DDP sees no unused parameter)
        self.mask_vector = nn.Parameter(torch.randn(dim) * 0.02) if mask_token else None
        self.item_encoder = ITEM_ENCODERS.create(item_encoder, num_items=num_items, dim=dim,
                                                 **(item_encoder_args or {}))
        self.user_encoder = USER_ENCODERS.create(user_encoder, dim=dim, max_len=max_len, **(encoder_args or {}))
        if content_residual and mask_token:
            raise ConfigError("model.content_residual reads the item at each position, which masked-item training "
                              "hides; use it with next-item training")
        if content_residual and not hasattr(self.item_encoder, "similarity_features"):
            raise ConfigError("model.content_residual needs a content item encoder (text, image, mixture)")
        self.residual_weight = nn.Parameter(torch.tensor(float(residual_weight))) if content_residual else None
        #: the residual weight for zero-shot ranking of new items, chosen on held-out source items
        #: (`train.transfer_calibration`); None: the learned weight
        self.transfer_residual_weight = transfer_residual_weight
        #: zero-shot ranking: the weight of the lexical similarity to the last item (None/0: unused)
        self.transfer_lexical_weight = transfer_lexical_weight
        self._lexical_on = False  # inside zero_shot_scoring with a lexical weight
        self._lexical: tuple[object, torch.Tensor] | None = None  # (content store, its TF-IDF rows)
        self.lexical_numbers = lexical_numbers  # the lexical term matches digit runs too
        #: zero-shot ranking: the weight of the content prior (None/0: unused)
        self.transfer_content_prior_weight = transfer_content_prior_weight
        self._prior_on = False  # inside zero_shot_scoring with a content prior weight
        if self.is_content_model:  # the content prior's regression, fit after training (content_prior.py)
            self.register_buffer("content_prior_coef", torch.zeros(self.item_encoder.feature_dim))
            self.register_buffer("content_prior_bias", torch.zeros(()))
            if content_prior_memory:  # its memory of the source's items (content_prior.py), sized by the config
                self.set_content_prior_memory(torch.zeros(content_prior_memory, self.item_encoder.feature_dim),
                                              torch.zeros(content_prior_memory), 1.0)
        if hasattr(self.item_encoder, "config_kwargs") and isinstance(self._hub_mixin_config, dict):
            # content encoders resolve their backbone configs once; save those, so loading never downloads
            self._hub_mixin_config["item_encoder_args"] = self.item_encoder.config_kwargs()

    @property
    def is_content_model(self) -> bool:
        return hasattr(self.item_encoder, "set_content")

    @property
    def causal(self) -> bool:
        return bool(getattr(self.user_encoder, "causal", True))

    def attach_content(self, store) -> None:
        """Give a content item encoder the items it encodes (a new domain's items for transfer)."""
        if not self.is_content_model:
            raise TypeError("attach_content needs a content item encoder (text, image, mixture)")
        self.item_encoder.set_content(store)
        self.num_items = store.num_items
        self._sync_hub_config()

    def set_dropout(self, p: float) -> None:
        """The user encoder's dropout rate: a training setting, not a weight, so a fine-tune on a few
        users can regularise more than its source did."""
        if not 0 <= p < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {p}")
        for module in self.user_encoder.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(getattr(module, "dropout", None), float):  # attention / GRU rates kept as floats
                module.dropout = p
        encoder_args = self._hub_mixin_config.get("encoder_args") if isinstance(self._hub_mixin_config, dict) else None
        if isinstance(encoder_args, dict) and "dropout" in encoder_args:
            encoder_args["dropout"] = p

    def add_item_ids(self) -> None:
        """id+content on the attached items (see `ContentItemEncoder.add_id_embedding`)."""
        if not self.is_content_model or self.item_encoder.content is None:
            raise TypeError("add_item_ids needs a content item encoder with its content attached")
        self.item_encoder.add_id_embedding()
        self._sync_hub_config()

    @property
    def text_item_encoder(self) -> nn.Module | None:
        """The text encoder of a text or mixture item encoder (None: no text)."""
        text = getattr(self.item_encoder, "text", self.item_encoder)
        return text if hasattr(text, "set_trainable_blocks") else None

    def set_text_trainable_blocks(self, blocks: int) -> None:
        """How many top layers of the text encoder train from now on (a training setting like dropout:
        a model trained frozen can have its top block fine-tuned, in-domain or on a target)."""
        text = self.text_item_encoder
        if text is None:
            raise ConfigError("model.text_trainable_blocks: this model has no text item encoder")
        if text.trainable_blocks != blocks:
            text.set_trainable_blocks(blocks)
            self._sync_hub_config()

    def set_transfer_residual_weight(self, weight: float | None) -> None:
        self.transfer_residual_weight = None if weight is None else float(weight)
        if isinstance(self._hub_mixin_config, dict):
            self._hub_mixin_config["transfer_residual_weight"] = self.transfer_residual_weight

    def set_transfer_lexical_weight(self, weight: float | None) -> None:
        self.transfer_lexical_weight = None if weight is None else float(weight)
        if isinstance(self._hub_mixin_config, dict):
            self._hub_mixin_config["transfer_lexical_weight"] = self.transfer_lexical_weight

    def set_transfer_content_prior_weight(self, weight: float | None) -> None:
        self.transfer_content_prior_weight = None if weight is None else float(weight)
        if isinstance(self._hub_mixin_config, dict):
            self._hub_mixin_config["transfer_content_prior_weight"] = self.transfer_content_prior_weight

    @contextlib.contextmanager
    def zero_shot_scoring(self):
        """Rank new items as calibrated for transfer: the calibrated residual weight (if any), the
        lexical term and the content prior (each if it has a weight); the learned weight comes back afterwards."""
        learned = None
        if self.residual_weight is not None and self.transfer_residual_weight is not None:
            learned = self.residual_weight.detach().clone()
            with torch.no_grad():
                self.residual_weight.fill_(self.transfer_residual_weight)
        self._lexical_on = bool(self.transfer_lexical_weight) and self.is_content_model
        self._prior_on = bool(self.transfer_content_prior_weight) and self.is_content_model
        try:
            yield self
        finally:
            self._lexical_on = self._prior_on = False
            if learned is not None:
                with torch.no_grad():
                    self.residual_weight.copy_(learned)

    def _lexical_features(self, items: torch.Tensor) -> torch.Tensor:
        """TF-IDF rows of the attached catalogue's text items (image items: 0), built once per store."""
        store = self.item_encoder.content
        if self._lexical is None or self._lexical[0] is not store:
            from transrec.models.heuristics import tfidf_features

            texts = lexical_texts(store.catalog, self.lexical_numbers)
            self._lexical = (store, tfidf_features(texts).to(self._device()))
        return self._lexical[1][items]

    def clear_content_prior_memory(self) -> None:
        """Drop the content prior's memory (the regression alone predicts)."""
        for name in MEMORY_NAMES:
            self._buffers.pop(name, None)
        if isinstance(self._hub_mixin_config, dict):
            self._hub_mixin_config["content_prior_memory"] = 0

    def set_content_prior_memory(self, keys: torch.Tensor, residuals: torch.Tensor, temperature: float) -> None:
        """The content prior's memory of source items: their features [m, h], residuals [m], kernel temperature."""
        if not len(keys):
            return self.clear_content_prior_memory()
        device = self.content_prior_coef.device
        self.register_buffer("content_prior_keys", keys.to(device, torch.float32))
        self.register_buffer("content_prior_residuals", residuals.to(device, torch.float32))
        self.register_buffer("content_prior_temperature", torch.tensor(float(temperature), device=device))
        if isinstance(self._hub_mixin_config, dict):
            self._hub_mixin_config["content_prior_memory"] = len(keys)

    def content_prior(self, items: torch.Tensor) -> torch.Tensor:
        """The content prior's predicted standardised log count of `items` (any shape; padding: 0)."""
        from transrec.models.content_prior import memory_correction, raw_features

        features = raw_features(self, items)
        prior = features @ self.content_prior_coef + self.content_prior_bias
        keys = getattr(self, "content_prior_keys", None)
        if keys is not None:
            flat = features.reshape(-1, features.shape[-1])
            prior = prior + memory_correction(flat, keys, self.content_prior_residuals,
                                              float(self.content_prior_temperature)).reshape(prior.shape)
        return prior * (items > 0).to(prior.device, prior.dtype)

    def _sync_hub_config(self) -> None:
        """Keep the saved config.json in step with the items and item encoder the model has now."""
        if isinstance(self._hub_mixin_config, dict):
            self._hub_mixin_config["num_items"] = self.num_items
            self._hub_mixin_config["item_encoder_args"] = self.item_encoder.config_kwargs()

    def export_assets(self, folder: Path) -> None:
        """Tokenizer files / image preprocessing config, so a checkpoint can encode new items."""
        if hasattr(self.item_encoder, "export_assets"):
            self.item_encoder.export_assets(folder)

    #: encode each distinct item of a batch once (False = once per position, the naive way; benchmarks only)
    encode_distinct: bool = True

    #: (sorted item indices, their vectors) encoded once for the current training batch
    _batch_vectors: tuple[torch.Tensor, torch.Tensor] | None = None

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        """Candidate vectors for item indices of any shape (what user states are scored against)."""
        return self.candidate_vectors(self.input_vectors(items), items)

    def candidate_vectors(self, vectors: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Item-encoder vectors -> scoring vectors (unit norm for cosine; + the residual's features)."""
        if self.score_mode == "cosine":
            vectors = F.normalize(vectors, dim=-1)
        if self.residual_weight is not None:
            vectors = torch.cat([vectors, self._similarity_features(items).to(vectors.dtype)], -1)
        if self._lexical_on:
            vectors = torch.cat([vectors, self._lexical_features(items).to(vectors.dtype)], -1)
        if self._prior_on:
            vectors = torch.cat([vectors, self.content_prior(items).unsqueeze(-1).to(vectors.dtype)], -1)
        return vectors

    def user_states(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """User-encoder states [.., d] after items [..] -> scoring vectors (see `candidate_vectors`)."""
        if self.score_mode == "cosine":
            hidden = self.log_scale.exp() * F.normalize(hidden, dim=-1)
        if self.residual_weight is not None:
            last = self._similarity_features(items).to(hidden.dtype)
            hidden = torch.cat([hidden, self.residual_weight.to(hidden.dtype) * last], -1)
        if self._lexical_on:
            hidden = torch.cat([hidden, self.transfer_lexical_weight * self._lexical_features(items).to(hidden.dtype)], -1)
        if self._prior_on:
            hidden = torch.cat([hidden, hidden.new_full((*hidden.shape[:-1], 1), self.transfer_content_prior_weight)], -1)
        return hidden

    def _similarity_features(self, items: torch.Tensor) -> torch.Tensor:
        """Unit-norm pooled encoder features (no gradient: the residual keeps the encoder's own space)."""
        flat = items.reshape(-1)
        return self.item_encoder.similarity_features(flat).reshape(*items.shape, -1)

    def input_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item-encoder vectors for item indices of any shape; each distinct item is encoded once (per
        batch: items already encoded for this training batch are reused, e.g. the objective's targets)."""
        if not self.encode_distinct:
            return self.item_encoder(items.reshape(-1)).reshape(*items.shape, -1)
        unique, inverse = torch.unique(items, return_inverse=True)
        return self._encode_unique(unique)[inverse]

    def _encode_unique(self, unique: torch.Tensor) -> torch.Tensor:
        if self._batch_vectors is None:
            return self.item_encoder(unique)
        known, vectors = self._batch_vectors
        pos = torch.searchsorted(known, unique).clamp(max=len(known) - 1)
        hit = known[pos] == unique
        if bool(hit.all()):
            return vectors[pos]
        out = vectors.new_zeros(len(unique), vectors.shape[-1])
        out = out.index_copy(0, hit.nonzero(as_tuple=True)[0], vectors[pos[hit]])
        miss = (~hit).nonzero(as_tuple=True)[0]
        return out.index_copy(0, miss, self.item_encoder(unique[miss]).to(out.dtype))

    def all_item_vectors(self) -> torch.Tensor:
        """Candidate vectors of every item, [n+1, ..] (row 0: padding)."""
        items = torch.arange(self.num_items + 1, device=self._device())
        vectors = self.item_encoder.all_items() if hasattr(self.item_encoder, "all_items") else self.item_encoder(items)
        return self.candidate_vectors(vectors, items)

    def hidden_states(self, items: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        """[b, L] left-padded item indices -> [b, L, d] hidden states; `masked` positions get the
        [MASK] vector instead of their item's (masked-item models)."""
        vectors = self.input_vectors(items)
        if masked is not None:
            vectors = torch.where(masked.unsqueeze(-1), self.mask_vector.to(vectors.dtype), vectors)
        return self.user_encoder(vectors, items > 0)

    def encode_users(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["items"]
        if self.mask_vector is not None and not self.causal:
            # a masked-item model predicts the next item at an appended [MASK] (as it was trained to)
            items = torch.cat([items, items.new_ones(items.shape[0], 1)], 1)[:, -self.max_len:]
            masked = torch.zeros_like(items, dtype=torch.bool)
            masked[:, -1] = True
            # the appended [MASK] is scored against candidates as if the last real item preceded it
            return self.user_states(self.hidden_states(items, masked)[:, -1], batch["items"][:, -1])
        return self.user_states(self.hidden_states(items)[:, -1], items[:, -1])

    @staticmethod
    def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T

    def forward(self, items: torch.Tensor, targets: torch.Tensor | None = None, objective: nn.Module | None = None,
                masked: torch.Tensor | None = None):
        """Hidden states, or with targets and an objective the training loss over every real position
        (masked-item training: over the positions with a target).

        The loss is computed inside `forward` so that DDP sees the whole graph (gradient sync). The
        distinct items of inputs and targets are encoded once, together: targets are the inputs
        shifted by one, so this halves content-encoder work compared with encoding them apart."""
        if targets is None:
            return self.hidden_states(items, masked)
        if self.encode_distinct:
            known = torch.unique(torch.cat([items.reshape(-1), targets.reshape(-1)]))
            self._batch_vectors = (known, self.item_encoder(known))
        try:
            hidden = self.hidden_states(items, masked)
            mask = targets > 0
            if not self.causal and masked is None:  # a bidirectional encoder saw the whole window: last position only
                mask[:, :-1] = False
            return objective(self, self.user_states(hidden[mask], items[mask]), targets[mask])
        finally:
            self._batch_vectors = None

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class PopularityModel(nn.Module, StrictSafetensorsMixin, library_name="transrec", tags=HUB_TAGS):
    """Most-popular baseline in the same contract: 1-d item vectors log(1 + count), users = 1."""

    def __init__(self, num_items: int, max_len: int = 50, model_type: str = "popularity"):
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        self.register_buffer("counts", torch.zeros(num_items + 1))

    def fit(self, sequences: list[torch.Tensor] | list) -> "PopularityModel":
        counts = torch.zeros(self.num_items + 1)
        for seq in sequences:
            counts += torch.bincount(torch.as_tensor(seq, dtype=torch.long), minlength=self.num_items + 1)[
                : self.num_items + 1].float()
        counts[0] = 0
        self.counts.copy_(counts)
        return self

    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        return torch.log1p(self.counts[items]).unsqueeze(-1)

    def all_item_vectors(self) -> torch.Tensor:
        return self.encode_items(torch.arange(self.num_items + 1, device=self.counts.device))

    def encode_users(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.ones(batch["items"].shape[0], 1, device=self.counts.device)

    @staticmethod
    def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T


MODEL_TYPES: dict[str, type[nn.Module]] = {"sequential": SequentialRecommender, "popularity": PopularityModel}


def build_model(model_cfg, num_items: int, max_len: int, mask_token: bool = False) -> nn.Module:
    """Instantiate the configured model (untrained); `mask_token` for masked-item pretraining."""
    if model_cfg.name == "popularity":
        return PopularityModel(num_items=num_items, max_len=max_len)
    import inspect

    encoder_cls = USER_ENCODERS.get(model_cfg.name)
    accepted = inspect.signature(encoder_cls.__init__).parameters
    options = {k: getattr(model_cfg, k) for k in ("num_layers", "num_heads", "dropout", "dilations",
                                                  "num_repeats", "kernel_size") if k in accepted}
    return SequentialRecommender(num_items=num_items, user_encoder=model_cfg.name,
                                 item_encoder=model_cfg.item_encoder, dim=model_cfg.dim, max_len=max_len,
                                 encoder_args=options, item_encoder_args=item_encoder_args(model_cfg),
                                 mask_token=mask_token, score=model_cfg.score,
                                 content_residual=model_cfg.content_residual,
                                 residual_weight=model_cfg.residual_weight,
                                 lexical_numbers=model_cfg.lexical_numbers)


def item_encoder_args(model_cfg) -> dict[str, Any]:
    """Constructor arguments of the configured item encoder, from the flat `model.*` keys."""
    pooling = None if model_cfg.text_pooling == "auto" else model_cfg.text_pooling
    text = {"model": model_cfg.text_encoder, "pooling": pooling,
            "trainable_blocks": model_cfg.text_trainable_blocks, "max_length": model_cfg.text_max_length,
            "cache_frozen": model_cfg.cache_frozen, "gradient_checkpointing": model_cfg.gradient_checkpointing}
    image = {"model": model_cfg.image_encoder, "trainable_blocks": model_cfg.image_trainable_blocks,
             "cache_frozen": model_cfg.cache_frozen and model_cfg.image_trainable_blocks >= 0,
             "image_size": model_cfg.image_size}
    name = model_cfg.item_encoder
    if name == "id":
        return {}
    if name == "text":
        return {**text, "id_embedding": model_cfg.id_embedding}
    if name == "image":
        return {**image, "id_embedding": model_cfg.id_embedding}
    if name == "mixture":
        return {"text": text, "image": image, "modality_embedding": model_cfg.modality_embedding,
                "id_embedding": model_cfg.id_embedding}
    ITEM_ENCODERS.get(name)  # unknown name -> ConfigError with suggestions
    return {}
