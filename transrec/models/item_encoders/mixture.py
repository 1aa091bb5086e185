"""Mixture-of-modality item encoder: each item goes to the encoder of its modality (TransRec).

One forward sends all text items of the batch through the text encoder in one call and all
image items through the image encoder in one call (batching is what makes content encoders
affordable), then scatters the vectors back to their positions. ID-modality and padding items
have no content: zeros, or their ID embedding with `id_embedding=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transrec.data.content import IMAGE, TEXT, ContentStore
from transrec.models.item_encoders.image import ImageItemEncoder
from transrec.models.item_encoders.base import ContentItemEncoder
from transrec.models.item_encoders.text import TextItemEncoder
from transrec.registry import ITEM_ENCODERS


@ITEM_ENCODERS.register("mixture")
class MixtureItemEncoder(ContentItemEncoder):
    """A text and an image sub-encoder (same `dim`), routed per item, plus a learned modality embedding."""

    def __init__(
        self,
        num_items: int,
        dim: int,
        text: dict[str, Any] | None = None,
        image: dict[str, Any] | None = None,
        modality_embedding: bool = True,
        id_embedding: bool = False,
        assets_dir: str | Path | None = None,
    ):
        super().__init__()
        self._init_common(num_items, dim, id_embedding)
        self.text = TextItemEncoder(num_items, dim, **(text or {}), assets_dir=assets_dir)
        self.image = ImageItemEncoder(num_items, dim, **(image or {}), assets_dir=assets_dir)
        # index = modality code (0 pad, 1 text, 2 image, 3 id); only content items receive it
        self.modality_embedding = nn.Embedding(4, dim, padding_idx=0) if modality_embedding else None
        if self.modality_embedding is not None:
            nn.init.normal_(self.modality_embedding.weight, std=0.02)
            with torch.no_grad():
                self.modality_embedding.weight[0].zero_()
        self._config = {"modality_embedding": modality_embedding, "id_embedding": id_embedding}

    def config_kwargs(self) -> dict[str, Any]:
        return {"text": self.text.config_kwargs(), "image": self.image.config_kwargs(), **self._config}

    @property
    def pretrained(self) -> bool:
        return self.text.pretrained or self.image.pretrained

    def load_pretrained_weights(self) -> bool:
        loaded_text = self.text.load_pretrained_weights()
        loaded_image = self.image.load_pretrained_weights()
        return loaded_text or loaded_image

    def export_assets(self, folder: str | Path) -> None:
        """Tokenizer files and image_preprocessing.json, side by side in `folder`."""
        self.text.export_assets(folder)
        self.image.export_assets(folder)

    def build_content_store(self, catalog, on_bad: str = "fail", cache_dir: str | Path | None = None) -> ContentStore:
        return ContentStore(catalog, tokenizer=self.text.tokenizer, text_max_length=self.text.max_length,
                            image_transform=self.image.transform, on_bad=on_bad, cache_dir=cache_dir)

    def set_content(self, store: ContentStore) -> None:
        super().set_content(store)
        self.text.set_content(store)
        self.image.set_content(store)

    @property
    def feature_dim(self) -> int:
        return self.text.feature_dim + self.image.feature_dim

    @property
    def similarity_dim(self) -> int:
        return self.text.similarity_dim + self.image.similarity_dim

    @torch.no_grad()
    def similarity_features(self, items: torch.Tensor, centred: bool = True) -> torch.Tensor:
        """Text features in the first block, image features in the second: each modality keeps its
        encoder's similarity, and a text item and an image item have similarity 0. Centred (and
        reduced) over the catalogue's items of that modality."""
        device = self._device()
        items = items.to(device)
        modality = self._store().modality[items.detach().cpu()].to(device)
        blocks = [(TEXT, self.text), (IMAGE, self.image)]
        widths = [e.similarity_dim if centred else e.feature_dim for _, e in blocks]
        out = torch.zeros(items.shape[0], sum(widths), device=device)
        start = 0
        for (code, encoder), width in zip(blocks, widths):
            pos = (modality == code).nonzero(as_tuple=True)[0]
            if len(pos):
                if centred and encoder._similarity_basis is None:  # fit on this modality's items only
                    encoder.similarity_basis((self._store().modality == code).nonzero(as_tuple=True)[0])
                out[pos, start:start + width] = encoder.similarity_features(items[pos], centred)
            start += width
        return out

    def clear_feature_cache(self) -> None:
        self.text.clear_feature_cache()
        self.image.clear_feature_cache()

    def encode_content(self, items: torch.Tensor) -> torch.Tensor:
        device = self._device()
        modality = self._store().modality[items.detach().cpu()].to(device)
        items = items.to(device)
        out = torch.zeros(items.shape[0], self.dim, device=device, dtype=self._dtype())
        for code, encoder in ((TEXT, self.text), (IMAGE, self.image)):
            pos = (modality == code).nonzero(as_tuple=True)[0]
            if len(pos):
                out = out.index_copy(0, pos, encoder(items[pos]).to(out.dtype))
        if self.modality_embedding is not None:
            content = ((modality == TEXT) | (modality == IMAGE)).unsqueeze(-1).to(out.dtype)
            out = out + self.modality_embedding(modality) * content
        return out
