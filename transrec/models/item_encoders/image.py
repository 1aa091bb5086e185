"""Image item encoder: a timm backbone over each item's image, pooled by timm, then projected.

`trainable_blocks=k` trains the top k entries of the model's block list (ViT: `blocks`,
EfficientNet: the stages in `blocks`, others: `stages` / `layers` / ResNet `layer1..4`) plus
everything after them (final norm / head conv) and the projection. The frozen bottom runs under
`no_grad`: the whole backbone is called under `no_grad` and a pre-hook on the first trainable
block switches autograd back on — one code path for any timm model whose blocks run in order,
without re-implementing each architecture's forward.

`cache_frozen=True` keeps, per item, what the frozen part produces (base class caches): with k=0 the
pooled vector; with k>0 the feature map that enters the first trainable block (EfficientNet: the
[C, h, w] map before the top stage; ViT: the token states before the top blocks), taken by a pre-hook
that stops the forward there. A step then runs only the top k blocks, the layers after them (EfficientNet
`conv_head`/`bn2`, ViT `norm`) and timm's `forward_head` (pooling). That split is checked once against
the whole model on real items; a model it does not fit is a clear error, never a silently different
function. `image_size` sets the input resolution (0: the model's own).

timm is imported where used, so importing the registry stays fast.
"""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transrec.data.content import ContentStore
from transrec.errors import ConfigError
from transrec.models.item_encoders.base import CenteredLinear, ContentItemEncoder
from transrec.models.item_encoders.presets import IMAGE_PRESETS, offline_error
from transrec.registry import ITEM_ENCODERS

PREPROCESSING_FILE = "image_preprocessing.json"
DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def block_list(model: nn.Module) -> list[nn.Module] | None:
    """The model's sequence of blocks, bottom to top, or None when it has no recognisable one."""
    for attr in ("blocks", "stages", "layers"):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
            return list(seq)
    resnet = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    return resnet if all(isinstance(m, nn.Module) for m in resnet) else None


def load_by_position(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Assign `state`'s tensors to `model`'s state dict in order, checking every shape.

    For checkpoints from another implementation of the same network (different names, same
    order). Extra trailing tensors are allowed only as a classifier head (at most 2: weight, bias),
    which the encoder (num_classes=0) does not have.
    """
    own, src = list(model.state_dict().items()), list(state.items())
    extra = len(src) - len(own)
    if not 0 <= extra <= 2:
        raise ConfigError(f"{where}: {len(src)} tensors for a model with {len(own)}; not the same architecture")
    mapped = {}
    for (name, target), (src_name, tensor) in zip(own, src):
        if tuple(tensor.shape) != tuple(target.shape):
            raise ConfigError(f"{where}: tensor {src_name} {tuple(tensor.shape)} does not fit {name} "
                              f"{tuple(target.shape)}; not the same architecture")
        mapped[name] = tensor
    model.load_state_dict(mapped, strict=True)


def _clear_after_load(module: "ImageItemEncoder", incompatible_keys: Any) -> None:
    """New weights make cached features stale (a named function: modules stay picklable)."""
    module.clear_feature_cache()


def _enable_grad(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook on the first trainable block: autograd on from here to the output."""
    torch.set_grad_enabled(True)


class _BottomDone(Exception):
    """Raised by the pre-hook on the first trainable block once it holds the bottom's output."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output


def _stop_with_input(module: nn.Module, args: tuple) -> None:
    raise _BottomDone(args[0])


def layers_after_blocks(model: nn.Module) -> list[nn.Module]:
    """What timm's `forward_features` runs after the block list and before `forward_head`."""
    if hasattr(model, "conv_head") and hasattr(model, "bn2"):  # EfficientNet family
        return [model.conv_head, model.bn2]
    if hasattr(model, "patch_embed") and isinstance(getattr(model, "norm", None), nn.Module):  # ViT family
        return [model.norm]
    if isinstance(getattr(model, "norm_pre", None), nn.Module) and hasattr(model, "stages"):  # ConvNeXt
        return [model.norm_pre]
    return []  # ResNet and others whose head follows the blocks directly (checked on first use)


@ITEM_ENCODERS.register("image")
class ImageItemEncoder(ContentItemEncoder):
    """Item image -> timm backbone (num_classes=0, its own pooling) -> Linear(num_features, dim)."""

    def __init__(
        self,
        num_items: int,
        dim: int,
        model: str = "tiny-vit",
        trainable_blocks: int = 1,
        pretrained: bool | None = None,
        model_kwargs: dict[str, Any] | None = None,
        assets_dir: str | Path | None = None,
        id_embedding: bool = False,
        cache_frozen: bool = False,
        image_size: int = 0,
    ):
        import timm
        from timm.data import create_transform, resolve_model_data_config

        super().__init__()
        self._init_common(num_items, dim, id_embedding)
        self.model_name = model
        self.preset = IMAGE_PRESETS.get(model)
        self.timm_name = self.preset["name"] if self.preset else model
        kwargs = {**(self.preset["model_kwargs"] if self.preset else {}), **(model_kwargs or {})}
        self.pretrained = bool(self.preset["pretrained"] if pretrained is None and self.preset else pretrained)
        if not timm.is_model(self.timm_name):
            raise ConfigError(f"unknown image encoder {model!r}: not a preset ({', '.join(IMAGE_PRESETS)}) "
                              "nor a timm model name")
        if image_size < 0:
            raise ConfigError(f"image_size must be >= 0 (0: the model's own resolution), got {image_size}")
        self.backbone = timm.create_model(self.timm_name, pretrained=False, num_classes=0, **kwargs)
        native = getattr(getattr(self.backbone, "patch_embed", None), "img_size", None)
        if image_size and native is not None and tuple(native) != (image_size, image_size):
            kwargs["img_size"] = image_size  # a ViT's patch grid / position embedding follow the resolution
            self.backbone = timm.create_model(self.timm_name, pretrained=False, num_classes=0, **kwargs)
        self.projection = CenteredLinear(self.backbone.num_features, dim)

        self.blocks = block_list(self.backbone)
        n = len(self.blocks) if self.blocks is not None else 0
        if trainable_blocks < -1 or (self.blocks is not None and trainable_blocks > n):
            raise ConfigError(f"trainable_blocks={trainable_blocks}: {self.timm_name!r} has {n} blocks (use -1..{n})")
        if self.blocks is None and trainable_blocks not in (-1, 0):
            raise ConfigError(f"{self.timm_name!r} has no block list for trainable_blocks; use -1 or 0")
        self.trainable_blocks = trainable_blocks
        if trainable_blocks >= 0:
            self._freeze()
        if cache_frozen and trainable_blocks < 0:
            raise ConfigError("image cache_frozen caches the output of the frozen part: it needs "
                              "image_trainable_blocks >= 0 (0: pooled vector; k > 0: the bottom's feature map)")
        self.cache_frozen = cache_frozen
        self.image_size = image_size
        self._split_checked = False
        self.register_load_state_dict_post_hook(_clear_after_load)

        saved = Path(assets_dir) / PREPROCESSING_FILE if assets_dir is not None else None
        if saved is not None and saved.is_file():
            self.data_config = {k: v for k, v in json.loads(saved.read_text()).items() if k in DATA_KEYS}
        else:
            data = resolve_model_data_config(self.backbone)
            img_size = getattr(getattr(self.backbone, "patch_embed", None), "img_size", None)
            if img_size is not None:  # a ViT built at another resolution than its pretrained config says
                data["input_size"] = (data["input_size"][0], *img_size)
            if image_size:
                data["input_size"] = (data["input_size"][0], image_size, image_size)
            self.data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items() if k in DATA_KEYS}
        self.transform = create_transform(**self.data_config, is_training=False)
        self._config = {"model": model, "trainable_blocks": trainable_blocks, "pretrained": self.pretrained,
                        "model_kwargs": kwargs, "id_embedding": id_embedding, "cache_frozen": cache_frozen,
                        "image_size": image_size}
        # model_kwargs are saved resolved (preset's + given), so a checkpoint does not depend on preset edits
        self.train()  # frozen parts in eval mode from the start (BatchNorm statistics and dropout fixed)

    # --------------------------------------------------------------------------- freezing

    def _freeze(self) -> None:
        """Freeze everything before the top k blocks (k=0: the whole backbone)."""
        k = self.trainable_blocks
        if k == 0:
            self.backbone.requires_grad_(False)
            return
        top = {id(p) for block in self.blocks[len(self.blocks) - k:] for p in block.parameters()}
        in_blocks = {id(p) for block in self.blocks for p in block.parameters()}
        after_blocks = False
        for p in self.backbone.parameters():  # registration order: stem, blocks, then head layers
            if id(p) in in_blocks:
                after_blocks = after_blocks or id(p) in top
                p.requires_grad_(id(p) in top)
            else:
                p.requires_grad_(after_blocks)

    def frozen_modules(self) -> list[nn.Module]:
        """Modules whose own parameters are all frozen (plus frozen blocks, whole)."""
        if self.trainable_blocks < 0:
            return []
        if self.trainable_blocks == 0:
            return [self.backbone]
        mods = list(self.blocks[: len(self.blocks) - self.trainable_blocks])
        for m in self.backbone.modules():
            own = list(m.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                mods.append(m)
        return mods

    def frozen_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Parameters and buffers of what the caches hold the output of: the whole backbone (k=0), or
        everything but the top k blocks, the layers after them and the trainable parameters (k>0)."""
        if self.trainable_blocks < 0:
            return []
        named = [(f"backbone.{n}", t) for n, t in chain(self.backbone.named_parameters(),
                                                        self.backbone.named_buffers())]
        if self.trainable_blocks == 0:
            return named
        top = [*self.blocks[len(self.blocks) - self.trainable_blocks:], *layers_after_blocks(self.backbone)]
        skip = {id(t) for m in top for t in chain(m.parameters(), m.buffers())}
        skip |= {id(p) for p in self.backbone.parameters() if p.requires_grad}
        return [(n, t) for n, t in named if id(t) not in skip]

    def train(self, mode: bool = True) -> "ImageItemEncoder":
        """Frozen parts stay in eval mode: no dropout, and BatchNorm statistics stay fixed."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    # ------------------------------------------------------------------------------ weights

    def load_pretrained_weights(self) -> bool:
        """Load the preset's packaged weights or timm's pretrained ones (False for random-init presets)."""
        import timm

        if not self.pretrained:
            return False
        loader = self.preset.get("weights") if self.preset else None
        if loader is not None:
            path = loader()
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several types for unreadable files
                raise ConfigError(f"cannot read the {self.model_name!r} weights at {path}: {err}") from None
            load_by_position(self.backbone, state, str(path))
            self.clear_feature_cache()
            return True
        try:
            donor = timm.create_model(self.timm_name, pretrained=True, num_classes=0, **self._config["model_kwargs"])
        except (OSError, RuntimeError, ValueError) as err:
            raise offline_error(self.timm_name, err, local="available offline (timm weights come from the Hub)") \
                from None
        self.backbone.load_state_dict(donor.state_dict(), strict=True)
        self.clear_feature_cache()
        return True

    # ------------------------------------------------------------------------------ assets

    def export_assets(self, folder: str | Path) -> None:
        """Write image_preprocessing.json (the timm data config) for encoding new items."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PREPROCESSING_FILE).write_text(json.dumps(self.data_config, indent=2) + "\n")

    def build_content_store(self, catalog, on_bad: str = "fail", cache_dir: str | Path | None = None) -> ContentStore:
        """With `cache_frozen` the frozen part's output is what is kept per item, so the store keeps no pixels
        (each image is decoded once, when its row is cached); otherwise an LRU of preprocessed images."""
        return ContentStore(catalog, image_transform=self.transform, on_bad=on_bad, cache_dir=cache_dir,
                            image_cache_size=0 if self.cache_frozen else 1024)

    # ------------------------------------------------------------------------------ forward

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[k, 3, H, W] -> pooled backbone features [k, F], the frozen bottom without autograd."""
        k = self.trainable_blocks
        if k < 0:
            return self.backbone(images)
        grad = torch.is_grad_enabled()
        handle = None
        if k > 0 and grad:
            first_top = self.blocks[len(self.blocks) - k]
            handle = first_top.register_forward_pre_hook(_enable_grad)
        try:
            with torch.no_grad():  # restores the caller's grad mode on exit
                return self.backbone(images)
        finally:
            if handle is not None:
                handle.remove()

    def set_content(self, store: ContentStore) -> None:
        super().set_content(store)
        self.clear_feature_cache()

    def _content_digest(self) -> str:
        return self._store().image_digest()

    def _images(self, items: torch.Tensor) -> torch.Tensor:
        return self._store().image_inputs(items).to(self._device())

    @property
    def caches_bottom(self) -> bool:
        """A trainable top over a cached frozen bottom (cache_frozen with trainable_blocks > 0)."""
        return self.cache_frozen and self.trainable_blocks > 0

    def run_bottom(self, images: torch.Tensor) -> torch.Tensor:
        """[k, 3, H, W] -> what enters the first trainable block (stem + frozen blocks), without autograd."""
        if self.trainable_blocks <= 0:
            raise ConfigError("run_bottom needs trainable_blocks > 0 (a frozen bottom below a trainable top)")
        handle = self.blocks[len(self.blocks) - self.trainable_blocks].register_forward_pre_hook(_stop_with_input)
        try:
            with torch.no_grad():
                self.backbone(images)
        except _BottomDone as done:
            return done.output
        finally:
            handle.remove()
        raise ConfigError(f"{self.timm_name!r}: the forward never reached the first trainable block")

    def run_top(self, hidden: torch.Tensor) -> torch.Tensor:
        """The bottom's output -> the top k blocks, the layers after them and timm's pooling head."""
        for block in self.blocks[len(self.blocks) - self.trainable_blocks:]:
            hidden = block(hidden)
        for layer in layers_after_blocks(self.backbone):
            hidden = layer(hidden)
        return self.backbone.forward_head(hidden)

    @torch.no_grad()
    def check_split(self, images: torch.Tensor, bottom: torch.Tensor | None = None) -> None:
        """Bottom + top must be the whole model (eval mode, a few real images; `bottom`: their bottom output
        if already computed): else a ConfigError."""
        was = self.training
        self.eval()
        try:
            bottom = self.run_bottom(images) if bottom is None else bottom
            whole, split = self.backbone(images), self.run_top(bottom)
        finally:
            self.train(was)
        if whole.shape != split.shape or not torch.allclose(whole, split, rtol=1e-4, atol=1e-5):
            diff = (whole - split).abs().max().item() if whole.shape == split.shape else float("nan")
            raise ConfigError(f"cache_frozen with image_trainable_blocks={self.trainable_blocks}: {self.timm_name!r} "
                              f"does not split into bottom + top blocks + head the way transrec runs it (max diff "
                              f"{diff:.2e}); use cache_frozen=false or image_trainable_blocks=0")
        self._split_checked = True

    def _bottom_rows(self, items: torch.Tensor) -> torch.Tensor:
        images = self._images(items)
        bottom = self.run_bottom(images)
        if not self._split_checked:
            self.check_split(images[:2], bottom[:2])
        return bottom

    def pooled_features(self, items: torch.Tensor) -> torch.Tensor:
        if self.caches_bottom:
            return self.run_top(self.cached_rows("bottom", items, self._bottom_rows))
        return self.features(self._images(items))
