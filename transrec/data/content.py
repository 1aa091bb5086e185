"""Item content as model inputs: tokenised text (once, cached with `datasets`) and lazily loaded images.

A `ContentStore` is built from an `ItemCatalog` and the preprocessing of one item encoder (its
tokenizer and image transform; `encoder.build_content_store(catalog)` wires them). Row 0 is the
padding item everywhere, like in the catalog.

Bad content is reported with the item id: with `on_bad="fail"` a `DataError`, with
`on_bad="placeholder"` an empty text / zero image, recorded once per item in `problems`.
Text-modality items are checked when the store is built; any other item only when an encoder
asks for its text or image (a text-only encoder reads the text of every item it encodes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image, UnidentifiedImageError

from transrec.data.schema import ItemCatalog
from transrec.errors import ConfigError, DataError

PAD, TEXT, IMAGE, ID = 0, 1, 2, 3
MODALITY_CODES = {"pad": PAD, "text": TEXT, "image": IMAGE, "id": ID}
ON_BAD = ("fail", "placeholder")
MAX_REPORTED = 5


def default_cache_dir() -> Path:
    """$TRANSREC_CACHE/content, else ~/.cache/transrec/content."""
    root = os.environ.get("TRANSREC_CACHE")
    return Path(root) / "content" if root else Path.home() / ".cache" / "transrec" / "content"


def _missing(text: str | None) -> bool:
    return text is None or not str(text).strip()


class ContentStore:
    """Model-ready content of every item of a catalog (row 0 = padding).

    `input_ids` / `attention_mask` are LongTensors [n+1, T] for all items (an item without text
    holds the tokenisation of the empty string); images are transformed on demand and kept in a
    small LRU cache, because image tensors at model resolution are too large to hold for all items.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        tokenizer: Any | None = None,
        text_max_length: int = 32,
        image_transform: Callable[[Image.Image], torch.Tensor] | None = None,
        on_bad: str = "fail",
        cache_dir: str | Path | None = None,
        image_cache_size: int = 1024,
    ):
        if on_bad not in ON_BAD:
            raise ConfigError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
        self.catalog = catalog
        self.tokenizer = tokenizer
        self.text_max_length = text_max_length
        self.image_transform = image_transform
        self.on_bad = on_bad
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.image_cache_size = image_cache_size
        self.problems: list[tuple[str, str]] = []
        self._reported: set[tuple[int, str]] = set()
        self._images: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._placeholder: torch.Tensor | None = None
        self._image_digest: str | None = None
        self.modality = torch.tensor([MODALITY_CODES[m] for m in catalog.modality], dtype=torch.long)
        self.has_text = torch.tensor([i > 0 and not _missing(t) for i, t in enumerate(catalog.text)])
        self.tokenized_from_cache = False
        self.input_ids: torch.Tensor | None = None
        self.attention_mask: torch.Tensor | None = None
        if tokenizer is not None:
            bad = [i for i in range(1, len(catalog.modality)) if catalog.modality[i] == "text" and not self.has_text[i]]
            self._bad_text(bad)
            self._tokenize()

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    # ------------------------------------------------------------------------------ text

    def _bad_text(self, items: list[int]) -> None:
        items = [i for i in items if (i, "text") not in self._reported]
        if not items:
            return
        ids = [self.catalog.ids.ids[i] for i in items]
        if self.on_bad == "fail":
            more = f" and {len(ids) - MAX_REPORTED} more" if len(ids) > MAX_REPORTED else ""
            raise DataError(f"empty or missing text for item(s) {', '.join(map(repr, ids[:MAX_REPORTED]))}{more}"
                            " (on_bad='placeholder' encodes them as empty text)")
        for i, key in zip(items, ids):
            self._reported.add((i, "text"))
            self.problems.append((key, "empty or missing text"))

    def _cache_key(self, texts: list[str]) -> str:
        """Hash of everything the token ids depend on, so any change re-tokenises."""
        tok = self.tokenizer
        h = hashlib.sha256()
        h.update(json.dumps([str(getattr(tok, "name_or_path", type(tok).__name__)), len(tok),
                             self.text_max_length, type(tok).__name__]).encode())
        for t in texts:
            h.update(t.encode("utf-8") + b"\x00")
        return h.hexdigest()[:32]

    def _tokenize(self) -> None:
        """Tokenise every item once; the result is an arrow file under `cache_dir` read back next time."""
        from datasets import Dataset
        from datasets.utils import logging as ds_logging

        texts = ["" if _missing(t) else str(t) for t in self.catalog.text]
        key = self._cache_key(texts)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / f"tokens-{key}.arrow"
        self.tokenized_from_cache = path.is_file()
        tok, max_length = self.tokenizer, self.text_max_length

        def encode(batch: dict[str, list]) -> dict[str, list]:
            out = tok(batch["text"], padding="max_length", truncation=True, max_length=max_length)
            return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

        bars = ds_logging.is_progress_bar_enabled()
        ds_logging.disable_progress_bar()  # a one-off step of a few seconds at most; keep logs clean
        try:
            data = Dataset.from_dict({"text": texts}).map(
                encode, batched=True, cache_file_name=str(path), new_fingerprint=key, remove_columns=["text"],
                load_from_cache_file=True,
            )
        finally:
            if bars:
                ds_logging.enable_progress_bar()
        columns = data.with_format("numpy")[:]
        self.input_ids = torch.as_tensor(columns["input_ids"], dtype=torch.long)
        self.attention_mask = torch.as_tensor(columns["attention_mask"], dtype=torch.long)

    def text_inputs(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token rows of `items` ({'input_ids', 'attention_mask'}: LongTensor [k, T], on CPU)."""
        if self.input_ids is None:
            raise ConfigError("this ContentStore has no tokenizer; build it with the text encoder's "
                              "build_content_store()")
        items = items.detach().cpu().long()
        bad = items[(items > 0) & ~self.has_text[items]].unique().tolist()
        if bad:
            self._bad_text(bad)
        return {"input_ids": self.input_ids[items], "attention_mask": self.attention_mask[items]}

    # ----------------------------------------------------------------------------- images

    def _transform(self, image: Image.Image) -> torch.Tensor:
        if self.image_transform is None:
            from torchvision.transforms.functional import to_tensor

            return to_tensor(image)
        return self.image_transform(image)

    def _placeholder_image(self) -> torch.Tensor:
        if self._placeholder is None:  # the transform's output size, from a blank image
            self._placeholder = torch.zeros_like(self._transform(Image.new("RGB", (32, 32))))
        return self._placeholder

    def _load_image(self, index: int) -> torch.Tensor:
        path = self._image_path(index)
        try:
            if path is None:
                raise FileNotFoundError("item has no image path")
            with Image.open(path) as img:
                return self._transform(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            key = self.catalog.ids.ids[index]
            reason = f"cannot read image {str(path) if path else '(none)'}: {err}"
            if self.on_bad == "fail":
                raise DataError(f"item {key!r}: {reason} (on_bad='placeholder' uses a blank image)") from None
            if (index, "image") not in self._reported:
                self._reported.add((index, "image"))
                self.problems.append((key, reason))
            return self._placeholder_image()

    def _image_path(self, index: int) -> Path | None:
        rel = self.catalog.image[index]
        if rel is None:
            return None
        path = Path(rel)
        if not path.is_absolute() and self.catalog.root is not None:
            path = Path(self.catalog.root) / path
        return path

    def image_digest(self) -> str:
        """sha256 of what the transformed images depend on: the transform, `on_bad`, and each item's image
        file (path, size, modification time). Keys caches of image-encoder outputs; computed once per store."""
        if self._image_digest is None:
            h = hashlib.sha256(json.dumps([repr(self.image_transform), self.on_bad]).encode())
            for i in range(1, self.num_items + 1):
                path = self._image_path(i)
                try:
                    st = path.stat() if path is not None else None
                    h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode() if st else b"-\n")
                except OSError:
                    h.update(f"{path}|missing\n".encode())
            self._image_digest = h.hexdigest()
        return self._image_digest

    def image_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """Transformed images of `items`: FloatTensor [k, 3, H, W] (CPU); padding rows are zeros."""
        rows = []
        for i in items.detach().cpu().tolist():
            if i == 0:
                rows.append(None)
                continue
            img = self._images.get(i)
            if img is None:
                img = self._load_image(i)
                self._images[i] = img
                if len(self._images) > self.image_cache_size:
                    self._images.popitem(last=False)
            else:
                self._images.move_to_end(i)
            rows.append(img)
        shape = next((r.shape for r in rows if r is not None), None)
        if shape is None:
            shape = self._placeholder_image().shape
        return torch.stack([torch.zeros(shape) if r is None else r for r in rows]) if rows else torch.zeros(0, *shape)
