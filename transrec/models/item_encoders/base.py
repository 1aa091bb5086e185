"""What every content item encoder shares: padding rows, the optional ID embedding (id+content),
the attached content store, whole-catalogue encoding, and the centred projection."""

from __future__ import annotations

import hashlib
import json
import os
from itertools import chain
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from transrec.errors import ConfigError


class FrozenOutputCache:
    """Per-item outputs of an encoder's frozen part ([n+1, *shape] rows plus a `filled` mask), valid for one key.

    The key (`fingerprint`) is cheap and checked on every use: the device, the attached content store and,
    for each frozen tensor, its identity, storage and in-place version counter, so new weights (load_state_dict,
    an in-place edit, a copy of the model) or new content make the cache start over; it is never reused.
    A full cache is also written to disk as a safetensors file named by a sha256 `digest` of the encoder's
    config, the frozen tensors' values and the content, and read back (memory-mapped) by any encoder whose
    digest is the same: a later run of the same frozen bottom over the same items skips the fill.
    """

    def __init__(self) -> None:
        self.values: torch.Tensor | None = None
        self.filled: torch.Tensor | None = None
        self.fingerprint: tuple | None = None
        self.path: Path | None = None  # where the full cache lives on disk (None: not persisted)
        self.digest: str | None = None  # the disk key, computed once per fingerprint
        self.mapped = False  # values are the (read-only) memory map of `path`
        self.loaded = False  # values came from disk

    def reset(self, fingerprint: tuple | None = None) -> None:
        self.values = self.filled = self.path = self.digest = None
        self.mapped = self.loaded = False
        self.fingerprint = fingerprint

    @property
    def num_filled(self) -> int:
        return int(self.filled.sum()) if self.filled is not None else 0

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size() if self.values is not None else 0


class ContentItemEncoder(nn.Module):
    """Shared behaviour of the text / image / mixture encoders.

    Subclasses implement `encode_content(items) -> [k, dim]` for non-padding item indices and keep
    their constructor kwargs in `self._config`; this class adds padding rows, the optional ID
    embedding (the `id+content` option), the attached store and the whole-catalog encoding.
    """

    content: Any = None

    def _init_common(self, num_items: int, dim: int, id_embedding: bool) -> None:
        self.num_items, self.dim = num_items, dim
        self.id_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0) if id_embedding else None
        if self.id_embedding is not None:
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()

    def add_id_embedding(self) -> None:
        """Turn a content-only encoder into id+content for the attached items: a new ID vector per
        item, zero-initialised so the model starts exactly where the content alone put it (transfer
        fine-tuning: the content is the prior, the IDs learn what the target's data adds)."""
        n = self._store().num_items
        self.id_embedding = nn.Embedding(n + 1, self.dim, padding_idx=0).to(self._device())
        nn.init.zeros_(self.id_embedding.weight)
        self.num_items = n
        self._config["id_embedding"] = True

    def config_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable constructor kwargs (without num_items, dim and assets_dir)."""
        return dict(self._config)

    def set_content(self, store) -> None:
        """Attach the content to encode (kept out of the state dict: it is data, not weights)."""
        if self.id_embedding is not None and store.num_items != self.num_items:
            raise ConfigError(f"id_embedding needs the {self.num_items} training items, but the content store has "
                              f"{store.num_items}; encode new items with a content-only encoder")
        self.content = store  # a plain attribute: not a parameter or buffer, so never saved

    def _store(self):
        if self.content is None:
            raise ConfigError(f"{type(self).__name__} has no content; call set_content(store) first")
        return self.content

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ------------------------------------------------------------ caches of frozen outputs

    #: `persist_cache=False` keeps the frozen-output caches in memory only (no safetensors file)
    persist_cache: bool = True

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that do not train (their outputs may be cached); subclasses say which."""
        return []

    def frozen_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) of every parameter and buffer of the frozen modules, in state-dict order."""
        frozen = {id(t) for m in self.frozen_modules() for t in chain(m.parameters(), m.buffers())}
        return [(n, t) for n, t in chain(self.named_parameters(), self.named_buffers()) if id(t) in frozen]

    def _cache_fingerprint(self, device: torch.device) -> tuple:
        """Cheap, checked every step: parameters by identity, storage and version (in-place edits bump it);
        buffers by identity and storage only (DDP re-broadcasts them in place every step; the frozen parts
        stay in eval mode, so their BatchNorm statistics never change; new values come through
        load_state_dict, which clears the caches)."""
        params = {id(p) for p in self.parameters()}
        tensors = tuple((id(t), t.data_ptr(), t._version if id(t) in params else 0) for _, t in self.frozen_tensors())
        return (str(device), id(self._store()), tensors)

    def _cache_digest(self, name: str) -> str:
        """sha256 of what a cache's rows depend on: encoder class and config, frozen values, content."""
        h = hashlib.sha256()
        config = {k: v for k, v in self._config.items() if k not in ("id_embedding",)}
        device = self._device().type  # values computed on another kind of device (or under autocast) differ
        numerics = [device, str(self._dtype()), torch.is_autocast_enabled(device)]
        h.update(json.dumps([type(self).__name__, name, config, numerics], sort_keys=True, default=str).encode())
        for tname, t in self.frozen_tensors():
            t = t.detach().cpu().contiguous()
            h.update(f"{tname}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        h.update(self._content_digest().encode())
        return h.hexdigest()[:40]

    def _content_digest(self) -> str:
        """Digest of the attached content as this encoder reads it (subclasses: token ids / image files)."""
        raise NotImplementedError

    def _caches(self) -> dict[str, FrozenOutputCache]:
        caches = self.__dict__.get("_frozen_caches")
        if caches is None:
            caches = self.__dict__["_frozen_caches"] = {}
        return caches

    def frozen_cache(self, name: str) -> FrozenOutputCache:
        """The named cache (created empty on first use)."""
        return self._caches().setdefault(name, FrozenOutputCache())

    def clear_frozen_caches(self) -> None:
        for cache in self._caches().values():
            cache.reset()

    def cached_rows(self, name: str, items: torch.Tensor,
                    compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Rows of `items` (real items) from the per-item cache `name`; `compute(new_items)` runs (without
        autograd) once for the items not cached yet. The cache starts over whenever its key changes."""
        device = self._device()
        items = items.to(device)
        cache = self.frozen_cache(name)
        fingerprint = self._cache_fingerprint(device)
        if cache.fingerprint != fingerprint:
            cache.reset(fingerprint)
            self._load_cache(name, cache)
        n = self._store().num_items + 1
        if cache.filled is None:
            cache.filled = torch.zeros(n, dtype=torch.bool, device=device)
        todo = ~cache.filled[items]
        if bool(todo.any()):
            new = torch.unique(items[todo])
            with torch.no_grad():
                rows = compute(new).detach()
            if cache.values is None:
                cache.values = rows.new_zeros(n, *rows.shape[1:])
            elif cache.mapped:
                cache.values, cache.mapped = cache.values.clone(), False
            cache.values[new] = rows.to(cache.values.dtype)
            cache.filled[new] = True
            if self.persist_cache and cache.num_filled == n - 1:
                self._save_cache(name, cache)
        return cache.values[items]

    def _cache_file(self, name: str, cache: FrozenOutputCache) -> Path | None:
        root = getattr(self._store(), "cache_dir", None)
        if not self.persist_cache or root is None:
            return None
        if cache.digest is None:
            cache.digest = self._cache_digest(name)
        return Path(root) / "frozen" / f"{type(self).__name__.lower()}-{name}-{cache.digest}.safetensors"

    def _load_cache(self, name: str, cache: FrozenOutputCache) -> None:
        path = self._cache_file(name, cache)
        if path is None or not path.is_file():
            return
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            values = load_file(str(path))["values"]
        except (OSError, KeyError, SafetensorError):
            return  # unreadable or foreign file: recompute (and overwrite it once full)
        n = self._store().num_items + 1
        if values.shape[0] != n:
            return
        device = self._device()
        cache.values = values if device.type == "cpu" else values.to(device)
        cache.mapped = device.type == "cpu"
        cache.filled = torch.ones(n, dtype=torch.bool, device=device)
        cache.filled[0] = False
        cache.path, cache.loaded = path, True

    def _save_cache(self, name: str, cache: FrozenOutputCache) -> None:
        """Write the full cache (atomically: a temporary file, then a rename; ranks may race harmlessly)."""
        path = self._cache_file(name, cache)
        if path is None or path.is_file():
            cache.path = path
            return
        from safetensors.torch import save_file

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            save_file({"values": cache.values.detach().cpu().contiguous()}, str(tmp),
                      metadata={"encoder": type(self).__name__, "cache": name})
            os.replace(tmp, path)
            cache.path = path
        except OSError:  # a read-only or full disk costs the next run a fill, nothing else
            cache.path = None

    # ------------------------------------------------------------ pooled features and their cache

    def pooled_features(self, items: torch.Tensor) -> torch.Tensor:
        """[k] item indices -> the backbone's pooled output [k, h] (before the projection)."""
        raise NotImplementedError

    @property
    def caches_features(self) -> bool:
        """Nothing below the projection trains and caching is on: keep the pooled vector per item, so a
        training step costs a gather plus the projection (DESIGN.md, "Caching content encoders")."""
        return bool(getattr(self, "cache_frozen", False)) and getattr(self, "trainable_blocks", -1) == 0

    def clear_feature_cache(self) -> None:
        """Drop every cache of frozen outputs (pooled vectors, bottom outputs) and the similarity basis."""
        self.clear_frozen_caches()
        self._similarity_basis = None
        self._recent_features = None

    def content_features(self, items: torch.Tensor) -> torch.Tensor:
        """Pooled features of `items` (real items, no padding); read from / written to the per-item
        cache when the encoder is frozen up to the projection."""
        if not self.caches_features:
            return self.pooled_features(items)
        return self.cached_rows("pooled", items, self.pooled_features)

    def encode_content(self, items: torch.Tensor) -> torch.Tensor:
        features = self.content_features(items)
        if not self.caches_features and torch.is_grad_enabled():  # a training step
            self._remember_features(items, features)
        return self.projection(features)

    #: pooled features computed in this training step, i.e. since the weights last changed ([items], [features],
    #: weights' key): the residual's similarity reads them instead of running the encoder over the same items again
    _recent_features: tuple[list[torch.Tensor], list[torch.Tensor], tuple] | None = None

    def _weights_key(self) -> tuple:
        """Changes whenever a trainable weight is updated in place (an optimizer step) or the mode changes."""
        return (self.training, tuple((id(p), p._version) for p in self.parameters() if p.requires_grad))

    def _remember_features(self, items: torch.Tensor, features: torch.Tensor) -> None:
        key = self._weights_key()
        if self._recent_features is None or self._recent_features[2] != key:
            self._recent_features = ([], [], key)
        self._recent_features[0].append(items.detach())
        self._recent_features[1].append(features.detach())

    def _remembered_features(self, items: torch.Tensor) -> torch.Tensor | None:
        """Features of `items` computed with the current weights, if every one of them is remembered."""
        recent = self._recent_features
        if recent is None or recent[2] != self._weights_key():
            return None
        known, order = torch.sort(torch.cat(recent[0]))
        pos = torch.searchsorted(known, items).clamp(max=len(known) - 1)
        return torch.cat(recent[1])[order[pos]] if bool((known[pos] == items).all()) else None

    @property
    def feature_dim(self) -> int:
        return self.projection.in_features

    #: (mean, top principal directions) of the attached catalogue's pooled features, computed on first use
    _similarity_basis: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def similarity_features(self, items: torch.Tensor, centred: bool = True) -> torch.Tensor:
        """[k] item indices (0 = padding) -> unit-norm features, zeros for padding: the encoder's own
        similarity space (`content_residual` and the training-free heuristics).

        `centred=False`: the plain pooled features (the heuristics: what a user would try). `centred=True`:
        centred on the attached catalogue's mean and reduced to its top `SIMILARITY_DIM` principal
        directions. Centring matters because pooled features share a large common direction (ReLU CNN
        features have cosine ~0.9 for any pair), which would add a near-constant bonus to every item of
        the last item's modality; the reduction keeps the residual cheap in a full softmax over many
        items (a [positions x items x dims] product) while keeping the catalogue's main similarity axes."""
        items = items.to(self._device())
        real = (items > 0).nonzero(as_tuple=True)[0]
        feats = None
        if len(real):
            feats = self._remembered_features(items[real])
            feats = (feats if feats is not None else self.content_features(items[real])).float()
        if not centred:
            out = torch.zeros(items.shape[0], self.feature_dim, device=items.device)
            if feats is not None:
                out[real] = F.normalize(feats, dim=-1)
            return out
        mean, basis = self.similarity_basis()
        out = torch.zeros(items.shape[0], basis.shape[1], device=items.device)
        if feats is not None:
            out[real] = F.normalize((feats - mean.to(feats.device)) @ basis.to(feats.device), dim=-1)
        return out

    @property
    def similarity_dim(self) -> int:
        return min(SIMILARITY_DIM, self.feature_dim)

    @torch.no_grad()
    def similarity_basis(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [h], directions [h, similarity_dim]) over `items` (default: the whole attached catalogue)."""
        if self._similarity_basis is None:
            if items is None:
                items = torch.arange(1, self._store().num_items + 1)
            feats = torch.cat([self.content_features(items[s:s + 256]).float() for s in range(0, len(items), 256)])
            self._similarity_basis = principal_basis(feats, self.similarity_dim)
        return self._similarity_basis

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """[k] distinct item indices -> [k, dim]; index 0 (padding) gives zeros."""
        items = items.to(self._device())
        real = items > 0
        out = torch.zeros(items.shape[0], self.dim, device=items.device, dtype=self._dtype())
        if bool(real.any()):
            pos = real.nonzero(as_tuple=True)[0]
            out = out.index_copy(0, pos, self.encode_content(items[pos]).to(out.dtype))
        if self.id_embedding is not None:
            out = out + self.id_embedding(items)
        return out

    def all_items(self, batch_size: int = 256) -> torch.Tensor:
        """Every item of the attached store, [n+1, dim] with row 0 = zeros, encoded in batches."""
        device = self._device()
        order = self.encoding_order(torch.arange(1, self._store().num_items + 1, device=device))
        chunks = [self(order[s:s + batch_size]) for s in range(0, len(order), batch_size)]
        out = torch.zeros(len(order) + 1, self.dim, device=device, dtype=chunks[0].dtype if chunks else None)
        return out.index_copy(0, order, torch.cat(chunks)) if chunks else out

    def encoding_order(self, items: torch.Tensor) -> torch.Tensor:
        """`items` in the order to encode them in batches (text: by length, so a batch holds little padding)."""
        return items


#: dimensions kept of the centred pooled features for the residual similarity (per modality)
SIMILARITY_DIM = 64


def principal_basis(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and top-k principal directions [h, k] of `features` [n, h]. With fewer than k items, the
    missing directions are zero columns (they add nothing to a cosine), so the width is always k."""
    mean = features.mean(0)
    centred = features - mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    basis = vh[:k].T
    if basis.shape[1] < k:
        basis = torch.cat([basis, basis.new_zeros(basis.shape[0], k - basis.shape[1])], 1)
    return mean, basis.contiguous()


class CenteredLinear(nn.Linear):
    """`W (x - c) + b` with a learned centre `c` (UniSRec's parametric whitening).

    Backbone features of different items share a large common component (random tiny encoders
    map every text to nearly the same vector; pretrained ones have a strong mean direction). Left
    in, it swamps the differences the recommender must learn from; `fit_centres` sets `c` to the
    catalogue mean before training."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.center = nn.Parameter(torch.zeros(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - self.center.to(x.dtype))


@torch.no_grad()
def fit_centres(encoder: nn.Module, batch_size: int = 256) -> None:
    """Set every `CenteredLinear` centre in `encoder` to the mean of its inputs over the attached catalogue."""
    layers = [m for m in encoder.modules() if isinstance(m, CenteredLinear)]
    if not layers:
        return
    totals: dict[int, list] = {id(m): [0.0, 0] for m in layers}

    def record(module, args):
        x = args[0].detach().float()
        totals[id(module)][0] = totals[id(module)][0] + x.sum(0)
        totals[id(module)][1] += x.shape[0]

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    was_training = encoder.training
    encoder.eval()
    try:
        encoder.all_items(batch_size)
    finally:
        for hook in hooks:
            hook.remove()
        encoder.train(was_training)
    for m in layers:
        total, count = totals[id(m)]
        if count:
            m.center.copy_((total / count).to(m.center.dtype))  # the hook saw x before centring
