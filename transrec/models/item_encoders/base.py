"""What every content item encoder shares: padding rows, the optional ID embedding (id+content),
the attached content store, whole-catalogue encoding, and the centred projection."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transrec.errors import ConfigError


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

    # ------------------------------------------------------------ pooled features and their cache

    #: pooled, pre-projection features of a fully frozen encoder ([n+1, h]) and which rows are filled
    _features: torch.Tensor | None = None
    _has_features: torch.Tensor | None = None

    def pooled_features(self, items: torch.Tensor) -> torch.Tensor:
        """[k] item indices -> the backbone's pooled output [k, h] (before the projection)."""
        raise NotImplementedError

    @property
    def caches_features(self) -> bool:
        """Nothing below the projection trains and caching is on: keep the pooled vector per item, so a
        training step costs a gather plus the projection (DESIGN.md, "Caching content encoders")."""
        return bool(getattr(self, "cache_frozen", False)) and getattr(self, "trainable_blocks", -1) == 0

    def clear_feature_cache(self) -> None:
        self._features = self._has_features = self._similarity_basis = None

    def content_features(self, items: torch.Tensor) -> torch.Tensor:
        """Pooled features of `items` (real items, no padding); read from / written to the per-item
        cache when the encoder is frozen up to the projection."""
        if not self.caches_features:
            return self.pooled_features(items)
        device = self._device()
        items = items.to(device)
        if self._features is not None and self._features.device != device:
            self.clear_feature_cache()
        if self._has_features is None:
            self._has_features = torch.zeros(self._store().num_items + 1, dtype=torch.bool, device=device)
        todo = ~self._has_features[items]
        if bool(todo.any()):
            new = torch.unique(items[todo])
            with torch.no_grad():
                feats = self.pooled_features(new).detach()
            if self._features is None:
                self._features = feats.new_zeros(len(self._has_features), feats.shape[-1])
            self._features[new] = feats.to(self._features.dtype)
            self._has_features[new] = True
        return self._features[items]

    def encode_content(self, items: torch.Tensor) -> torch.Tensor:
        return self.projection(self.content_features(items))

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
        feats = self.content_features(items[real]).float() if len(real) else None
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
        n = self._store().num_items
        device = self._device()
        chunks = [torch.zeros(1, self.dim, device=device)]
        for start in range(1, n + 1, batch_size):
            chunks.append(self(torch.arange(start, min(start + batch_size, n + 1), device=device)))
        return torch.cat(chunks)


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
